/*
 * classify: run a ghostedge-exported .tflite image classifier on JPEG/PNG files, in plain C.
 *
 * Everything the app needs comes from the model file itself:
 *   - the standard TFLite Metadata (the "TFLITE_METADATA" entry, a metadata_schema.fbs flatbuffer):
 *     the input's NormalizationOptions (mean/std on 0-255 pixels) and colour space, and the name of
 *     the output's TENSOR_AXIS_LABELS file;
 *   - labels.txt, read from the zip archive appended to the flatbuffer (tflite-support's layout);
 *   - the resize size from ghostedge's "ghostedge.preprocessing" entry (the standard schema has no
 *     field for "resize the shorter side to N, then centre-crop"); without it the shorter side is
 *     resized straight to the input size;
 *   - input size, type and quantization from the model's tensors (LiteRT's C API).
 * A model without metadata is refused (exit 2): there is no side file to fall back on.
 *
 * Preprocessing reproduces ghostedge's (ghostnet_edge/data/transforms.py and images.py), which follows
 * Pillow: decode to 8-bit RGB (EXIF orientation applied, alpha composited on white, 16-bit grey scaled
 * /257), resize the shorter side with Pillow's antialiased bilinear filter (same coefficients, same
 * 22-bit fixed point, horizontal pass first), centre-crop with round-half-even offsets, then
 * (pixel - mean) / std per channel. Integer models get q = round(x / scale) + zero_point, clamped;
 * integer outputs are dequantised with (q - zero_point) * scale. Float and int8/uint8 models work.
 *
 * Usage: classify [--top K] [--dump-pixels F] [--dump-input F] [--dump-output F] MODEL.tflite IMAGE...
 *   prints, per image, "image: PATH" and K lines "  #R  idx=I  LABEL  p=PROB  logit=LOGIT"
 *   (p: softmax of the logits). For checking against ghostedge, the dumps write each image's cropped
 *   uint8 RGB (HWC), its normalised float32 input (HWC) and its float32 (dequantised) logits to F.
 * Exit status: 0 ok, 1 usage, 2 model (missing/damaged metadata, cannot load), 3 an image could not
 * be decoded (the other images are still classified), 4 runtime failure.
 *
 * Build (x86-64, against the ai-edge-litert wheel's library; see README.md):
 *   gcc -O2 -std=c11 -o classify classify.c -I. -L$SITE/ai_edge_litert -lLiteRt \
 *       -Wl,-rpath,$SITE/ai_edge_litert -ljpeg -lpng16 -lm
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "litert_c_api.h"

enum { EXIT_USAGE = 1, EXIT_MODEL = 2, EXIT_IMAGE = 3, EXIT_RUNTIME = 4 };

#define MAX_FILE_BYTES ((size_t)1 << 31) /* models and images larger than 2 GiB are refused */
#define MAX_PIXELS ((uint64_t)89478485)  /* Pillow's decompression-bomb limit */
#define MAX_CHANNELS 4
#define MAX_LABELS 100000

static const char *g_prog = "classify";

static void fail(int code, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: error: ", g_prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(code);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) fail(EXIT_RUNTIME, "out of memory (%zu bytes)", n);
  return p;
}

/* Reads a whole file; returns NULL (and sets *why) when it cannot. */
static uint8_t *read_file(const char *path, size_t *size, const char **why) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    *why = "cannot open it";
    return NULL;
  }
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    *why = "cannot seek in it";
    return NULL;
  }
  long end = ftell(f);
  if (end < 0 || (uint64_t)end > MAX_FILE_BYTES) {
    fclose(f);
    *why = end < 0 ? "cannot tell its size" : "it is larger than 2 GiB";
    return NULL;
  }
  rewind(f);
  uint8_t *data = xmalloc((size_t)end);
  if (fread(data, 1, (size_t)end, f) != (size_t)end) {
    fclose(f);
    free(data);
    *why = "cannot read it";
    return NULL;
  }
  fclose(f);
  *size = (size_t)end;
  return data;
}

/* ---------------------------------------------------------------------------------------------
 * Little-endian reads and a bounds-checked flatbuffer reader. Every offset is checked against the
 * buffer before it is followed; a bad offset makes the caller report damaged metadata.
 * ------------------------------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }
static float rdf32(const uint8_t *p) {
  uint32_t u = rd32(p);
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

typedef struct {
  const uint8_t *data;
  size_t size;
} Buf;

typedef struct {
  const Buf *buf;
  size_t pos, vt;
  uint16_t vsize, tsize;
} Table;

static int in_bounds(const Buf *b, size_t pos, size_t len) { return pos <= b->size && len <= b->size - pos; }

/* 1: ok, 0: damaged. */
static int fb_table(const Buf *b, size_t pos, Table *t) {
  if (!in_bounds(b, pos, 4)) return 0;
  int64_t vt = (int64_t)pos - (int32_t)rd32(b->data + pos);
  if (vt < 0 || !in_bounds(b, (size_t)vt, 4)) return 0;
  uint16_t vsize = rd16(b->data + vt), tsize = rd16(b->data + vt + 2);
  if (vsize < 4 || (vsize & 1) || !in_bounds(b, (size_t)vt, vsize) || !in_bounds(b, pos, tsize)) return 0;
  t->buf = b;
  t->pos = pos;
  t->vt = (size_t)vt;
  t->vsize = vsize;
  t->tsize = tsize;
  return 1;
}

/* Position of field `slot` holding `size` bytes: >0 present, 0 absent, -1 damaged. */
static int fb_field(const Table *t, int slot, size_t size, size_t *pos) {
  size_t at = 4 + 2 * (size_t)slot;
  if (at + 2 > t->vsize) return 0;
  uint16_t off = rd16(t->buf->data + t->vt + at);
  if (!off) return 0;
  if (off + size > t->tsize) return -1;
  *pos = t->pos + off;
  return 1;
}

static int fb_u8(const Table *t, int slot, unsigned *out, unsigned dflt) {
  size_t p;
  int r = fb_field(t, slot, 1, &p);
  *out = r > 0 ? t->buf->data[p] : dflt;
  return r < 0 ? -1 : 1;
}

static int fb_u32(const Table *t, int slot, uint32_t *out, uint32_t dflt) {
  size_t p;
  int r = fb_field(t, slot, 4, &p);
  *out = r > 0 ? rd32(t->buf->data + p) : dflt;
  return r < 0 ? -1 : 1;
}

