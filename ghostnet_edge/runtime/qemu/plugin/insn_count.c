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
 *    "unpaired_markers":N,"vcpus":N,"tb_entries":N,"tb_marked_insns":N}
 * where simd_fp + load_store + other == marked_insns (the classes of the marked region) and
 * total_insns counts the whole process.
 *
 * Per-code-address counts (plugin argument tbs=PATH, optional): every distinct translation block
 * (keyed by guest start address and length) gets its own counter, bumped by one more inline add of
 * the TB's instruction count, so the cost stays a few host adds per executed TB and no callback. The
 * begin/end markers snapshot and accumulate these counters exactly like the class counters (a walk
 * over the TB table at each marker), so the per-TB marked counts sum to marked_insns exactly
 * (tb_marked_insns repeats that sum as a check). At exit the TBs with a non-zero marked count are
 * written, one per line, to PATH (temporary name, then rename):
 *   # insn_count tbs v1: vaddr_hex n_insns marked_insns qemu_symbol
 *   4000a01230 12 8812345 -
 * qemu_symbol is qemu_plugin_insn_symbol() of the TB's first instruction, or "-". Under user-mode
 * emulation QEMU only knows the symbols of the ELF images its own loader mapped (and only when its
 * log is on), so code in shared libraries that the guest's ld.so maps comes back as "-": the host
 * side resolves every address itself, from the guest's /proc/self/maps and the libraries' ELF symbol
 * tables (ghostnet_edge/runtime/qemu/symbols.py). A TB is attributed whole to the function of its
 * first instruction; TBs end at every branch, so a TB spans two functions only when code falls
 * through from one symbol into the next, which compiled kernels do not do.
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
static char *tbs_path;

/* One translation block (guest start address + length). Entries never move: inline ops point at
 * their count. Translation runs under QEMU's TB lock, so the table needs no lock of its own. */
typedef struct TbEntry {
    uint64_t vaddr;
    uint64_t count;  /* instructions executed in this TB, whole process (inline add) */
    uint64_t begin;  /* count at the last begin marker */
    uint64_t marked; /* instructions executed in this TB inside marked regions */
    uint32_t n_insns;
    char *symbol;    /* qemu_plugin_insn_symbol() of the first instruction, or NULL */
} TbEntry;

static TbEntry **tb_table;   /* open addressing, power-of-two capacity, load <= 1/2 */
static size_t tb_capacity;
static size_t tb_count;
static int tb_alloc_failed;

static size_t tb_slot(uint64_t vaddr, uint32_t n)
{
    uint64_t h = (vaddr ^ ((uint64_t)n << 47)) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (tb_capacity - 1);
}

static int tb_grow(void)
{
    size_t old_cap = tb_capacity;
    TbEntry **old = tb_table;
    size_t cap = old_cap ? old_cap * 2 : 1u << 16;
    TbEntry **table = calloc(cap, sizeof(*table));
    if (!table) {
        return -1;
    }
    tb_table = table;
    tb_capacity = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i]) {
            size_t j = tb_slot(old[i]->vaddr, old[i]->n_insns);
            while (tb_table[j]) {
                j = (j + 1) & (cap - 1);
            }
            tb_table[j] = old[i];
        }
    }
    free(old);
    return 0;
}

