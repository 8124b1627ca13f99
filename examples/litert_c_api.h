/*
 * The few declarations of LiteRT's C API that classify.c uses, written out by hand because the
 * ai-edge-litert wheel ships the shared library (ai_edge_litert/libLiteRt.so) but no headers.
 *
 * They follow LiteRT's public headers (litert/c/litert_common.h, litert_environment.h, litert_model.h,
 * litert_model_types.h, litert_layout.h, litert_options.h, litert_compiled_model.h,
 * litert_tensor_buffer.h) as of ai-edge-litert 2.3.0. The library exports the LiteRt* API only: the
 * older TfLite* C API (TfLiteInterpreterCreate, ...) is not exported by this wheel.
 *
 * LiteRT's C API is not frozen: LiteRtCreateModelFromFile gained its LiteRtEnvironment argument in
 * 2026 (before that it took only the file name). Build against the wheel these declarations match;
 * with the real headers at hand, include those instead.
 */
#ifndef GHOSTEDGE_LITERT_C_API_H_
#define GHOSTEDGE_LITERT_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Handles (opaque pointers). */
typedef struct LiteRtEnvironmentT *LiteRtEnvironment;
typedef struct LiteRtModelT *LiteRtModel;
typedef struct LiteRtSignatureT *LiteRtSignature;
typedef struct LiteRtTensorT *LiteRtTensor;
typedef struct LiteRtOptionsT *LiteRtOptions;
typedef struct LiteRtCompiledModelT *LiteRtCompiledModel;
typedef struct LiteRtTensorBufferT *LiteRtTensorBuffer;
typedef struct LiteRtTensorBufferRequirementsT *LiteRtTensorBufferRequirements;
typedef struct LiteRtEnvOptionT LiteRtEnvOption; /* only ever passed as NULL here */

typedef int LiteRtStatus; /* an enum in LiteRT; 0 is kLiteRtStatusOk */
#define kLiteRtStatusOk 0
typedef size_t LiteRtParamIndex;
typedef int LiteRtHwAcceleratorSet;
#define kLiteRtHwAcceleratorCpu (1 << 0)

typedef int LiteRtTensorBufferLockMode;
#define kLiteRtTensorBufferLockModeRead 0
#define kLiteRtTensorBufferLockModeWrite 1

/* LiteRtElementType values (the same numbers as TfLiteType). */
#define kLiteRtElementTypeFloat32 1
#define kLiteRtElementTypeUInt8 3
#define kLiteRtElementTypeInt8 9

/* LiteRtQuantizationTypeId values. */
#define kLiteRtQuantizationNone 0
#define kLiteRtQuantizationPerTensor 1

/* The concrete types below are documented as ABI stable (LiteRT static_asserts these sizes). */
#define LITERT_TENSOR_MAX_RANK 8
typedef struct {
  unsigned int rank : 7;
  unsigned int has_strides : 1;
  int32_t dimensions[LITERT_TENSOR_MAX_RANK];
  uint32_t strides[LITERT_TENSOR_MAX_RANK];
} LiteRtLayout;

typedef struct {
  int element_type; /* LiteRtElementType */
  LiteRtLayout layout;
} LiteRtRankedTensorType;

typedef struct {
  float scale;
  int64_t zero_point;
} LiteRtQuantizationPerTensor;

_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout must match LiteRT's ABI");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType must match LiteRT's ABI");
_Static_assert(sizeof(LiteRtQuantizationPerTensor) == 16, "LiteRtQuantizationPerTensor must match LiteRT's ABI");

LiteRtStatus LiteRtCreateEnvironment(int num_options, const LiteRtEnvOption *options,
                                     LiteRtEnvironment *environment);
void LiteRtDestroyEnvironment(LiteRtEnvironment environment);

LiteRtStatus LiteRtCreateModelFromFile(LiteRtEnvironment environment, const char *filename,
                                       LiteRtModel *model);
void LiteRtDestroyModel(LiteRtModel model);
LiteRtStatus LiteRtGetNumModelSignatures(LiteRtModel model, LiteRtParamIndex *num_signatures);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel model, LiteRtParamIndex signature_index,
                                     LiteRtSignature *signature);
LiteRtStatus LiteRtGetNumSignatureInputs(LiteRtSignature signature, LiteRtParamIndex *num_inputs);
LiteRtStatus LiteRtGetNumSignatureOutputs(LiteRtSignature signature, LiteRtParamIndex *num_outputs);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex input_idx,
                                                  LiteRtTensor *tensor);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex output_idx,
                                                   LiteRtTensor *tensor);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor tensor, LiteRtRankedTensorType *ranked_tensor_type);
LiteRtStatus LiteRtGetQuantizationTypeId(LiteRtTensor tensor, int *q_type_id);
LiteRtStatus LiteRtGetPerTensorQuantization(LiteRtTensor tensor,
                                            LiteRtQuantizationPerTensor *per_tensor_quantization);

LiteRtStatus LiteRtCreateOptions(LiteRtOptions *options);
void LiteRtDestroyOptions(LiteRtOptions options);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions options,
                                                  LiteRtHwAcceleratorSet hardware_accelerators);

LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment environment, LiteRtModel model,
                                       LiteRtOptions compilation_options, LiteRtCompiledModel *compiled_model);
void LiteRtDestroyCompiledModel(LiteRtCompiledModel compiled_model);
LiteRtStatus LiteRtGetCompiledModelInputBufferRequirements(LiteRtCompiledModel compiled_model,
                                                           LiteRtParamIndex signature_index,
                                                           LiteRtParamIndex input_index,
                                                           LiteRtTensorBufferRequirements *requirements);
LiteRtStatus LiteRtGetCompiledModelOutputBufferRequirements(LiteRtCompiledModel compiled_model,
                                                            LiteRtParamIndex signature_index,
                                                            LiteRtParamIndex output_index,
                                                            LiteRtTensorBufferRequirements *requirements);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel compiled_model, LiteRtParamIndex signature_index,
                                    size_t num_input_buffers, LiteRtTensorBuffer *input_buffers,
                                    size_t num_output_buffers, LiteRtTensorBuffer *output_buffers);

LiteRtStatus LiteRtCreateManagedTensorBufferFromRequirements(LiteRtEnvironment env,
                                                             const LiteRtRankedTensorType *tensor_type,
                                                             LiteRtTensorBufferRequirements requirements,
                                                             LiteRtTensorBuffer *buffer);
void LiteRtDestroyTensorBuffer(LiteRtTensorBuffer buffer);
LiteRtStatus LiteRtGetTensorBufferPackedSize(LiteRtTensorBuffer tensor_buffer, size_t *size);
LiteRtStatus LiteRtLockTensorBuffer(LiteRtTensorBuffer tensor_buffer, void **host_mem_addr,
                                    LiteRtTensorBufferLockMode lock_mode);
LiteRtStatus LiteRtUnlockTensorBuffer(LiteRtTensorBuffer buffer);

#ifdef __cplusplus
}
#endif

#endif /* GHOSTEDGE_LITERT_C_API_H_ */