static int fb_u64(const Table *t, int slot, uint64_t *out, uint64_t dflt) {
  size_t p;
  int r = fb_field(t, slot, 8, &p);
  *out = r > 0 ? rd64(t->buf->data + p) : dflt;
  return r < 0 ? -1 : 1;
}

/* Follows the offset in field `slot`: >0 present (target in *target), 0 absent, -1 damaged. */
static int fb_ref(const Table *t, int slot, size_t *target) {
  size_t p;
  int r = fb_field(t, slot, 4, &p);
  if (r <= 0) return r;
  uint64_t tgt = (uint64_t)p + rd32(t->buf->data + p);
  if (tgt >= t->buf->size) return -1;
  *target = (size_t)tgt;
  return 1;
}

static int fb_vector(const Table *t, int slot, size_t elem, size_t *start, uint32_t *count) {
  size_t p;
  int r = fb_ref(t, slot, &p);
  if (r <= 0) return r;
  if (!in_bounds(t->buf, p, 4)) return -1;
  uint32_t n = rd32(t->buf->data + p);
  if ((uint64_t)n * elem > t->buf->size || !in_bounds(t->buf, p + 4, (size_t)n * elem)) return -1;
  *start = p + 4;
  *count = n;
  return 1;
}

/* A string field (NUL-terminated inside the buffer, as flatbuffers writes them). */
static int fb_string(const Table *t, int slot, const char **s, uint32_t *len) {
  size_t start;
  uint32_t n;
  int r = fb_vector(t, slot, 1, &start, &n);
  if (r <= 0) return r;
  if (!in_bounds(t->buf, start, (size_t)n + 1) || t->buf->data[start + n] != 0) return -1;
  *s = (const char *)t->buf->data + start;
  *len = n;
  return 1;
}

static int fb_sub(const Table *t, int slot, Table *out) {
  size_t p;
  int r = fb_ref(t, slot, &p);
  if (r <= 0) return r;
  return fb_table(t->buf, p, out) ? 1 : -1;
}

/* Element i of a vector of tables. */
static int fb_elem(const Buf *b, size_t start, uint32_t i, Table *out) {
  size_t p = start + 4 * (size_t)i;
  if (!in_bounds(b, p, 4)) return -1;
  uint64_t tgt = (uint64_t)p + rd32(b->data + p);
  if (tgt >= b->size) return -1;
  return fb_table(b, (size_t)tgt, out) ? 1 : -1;
}

static int fb_floats(const Table *t, int slot, float *out, int max, int *n) {
  size_t start;
  uint32_t count;
  int r = fb_vector(t, slot, 4, &start, &count);
  if (r <= 0) return r;
  if (count > (uint32_t)max) return -1;
  for (uint32_t i = 0; i < count; i++) out[i] = rdf32(t->buf->data + start + 4 * (size_t)i);
  *n = (int)count;
  return 1;
}

/* ---------------------------------------------------------------------------------------------
 * The model file: Model.metadata entries (TFLite schema) and the zip of associated files.
 * ------------------------------------------------------------------------------------------- */

/* The bytes of Model.metadata entry `name`: 1 found, 0 absent, -1 damaged. */
static int model_metadata(const Buf *file, const char *name, Buf *out) {
  Table model, meta, buffer;
  size_t md_start, buf_start;
  uint32_t md_count, buf_count;
  if (file->size < 8 || memcmp(file->data + 4, "TFL3", 4) != 0) return -1;
  if (!fb_table(file, rd32(file->data), &model)) return -1;
  int r = fb_vector(&model, 6, 4, &md_start, &md_count); /* Model.metadata */
  if (r <= 0) return r;
  if (fb_vector(&model, 4, 4, &buf_start, &buf_count) <= 0) return -1; /* Model.buffers */
  for (uint32_t i = 0; i < md_count; i++) {
    const char *entry;
    uint32_t len, index;
    if (fb_elem(file, md_start, i, &meta) <= 0) return -1;
    if (fb_string(&meta, 0, &entry, &len) <= 0) continue;
    if (len != strlen(name) || memcmp(entry, name, len) != 0) continue;
    if (fb_u32(&meta, 1, &index, 0) < 0 || index >= buf_count) return -1;
    if (fb_elem(file, buf_start, index, &buffer) <= 0) return -1;
    size_t data;
    uint32_t n;
    r = fb_vector(&buffer, 0, 1, &data, &n); /* Buffer.data */
    if (r < 0) return -1;
    if (r > 0) {
      out->data = file->data + data;
      out->size = n;
      return 1;
    }
    uint64_t offset, size; /* models over 2 GB keep buffers outside the flatbuffer */
    if (fb_u64(&buffer, 1, &offset, 0) < 0 || fb_u64(&buffer, 2, &size, 0) < 0) return -1;
    if (offset <= 1 || offset > file->size || size > file->size - offset) return -1;
    out->data = file->data + offset;
    out->size = (size_t)size;
    return 1;
  }
  return 0;
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
  static uint32_t table[256];
  static int ready = 0;
  if (!ready) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = 1;
  }
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

/* File `name` from the zip appended to the model (stored entries only, as tflite-support writes them):
 * 1 found, 0 no archive or no such file, -1 damaged. Offsets may count from the start of the file or
 * of the archive: the difference is worked out from where the central directory really is. */