/* The entry of (vaddr, n), created on first sight; NULL when memory ran out. */
static TbEntry *tb_lookup(uint64_t vaddr, uint32_t n, struct qemu_plugin_insn *first)
{
    if ((tb_count + 1) * 2 > tb_capacity && tb_grow() != 0) {
        return NULL;
    }
    size_t j = tb_slot(vaddr, n);
    while (tb_table[j]) {
        if (tb_table[j]->vaddr == vaddr && tb_table[j]->n_insns == n) {
            return tb_table[j];
        }
        j = (j + 1) & (tb_capacity - 1);
    }
    TbEntry *e = calloc(1, sizeof(*e));
    if (!e) {
        return NULL;
    }
    e->vaddr = vaddr;
    e->n_insns = n;
    const char *sym = first ? qemu_plugin_insn_symbol(first) : NULL;
    e->symbol = sym && *sym ? strdup(sym) : NULL;
    tb_table[j] = e;
    tb_count++;
    return e;
}

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
    if (tbs_path && n) {
        TbEntry *e = tb_lookup(qemu_plugin_tb_vaddr(tb), (uint32_t)n, qemu_plugin_tb_get_insn(tb, 0));
        if (e) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &e->count, n);
        } else {
            tb_alloc_failed = 1; /* reported: the per-TB sum then falls short of marked_insns */
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
        for (size_t i = 0; i < tb_capacity; i++) {
            if (tb_table[i]) {
                tb_table[i]->begin = tb_table[i]->count;
            }
        }
        in_marked_region = 1;
    } else if (a1 == MARK_END) {
        if (!in_marked_region) {
            unpaired_markers++;
            return;
        }
        for (int c = 0; c < N_CLASSES; c++) {
            marked[c] += counts[c] - begin_snapshot[c];
        }
        /* A TB first translated inside the region has begin == 0, which is right: it started at 0. */
        for (size_t i = 0; i < tb_capacity; i++) {
            if (tb_table[i]) {
                tb_table[i]->marked += tb_table[i]->count - tb_table[i]->begin;
            }
        }
        marker_pairs++;
        in_marked_region = 0;
    }
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    __atomic_fetch_add(&n_vcpus, 1, __ATOMIC_SEQ_CST);
}

/* Write through a temporary name and rename, so a reader never sees half a file. */
typedef int (*writer_fn)(FILE *fh, void *ctx);

static void write_atomically(const char *path, writer_fn write, void *ctx)
{
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp) {
        return;
    }
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    FILE *fh = fopen(tmp, "w");
    if (!fh) {
        fprintf(stderr, "insn_count: cannot write %s\n", tmp);
        free(tmp);
        return;
    }
    int ok = write(fh, ctx) == 0;
    ok = (fclose(fh) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "insn_count: cannot write %s\n", path);
        unlink(tmp);
    }
    free(tmp);
}

static int write_string(FILE *fh, void *ctx)
{
    return fputs((const char *)ctx, fh) >= 0 ? 0 : -1;
}

static int write_tbs(FILE *fh, void *ctx)
{
    if (fputs("# insn_count tbs v1: vaddr_hex n_insns marked_insns qemu_symbol\n", fh) < 0) {
        return -1;
    }
    for (size_t i = 0; i < tb_capacity; i++) {
        TbEntry *e = tb_table[i];
        if (e && e->marked) {
            if (fprintf(fh, "%" PRIx64 " %u %" PRIu64 " %s\n", e->vaddr, e->n_insns, e->marked,
                        e->symbol ? e->symbol : "-") < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    char json[640];
    uint64_t marked_total = marked[0] + marked[1] + marked[2];
    uint64_t total = counts[0] + counts[1] + counts[2];
    uint64_t tb_marked = 0;
    for (size_t i = 0; i < tb_capacity; i++) {
        if (tb_table[i]) {
            tb_marked += tb_table[i]->marked;
        }
    }
    if (in_marked_region) {
        unpaired_markers++;
    }
    snprintf(json, sizeof(json),
             "{\"marked_insns\":%" PRIu64 ",\"simd_fp\":%" PRIu64 ",\"load_store\":%" PRIu64
             ",\"other\":%" PRIu64 ",\"marker_pairs\":%" PRIu64 ",\"total_insns\":%" PRIu64
             ",\"unpaired_markers\":%" PRIu64 ",\"vcpus\":%u,\"tb_entries\":%zu,\"tb_marked_insns\":%" PRIu64
             ",\"tb_alloc_failed\":%d}\n",
             marked_total, marked[CLASS_SIMD_FP], marked[CLASS_LOAD_STORE], marked[CLASS_OTHER],
             marker_pairs, total, unpaired_markers, n_vcpus, tb_count, tb_marked, tb_alloc_failed);
    if (tbs_path) {
        write_atomically(tbs_path, write_tbs, NULL);
    }
    if (!out_path) {
        qemu_plugin_outs(json);
        return;
    }
    write_atomically(out_path, write_string, json);
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
        } else if (strncmp(argv[i], "tbs=", 4) == 0 && argv[i][4]) {
            tbs_path = strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "insn_count: unknown argument '%s' (expected out=PATH or tbs=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
