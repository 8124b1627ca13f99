/*
 * insn_count: a QEMU 7.2 TCG plugin (API version 1) that counts the guest instructions an AArch64
 * program executes between two markers, split into three classes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 * (QEMU plugins link against QEMU's GPL-2.0-or-later plugin API; this file is under the same licence,
 * unlike the rest of ghostedge, which is Apache-2.0. It is built on the user's machine, never shipped
 * as a binary.)
 *
 * Why instructions and not time: under user-mode emulation wall time says how fast QEMU translates,
 * not how fast an ARM core runs (FP32 is ~350x slower than native, INT8 ~115x, and XNNPACK on/off take
 * the same emulated time). The number of guest instructions is a deterministic, machine-independent
 * cost of the ARM code path a runtime picked for the named CPU model; it is reported as such.
 *
 * How it counts: at translation time each translation block (TB) is decoded once and its instructions
 * are classified from the AArch64 top-level encoding field op0 = bits[28:25]:
 *   x1x0  loads and stores (including SIMD/FP loads and stores, LD1/ST1 ...)  -> load_store
 *   x111  SIMD and floating-point data processing                             -> simd_fp
 *   0010  SVE (not implemented by the Cortex models we use; counted as SIMD)  -> simd_fp
 *   rest  integer data processing, branches, system instructions              -> other
 * and up to three inline "add immediate" ops are attached to the TB, so executing a TB costs a few
 * host adds and no callback. A TB that ends early (a fault in its middle) is counted whole; the
 * runtimes under test do not fault.
 *
 * Markers: the runner calls lseek(-1000001, 0, 0) right before its first timed inference and
 * lseek(-1000002, 0, 0) right after its last one; both fail harmlessly with EBADF. The syscall
 * callback (aarch64 lseek is syscall 62) snapshots the counters at the first and accumulates the
 * difference at the second, so the import of Python, NumPy and the runtime, model loading and warm-up
 * are left out. Several begin/end pairs add up; marker_pairs says how many.
 *
 * Threads: the counters are plain uint64_t shared by all vCPUs (one per guest thread in user mode);
 * inline adds are not atomic, so counts are exact only for a single-threaded guest. The runner is run
 * with --threads 1 (and OMP/OpenBLAS limited to one thread); "vcpus" in the output reports how many
 * guest threads existed so a caller can tell when that assumption failed.
 *
 * Output: at exit, one JSON object is written (to a temporary name, then renamed) to the file given
 * by the plugin argument out=PATH:
 *   {"marked_insns":N,"simd_fp":N,"load_store":N,"other":N,"marker_pairs":N,"total_insns":N,
 *    "unpaired_markers":N,"vcpus":N}
 * where simd_fp + load_store + other == marked_insns (the classes of the marked region) and
 * total_insns counts the whole process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu_plugin_api_v1.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { CLASS_SIMD_FP = 0, CLASS_LOAD_STORE = 1, CLASS_OTHER = 2, N_CLASSES = 3 };

#define AARCH64_NR_LSEEK 62
#define MARK_BEGIN ((uint64_t)(int64_t)-1000001) /* 0xFFFFFFFFFFF0BDBF */
#define MARK_END ((uint64_t)(int64_t)-1000002)   /* 0xFFFFFFFFFFF0BDBE */

static uint64_t counts[N_CLASSES]; /* whole process, updated by inline ops */
static uint64_t begin_snapshot[N_CLASSES];
static uint64_t marked[N_CLASSES];
static uint64_t marker_pairs;
static uint64_t unpaired_markers;
static int in_marked_region;
static unsigned int n_vcpus;
static char *out_path;

/* Classify one AArch64 instruction word by op0 = bits[28:25]. */
static int classify(uint32_t insn)
{
    uint32_t op0 = (insn >> 25) & 0xF;
    if ((op0 & 0x5) == 0x4) {
        return CLASS_LOAD_STORE; /* x1x0 */
    }
    if ((op0 & 0x7) == 0x7 || op0 == 0x2) {
        return CLASS_SIMD_FP; /* x111, or SVE 0010 */
    }
    return CLASS_OTHER;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t per_class[N_CLASSES] = {0, 0, 0};
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;
        size_t size = qemu_plugin_insn_size(insn);
        /* AArch64 instructions are 4 bytes, little-endian on the guests we run. */
        memcpy(&word, qemu_plugin_insn_data(insn), size < 4 ? size : 4);
        per_class[classify(word)]++;
    }
    for (int c = 0; c < N_CLASSES; c++) {
        if (per_class[c]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counts[c],
                                                     per_class[c]);
        }
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num != AARCH64_NR_LSEEK) {
        return;
    }
    if (a1 == MARK_BEGIN) {
        if (in_marked_region) {
            unpaired_markers++; /* a begin without end: restart the region */
        }
        memcpy(begin_snapshot, counts, sizeof(counts));
        in_marked_region = 1;
    } else if (a1 == MARK_END) {
        if (!in_marked_region) {
            unpaired_markers++;
            return;
        }
        for (int c = 0; c < N_CLASSES; c++) {
            marked[c] += counts[c] - begin_snapshot[c];
        }
        marker_pairs++;
        in_marked_region = 0;
    }
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    __atomic_fetch_add(&n_vcpus, 1, __ATOMIC_SEQ_CST);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    char json[512];
    uint64_t marked_total = marked[0] + marked[1] + marked[2];
    uint64_t total = counts[0] + counts[1] + counts[2];
    if (in_marked_region) {
        unpaired_markers++;
    }
    snprintf(json, sizeof(json),
             "{\"marked_insns\":%" PRIu64 ",\"simd_fp\":%" PRIu64 ",\"load_store\":%" PRIu64
             ",\"other\":%" PRIu64 ",\"marker_pairs\":%" PRIu64 ",\"total_insns\":%" PRIu64
             ",\"unpaired_markers\":%" PRIu64 ",\"vcpus\":%u}\n",
             marked_total, marked[CLASS_SIMD_FP], marked[CLASS_LOAD_STORE], marked[CLASS_OTHER],
             marker_pairs, total, unpaired_markers, n_vcpus);
    if (!out_path) {
        qemu_plugin_outs(json);
        return;
    }
    /* Write to a temporary name and rename, so a reader never sees half a file. */
    size_t len = strlen(out_path) + 32;
    char *tmp = malloc(len);
    if (!tmp) {
        return;
    }
    snprintf(tmp, len, "%s.tmp.%ld", out_path, (long)getpid());
    FILE *fh = fopen(tmp, "w");
    if (!fh) {
        fprintf(stderr, "insn_count: cannot write %s\n", tmp);
        free(tmp);
        return;
    }
    int ok = fputs(json, fh) >= 0;
    ok = (fclose(fh) == 0) && ok;
    if (!ok || rename(tmp, out_path) != 0) {
        fprintf(stderr, "insn_count: cannot write %s\n", out_path);
        unlink(tmp);
    }
    free(tmp);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    if (strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "insn_count: decodes AArch64 only, not %s\n", info->target_name);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0 && argv[i][4]) {
            out_path = strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "insn_count: unknown argument '%s' (expected out=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