static int packed_file(const Buf *file, const char *name, Buf *out, const char **why) {
  const uint8_t *d = file->data;
  size_t n = file->size;
  if (n < 22) return 0;
  size_t lowest = n > 22 + 65535 ? n - 22 - 65535 : 0;
  size_t eocd = 0;
  int found = 0;
  for (size_t p = n - 22 + 1; p-- > lowest;) {
    if (d[p] == 'P' && d[p + 1] == 'K' && d[p + 2] == 5 && d[p + 3] == 6 && p + 22 + rd16(d + p + 20) == n) {
      eocd = p;
      found = 1;
      break;
    }
  }
  if (!found) return 0;
  uint16_t entries = rd16(d + eocd + 10);
  uint32_t cd_size = rd32(d + eocd + 12), cd_offset = rd32(d + eocd + 16);
  if (cd_size > eocd || cd_offset > eocd - cd_size) {
    *why = "its zip directory points outside the file";
    return -1;
  }
  size_t shift = eocd - cd_size - cd_offset; /* 0 when offsets count from the start of the file */
  size_t p = cd_offset + shift;
  for (uint16_t i = 0; i < entries; i++) {
    if (p + 46 > eocd || memcmp(d + p, "PK\1\2", 4) != 0) {
      *why = "its zip directory is damaged";
      return -1;
    }
    uint16_t method = rd16(d + p + 10), name_len = rd16(d + p + 28);
    uint16_t extra_len = rd16(d + p + 30), comment_len = rd16(d + p + 32);
    uint32_t crc = rd32(d + p + 16), csize = rd32(d + p + 20), usize = rd32(d + p + 24);
    uint32_t local = rd32(d + p + 42);
    if (p + 46 + (size_t)name_len > eocd) {
      *why = "its zip directory is damaged";
      return -1;
    }
    if (name_len == strlen(name) && memcmp(d + p + 46, name, name_len) == 0) {
      size_t h = (size_t)local + shift;
      if (method != 0 || csize != usize) {
        *why = "its packed file is compressed (this example reads stored entries only)";
        return -1;
      }
      if (h > n || n - h < 30 || memcmp(d + h, "PK\3\4", 4) != 0) {
        *why = "a zip entry's local header is missing";
        return -1;
      }
      size_t start = h + 30 + rd16(d + h + 26) + rd16(d + h + 28);
      if (start > n || usize > n - start) {
        *why = "a packed file runs past the end of the model";
        return -1;
      }
      if (crc32_of(d + start, usize) != crc) {
        *why = "a packed file fails its CRC check";
        return -1;
      }
      out->data = d + start;
      out->size = usize;
      return 1;
    }
    p += 46 + (size_t)name_len + extra_len + comment_len;
  }
  return 0;
}

/* What the app reads from the model's metadata. */
typedef struct {
  char name[256], version[128];
  int color_space; /* ColorSpaceType: 0 unknown, 1 RGB, 2 GRAYSCALE */
  int n_mean, n_std;
  float mean[MAX_CHANNELS], std[MAX_CHANNELS];
  char labels_file[256];
  char *labels_blob;
  char **labels;
  int n_labels;
  int resize_shorter; /* 0: resize the shorter side to the input size */
  char interpolation[32];
} ModelInfo;

static void copy_str(char *dst, size_t cap, const char *src, uint32_t len) {
  size_t n = len < cap - 1 ? len : cap - 1;
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* Parses the ModelMetadata flatbuffer (metadata_schema.fbs); 1 ok, 0 damaged. */
static int parse_metadata(const Buf *m, ModelInfo *info) {
  Table root, sg, tin, tout, content, props, unit, opts, file;
  size_t start;
  uint32_t count, len;
  const char *s;
  if (m->size < 8 || memcmp(m->data + 4, "M001", 4) != 0) return 0;
  if (!fb_table(m, rd32(m->data), &root)) return 0;
  if (fb_string(&root, 0, &s, &len) > 0) copy_str(info->name, sizeof info->name, s, len);
  if (fb_string(&root, 2, &s, &len) > 0) copy_str(info->version, sizeof info->version, s, len);
  if (fb_vector(&root, 3, 4, &start, &count) <= 0 || count < 1) return 0; /* subgraph_metadata */
  if (fb_elem(m, start, 0, &sg) <= 0) return 0;
  if (fb_vector(&sg, 2, 4, &start, &count) <= 0 || count < 1 || fb_elem(m, start, 0, &tin) <= 0) return 0;
  int r = fb_sub(&tin, 3, &content); /* TensorMetadata.content */
  if (r < 0) return 0;
  if (r > 0) {
    unsigned type;
    if (fb_u8(&content, 0, &type, 0) < 0) return 0;
    if (type == 2) { /* ImageProperties */
      r = fb_sub(&content, 1, &props);
      if (r < 0) return 0;
      unsigned cs = 0;
      if (r > 0 && fb_u8(&props, 0, &cs, 0) < 0) return 0;
      info->color_space = (int)(int8_t)cs;
    }
  }
  r = fb_vector(&tin, 4, 4, &start, &count); /* process_units */
  if (r < 0) return 0;
  for (uint32_t i = 0; r > 0 && i < count; i++) {
    unsigned type;
    if (fb_elem(m, start, i, &unit) <= 0 || fb_u8(&unit, 0, &type, 0) < 0) return 0;
    if (type != 1) continue; /* NormalizationOptions */
    if (fb_sub(&unit, 1, &opts) <= 0) return 0;
    if (fb_floats(&opts, 0, info->mean, MAX_CHANNELS, &info->n_mean) < 0) return 0;
    if (fb_floats(&opts, 1, info->std, MAX_CHANNELS, &info->n_std) < 0) return 0;
    break;
  }
  if (fb_vector(&sg, 3, 4, &start, &count) <= 0 || count < 1 || fb_elem(m, start, 0, &tout) <= 0) return 0;
  r = fb_vector(&tout, 6, 4, &start, &count); /* output associated_files */
  if (r < 0) return 0;
  for (uint32_t i = 0; r > 0 && i < count; i++) {
    unsigned type;
    if (fb_elem(m, start, i, &file) <= 0 || fb_u8(&file, 2, &type, 0) < 0) return 0;
    if ((int8_t)type != 2) continue; /* TENSOR_AXIS_LABELS */
    if (fb_string(&file, 0, &s, &len) <= 0) return 0;
    copy_str(info->labels_file, sizeof info->labels_file, s, len);
    break;
  }
  return 1;
}

/* Integer value of "key": in a JSON text (ghostedge writes compact JSON); 0 when absent. */
static long json_int(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  if (!p) return 0;
  long v = strtol(p + strlen(pat), NULL, 10);
  return v > 0 && v < 100000 ? v : 0;
}

static void json_str(const char *json, const char *key, char *out, size_t cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *p = strstr(json, pat);
  if (!p) return;
  p += strlen(pat);
  size_t n = 0;
  while (p[n] && p[n] != '"' && n + 1 < cap) n++;
  memcpy(out, p, n);
  out[n] = 0;
}

static void split_labels(const Buf *f, ModelInfo *info) {
  info->labels_blob = xmalloc(f->size + 1);
  memcpy(info->labels_blob, f->data, f->size);
  info->labels_blob[f->size] = 0;
  size_t lines = 1;
  for (size_t i = 0; i < f->size; i++) lines += f->data[i] == '\n';
  if (lines > MAX_LABELS) fail(EXIT_MODEL, "the labels file has more than %d lines", MAX_LABELS);
  info->labels = xmalloc(lines * sizeof(char *));
  char *p = info->labels_blob, *end = info->labels_blob + f->size;
  info->n_labels = 0;
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *stop = nl ? nl : end;
    if (stop > p && stop[-1] == '\r') stop[-1] = 0;
    *stop = 0;
    info->labels[info->n_labels++] = p;
    p = stop + 1;
  }
}

static void read_model_info(const char *path, const Buf *file, ModelInfo *info) {
  Buf meta, labels, prep;
  const char *why = "it is damaged";
  memset(info, 0, sizeof *info);
  strcpy(info->interpolation, "bilinear");
  int r = model_metadata(file, "TFLITE_METADATA", &meta);
  if (r < 0) fail(EXIT_MODEL, "%s is not a readable TFLite model (damaged flatbuffer)", path);
  if (r == 0)
    fail(EXIT_MODEL, "%s has no TFLite metadata (no TFLITE_METADATA entry): this client reads the input "
         "size, normalisation and labels from the model itself; export it with ghostedge, or add metadata "
         "with tflite-support's MetadataWriter", path);
  if (!parse_metadata(&meta, info)) fail(EXIT_MODEL, "%s: its TFLite metadata is damaged", path);
  if (info->n_mean == 0 || info->n_std == 0)
    fail(EXIT_MODEL, "%s: its metadata has no NormalizationOptions for the input", path);
  for (int i = 0; i < info->n_std; i++)
    if (!(info->std[i] > 0) || !isfinite(info->std[i]))
      fail(EXIT_MODEL, "%s: normalisation std %g is not a positive number", path, info->std[i]);
  if (!info->labels_file[0])
    fail(EXIT_MODEL, "%s: its metadata names no TENSOR_AXIS_LABELS file for the output", path);
  r = packed_file(file, info->labels_file, &labels, &why);
  if (r < 0) fail(EXIT_MODEL, "%s: %s", path, why);
  if (r == 0) fail(EXIT_MODEL, "%s: %s is named in the metadata but not packed in the model", path, info->labels_file);
  split_labels(&labels, info);
  r = model_metadata(file, "ghostedge.preprocessing", &prep);
  if (r > 0) {
    char *json = xmalloc(prep.size + 1);
    memcpy(json, prep.data, prep.size);
    json[prep.size] = 0;
    info->resize_shorter = (int)json_int(json, "shorter_side");
    if (!info->resize_shorter) info->resize_shorter = (int)json_int(json, "resize_size");
    json_str(json, "interpolation", info->interpolation, sizeof info->interpolation);
    free(json);
  }
}

/* ---------------------------------------------------------------------------------------------
 * Images: decode to 8-bit RGB like ghostedge's load_rgb (Pillow), then orientation.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  int w, h;
  uint8_t *px; /* RGB, row-major */
} Image;

static int check_size(uint64_t w, uint64_t h, char *err, size_t cap) {
  if (w == 0 || h == 0 || w * h > MAX_PIXELS) {
    snprintf(err, cap, "image size %llux%llu is empty or too large", (unsigned long long)w, (unsigned long long)h);
    return 0;
  }
  return 1;
}

/* EXIF orientation (1..8) from a TIFF block ("II"/"MM" header); 1 when absent or unreadable. */
static int exif_orientation(const uint8_t *t, size_t n) {
  if (n < 8) return 1;
  int le = t[0] == 'I' && t[1] == 'I';
  if (!le && !(t[0] == 'M' && t[1] == 'M')) return 1;
#define R16(p) (le ? (uint16_t)((p)[0] | ((p)[1] << 8)) : (uint16_t)(((p)[0] << 8) | (p)[1]))
#define R32(p) (le ? rd32(p) : ((uint32_t)(p)[0] << 24 | (uint32_t)(p)[1] << 16 | (uint32_t)(p)[2] << 8 | (p)[3]))
  if (R16(t + 2) != 42) return 1;
  uint32_t ifd = R32(t + 4);
  if (ifd > n || n - ifd < 2) return 1;
  uint16_t count = R16(t + ifd);
  for (uint16_t i = 0; i < count; i++) {
    size_t e = (size_t)ifd + 2 + 12 * (size_t)i;
    if (e + 12 > n) return 1;
    if (R16(t + e) == 0x0112 && R16(t + e + 2) == 3) {
      int o = R16(t + e + 8);
      return o >= 1 && o <= 8 ? o : 1;
    }
  }
  return 1;
#undef R16
#undef R32
}

/* Applies an EXIF orientation like Pillow's ImageOps.exif_transpose. */
static void apply_orientation(Image *img, int o) {
  if (o <= 1) return;
  int w = img->w, h = img->h, swap = o >= 5;
  int ow = swap ? h : w, oh = swap ? w : h;
  uint8_t *out = xmalloc((size_t)ow * oh * 3);
  for (int y = 0; y < oh; y++) {
    for (int x = 0; x < ow; x++) {
      int sx, sy;
      switch (o) {
        case 2: sx = w - 1 - x; sy = y; break;                 /* mirror left-right */
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;         /* rotate 180 */
        case 4: sx = x; sy = h - 1 - y; break;                 /* mirror top-bottom */
        case 5: sx = y; sy = x; break;                         /* transpose */
        case 6: sx = y; sy = h - 1 - x; break;                 /* rotate 90 clockwise */
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;         /* transverse */
        default: sx = w - 1 - y; sy = x; break;                /* 8: rotate 90 counter-clockwise */
      }
      memcpy(out + ((size_t)y * ow + x) * 3, img->px + ((size_t)sy * w + sx) * 3, 3);
    }
  }
  free(img->px);
  img->px = out;
  img->w = ow;
  img->h = oh;
}

struct jpeg_fail {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  int truncated;
};

static void jpeg_on_error(j_common_ptr cinfo) {
  struct jpeg_fail *f = (struct jpeg_fail *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, f->message);
  longjmp(f->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level) {
  /* Warnings are ignored like Pillow does, except a premature end of data (a truncated file). */
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) ((struct jpeg_fail *)cinfo->err)->truncated = 1;
}

static int decode_jpeg(const uint8_t *data, size_t size, Image *img, char *err, size_t cap) {
  struct jpeg_decompress_struct cinfo;
  struct jpeg_fail jf;
  uint8_t *volatile px = NULL;
  memset(&jf, 0, sizeof jf);
  cinfo.err = jpeg_std_error(&jf.pub);
  jf.pub.error_exit = jpeg_on_error;
  jf.pub.emit_message = jpeg_on_message;
  if (setjmp(jf.jump)) {
    snprintf(err, cap, "corrupt JPEG data (%s)", jf.message);
    jpeg_destroy_decompress(&cinfo);
    free(px);
    return 0;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    snprintf(err, cap, "CMYK JPEGs are not supported by this example");
    jpeg_destroy_decompress(&cinfo);
    return 0;
  }
  cinfo.out_color_space = JCS_RGB; /* libjpeg's defaults otherwise: ISLOW IDCT, fancy upsampling */
  jpeg_start_decompress(&cinfo);
  if (!check_size(cinfo.output_width, cinfo.output_height, err, cap) || cinfo.output_components != 3) {
    if (!err[0]) snprintf(err, cap, "unexpected JPEG output (%d components)", cinfo.output_components);
    jpeg_destroy_decompress(&cinfo);
    return 0;
  }
  size_t stride = (size_t)cinfo.output_width * 3;
  px = xmalloc(stride * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = px + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  int orientation = 1;
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
      orientation = exif_orientation(m->data + 6, m->data_length - 6);
      break;
    }
  }
  jpeg_finish_decompress(&cinfo);
  if (jf.truncated) {
    snprintf(err, cap, "the JPEG data is truncated");
    jpeg_destroy_decompress(&cinfo);
    free(px);
    return 0;
  }
  img->w = (int)cinfo.output_width;
  img->h = (int)cinfo.output_height;
  img->px = px;
  jpeg_destroy_decompress(&cinfo);
  apply_orientation(img, orientation);
  return 1;
}

typedef struct {
  const uint8_t *data;
  size_t size, pos;
  char message[160];
} PngSource;

static void png_on_error(png_structp png, png_const_charp msg) {
  PngSource *src = png_get_error_ptr(png);
  snprintf(src->message, sizeof src->message, "%s", msg);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  PngSource *src = png_get_io_ptr(png);
  if (n > src->size - src->pos) png_error(png, "the PNG data is truncated");
  memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

/* Pillow's alpha_composite of (c, a) over opaque white, in its own integer arithmetic. */
static uint8_t over_white(unsigned c, unsigned a) {
  if (a == 0) return 255;
  uint32_t coef1 = a * 128u, coef2 = 255u * 128u - coef1; /* 7 fractional bits */
  uint32_t t = c * coef1 + 255u * coef2 + (0x80u << 7);
  return (uint8_t)((((t >> 8) + t) >> 8) >> 7);
}

static int decode_png(const uint8_t *data, size_t size, Image *img, char *err, size_t cap) {
  PngSource src = {data, size, 0, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  uint8_t *volatile raw = NULL;
  png_bytep *volatile rows = NULL;
  if (!png || !info) fail(EXIT_RUNTIME, "cannot set up libpng");
  if (setjmp(png_jmpbuf(png))) {
    snprintf(err, cap, "corrupt PNG data (%s)", src.message);
    png_destroy_read_struct(&png, &info, NULL);
    free(raw);
    free(rows);
    return 0;
  }
  png_set_read_fn(png, &src, png_read_mem);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (!check_size(w, h, err, cap)) {
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
  }
  /* Pillow's modes: palette -> P (tRNS becomes alpha), grey 16-bit -> I;16 (ghostedge: /257, rounded),
   * other 16-bit data -> its high byte; tRNS of grey/RGB images is ignored by the RGB conversion. */
  int grey16 = depth == 16 && type == PNG_COLOR_TYPE_GRAY;
  if (type == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  }
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16 && !grey16) png_set_strip_16(png);
  if (grey16) png_set_swap(png); /* little-endian 16-bit samples */
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int channels = png_get_channels(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  raw = xmalloc(rowbytes * h);
  rows = xmalloc(h * sizeof(png_bytep));
  for (png_uint_32 y = 0; y < h; y++) rows[y] = raw + rowbytes * y;
  png_read_image(png, rows);
  png_read_end(png, info);
  int orientation = 1;
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 exif_len = 0;
  png_bytep exif = NULL;
  if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif) orientation = exif_orientation(exif, exif_len);
#endif
  img->w = (int)w;
  img->h = (int)h;
  img->px = xmalloc((size_t)w * h * 3);
  for (png_uint_32 y = 0; y < h; y++) {
    const uint8_t *r = rows[y];
    uint8_t *o = img->px + (size_t)y * w * 3;
    for (png_uint_32 x = 0; x < w; x++, o += 3) {
      if (grey16) {
        unsigned v = r[2 * x] | (r[2 * x + 1] << 8), q = v / 257, rem = v % 257;
        o[0] = o[1] = o[2] = (uint8_t)(q + (2 * rem > 257));
      } else if (channels == 1) {
        o[0] = o[1] = o[2] = r[x];
      } else if (channels == 2) {
        o[0] = o[1] = o[2] = over_white(r[2 * x], r[2 * x + 1]);
      } else if (channels == 3) {
        memcpy(o, r + 3 * x, 3);
      } else {
        for (int c = 0; c < 3; c++) o[c] = over_white(r[4 * x + c], r[4 * x + 3]);
      }
    }
  }
  png_destroy_read_struct(&png, &info, NULL);
  free(raw);
  free(rows);
  apply_orientation(img, orientation);
  return 1;
}

static int decode_image(const char *path, Image *img, char *err, size_t cap) {
  size_t size = 0;
  const char *why = NULL;
  uint8_t *data = read_file(path, &size, &why);
  err[0] = 0;
  if (!data) {
    snprintf(err, cap, "%s", why);
    return 0;
  }
  int ok;
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    ok = decode_jpeg(data, size, img, err, cap);
  } else if (size >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) {
    ok = decode_png(data, size, img, err, cap);
  } else {
    snprintf(err, cap, "not a JPEG or PNG file");
    ok = 0;
  }
  free(data);
  return ok;
}

/* ---------------------------------------------------------------------------------------------
 * Geometry: Pillow's antialiased bilinear resize of the shorter side, then a centre crop.
 * ------------------------------------------------------------------------------------------- */

#define PRECISION_BITS 22 /* Pillow's fixed point for 8-bit resampling: 32 - 8 - 2 */

typedef struct {
  int ksize;
  int *bounds; /* (first input index, count) per output index */
  int32_t *k;  /* ksize fixed-point weights per output index */
} Coeffs;

static double triangle(double x) {
  x = fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

static void coefficients(int in_size, int out_size, Coeffs *c) {
  double scale = (double)in_size / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = 1.0 * filterscale; /* the bilinear filter's support is 1 */
  c->ksize = (int)ceil(support) * 2 + 1;
  c->bounds = xmalloc(sizeof(int) * 2 * (size_t)out_size);
  c->k = xmalloc(sizeof(int32_t) * (size_t)c->ksize * out_size);
  double *w = xmalloc(sizeof(double) * (size_t)c->ksize);
  for (int xx = 0; xx < out_size; xx++) {
    double center = (xx + 0.5) * scale, total = 0.0;
    int xmin = (int)(center - support + 0.5), xmax;
    if (xmin < 0) xmin = 0;
    xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) total += w[x] = triangle((x + xmin - center + 0.5) / filterscale);
    for (int x = 0; x < c->ksize; x++) {
      double v = x < xmax ? (total != 0.0 ? w[x] / total : w[x]) : 0.0;
      c->k[(size_t)xx * c->ksize + x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS)
                                                         : 0.5 + v * (1 << PRECISION_BITS));
    }
    c->bounds[2 * xx] = xmin;
    c->bounds[2 * xx + 1] = xmax;
  }
  free(w);
}

static uint8_t clip8(int32_t v) {
  v >>= PRECISION_BITS;
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass into a w_out x h image (8-bit result, as Pillow keeps between passes). */
static uint8_t *resample_rows(const uint8_t *in, int w, int h, int w_out) {
  Coeffs c;
  coefficients(w, w_out, &c);
  uint8_t *out = xmalloc((size_t)w_out * h * 3);
  for (int y = 0; y < h; y++) {
    for (int xx = 0; xx < w_out; xx++) {
      const int32_t *k = c.k + (size_t)xx * c.ksize;
      int xmin = c.bounds[2 * xx], n = c.bounds[2 * xx + 1];
      for (int ch = 0; ch < 3; ch++) {
        int32_t acc = 1 << (PRECISION_BITS - 1);
        for (int x = 0; x < n; x++) acc += in[((size_t)y * w + xmin + x) * 3 + ch] * k[x];
        out[((size_t)y * w_out + xx) * 3 + ch] = clip8(acc);
      }
    }
  }
  free(c.bounds);
  free(c.k);
  return out;
}

static uint8_t *resample_cols(const uint8_t *in, int w, int h, int h_out) {
  Coeffs c;
  coefficients(h, h_out, &c);
  uint8_t *out = xmalloc((size_t)w * h_out * 3);
  for (int yy = 0; yy < h_out; yy++) {
    const int32_t *k = c.k + (size_t)yy * c.ksize;
    int ymin = c.bounds[2 * yy], n = c.bounds[2 * yy + 1];
    for (int x = 0; x < w; x++) {
      for (int ch = 0; ch < 3; ch++) {
        int32_t acc = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < n; y++) acc += in[((size_t)(ymin + y) * w + x) * 3 + ch] * k[y];
        out[((size_t)yy * w + x) * 3 + ch] = clip8(acc);
      }
    }
  }
  free(c.bounds);
  free(c.k);
  return out;
}

/* Shorter side to `size` (long side floor(size * long / short)), then a (crop_h x crop_w) centre crop,
 * zero-padded when smaller; offsets round((side - crop) / 2) with Python's round-half-even. */
static void geometry(const Image *img, int size, int crop_h, int crop_w, uint8_t *out) {
  int w = img->w, h = img->h, nw, nh;
  if (w <= h) {
    nw = size;
    nh = (int)((double)((int64_t)size * h) / w);
  } else {
    nw = (int)((double)((int64_t)size * w) / h);
    nh = size;
  }
  const uint8_t *src = img->px;
  uint8_t *tmp = NULL, *tmp2 = NULL;
  if (nw != w || nh != h) {
    if (nw != w) src = tmp = resample_rows(src, w, h, nw);
    if (nh != h) src = tmp2 = resample_cols(src, nw, h, nh);
  }
  int pad_top = crop_h > nh ? (crop_h - nh) / 2 : 0, pad_left = crop_w > nw ? (crop_w - nw) / 2 : 0;
  int ph = nh + (crop_h > nh ? crop_h - nh : 0), pw = nw + (crop_w > nw ? crop_w - nw : 0);
  int top = (int)nearbyint((ph - crop_h) / 2.0), left = (int)nearbyint((pw - crop_w) / 2.0);
  for (int y = 0; y < crop_h; y++) {
    for (int x = 0; x < crop_w; x++) {
      int sy = y + top - pad_top, sx = x + left - pad_left;
      uint8_t *o = out + ((size_t)y * crop_w + x) * 3;
      if (sy < 0 || sy >= nh || sx < 0 || sx >= nw)
        memset(o, 0, 3);
      else
        memcpy(o, src + ((size_t)sy * nw + sx) * 3, 3);
    }
  }
  free(tmp);
  free(tmp2);
}

/* ---------------------------------------------------------------------------------------------
 * LiteRT
 * ------------------------------------------------------------------------------------------- */

#define CHECK(call, what)                                                            \
  do {                                                                               \
    LiteRtStatus status_ = (call);                                                   \
    if (status_ != kLiteRtStatusOk) fail(EXIT_RUNTIME, "%s failed (LiteRT status %d)", what, status_); \
  } while (0)

typedef struct {
  LiteRtRankedTensorType type;
  int quantized;
  float scale;
  int64_t zero_point;
  size_t count;
} TensorInfo;

static const char *type_name(int t) {
  return t == kLiteRtElementTypeFloat32 ? "float32" : t == kLiteRtElementTypeInt8 ? "int8"
         : t == kLiteRtElementTypeUInt8 ? "uint8" : "unsupported";
}

static void tensor_info(LiteRtTensor tensor, const char *what, TensorInfo *ti) {
  int qtype = kLiteRtQuantizationNone;
  memset(ti, 0, sizeof *ti);
  CHECK(LiteRtGetRankedTensorType(tensor, &ti->type), "reading the tensor type");
  int t = ti->type.element_type;
  if (t != kLiteRtElementTypeFloat32 && t != kLiteRtElementTypeInt8 && t != kLiteRtElementTypeUInt8)
    fail(EXIT_MODEL, "the %s tensor has element type %d; this client handles float32, int8 and uint8", what, t);
  ti->count = 1;
  for (unsigned i = 0; i < ti->type.layout.rank; i++) {
    if (ti->type.layout.dimensions[i] <= 0) fail(EXIT_MODEL, "the %s tensor has a dynamic dimension", what);
    ti->count *= (size_t)ti->type.layout.dimensions[i];
  }
  if (t != kLiteRtElementTypeFloat32) {
    LiteRtQuantizationPerTensor q;
    CHECK(LiteRtGetQuantizationTypeId(tensor, &qtype), "reading the quantization type");
    if (qtype != kLiteRtQuantizationPerTensor)
      fail(EXIT_MODEL, "the %s tensor is %s but not quantized per tensor", what, type_name(t));
    CHECK(LiteRtGetPerTensorQuantization(tensor, &q), "reading the quantization parameters");
    if (!(q.scale > 0)) fail(EXIT_MODEL, "the %s tensor has quantization scale %g", what, q.scale);
    ti->quantized = 1;
    ti->scale = q.scale;
    ti->zero_point = q.zero_point;
  }
}

typedef struct {
  int idx;
  double logit;
} Score;

static int by_score(const void *a, const void *b) {
  const Score *x = a, *y = b;
  if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
  return x->idx - y->idx; /* ties: the lower class index first, like numpy's argmax */
}

static void usage(void) {
  fprintf(stderr, "usage: %s [--top K] [--dump-pixels FILE] [--dump-input FILE] [--dump-output FILE] "
          "MODEL.tflite IMAGE...\n", g_prog);
  exit(EXIT_USAGE);
}

int main(int argc, char **argv) {
  int top = 5, argi = 1;
  const char *dump_pixels = NULL, *dump_input = NULL, *dump_output = NULL;
  for (; argi < argc && strncmp(argv[argi], "--", 2) == 0; argi++) {
    if (strcmp(argv[argi], "--") == 0) {
      argi++;
      break;
    }
    if (argi + 1 >= argc) usage();
    if (strcmp(argv[argi], "--top") == 0) {
      top = atoi(argv[++argi]);
      if (top < 1) usage();
    } else if (strcmp(argv[argi], "--dump-pixels") == 0) {
      dump_pixels = argv[++argi];
    } else if (strcmp(argv[argi], "--dump-input") == 0) {
      dump_input = argv[++argi];
    } else if (strcmp(argv[argi], "--dump-output") == 0) {
      dump_output = argv[++argi];
    } else {
      usage();
    }
  }
  if (argc - argi < 2) usage();
  const char *model_path = argv[argi++];

  /* 1. The model's own metadata. */
  size_t model_size = 0;
  const char *why = NULL;
  uint8_t *model_bytes = read_file(model_path, &model_size, &why);
  if (!model_bytes) fail(EXIT_MODEL, "%s: %s", model_path, why);
  Buf file = {model_bytes, model_size};
  ModelInfo info;
  read_model_info(model_path, &file, &info);

  /* 2. The runtime: model, compiled model (CPU), tensor types and quantization. */
  LiteRtEnvironment env = NULL;
  LiteRtModel model = NULL;
  LiteRtOptions options = NULL;
  LiteRtCompiledModel compiled = NULL;
  LiteRtSignature sig = NULL;
  LiteRtTensor t_in = NULL, t_out = NULL;
  LiteRtParamIndex n_sig = 0, n_in = 0, n_out = 0;
  CHECK(LiteRtCreateEnvironment(0, NULL, &env), "creating the LiteRT environment");
  if (LiteRtCreateModelFromFile(env, model_path, &model) != kLiteRtStatusOk)
    fail(EXIT_MODEL, "LiteRT cannot load %s", model_path);
  CHECK(LiteRtGetNumModelSignatures(model, &n_sig), "counting signatures");
  if (n_sig < 1) fail(EXIT_MODEL, "%s has no signature", model_path);
  CHECK(LiteRtGetModelSignature(model, 0, &sig), "reading signature 0");
  CHECK(LiteRtGetNumSignatureInputs(sig, &n_in), "counting inputs");
  CHECK(LiteRtGetNumSignatureOutputs(sig, &n_out), "counting outputs");
  if (n_in != 1 || n_out != 1)
    fail(EXIT_MODEL, "%s has %zu inputs and %zu outputs; a classifier has one of each", model_path, n_in, n_out);
  CHECK(LiteRtGetSignatureInputTensorByIndex(sig, 0, &t_in), "finding the input tensor");
  CHECK(LiteRtGetSignatureOutputTensorByIndex(sig, 0, &t_out), "finding the output tensor");
  TensorInfo in, out;
  tensor_info(t_in, "input", &in);
  tensor_info(t_out, "output", &out);

  /* 3. Metadata and tensors must agree. */
  const int32_t *dims = in.type.layout.dimensions;
  if (in.type.layout.rank != 4 || dims[0] != 1)
    fail(EXIT_MODEL, "%s: the input tensor is not NHWC with batch 1", model_path);
  int H = dims[1], W = dims[2], C = dims[3];
  if (C != 3 || info.color_space == 2)
    fail(EXIT_MODEL, "%s: the input has %d channels (%s in the metadata); this client feeds RGB images",
         model_path, C, info.color_space == 1 ? "RGB" : info.color_space == 2 ? "GRAYSCALE" : "no colour space");
  if ((info.n_mean != 1 && info.n_mean != C) || (info.n_std != 1 && info.n_std != C))
    fail(EXIT_MODEL, "%s: %d/%d normalisation values for %d channels", model_path, info.n_mean, info.n_std, C);
  size_t n_classes = out.type.layout.rank ? (size_t)out.type.layout.dimensions[out.type.layout.rank - 1] : 0;
  if (out.count != n_classes || n_classes == 0)
    fail(EXIT_MODEL, "%s: the output tensor is not a single row of class scores", model_path);
  if ((size_t)info.n_labels != n_classes)
    fail(EXIT_MODEL, "%s: %s has %d labels but the model outputs %zu scores", model_path, info.labels_file,
         info.n_labels, n_classes);
  if (strcmp(info.interpolation, "bilinear") != 0)
    fprintf(stderr, "%s: warning: the model was exported with %s resizing; this client resizes bilinearly\n",
            g_prog, info.interpolation);
  int resize = info.resize_shorter > 0 ? info.resize_shorter : (H < W ? H : W);
  float mean[MAX_CHANNELS], stdv[MAX_CHANNELS];
  for (int c = 0; c < C; c++) {
    mean[c] = info.mean[info.n_mean == 1 ? 0 : c];
    stdv[c] = info.std[info.n_std == 1 ? 0 : c];
  }
  fprintf(stderr, "model: %s (version %s), input %dx%dx%d %s", info.name[0] ? info.name : "?",
          info.version[0] ? info.version : "?", H, W, C, type_name(in.type.element_type));
  if (in.quantized) fprintf(stderr, " scale=%g zero_point=%lld", in.scale, (long long)in.zero_point);
  fprintf(stderr, ", %zu labels from %s, resize shorter side to %d%s\n", n_classes, info.labels_file, resize,
          info.resize_shorter ? "" : " (no ghostedge.preprocessing entry: the input size)");

  CHECK(LiteRtCreateOptions(&options), "creating options");
  CHECK(LiteRtSetOptionsHardwareAccelerators(options, kLiteRtHwAcceleratorCpu), "selecting the CPU");
  if (LiteRtCreateCompiledModel(env, model, options, &compiled) != kLiteRtStatusOk)
    fail(EXIT_MODEL, "LiteRT cannot compile %s for the CPU", model_path);
  LiteRtTensorBufferRequirements req_in = NULL, req_out = NULL; /* owned by the compiled model */
  LiteRtTensorBuffer buf_in = NULL, buf_out = NULL;
  CHECK(LiteRtGetCompiledModelInputBufferRequirements(compiled, 0, 0, &req_in), "input buffer requirements");
  CHECK(LiteRtGetCompiledModelOutputBufferRequirements(compiled, 0, 0, &req_out), "output buffer requirements");
  CHECK(LiteRtCreateManagedTensorBufferFromRequirements(env, &in.type, req_in, &buf_in), "allocating the input");
  CHECK(LiteRtCreateManagedTensorBufferFromRequirements(env, &out.type, req_out, &buf_out), "allocating the output");
  size_t in_bytes = 0, out_bytes = 0;
  size_t in_elem = in.type.element_type == kLiteRtElementTypeFloat32 ? 4 : 1;
  size_t out_elem = out.type.element_type == kLiteRtElementTypeFloat32 ? 4 : 1;
  CHECK(LiteRtGetTensorBufferPackedSize(buf_in, &in_bytes), "sizing the input");
  CHECK(LiteRtGetTensorBufferPackedSize(buf_out, &out_bytes), "sizing the output");
  if (in_bytes != in.count * in_elem || out_bytes != out.count * out_elem)
    fail(EXIT_RUNTIME, "unexpected tensor buffer sizes (%zu, %zu bytes)", in_bytes, out_bytes);

  /* 4. Classify each image. */
  FILE *fp_pixels = dump_pixels ? fopen(dump_pixels, "wb") : NULL;
  FILE *fp_input = dump_input ? fopen(dump_input, "wb") : NULL;
  FILE *fp_output = dump_output ? fopen(dump_output, "wb") : NULL;
  if ((dump_pixels && !fp_pixels) || (dump_input && !fp_input) || (dump_output && !fp_output))
    fail(EXIT_USAGE, "cannot write a dump file");
  uint8_t *rgb = xmalloc((size_t)H * W * 3);
  float *x = xmalloc(sizeof(float) * (size_t)H * W * 3);
  Score *scores = xmalloc(sizeof(Score) * n_classes);
  float *logits = xmalloc(sizeof(float) * n_classes);
  int bad_images = 0;
  for (; argi < argc; argi++) {
    const char *path = argv[argi];
    Image img = {0, 0, NULL};
    char err[256];
    if (!decode_image(path, &img, err, sizeof err)) {
      fprintf(stderr, "%s: error: cannot decode %s: %s\n", g_prog, path, err);
      bad_images++;
      continue;
    }
    geometry(&img, resize, H, W, rgb);
    free(img.px);
    for (size_t i = 0; i < (size_t)H * W * 3; i++) x[i] = ((float)rgb[i] - mean[i % 3]) / stdv[i % 3];
    if (fp_pixels) fwrite(rgb, 1, (size_t)H * W * 3, fp_pixels);
    if (fp_input) fwrite(x, sizeof(float), (size_t)H * W * 3, fp_input);

    void *mem = NULL;
    CHECK(LiteRtLockTensorBuffer(buf_in, &mem, kLiteRtTensorBufferLockModeWrite), "locking the input");
    if (!in.quantized) {
      memcpy(mem, x, sizeof(float) * in.count);
    } else {
      int lo = in.type.element_type == kLiteRtElementTypeInt8 ? -128 : 0, hi = lo + 255;
      for (size_t i = 0; i < in.count; i++) {
        float q = nearbyintf(x[i] / in.scale) + (float)in.zero_point; /* round half to even, like numpy */
        int v = q < lo ? lo : q > hi ? hi : (int)q;
        if (lo < 0)
          ((int8_t *)mem)[i] = (int8_t)v;
        else
          ((uint8_t *)mem)[i] = (uint8_t)v;
      }
    }
    CHECK(LiteRtUnlockTensorBuffer(buf_in), "unlocking the input");
    CHECK(LiteRtRunCompiledModel(compiled, 0, 1, &buf_in, 1, &buf_out), "running the model");
    CHECK(LiteRtLockTensorBuffer(buf_out, &mem, kLiteRtTensorBufferLockModeRead), "locking the output");
    for (size_t i = 0; i < n_classes; i++) {
      float v; /* dequantised in float32 arithmetic, as ghostedge's runner does it */
      if (out.type.element_type == kLiteRtElementTypeFloat32)
        v = ((const float *)mem)[i];
      else if (out.type.element_type == kLiteRtElementTypeInt8)
        v = (float)(((const int8_t *)mem)[i] - out.zero_point) * out.scale;
      else
        v = (float)(((const uint8_t *)mem)[i] - out.zero_point) * out.scale;
      logits[i] = v;
      scores[i].idx = (int)i;
      scores[i].logit = v;
    }
    CHECK(LiteRtUnlockTensorBuffer(buf_out), "unlocking the output");
    if (fp_output) fwrite(logits, sizeof(float), n_classes, fp_output);
    qsort(scores, n_classes, sizeof(Score), by_score);
    double total = 0.0;
    for (size_t i = 0; i < n_classes; i++) total += exp(scores[i].logit - scores[0].logit);
    printf("image: %s\n", path);
    for (int r = 0; r < top && (size_t)r < n_classes; r++)
      printf("  #%d  idx=%d  %s  p=%.4f  logit=%.4f\n", r + 1, scores[r].idx, info.labels[scores[r].idx],
             exp(scores[r].logit - scores[0].logit) / total, scores[r].logit);
  }
  if (fp_pixels) fclose(fp_pixels);
  if (fp_input) fclose(fp_input);
  if (fp_output) fclose(fp_output);

  LiteRtDestroyTensorBuffer(buf_in);
  LiteRtDestroyTensorBuffer(buf_out);
  LiteRtDestroyCompiledModel(compiled);
  LiteRtDestroyOptions(options);
  LiteRtDestroyModel(model);
  LiteRtDestroyEnvironment(env);
  free(rgb);
  free(x);
  free(scores);
  free(logits);
  free(info.labels);
  free(info.labels_blob);
  free(model_bytes);
  return bad_images ? EXIT_IMAGE : 0;
}
