/* fuzz_api.c -- libFuzzer harness for the public autodiff API.
 *
 * The input bytes are a program: a two-byte header (which allocation the
 * allocator hook fails), then actions, one byte to choose each from the
 * ACTIONS table below followed by the bytes the action reads for its
 * arguments (a reader past the end yields zeros, so every input is
 * valid). The actions drive two tapes and one registry through the whole
 * public API: every leaf kind, every built-in op (the OPS table) plus four
 * custom ops through ad_registry/ad_apply/ad_apply_named, with handles
 * that may be nil, stale (after ad_tape_reset or ad_tape_free), of the
 * other tape or forged; sweeps of every kind, replay, reset, set_value,
 * the accessors, names, the checks of check.h, trace and DOT export, the
 * derivative modes (tangents, ad_forward, ad_backward_tangent, ad_jvp,
 * ad_hvp, ad_jacobian, ad_hessian), ad_gradient_nodes (whose nodes join
 * the harness's table), workspaces, ad_codegen (to streams in memory,
 * /dev/null, read-only or failing after some bytes; and, at most once per
 * input, on a tape of its own of a few thousand pseudo-random scalar ops,
 * for the generator's level order, table form and loops), the sparse API
 * (ad_sparse_jacobian_new, ad_sparse_hessian_new, ad_sparse_eval,
 * pattern, CSR, free, use after a reset), and an allocator hook that
 * fails the N-th allocation (N from the input, and re-armed by an action)
 * and refuses blocks over 1 MiB.
 *
 * It checks invariants, not only "no crash"; any violation is a
 * __builtin_trap() after a line on stderr naming the check:
 *  - every refused call names its reason: the tape's status and
 *    ad_tape_errmsg (non-empty, prefixed "<op>:") agree with what the
 *    harness predicts from the handles and shapes (a shape oracle per op),
 *    the first recording error is sticky, non-recording calls (sweeps,
 *    replay, set_value) never change the status, AD_ENOMEM happens only
 *    when the hook returned NULL;
 *  - a call with a nil, stale, foreign or forged handle never yields a
 *    live node, and the accessors return their documented "bad node"
 *    values for it;
 *  - every new node has the predicted shape, index, op, inputs and
 *    requires-grad flag, and its value matches a reference evaluation in
 *    the harness to 1e-9 of the magnitude of the terms (when those are
 *    finite) -- after recording and again after every ad_replay;
 *  - after every sweep, each adjoint matches a reference reverse pass in
 *    the harness (the vjp of each consumer applied to the engine's own
 *    adjoint), nodes the output does not depend on hold exactly 0, and the
 *    ad_param gradient buffers hold what AD_SWEEP_ASSIGN or accumulation
 *    promise, also when several ad_param views share or overlap; two
 *    sweeps give the same adjoints, a replay without changes the same
 *    values, bit for bit;
 *  - tangents, J v, both modes' Jacobians and H v's gradient match a
 *    reference Jacobian made of reverse passes in the harness, Hessians
 *    are exactly symmetric, ad_gradient_nodes' nodes hold the reference
 *    derivatives, and workspaces replay and sweep as their tape does, bit
 *    for bit;
 *  - ad_codegen answers the predicted status (AD_EIO exactly when a
 *    stream refused a write, AD_ENOMEM only when the hook did) with a
 *    "codegen:" message, leaves the tape's status, values and memory as
 *    they were, and writes the same text twice;
 *  - a sparse Jacobian's values match the reference Jacobian at its
 *    pattern, which holds every nonzero of the reference; a sparse
 *    Hessian's match the weighted ad_hessian of its outputs; patterns are
 *    ordered (lower triangle for a Hessian) and agree with the CSR form;
 *    misuse, and evaluation after a reset, are refused;
 *  - the hook sees a consistent osize for every block, ad_tape_memory
 *    equals the bytes the tape holds through it, the checks, trace and
 *    export give back every byte, and nothing is left at the end.
 * docs/reliability.md describes all of it; FUZZ_API_TRACE=1 narrates an
 * input, FUZZ_API_STATS=1 counts what a corpus reaches.
 *
 * Sizes are capped in the decoder (dimensions 1..8, with a few special
 * shapes: a 1031-vector, a 40x33 matrix, empty, invalid, too large), so a
 * run stays in the thousands of executions per second.
 *
 * Extending it: a new op is one line in OPS (name, arity, shape rule,
 * reference) plus, if its math is new, a case in ref_fwd/ref_vjp; a new
 * mode or entry point (the "adgrad" expression parser, say) is one line in
 * ACTIONS pointing at a function that reads its arguments with the rd_*
 * decoders. Keep the order of existing entries (append): the corpus and
 * tests/fuzz/make_api_corpus.py are encoded against the table indices.
 * Built-ins missing from OPS are skipped by apply_builtin and refused by
 * the adoption of ad_gradient_nodes' nodes (the tape is then reset). */
#define _GNU_SOURCE /* fopencookie: streams that keep or refuse what codegen writes */
#include <autodiff/autodiff.h>
#include <autodiff/check.h>
#include <autodiff/codegen.h>
#include <autodiff/sparse.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Invariant checks                                                    */
/* ------------------------------------------------------------------ */

static const char *g_action = "setup"; /* the action running, for the report */
static int g_trace = -1;                /* FUZZ_API_TRACE set: narrate the input */

static void violated(const char *what, int line)
{
    fprintf(stderr, "fuzz_api: invariant violated in action '%s' (line %d): %s\n", g_action,
            line, what);
    __builtin_trap();
}
#define CHECK(c)                                                                              \
    do {                                                                                      \
        if (!(c))                                                                             \
            violated(#c, __LINE__);                                                           \
    } while (0)

/* The reference math and the checking loops are left out of the coverage
 * instrumentation: their branches say nothing about the library, and
 * tracing every comparison in them would halve the speed. */
#if defined(__clang__)
#define NOCOV __attribute__((no_sanitize("coverage")))
#else
#define NOCOV
#endif

/* Values agree to 1e-9 of the magnitude of the terms that made them. */
#define TOL 1e-9
#define TINY 1e-280

NOCOV static int close_to(double got, double want, double mag)
{
    if (!isfinite(want) || !isfinite(mag))
        return 1; /* no promise where the terms overflow or are not numbers */
    return fabs(got - want) <= TOL * mag + TINY;
}

/* Equal, or both NaN. */
static int same(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

/* ------------------------------------------------------------------ */
/* The allocator hook                                                  */
/* ------------------------------------------------------------------ */

/* Blocks carry a header with their size, so every free and resize is
 * checked against the osize the library passes. One injector is shared by
 * all hooks of a run: it counts allocation requests and fails the one
 * numbered fail_at (and every later one when sticky). */
#define ALLOC_CAP ((size_t)1 << 20) /* larger requests are refused */
#define HDR 16
#define MAGIC 0x5eedf00du

typedef struct injector {
    unsigned long count, fail_at, failures;
    int sticky;
} injector;

typedef struct hook {
    injector *inj;
    size_t live_bytes;
    long live_blocks;
    size_t cap; /* larger requests are refused (0: ALLOC_CAP) */
} hook;

/* Large blocks (a tape's node chunk is 192 KiB) cost an mmap and page
 * faults per allocation under ASan, which would halve the executions per
 * second: a few freed ones are kept and handed out again for the same
 * size, refilled with garbage so nothing can rely on fresh memory. (A
 * use after free of those few blocks goes unnoticed; every other block is
 * freed for real.) */
#define BIG_BLOCK ((size_t)64 << 10)
static struct {
    unsigned char *base;
    size_t size;
} g_cache[4];

static unsigned char *cache_take(size_t nsize)
{
    for (int i = 0; i < 4; i++)
        if (g_cache[i].base && g_cache[i].size == nsize) {
            unsigned char *b = g_cache[i].base;
            g_cache[i].base = NULL;
            memset(b + HDR, 0xA5, nsize < 16384 ? nsize : 16384);
            return b;
        }
    return NULL;
}

static int cache_put(unsigned char *base, size_t size)
{
    for (int i = 0; i < 4; i++)
        if (!g_cache[i].base) {
            g_cache[i].base = base;
            g_cache[i].size = size;
            return 1;
        }
    return 0;
}

static void *hook_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    hook *h = ud;
    unsigned char *base = ptr ? (unsigned char *)ptr - HDR : NULL;
    if (base) {
        uint32_t magic;
        size_t size;
        memcpy(&magic, base, sizeof magic);
        memcpy(&size, base + 8, sizeof size);
        CHECK(magic == MAGIC);
        CHECK(size == osize); /* the library remembers the size it asked for */
    } else {
        CHECK(osize == 0);
    }
    if (nsize == 0) {
        if (base) {
            memset(base, 0, sizeof(uint32_t));
            if (osize < BIG_BLOCK || !cache_put(base, osize))
                free(base);
            h->live_bytes -= osize;
            h->live_blocks--;
        }
        return NULL;
    }
    injector *in = h->inj;
    in->count++;
    if (nsize > (h->cap ? h->cap : ALLOC_CAP) || (in->fail_at && (in->count == in->fail_at ||
                                              (in->sticky && in->count > in->fail_at)))) {
        in->failures++;
        return NULL;
    }
    unsigned char *nb = !base && nsize >= BIG_BLOCK ? cache_take(nsize) : NULL;
    if (!nb)
        nb = realloc(base, nsize + HDR);
    if (!nb) {
        in->failures++;
        return NULL;
    }
    uint32_t magic = MAGIC;
    memcpy(nb, &magic, sizeof magic);
    memcpy(nb + 8, &nsize, sizeof nsize);
    if (!base)
        h->live_blocks++;
    h->live_bytes += nsize - osize;
    return nb + HDR;
}

/* ------------------------------------------------------------------ */
/* Decoding the input                                                  */
/* ------------------------------------------------------------------ */

typedef struct rd {
    const uint8_t *p;
    size_t n, pos;
} rd;

static unsigned rd_u8(rd *r) { return r->pos < r->n ? r->p[r->pos++] : 0u; }
static unsigned rd_u16(rd *r) { return rd_u8(r) | rd_u8(r) << 8; }
static int rd_more(const rd *r) { return r->pos < r->n; }

/* A double: small multiples of 1/8, a table of telling values, or (rarely)
 * any 64 bits, NaN and infinities included. */
static double rd_double(rd *r)
{
    static const double table[16] = {0.0,  -0.0, 1.0,  -1.0,   0.5, -2.0, 3.0,    0.1,
                                     -7.25, 10.0, -100, 1000.0, 1e-3, 1e6, 1e200, 5e-310};
    unsigned v = rd_u8(r);
    if (v < 128)
        return ((double)v - 64.0) / 8.0;
    if (v < 240)
        return table[(v - 128) % 16];
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits |= (uint64_t)rd_u8(r) << (8 * i);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

#define BIG_VEC 1031u /* with BIG_ROWS x BIG_COLS: a few of them fill an arena block */
#define BIG_ROWS 40u
#define BIG_COLS 33u
/* A shape: scalars, vectors and matrices with dimensions 1..8, or with
 * dimensions taken from an existing node (so that matrix-vector ops find
 * operands that fit), or one time in eight a special one (invalid, empty,
 * large, too large). dims: the rows and columns of a node, or NULL. */
static ad_shape rd_shape(rd *r, const uint32_t *dims)
{
    unsigned b = rd_u8(r), d = rd_u8(r);
    uint32_t rows = 1 + (d & 7), cols = 1 + ((d >> 3) & 7);
    const int flip = (b & 8) != 0;
    ad_shape s;
    if (dims && (b & 7) >= 3 && (b & 7) <= 6) {
        const uint32_t R = dims[0], C = dims[1];
        switch (b & 7) {
        case 3: return ad_shape_vec(flip ? C : R);               /* matvec's x, dot, bias */
        case 4: return flip ? ad_shape_mat(R, C) : ad_shape_mat(C, R);
        case 5: return ad_shape_mat(rows, flip ? R : C);         /* columns that fit */
        default: return ad_shape_mat(flip ? R : C, cols);        /* rows that fit */
        }
    }
    switch (b & 7) {
    case 0: return ad_shape_scalar();
    case 1: case 3: return ad_shape_vec(rows);
    case 2: case 4: case 5: case 6: return ad_shape_mat(rows, cols);
    default: break;
    }
    switch ((b >> 3) % 13) {
    case 0: s.rows = 2, s.cols = 1, s.ndim = 0; return s;          /* scalar 2x1: invalid */
    case 1: s.rows = rows, s.cols = 2, s.ndim = 1; return s;       /* vector with 2 cols */
    case 2: s.rows = rows, s.cols = cols, s.ndim = 3; return s;
    case 3: s.rows = rows, s.cols = cols, s.ndim = -1; return s;
    case 4: return ad_shape_vec(0);
    case 5: return ad_shape_mat(0, cols);
    case 6: return ad_shape_mat(rows, 0);
    case 7: return ad_shape_vec(BIG_VEC);
    case 8: return ad_shape_mat(BIG_ROWS, BIG_COLS);
    case 9: return ad_shape_mat(1u << 20, 1u << 20);                /* 2^40: allowed, 8 TiB */
    case 10: return ad_shape_mat(1u << 21, 1u << 20);               /* over the limit */
    case 11: return ad_shape_mat(UINT32_MAX, UINT32_MAX);
    default: return ad_shape_mat(cols, rows);
    }
}

/* What ad_tape's check of a shape answers: AD_OK, AD_EMISUSE (invalid),
 * AD_ESHAPE (empty) or AD_ELIMIT (over 2^40 elements). */
static int shape_verdict(ad_shape s)
{
    int ok = (s.ndim == 0 && s.rows == 1 && s.cols == 1) || (s.ndim == 1 && s.cols == 1) ||
             s.ndim == 2;
    if (!ok)
        return AD_EMISUSE;
    if (s.rows == 0 || s.cols == 0)
        return AD_ESHAPE;
    if ((uint64_t)s.rows * s.cols > ((uint64_t)1 << 40))
        return AD_ELIMIT;
    return AD_OK;
}

static int same_shape(ad_shape a, ad_shape b)
{
    return a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols;
}

/* Decodes up to n doubles into buf: a few values, repeated cyclically. */
NOCOV static void rd_fill(rd *r, double *buf, size_t n)
{
    unsigned k = 1 + rd_u8(r) % 8;
    double v[8];
    for (unsigned i = 0; i < k; i++)
        v[i] = rd_double(r);
    for (size_t i = 0; i < n; i++)
        buf[i] = v[i % k];
}

/* ------------------------------------------------------------------ */
/* Custom ops                                                          */
/* ------------------------------------------------------------------ */

static size_t out_size(const ad_call *k) { return ad_shape_size(k->out.shape); }

/* cube: y = x^3 */
static void cube_fwd(const ad_call *k)
{
    for (size_t i = 0; i < out_size(k); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < out_size(k); i++)
            k->in[0].grad[i] += 3.0 * k->in[0].val[i] * k->in[0].val[i] * k->out.grad[i];
}

/* Same shapes for every operand. */
static int same_all_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                          size_t cap)
{
    (void)c;
    for (int i = 1; i < nin; i++)
        if (!same_shape(in[i], in[0])) {
            snprintf(msg, cap, "operand %d differs in shape from operand 1", i + 1);
            return AD_ESHAPE;
        }
    *out = in[0];
    return AD_OK;
}

/* fma3: y = a b + c */
static void fma3_fwd(const ad_call *k)
{
    for (size_t i = 0; i < out_size(k); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[1].val[i] + k->in[2].val[i];
}
static void fma3_vjp(const ad_call *k)
{
    for (size_t i = 0; i < out_size(k); i++) {
        const double g = k->out.grad[i];
        if (k->in[0].grad)
            k->in[0].grad[i] += g * k->in[1].val[i];
        if (k->in[1].grad)
            k->in[1].grad[i] += g * k->in[0].val[i];
        if (k->in[2].grad)
            k->in[2].grad[i] += g;
    }
}

/* sum4: y = a + b + c + d (the largest arity) */
static void sum4_fwd(const ad_call *k)
{
    for (size_t i = 0; i < out_size(k); i++)
        k->out.val[i] = k->in[0].val[i] + k->in[1].val[i] + k->in[2].val[i] + k->in[3].val[i];
}
static void sum4_vjp(const ad_call *k)
{
    for (int j = 0; j < 4; j++)
        if (k->in[j].grad)
            for (size_t i = 0; i < out_size(k); i++)
                k->in[j].grad[i] += k->out.grad[i];
}

/* reshape0: zeros of a shape chosen by the constant -- lets the fuzzer
 * hand the engine any output shape a custom rule may produce (invalid,
 * empty, too large), which the engine must check. */
static ad_shape reshape0_out(double c)
{
    static const ad_shape outs[8] = {{1, 1, 0}, {3, 1, 1}, {2, 3, 2}, {0, 4, 2},
                                     {2, 2, 0}, {5, 5, 7}, {1u << 21, 1u << 20, 2}, {4, 2, 1}};
    int i = c >= 0 && c < 8 ? (int)c : 0;
    return outs[i];
}
static int reshape0_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                          size_t cap)
{
    (void)in, (void)nin, (void)msg, (void)cap;
    *out = reshape0_out(c);
    return AD_OK;
}
static void reshape0_fwd(const ad_call *k) { memset(k->out.val, 0, out_size(k) * sizeof(double)); }
static void reshape0_vjp(const ad_call *k) { (void)k; }

/* Forward-mode and second-order rules (reshape0 has none: the modes must
 * refuse a tape holding it). */
static void cube_jvp(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < out_size(k); i++)
        tout[i] = 3.0 * k->in[0].val[i] * k->in[0].val[i] * tin[0][i];
}
static void cube_hvp(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (tg[0])
        for (size_t i = 0; i < out_size(k); i++)
            tg[0][i] += 6.0 * k->in[0].val[i] * k->out.grad[i] * tin[0][i];
}
static void fma3_jvp(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < out_size(k); i++)
        tout[i] = tin[0][i] * k->in[1].val[i] + k->in[0].val[i] * tin[1][i] + tin[2][i];
}
static void fma3_hvp(const ad_call *k, const double *const *tin, double *const *tg)
{
    for (size_t i = 0; i < out_size(k); i++) {
        if (tg[0])
            tg[0][i] += k->out.grad[i] * tin[1][i];
        if (tg[1])
            tg[1][i] += k->out.grad[i] * tin[0][i];
    }
}
static void sum4_jvp(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < out_size(k); i++)
        tout[i] = tin[0][i] + tin[1][i] + tin[2][i] + tin[3][i];
}

/* The vjps as recorded ops, for ad_gradient_nodes. */
static void cube_vjp_ops(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                         ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_mul(t, g, ad_scale(t, ad_square(t, in[0]), 3.0));
}
static void fma3_vjp_ops(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                         ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_mul(t, g, in[1]);
    dx[1] = ad_mul(t, g, in[0]);
    dx[2] = g;
}
static void sum4_vjp_ops(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                         ad_node *dx)
{
    (void)t, (void)in, (void)out, (void)c;
    dx[0] = dx[1] = dx[2] = dx[3] = g;
}

static const ad_opdef cube_def = {.name = "cube", .arity = 1, .forward = cube_fwd,
                                  .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                  .jvp = cube_jvp, .hvp = cube_hvp, .vjp_ops = cube_vjp_ops};
static const ad_opdef fma3_def = {.name = "fma3", .arity = 3, .shape = same_all_shape,
                                  .forward = fma3_fwd, .vjp = fma3_vjp,
                                  .size = sizeof(ad_opdef), .jvp = fma3_jvp, .hvp = fma3_hvp,
                                  .vjp_ops = fma3_vjp_ops};
static const ad_opdef sum4_def = {.name = "sum4", .arity = 4, .shape = same_all_shape,
                                  .forward = sum4_fwd, .vjp = sum4_vjp,
                                  .size = sizeof(ad_opdef), .jvp = sum4_jvp,
                                  .flags = AD_OPDEF_LINEAR, .vjp_ops = sum4_vjp_ops};
static const ad_opdef reshape0_def = {.name = "reshape0", .arity = 1, .shape = reshape0_shape,
                                      .forward = reshape0_fwd, .vjp = reshape0_vjp};
static const ad_opdef *const CUSTOM[4] = {&cube_def, &fma3_def, &sum4_def, &reshape0_def};

/* Descriptors the registry must refuse. */
#define BAD_DEF(n, a, f, v) {.name = n, .arity = a, .forward = f, .vjp = v}
static const ad_opdef bad_noname = BAD_DEF(NULL, 1, cube_fwd, cube_vjp);
static const ad_opdef bad_empty = BAD_DEF("", 1, cube_fwd, cube_vjp);
static const ad_opdef bad_arity0 = BAD_DEF("bad_arity0", 0, cube_fwd, cube_vjp);
static const ad_opdef bad_arity5 = BAD_DEF("bad_arity5", 5, cube_fwd, cube_vjp);
static const ad_opdef bad_nofwd = BAD_DEF("bad_nofwd", 1, NULL, cube_vjp);
static const ad_opdef bad_novjp = BAD_DEF("bad_novjp", 1, cube_fwd, NULL);
static const ad_opdef dup_add = BAD_DEF("add", 2, cube_fwd, cube_vjp);

/* ------------------------------------------------------------------ */
/* The ops: shape rule and reference math of each                      */
/* ------------------------------------------------------------------ */

enum rule {
    R_SAME,      /* unary elementwise */
    R_BCAST,     /* numpy's broadcasting in two dimensions (see bcast_dims) */
    R_REDUCE,    /* anything -> scalar */
    R_DOT,       /* same shapes -> scalar */
    R_MATVEC,
    R_MATVEC_T,
    R_MATMUL,
    R_MATMUL_NT,
    R_OUTER,
    R_TRANSPOSE,
    R_AFFINE,
    R_XENT,
    R_SAME_ALL,  /* custom: every operand the same shape */
    R_FROM_C,    /* custom: reshape0 */
    R_LSE        /* vector -> scalar, matrix -> vector of its rows */
};

enum ref {
    F_ADD, F_SUB, F_MUL, F_DIV, F_NEG, F_SCALE, F_ADDC, F_SQUARE, F_SQRT, F_EXP, F_LOG, F_TANH,
    F_SIGMOID, F_RELU, F_ABS, F_POWC, F_SUM, F_MEAN, F_DOT, F_MATVEC, F_MATVEC_T, F_MATMUL,
    F_MATMUL_NT, F_OUTER, F_TRANSPOSE, F_AFFINE, F_XENT, F_CUBE, F_FMA3, F_SUM4, F_ZERO,
    F_STEP, F_SIGN, F_LSE, F_SIN, F_COS, F_TAN, F_ATAN, F_SINH, F_COSH, F_EXPM1, F_ERF,
    F_ERFC, F_FLOOR, F_CEIL, F_ROUND
};

typedef struct opspec {
    const char *name; /* the descriptor's name (ad_node_op) */
    int arity;
    int takes_c;      /* the node constant is meaningful */
    int rule;
    int ref;
    ad_node (*f1)(ad_tape *, ad_node);
    ad_node (*f1c)(ad_tape *, ad_node, double);
    ad_node (*f2)(ad_tape *, ad_node, ad_node);
    ad_node (*f3)(ad_tape *, ad_node, ad_node, ad_node);
    const ad_opdef *custom; /* recorded with ad_apply */
} opspec;

#define OP1(n, f, r, ref) {n, 1, 0, r, ref, f, NULL, NULL, NULL, NULL}
#define OP1C(n, f, r, ref) {n, 1, 1, r, ref, NULL, f, NULL, NULL, NULL}
#define OP2(n, f, r, ref) {n, 2, 0, r, ref, NULL, NULL, f, NULL, NULL}
#define OP3(n, f, r, ref) {n, 3, 0, r, ref, NULL, NULL, NULL, f, NULL}
#define OPX(def, r, ref) {NULL, 0, 1, r, ref, NULL, NULL, NULL, NULL, &def}

/* One line per op. Built-ins are recorded through their functions (and
 * through their descriptors by the apply actions); custom ops through
 * ad_apply. Append new ops at the end. */
static const opspec OPS[] = {
    OP2("add", ad_add, R_BCAST, F_ADD),
    OP2("sub", ad_sub, R_BCAST, F_SUB),
    OP2("mul", ad_mul, R_BCAST, F_MUL),
    OP2("div", ad_div, R_BCAST, F_DIV),
    OP1("neg", ad_neg, R_SAME, F_NEG),
    OP1C("scale", ad_scale, R_SAME, F_SCALE),
    OP1C("addc", ad_add_const, R_SAME, F_ADDC),
    OP1("square", ad_square, R_SAME, F_SQUARE),
    OP1("sqrt", ad_sqrt, R_SAME, F_SQRT),
    OP1("exp", ad_exp, R_SAME, F_EXP),
    OP1("log", ad_log, R_SAME, F_LOG),
    OP1("tanh", ad_tanh, R_SAME, F_TANH),
    OP1("sigmoid", ad_sigmoid, R_SAME, F_SIGMOID),
    OP1("relu", ad_relu, R_SAME, F_RELU),
    OP1("abs", ad_abs, R_SAME, F_ABS),
    OP1C("powc", ad_pow_const, R_SAME, F_POWC),
    OP1("sum", ad_sum, R_REDUCE, F_SUM),
    OP1("mean", ad_mean, R_REDUCE, F_MEAN),
    OP2("dot", ad_dot, R_DOT, F_DOT),
    OP2("matvec", ad_matvec, R_MATVEC, F_MATVEC),
    OP2("matvec_t", ad_matvec_t, R_MATVEC_T, F_MATVEC_T),
    OP2("matmul", ad_matmul, R_MATMUL, F_MATMUL),
    OP2("matmul_nt", ad_matmul_nt, R_MATMUL_NT, F_MATMUL_NT),
    OP2("outer", ad_outer, R_OUTER, F_OUTER),
    OP1("transpose", ad_transpose, R_TRANSPOSE, F_TRANSPOSE),
    OP3("affine", ad_affine, R_AFFINE, F_AFFINE),
    OP2("softmax_xent", ad_softmax_xent, R_XENT, F_XENT),
    OPX(cube_def, R_SAME, F_CUBE),
    OPX(fma3_def, R_SAME_ALL, F_FMA3),
    OPX(sum4_def, R_SAME_ALL, F_SUM4),
    OPX(reshape0_def, R_FROM_C, F_ZERO),
    OP1("step", ad_step, R_SAME, F_STEP),
    OP1("sign", ad_sign, R_SAME, F_SIGN),
    OP1("logsumexp", ad_logsumexp, R_LSE, F_LSE),
    OP1("sin", ad_sin, R_SAME, F_SIN),
    OP1("cos", ad_cos, R_SAME, F_COS),
    OP1("tan", ad_tan, R_SAME, F_TAN),
    OP1("atan", ad_atan, R_SAME, F_ATAN),
    OP1("sinh", ad_sinh, R_SAME, F_SINH),
    OP1("cosh", ad_cosh, R_SAME, F_COSH),
    OP1("expm1", ad_expm1, R_SAME, F_EXPM1),
    OP1("erf", ad_erf, R_SAME, F_ERF),
    OP1("erfc", ad_erfc, R_SAME, F_ERFC),
    OP1("floor", ad_floor, R_SAME, F_FLOOR),
    OP1("ceil", ad_ceil, R_SAME, F_CEIL),
    OP1("round", ad_round, R_SAME, F_ROUND),
};
#define NOPS (sizeof OPS / sizeof OPS[0])

/* FUZZ_API_STATS=1: at exit, how often each op recorded and took part in
 * a checked sweep (to see what a corpus reaches). */
static unsigned long g_recorded[64], g_swept[64];
/* and how often the new entry points got far: codegen OK (small, big),
 * sparse objects made, evaluations checked against a reference
 * (Jacobian, Hessian) */
static unsigned long g_cg_ok, g_cgbig_ok, g_sp_made, g_sp_jac, g_sp_hess;
static void print_stats(void);

static const char *op_name(const opspec *o) { return o->custom ? o->custom->name : o->name; }
static int op_arity(const opspec *o) { return o->custom ? o->custom->arity : o->arity; }

static const opspec *spec_by_name(const char *name)
{
    for (size_t i = 0; i < NOPS; i++)
        if (strcmp(op_name(&OPS[i]), name) == 0)
            return &OPS[i];
    return NULL;
}

/* A shape seen as rows x cols for broadcasting: a scalar 1 x 1, a vector
 * (n) a row 1 x n, a matrix as it is. */
static void bdims(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 2 ? s.rows : 1;
    *C = s.ndim == 2 ? s.cols : s.ndim == 1 ? s.rows : 1;
}

/* The binary elementwise ops' one rule: each dimension equal in both
 * operands or 1 in one of them (repeated); the result is a matrix if an
 * operand is one, else a vector if one is, else a scalar. */
static int bcast_dims(ad_shape a, ad_shape b, ad_shape *out)
{
    size_t Ra, Ca, Rb, Cb;
    bdims(a, &Ra, &Ca);
    bdims(b, &Rb, &Cb);
    if ((Ra != Rb && Ra != 1 && Rb != 1) || (Ca != Cb && Ca != 1 && Cb != 1))
        return AD_ESHAPE;
    const size_t R = Ra > Rb ? Ra : Rb, C = Ca > Cb ? Ca : Cb;
    if (a.ndim == 2 || b.ndim == 2)
        *out = ad_shape_mat((uint32_t)R, (uint32_t)C);
    else if (a.ndim == 1 || b.ndim == 1)
        *out = ad_shape_vec((uint32_t)C);
    else
        *out = ad_shape_scalar();
    return AD_OK;
}

/* The shape oracle: AD_OK and *out, or the status the engine must give
 * for valid operands of shapes s[]. */
static int oracle(const opspec *o, const ad_shape *s, double c, ad_shape *out)
{
    const ad_shape a = s[0], b = s[1];
    switch (o->rule) {
    case R_SAME: *out = a; break;
    case R_BCAST:
        if (bcast_dims(a, b, out) != AD_OK)
            return AD_ESHAPE;
        break;
    case R_REDUCE: *out = ad_shape_scalar(); break;
    case R_DOT:
        if (!same_shape(a, b))
            return AD_ESHAPE;
        *out = ad_shape_scalar();
        break;
    case R_MATVEC:
    case R_MATVEC_T:
        if (a.ndim != 2 || b.ndim != 1 || b.rows != (o->rule == R_MATVEC ? a.cols : a.rows))
            return AD_ESHAPE;
        *out = ad_shape_vec(o->rule == R_MATVEC ? a.rows : a.cols);
        break;
    case R_MATMUL:
        if (a.ndim != 2 || b.ndim != 2 || a.cols != b.rows)
            return AD_ESHAPE;
        *out = ad_shape_mat(a.rows, b.cols);
        break;
    case R_MATMUL_NT:
        if (a.ndim != 2 || b.ndim != 2 || a.cols != b.cols)
            return AD_ESHAPE;
        *out = ad_shape_mat(a.rows, b.rows);
        break;
    case R_OUTER:
        if (a.ndim != 1 || b.ndim != 1)
            return AD_ESHAPE;
        *out = ad_shape_mat(a.rows, b.rows);
        break;
    case R_TRANSPOSE:
        if (a.ndim != 2)
            return AD_ESHAPE;
        *out = ad_shape_mat(a.cols, a.rows);
        break;
    case R_AFFINE:
        if (a.ndim != 2 || b.ndim == 0 || (b.ndim == 1 && b.rows != a.cols) ||
            (b.ndim == 2 && b.cols != a.cols) || s[2].ndim != 1 || s[2].rows != a.rows)
            return AD_ESHAPE;
        *out = b.ndim == 1 ? ad_shape_vec(a.rows) : ad_shape_mat(b.rows, a.rows);
        break;
    case R_XENT:
        if (a.ndim == 0 || !same_shape(a, b))
            return AD_ESHAPE;
        *out = ad_shape_scalar();
        break;
    case R_SAME_ALL:
        for (int i = 1; i < op_arity(o); i++)
            if (!same_shape(s[i], a))
                return AD_ESHAPE;
        *out = a;
        break;
    case R_FROM_C: *out = reshape0_out(c); break;
    case R_LSE:
        if (a.ndim == 0)
            return AD_ESHAPE;
        *out = a.ndim == 2 ? ad_shape_vec(a.rows) : ad_shape_scalar();
        break;
    default: return AD_ESHAPE;
    }
    return shape_verdict(*out); /* the engine checks what a rule produced */
}

/* Whether candidate shape sk may stand as operand k next to operand 0's
 * shape s0 (used to steer the fuzzer towards ops that record). */
static int compatible(const opspec *o, int k, ad_shape s0, ad_shape sk)
{
    switch (o->rule) {
    case R_BCAST: {
        ad_shape out;
        return bcast_dims(s0, sk, &out) == AD_OK;
    }
    case R_DOT:
    case R_XENT:
    case R_SAME_ALL: return same_shape(s0, sk);
    case R_MATVEC: return sk.ndim == 1 && sk.rows == s0.cols;
    case R_MATVEC_T: return sk.ndim == 1 && sk.rows == s0.rows;
    case R_MATMUL: return sk.ndim == 2 && sk.rows == s0.cols;
    case R_MATMUL_NT: return sk.ndim == 2 && sk.cols == s0.cols;
    case R_OUTER: return sk.ndim == 1;
    case R_AFFINE:
        return k == 1 ? (sk.ndim == 1 && sk.rows == s0.cols) || (sk.ndim == 2 && sk.cols == s0.cols)
                      : sk.ndim == 1 && sk.rows == s0.rows;
    default: return 1;
    }
}

/* ---- reference evaluation ---- */

/* Element of operand shape s feeding output element i (broadcasts). */
static size_t bidx(ad_shape s, ad_shape out, size_t i)
{
    size_t R, C, Rs, Cs;
    bdims(out, &R, &C);
    bdims(s, &Rs, &Cs);
    (void)R;
    const size_t r = i / C, c = i % C;
    return (Rs == 1 ? 0 : r) * Cs + (Cs == 1 ? 0 : c);
}

/* y = f(x, c) and dy/dx(x, y, c) of the unary elementwise ops, as the
 * engine defines them (autodiff/src/ops/scalar_ops.h, docs/math.md). */
NOCOV static double un_val(int f, double x, double c)
{
    switch (f) {
    case F_NEG: return -x;
    case F_SCALE: return c * x;
    case F_ADDC: return x + c;
    case F_SQUARE: return x * x;
    case F_SQRT: return sqrt(x);
    case F_EXP: return exp(x);
    case F_LOG: return log(x);
    case F_TANH: return tanh(x);
    case F_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case F_RELU: return x > 0.0 ? x : 0.0;
    case F_ABS: return fabs(x);
    case F_POWC: return pow(x, c);
    case F_CUBE: return x * x * x;
    case F_STEP: return x > 0.0 ? 1.0 : (x <= 0.0 ? 0.0 : x); /* NaN stays NaN */
    case F_SIGN: return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : (x == 0.0 ? 0.0 : x));
    case F_SIN: return sin(x);
    case F_COS: return cos(x);
    case F_TAN: return tan(x);
    case F_ATAN: return atan(x);
    case F_SINH: return sinh(x);
    case F_COSH: return cosh(x);
    case F_EXPM1: return expm1(x);
    case F_ERF: return erf(x);
    case F_ERFC: return erfc(x);
    case F_FLOOR: return floor(x);
    case F_CEIL: return ceil(x);
    case F_ROUND: return nearbyint(x); /* half to even in the default rounding mode */
    default: return 0.0;
    }
}
NOCOV static double un_der(int f, double x, double y, double c)
{
    /* At a NaN input the kinked ops' conventions differ between the
     * reverse sweep (relu'(NaN) = abs'(NaN) = 0, from x > 0 and x < 0
     * being false) and the gradient recorded as ops (step and sign of NaN
     * are NaN): no claim there. */
    if (isnan(x))
        return NAN;
    switch (f) {
    case F_NEG: return -1.0;
    case F_SCALE: return c;
    case F_ADDC: return 1.0;
    case F_SQUARE: return 2.0 * x;
    case F_SQRT: return 0.5 / y;
    case F_EXP: return y;
    case F_LOG: return 1.0 / x;
    case F_TANH: return 1.0 - y * y;
    case F_SIGMOID: return y * (1.0 - y);
    case F_RELU: return x > 0.0 ? 1.0 : 0.0;
    case F_ABS: return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0);
    case F_POWC: return c == 0.0 ? 0.0 : c * pow(x, c - 1.0);
    case F_CUBE: return 3.0 * x * x;
    case F_SIN: return cos(x);
    case F_COS: return -sin(x);
    case F_TAN: return 1.0 + y * y;
    case F_ATAN: return 1.0 / (1.0 + x * x);
    case F_SINH: return cosh(x);
    case F_COSH: return sinh(x);
    case F_EXPM1: return exp(x);
    case F_ERF: return 1.1283791670955126 * exp(-x * x); /* 2 / sqrt(pi) */
    case F_ERFC: return -1.1283791670955126 * exp(-x * x);
    default: return 0.0; /* step, sign, floor, ceil, round: 0 */
    }
}

static void rows_cols(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 2 ? s.rows : 1;
    *C = s.ndim == 2 ? s.cols : s.rows;
}

NOCOV static double row_lse(const double *z, size_t n)
{
    double m = z[0];
    for (size_t j = 1; j < n; j++)
        m = z[j] > m ? z[j] : m;
    double s = 0;
    for (size_t j = 0; j < n; j++)
        s += exp(z[j] - m);
    return m + log(s);
}

/* Reference forward: y and, per element, the magnitude of its terms. */
NOCOV static void ref_fwd(const opspec *o, const double *const *x, const ad_shape *s, double c,
                    ad_shape os, double *y, double *mag)
{
    const size_t n = ad_shape_size(os);
    const int f = o->ref;
    for (size_t i = 0; i < n; i++)
        y[i] = mag[i] = 0.0;
    switch (f) {
    case F_ADD: case F_SUB: case F_MUL: case F_DIV:
        for (size_t i = 0; i < n; i++) {
            const double a = x[0][bidx(s[0], os, i)], b = x[1][bidx(s[1], os, i)];
            y[i] = f == F_ADD ? a + b : f == F_SUB ? a - b : f == F_MUL ? a * b : a / b;
            mag[i] = f == F_ADD || f == F_SUB ? fabs(a) + fabs(b) : fabs(y[i]);
        }
        break;
    case F_SUM: case F_MEAN: {
        const size_t m = ad_shape_size(s[0]);
        for (size_t i = 0; i < m; i++)
            y[0] += x[0][i], mag[0] += fabs(x[0][i]);
        if (f == F_MEAN)
            y[0] /= (double)m, mag[0] /= (double)m;
        break;
    }
    case F_DOT:
        for (size_t i = 0; i < ad_shape_size(s[0]); i++)
            y[0] += x[0][i] * x[1][i], mag[0] += fabs(x[0][i] * x[1][i]);
        break;
    case F_MATVEC: {
        const size_t K = s[0].rows, N = s[0].cols;
        for (size_t i = 0; i < K; i++)
            for (size_t j = 0; j < N; j++)
                y[i] += x[0][i * N + j] * x[1][j], mag[i] += fabs(x[0][i * N + j] * x[1][j]);
        break;
    }
    case F_MATVEC_T: {
        const size_t K = s[0].rows, N = s[0].cols;
        for (size_t i = 0; i < K; i++)
            for (size_t j = 0; j < N; j++)
                y[j] += x[0][i * N + j] * x[1][i], mag[j] += fabs(x[0][i * N + j] * x[1][i]);
        break;
    }
    case F_MATMUL: case F_MATMUL_NT: {
        const size_t M = s[0].rows, P = s[0].cols, N = f == F_MATMUL ? s[1].cols : s[1].rows;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                for (size_t q = 0; q < P; q++) {
                    const double b = f == F_MATMUL ? x[1][q * N + j] : x[1][j * P + q];
                    y[i * N + j] += x[0][i * P + q] * b;
                    mag[i * N + j] += fabs(x[0][i * P + q] * b);
                }
        break;
    }
    case F_OUTER: {
        const size_t M = s[0].rows, N = s[1].rows;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                y[i * N + j] = x[0][i] * x[1][j], mag[i * N + j] = fabs(y[i * N + j]);
        break;
    }
    case F_TRANSPOSE: {
        const size_t M = s[0].rows, N = s[0].cols;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                y[j * M + i] = x[0][i * N + j], mag[j * M + i] = fabs(y[j * M + i]);
        break;
    }
    case F_AFFINE: {
        const size_t K = s[0].rows, N = s[0].cols, B = s[1].ndim == 2 ? s[1].rows : 1;
        for (size_t r = 0; r < B; r++)
            for (size_t i = 0; i < K; i++) {
                double acc = 0, m = 0;
                for (size_t j = 0; j < N; j++)
                    acc += x[1][r * N + j] * x[0][i * N + j], m += fabs(x[1][r * N + j] * x[0][i * N + j]);
                y[r * K + i] = acc + x[2][i];
                mag[r * K + i] = m + fabs(x[2][i]);
            }
        break;
    }
    case F_XENT: {
        size_t R, C;
        rows_cols(s[0], &R, &C);
        for (size_t r = 0; r < R; r++) {
            const double *z = x[0] + r * C, *t = x[1] + r * C;
            const double lse = row_lse(z, C);
            for (size_t j = 0; j < C; j++) {
                y[0] += t[j] * (lse - z[j]);
                mag[0] += fabs(t[j]) * (1.0 + fabs(lse) + fabs(z[j]));
            }
        }
        break;
    }
    case F_FMA3:
        for (size_t i = 0; i < n; i++)
            y[i] = x[0][i] * x[1][i] + x[2][i], mag[i] = fabs(x[0][i] * x[1][i]) + fabs(x[2][i]);
        break;
    case F_LSE: {
        size_t R, C;
        rows_cols(s[0], &R, &C);
        for (size_t r = 0; r < R; r++) {
            double m = 0;
            for (size_t j = 0; j < C; j++)
                m = fabs(x[0][r * C + j]) > m ? fabs(x[0][r * C + j]) : m;
            y[r] = row_lse(x[0] + r * C, C);
            mag[r] = 1.0 + m + fabs(y[r]); /* the max and the log, rounded */
        }
        break;
    }
    case F_SUM4:
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < 4; k++)
                y[i] += x[k][i], mag[i] += fabs(x[k][i]);
        break;
    case F_ZERO: break;
    default: /* unary elementwise */
        for (size_t i = 0; i < n; i++) {
            y[i] = un_val(f, x[0][i], c);
            mag[i] = fabs(y[i]) + (f == F_ADDC ? fabs(x[0][i]) + fabs(c) : 0.0);
        }
        break;
    }
}

/* Reference vjp: adds operand k's share of the adjoint (from the output's
 * value y and adjoint g) into acc, and the terms' magnitudes into mag. */
NOCOV static void ref_vjp(const opspec *o, int k, const double *const *x, const ad_shape *s, double c,
                    ad_shape os, const double *y, const double *g, double *acc, double *mag)
{
    const size_t n = ad_shape_size(os);
    const int f = o->ref;
#define ADD(i, v)                                                                             \
    do {                                                                                      \
        const double v_ = (v);                                                                \
        acc[i] += v_;                                                                         \
        mag[i] += fabs(v_);                                                                   \
    } while (0)
    switch (f) {
    case F_ADD: case F_SUB: case F_MUL: case F_DIV:
        for (size_t i = 0; i < n; i++) {
            const double a = x[0][bidx(s[0], os, i)], b = x[1][bidx(s[1], os, i)];
            double d;
            if (k == 0)
                d = f == F_MUL ? b : f == F_DIV ? 1.0 / b : 1.0;
            else
                d = f == F_ADD ? 1.0 : f == F_SUB ? -1.0 : f == F_MUL ? a : -y[i] / b;
            ADD(bidx(s[k], os, i), g[i] * d);
        }
        break;
    case F_SUM: case F_MEAN: {
        const size_t m = ad_shape_size(s[0]);
        for (size_t i = 0; i < m; i++)
            ADD(i, f == F_SUM ? g[0] : g[0] / (double)m);
        break;
    }
    case F_DOT:
        for (size_t i = 0; i < ad_shape_size(s[0]); i++)
            ADD(i, g[0] * x[1 - k][i]);
        break;
    case F_MATVEC: case F_MATVEC_T: {
        const size_t K = s[0].rows, N = s[0].cols;
        for (size_t i = 0; i < K; i++)
            for (size_t j = 0; j < N; j++) {
                /* matvec: y_i += W_ij x_j; matvec_t: y_j += W_ij x_i */
                const size_t yi = f == F_MATVEC ? i : j, xi = f == F_MATVEC ? j : i;
                if (k == 0)
                    ADD(i * N + j, g[yi] * x[1][xi]);
                else
                    ADD(xi, g[yi] * x[0][i * N + j]);
            }
        break;
    }
    case F_MATMUL: case F_MATMUL_NT: {
        const size_t M = s[0].rows, P = s[0].cols, N = f == F_MATMUL ? s[1].cols : s[1].rows;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                for (size_t q = 0; q < P; q++) {
                    const size_t bi = f == F_MATMUL ? q * N + j : j * P + q;
                    if (k == 0)
                        ADD(i * P + q, g[i * N + j] * x[1][bi]);
                    else
                        ADD(bi, g[i * N + j] * x[0][i * P + q]);
                }
        break;
    }
    case F_OUTER: {
        const size_t M = s[0].rows, N = s[1].rows;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                ADD(k == 0 ? i : j, g[i * N + j] * (k == 0 ? x[1][j] : x[0][i]));
        break;
    }
    case F_TRANSPOSE: {
        const size_t M = s[0].rows, N = s[0].cols;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                ADD(i * N + j, g[j * M + i]);
        break;
    }
    case F_AFFINE: {
        const size_t K = s[0].rows, N = s[0].cols, B = s[1].ndim == 2 ? s[1].rows : 1;
        for (size_t r = 0; r < B; r++)
            for (size_t i = 0; i < K; i++) {
                const double gy = g[r * K + i];
                if (k == 2) {
                    ADD(i, gy);
                    continue;
                }
                for (size_t j = 0; j < N; j++) {
                    if (k == 0)
                        ADD(i * N + j, gy * x[1][r * N + j]);
                    else
                        ADD(r * N + j, gy * x[0][i * N + j]);
                }
            }
        break;
    }
    case F_XENT: {
        size_t R, C;
        rows_cols(s[0], &R, &C);
        for (size_t r = 0; r < R; r++) {
            const double *z = x[0] + r * C, *t = x[1] + r * C;
            const double lse = row_lse(z, C);
            double tsum = 0, tabs = 0;
            for (size_t j = 0; j < C; j++)
                tsum += t[j], tabs += fabs(t[j]);
            for (size_t j = 0; j < C; j++) {
                if (k == 0) {
                    const double sm = exp(z[j] - lse);
                    acc[r * C + j] += g[0] * (sm * tsum - t[j]);
                    /* the softmax carries the rounding of lse, and tsum
                     * that of a sum that may cancel */
                    mag[r * C + j] += fabs(g[0]) * (sm * tabs * (1.0 + fabs(lse) + fabs(z[j])) +
                                                    fabs(t[j]));
                } else {
                    acc[r * C + j] += g[0] * (lse - z[j]);
                    mag[r * C + j] += fabs(g[0]) * (1.0 + fabs(lse) + fabs(z[j]));
                }
            }
        }
        break;
    }
    case F_FMA3:
        for (size_t i = 0; i < n; i++)
            ADD(i, g[i] * (k == 0 ? x[1][i] : k == 1 ? x[0][i] : 1.0));
        break;
    case F_LSE: {
        size_t R, C;
        rows_cols(s[0], &R, &C);
        for (size_t r = 0; r < R; r++) {
            const double lse = row_lse(x[0] + r * C, C);
            for (size_t j = 0; j < C; j++) {
                const double z = x[0][r * C + j], sm = exp(z - lse);
                acc[r * C + j] += g[r] * sm;
                mag[r * C + j] += fabs(g[r]) * sm * (1.0 + fabs(z) + fabs(lse));
            }
        }
        break;
    }
    case F_SUM4:
        for (size_t i = 0; i < n; i++)
            ADD(i, g[i]);
        break;
    case F_ZERO: break;
    default:
        for (size_t i = 0; i < n; i++)
            ADD(i, g[i] * un_der(f, x[0][i], y[i], c));
        break;
    }
#undef ADD
}

/* ------------------------------------------------------------------ */
/* Harness state                                                       */
/* ------------------------------------------------------------------ */

#define MAXN 96        /* nodes the harness tracks per tape (it records no more) */
#define NSTALE 8
#define POOL 4224      /* doubles in each caller-owned pool (ad_param) */
#define MAXSIZE 40000  /* largest node the harness reads back */
#define TANCAP 64      /* tangent seeds the harness remembers per leaf (K x size) */

enum { K_CONST, K_VAR, K_PARAM, K_OP };

typedef struct fnode {
    ad_node h;
    ad_shape shape;
    size_t size;
    int kind;
    int spec;       /* K_OP: index into OPS */
    int nin;
    int in[4];      /* K_OP: table indices of the operands */
    double c;
    int voff, goff; /* K_PARAM: offsets into vpool/gpool; goff -1: no gradient */
    int rg;         /* expected requires-grad flag */
} fnode;

typedef struct ftape {
    ad_tape *t;
    hook al;               /* this tape's hook (shares the injector) */
    int own_alloc;         /* created with the hook (else realloc/free) */
    int with_registry;
    fnode nodes[MAXN];
    int n;
    ad_node stale[NSTALE]; /* handles of earlier generations (a ring) */
    int nstale, stale_next;
    int dirty;             /* leaves changed since the values were computed */
    /* forward mode: the tangent storage as the harness knows it */
    int K;                 /* directions set up (0: none, or not for this recording) */
    int tan_n;             /* the table's length when they were set up */
    int fwd;               /* a forward sweep ran since (ad_backward_tangent may follow) */
    signed char seeded[MAXN];          /* 0: zero tangent, 1: in tanbuf, -1: unknown */
    double (*tanbuf)[TANCAP];          /* the seeds (g_tanbuf: not zeroed per input) */
    unsigned gen;          /* incremented by every reset (retire_nodes) */
    /* the sparse object made on this tape (one at a time) and what it is of */
    ad_sparse *sp;
    int sp_hess, sp_nout, sp_nin, sp_out[3], sp_in[3];
    unsigned sp_gen;
    size_t sp_len;
} ftape;

typedef struct state {
    rd r;
    injector inj;
    hook reg_al, chk_al, ws_al, big_al;
    int big_runs;          /* codegen_big runs so far (capped per input) */
    ad_registry *reg;
    int registered[4];     /* CUSTOM[i] is in reg */
    ftape tp[2];
    int cur;
    unsigned tape_b_mode; /* the second tape is made on first use */
    int tape_b_open;
} state;

static double vpool[POOL], gpool[POOL];
static double g_tanbuf[2][MAXN][TANCAP];
static double dbuf[MAXSIZE], seedbuf[MAXSIZE];
static double scratch[1 << 20];
static size_t scratch_used;

static double *scratch_get(size_t n)
{
    if (n > sizeof scratch / sizeof scratch[0] - scratch_used)
        return NULL;
    double *p = scratch + scratch_used;
    scratch_used += n;
    return p;
}

/* Expectations around one call. */
typedef struct pre {
    int st;
    char msg[300];
    size_t len;
    unsigned long fails;
} pre;

static void pre_call(state *S, ftape *ft, pre *p)
{
    p->st = ad_tape_status(ft->t);
    snprintf(p->msg, sizeof p->msg, "%s", ad_tape_errmsg(ft->t));
    p->len = ad_tape_len(ft->t);
    p->fails = S->inj.failures;
}

static void check_msg(const char *msg)
{
    CHECK(msg != NULL);
    CHECK(msg[0] != '\0');
    CHECK(strlen(msg) < 1000);
}

static int msg_names(const char *msg, const char *op)
{
    size_t n = strlen(op);
    return strncmp(msg, op, n) == 0 && msg[n] == ':';
}

/* After a recording call that returned res. want: the status the call
 * must give (AD_OK: it must succeed unless memory runs out). op: the
 * prefix its message must carry (NULL: not checked). Returns 1 when res is
 * a new node. */
static int post_record(state *S, ftape *ft, const pre *p, ad_node res, int want, const char *op)
{
    ad_tape *t = ft->t;
    if (!t) {
        CHECK(ad_node_is_nil(res));
        return 0;
    }
    const int st = ad_tape_status(t);
    const char *msg = ad_tape_errmsg(t);
    CHECK(msg != NULL);
    if (p->st != AD_OK) { /* sticky: the call did nothing */
        CHECK(ad_node_is_nil(res));
        CHECK(st == p->st);
        CHECK(strcmp(msg, p->msg) == 0);
        CHECK(ad_tape_len(t) == p->len);
        return 0;
    }
    if (!ad_node_is_nil(res)) {
        CHECK(want == AD_OK);
        CHECK(st == AD_OK);
        CHECK(ad_tape_len(t) == p->len + 1);
        CHECK(ad_node_index(t, res) == p->len);
        return 1;
    }
    CHECK(st != AD_OK);
    check_msg(msg);
    CHECK(ad_tape_len(t) == p->len);
    if (want == AD_OK)
        CHECK(st == AD_ENOMEM);
    else
        CHECK(st == want || (want == AD_ENOMEM && st == AD_ENOMEM));
    if (st == AD_ENOMEM)
        CHECK(S->inj.failures > p->fails);
    if (op)
        CHECK(msg_names(msg, op));
    return 0;
}

/* After a call that records nothing (sweep, replay, set_value) and
 * returned r; want as above. */
static void post_call(state *S, ftape *ft, const pre *p, int r, int want)
{
    ad_tape *t = ft->t;
    if (!t) {
        CHECK(r == AD_EMISUSE);
        return;
    }
    CHECK(ad_tape_status(t) == p->st); /* never changes the recording's status */
    CHECK(ad_tape_len(t) == p->len);
    const char *msg = ad_tape_errmsg(t);
    CHECK(msg != NULL);
    if (p->st != AD_OK) {
        CHECK(r == p->st);
        CHECK(strcmp(msg, p->msg) == 0);
        return;
    }
    if (r == AD_OK) {
        CHECK(want == AD_OK);
        CHECK(msg[0] == '\0');
        return;
    }
    check_msg(msg);
    if (g_trace > 0 && r != want)
        fprintf(stderr, "  status %d, predicted %d: %s\n", r, want, msg);
    if (want == AD_OK)
        CHECK(r == AD_ENOMEM);
    else
        CHECK(r == want);
    if (r == AD_ENOMEM)
        CHECK(S->inj.failures > p->fails);
}

/* ---- operands ---- */

enum { H_VALID, H_NIL, H_STALE, H_FOREIGN, H_FORGED };

typedef struct opnd {
    ad_node h;
    int cls;
    int idx; /* H_VALID: table index */
} opnd;

/* A handle of another tape or generation may, with probability 2^-32,
 * carry the same tag as the live tape; the harness then makes no claim. */
static int tag_clash(const ftape *ft, ad_node h)
{
    for (int i = 0; i < ft->n; i++)
        if (ft->nodes[i].h.tag_ == h.tag_)
            return 1;
    return 0;
}

static opnd pick(state *S, ftape *ft, rd *r)
{
    unsigned b = rd_u8(r);
    opnd o = {ad_nil(), H_NIL, -1};
    if (b < 224 && ft->n > 0) {
        /* recent nodes are picked more often */
        int i = (int)(b % 2 ? ft->n - 1 - (int)(b / 2) % ft->n : (int)(b / 2) % ft->n);
        o.h = ft->nodes[i].h, o.cls = H_VALID, o.idx = i;
        return o;
    }
    ftape *other = &S->tp[ft == &S->tp[0]];
    switch (b % 6) {
    case 1:
        if (ft->nstale) {
            o.h = ft->stale[rd_u8(r) % ft->nstale], o.cls = H_STALE;
            if (tag_clash(ft, o.h))
                o.cls = H_VALID, o.idx = -1;
        }
        break;
    case 2:
        if (other->n) {
            o.h = other->nodes[rd_u8(r) % other->n].h, o.cls = H_FOREIGN;
            if (tag_clash(ft, o.h))
                o.cls = H_VALID, o.idx = -1;
        }
        break;
    case 3: /* a live tag with an id past the end */
        if (ft->n) {
            o.h = ft->nodes[0].h;
            o.h.id_ = (uint32_t)ad_tape_len(ft->t) + rd_u8(r);
            o.cls = H_FORGED;
        }
        break;
    case 4: /* a live id with another tag */
        if (ft->n) {
            o.h = ft->nodes[rd_u8(r) % ft->n].h;
            o.h.tag_ ^= 1u + rd_u8(r);
            o.cls = H_FORGED;
        }
        break;
    default: break;
    }
    return o;
}

/* An operand for position k of op o: a node of a fitting shape when the
 * selector asks for one and the table has one, else any pick. */
static opnd pick_for(state *S, ftape *ft, rd *r, const opspec *o, int k, const opnd *first)
{
    unsigned sel = rd_u8(r);
    if (sel < 160 && k > 0 && first->cls == H_VALID && first->idx >= 0 && ft->n > 0) {
        const ad_shape s0 = ft->nodes[first->idx].shape;
        for (int j = 0; j < ft->n; j++) {
            int i = (int)((sel + (unsigned)j) % (unsigned)ft->n);
            if (compatible(o, k, s0, ft->nodes[i].shape)) {
                opnd p = {ft->nodes[i].h, H_VALID, i};
                return p;
            }
        }
    }
    return pick(S, ft, r);
}

/* ---- the node table ---- */

static void retire_nodes(ftape *ft)
{
    for (int i = 0; i < ft->n; i++) {
        ft->stale[ft->stale_next] = ft->nodes[i].h;
        ft->stale_next = (ft->stale_next + 1) % NSTALE;
        if (ft->nstale < NSTALE)
            ft->nstale++;
    }
    ft->n = 0;
    ft->dirty = 0;
    ft->K = 0;
    ft->fwd = 0;
    ft->gen++;
}

static fnode *add_node(ftape *ft, ad_node h, ad_shape s, int kind)
{
    if (g_trace > 0)
        fprintf(stderr, "  node %d: kind %d, shape ndim %d %ux%u\n", ft->n, kind, s.ndim,
                (unsigned)s.rows, (unsigned)s.cols);
    fnode *nd = &ft->nodes[ft->n++];
    memset(nd, 0, sizeof *nd);
    nd->h = h;
    nd->shape = s;
    nd->size = ad_shape_size(s);
    nd->kind = kind;
    nd->goff = -1;
    return nd;
}

/* Whatever any handle's accessors must answer. */
static void check_accessors(ftape *ft, opnd o)
{
    ad_tape *t = ft->t;
    ad_node in[AD_MAX_ARITY];
    if (o.cls != H_VALID || !t) {
        CHECK(ad_value(t, o.h) == NULL);
        CHECK(ad_grad(t, o.h) == NULL);
        CHECK(isnan(ad_scalar_value(t, o.h)));
        CHECK(ad_node_shape(t, o.h).ndim == -1);
        CHECK(ad_node_index(t, o.h) == 0);
        CHECK(ad_node_op(t, o.h) == NULL);
        CHECK(ad_node_inputs(t, o.h, in) == -1);
        CHECK(ad_node_const(t, o.h) == 0.0);
        CHECK(ad_node_requires_grad(t, o.h) == 0);
        CHECK(ad_node_is_variable(t, o.h) == 0);
        CHECK(ad_node_name(t, o.h) == NULL);
        return;
    }
    if (o.idx < 0)
        return; /* a tag clash: no claim */
    const fnode *nd = &ft->nodes[o.idx];
    CHECK(same_shape(ad_node_shape(t, o.h), nd->shape));
    const size_t idx = ad_node_index(t, o.h);
    CHECK(idx >= 1 && idx < ad_tape_len(t));
    ad_node back = ad_tape_node(t, idx);
    CHECK(back.id_ == o.h.id_ && back.tag_ == o.h.tag_);
    CHECK(ad_node_requires_grad(t, o.h) == nd->rg);
    CHECK(ad_node_is_variable(t, o.h) == (nd->kind != K_OP && nd->rg));
    const double *v = ad_value(t, o.h);
    CHECK(v != NULL);
    CHECK(same(ad_scalar_value(t, o.h), v[0]));
    const double *g = ad_grad(t, o.h);
    CHECK((g != NULL) == (nd->rg != 0));
    const ad_opdef *def = ad_node_op(t, o.h);
    CHECK(def != NULL && def->name != NULL);
    const int k = ad_node_inputs(t, o.h, in);
    if (nd->kind == K_OP) {
        const opspec *sp = &OPS[nd->spec];
        CHECK(strcmp(def->name, op_name(sp)) == 0);
        CHECK(k == nd->nin);
        for (int i = 0; i < k; i++) {
            const ad_node want = ft->nodes[nd->in[i]].h;
            CHECK(in[i].id_ == want.id_ && in[i].tag_ == want.tag_);
        }
        if (sp->takes_c && !sp->custom)
            CHECK(same(ad_node_const(t, o.h), nd->c));
    } else {
        CHECK(k == 0);
        CHECK(ad_node_const(t, o.h) == 0.0);
        if (nd->kind == K_PARAM) {
            CHECK(v == vpool + nd->voff);
            CHECK(g == (nd->goff >= 0 ? gpool + nd->goff : NULL));
        }
    }
    CHECK(ad_tape_node(t, 0).id_ == 0);
    CHECK(ad_tape_node(t, ad_tape_len(t)).id_ == 0);
}

/* The node's value against the reference of its op on its operands'
 * current values. */
NOCOV static void check_forward(ftape *ft, int i)
{
    const fnode *nd = &ft->nodes[i];
    if (nd->kind != K_OP || nd->size > MAXSIZE)
        return;
    const opspec *o = &OPS[nd->spec];
    const double *x[4];
    ad_shape s[4];
    for (int k = 0; k < nd->nin; k++) {
        x[k] = ad_value(ft->t, ft->nodes[nd->in[k]].h);
        CHECK(x[k] != NULL);
        s[k] = ft->nodes[nd->in[k]].shape;
    }
    const double *y = ad_value(ft->t, nd->h);
    CHECK(y != NULL);
    const size_t mark = scratch_used;
    double *ref = scratch_get(nd->size), *mag = scratch_get(nd->size);
    if (ref && mag) {
        ref_fwd(o, x, s, nd->c, nd->shape, ref, mag);
        for (size_t e = 0; e < nd->size; e++)
            CHECK(close_to(y[e], ref[e], mag[e]));
    }
    scratch_used = mark;
}

/* The tape's recorded length must be the table's. */
static void check_len(ftape *ft)
{
    if (ft->t && ad_tape_status(ft->t) == AD_OK)
        CHECK(ad_tape_len(ft->t) == (size_t)ft->n + 1);
}

static void check_memory(ftape *ft)
{
    if (ft->t && ft->own_alloc)
        CHECK(ad_tape_memory(ft->t) == ft->al.live_bytes);
}

/* ------------------------------------------------------------------ */
/* Actions                                                             */
/* ------------------------------------------------------------------ */

static ftape *cur(state *S) { return &S->tp[S->cur]; }

/* The rows and columns of a node of the current tape chosen by the next
 * byte, for rd_shape; NULL when the tape has none. */
static const uint32_t *node_dims(ftape *ft, rd *r, uint32_t dims[2])
{
    const unsigned b = rd_u8(r);
    if (!ft->n)
        return NULL;
    const ad_shape s = ft->nodes[b % (unsigned)ft->n].shape;
    dims[0] = s.ndim == 0 ? 1 : s.rows;
    dims[1] = s.ndim == 2 ? s.cols : 1;
    return dims;
}

/* Fits in the harness's buffers, and the hook (or realloc) can serve it. */
static int leaf_ok(const ftape *ft, ad_shape s)
{
    if (ft->n >= MAXN)
        return 0;
    if (shape_verdict(s) != AD_OK)
        return 1;
    size_t n = ad_shape_size(s);
    return n <= MAXSIZE || (ft->own_alloc && ft->t); /* the hook refuses what is too big */
}

/* The status a valid leaf of shape s must end with. */
static int leaf_want(ad_shape s)
{
    int v = shape_verdict(s);
    if (v != AD_OK)
        return v;
    return ad_shape_size(s) * sizeof(double) > ALLOC_CAP ? AD_ENOMEM : AD_OK;
}

static void leaf_copy(state *S, int kind, int scalar_fn)
{
    ftape *ft = cur(S);
    rd *r = &S->r;
    uint32_t dims[2];
    ad_shape s = scalar_fn ? ad_shape_scalar() : rd_shape(r, node_dims(ft, r, dims));
    unsigned mode = rd_u8(r);
    if (!leaf_ok(ft, s))
        return;
    const size_t n = shape_verdict(s) == AD_OK ? ad_shape_size(s) : 0;
    const double *data = NULL;
    if (n <= MAXSIZE && !(mode & 1)) {
        rd_fill(r, dbuf, n ? n : 1);
        data = dbuf;
    }
    pre p;
    pre_call(S, ft, &p);
    ad_node h;
    if (scalar_fn)
        h = kind == K_VAR ? ad_scalar_var(ft->t, dbuf[0] = rd_double(r))
                          : ad_scalar(ft->t, dbuf[0] = rd_double(r));
    else
        h = kind == K_VAR ? ad_variable(ft->t, s, data) : ad_constant(ft->t, s, data);
    if (scalar_fn)
        data = dbuf;
    const char *op = kind == K_VAR ? "variable" : "constant";
    if (!post_record(S, ft, &p, h, leaf_want(s), op))
        return;
    fnode *nd = add_node(ft, h, s, kind);
    nd->rg = kind == K_VAR;
    const double *v = ad_value(ft->t, h);
    CHECK(v != NULL);
    for (size_t i = 0; i < n; i++)
        CHECK(data ? memcmp(&v[i], &data[i], sizeof(double)) == 0 : (v[i] == 0.0 && !signbit(v[i])));
    opnd o = {h, H_VALID, ft->n - 1};
    check_accessors(ft, o);
}

static void act_constant(state *S) { leaf_copy(S, K_CONST, 0); }
static void act_variable(state *S) { leaf_copy(S, K_VAR, 0); }
static void act_scalar(state *S) { leaf_copy(S, K_CONST, 1); }
static void act_scalar_var(state *S) { leaf_copy(S, K_VAR, 1); }

static void act_param(state *S)
{
    ftape *ft = cur(S);
    rd *r = &S->r;
    uint32_t dims[2];
    ad_shape s = rd_shape(r, node_dims(ft, r, dims));
    unsigned mode = rd_u8(r);
    unsigned voff = rd_u16(r), goff = rd_u16(r);
    if (ft->n >= MAXN)
        return;
    const int verdict = shape_verdict(s);
    const size_t n = verdict == AD_OK ? ad_shape_size(s) : 0;
    if (n > POOL)
        return; /* the caller's buffers must hold the shape */
    voff %= (unsigned)(POOL - n + 1);
    goff %= (unsigned)(POOL - n + 1);
    const int with_grad = (mode & 3) != 0, null_value = (mode & 0x1c) == 0x1c;
    pre p;
    pre_call(S, ft, &p);
    ad_node h = ad_param(ft->t, s, null_value ? NULL : vpool + voff, with_grad ? gpool + goff : NULL);
    const int want = null_value ? AD_EMISUSE : verdict;
    if (!post_record(S, ft, &p, h, want, "param"))
        return;
    fnode *nd = add_node(ft, h, s, K_PARAM);
    nd->voff = (int)voff;
    nd->goff = with_grad ? (int)goff : -1;
    nd->rg = with_grad;
    opnd o = {h, H_VALID, ft->n - 1};
    check_accessors(ft, o);
}

/* Records op o on operands in[] (through its function, or ad_apply when
 * via_apply or a custom op) and checks the outcome. */
static void record_op(state *S, const opspec *o, const opnd *in, int nin, double c, int via_apply,
                      const ad_opdef *def, int null_array)
{
    ftape *ft = cur(S);
    ad_tape *t = ft->t;
    const int arity = op_arity(o);
    if (ft->n >= MAXN)
        return;
    /* what the engine must answer */
    int want = AD_OK;
    ad_shape out = {0, 0, -1};
    if (nin != arity || null_array) {
        want = AD_EMISUSE;
    } else {
        for (int k = 0; k < nin; k++)
            if (in[k].cls != H_VALID)
                want = AD_EMISUSE;
        int known = 1;
        for (int k = 0; k < nin; k++)
            known &= in[k].idx >= 0;
        if (want == AD_OK && !known)
            want = -1; /* a tag clash: no claim */
        if (want == AD_OK) {
            ad_shape s[4];
            for (int k = 0; k < nin; k++)
                s[k] = ft->nodes[in[k].idx].shape;
            want = oracle(o, s, c, &out);
            if (want == AD_OK && ad_shape_size(out) * sizeof(double) > ALLOC_CAP)
                want = AD_ENOMEM;
        }
    }
    if (!ft->own_alloc && shape_verdict(out) == AD_OK && ad_shape_size(out) > MAXSIZE)
        return; /* realloc would be asked for it */
    ad_node h[4];
    for (int k = 0; k < 4; k++)
        h[k] = k < nin ? in[k].h : ad_nil();
    pre p;
    pre_call(S, ft, &p);
    ad_node res;
    if (via_apply || o->custom)
        res = ad_apply(t, def ? def : o->custom, null_array ? NULL : h, nin, c);
    else if (o->f1)
        res = o->f1(t, h[0]);
    else if (o->f1c)
        res = o->f1c(t, h[0], c);
    else if (o->f2)
        res = o->f2(t, h[0], h[1]);
    else
        res = o->f3(t, h[0], h[1], h[2]);
    if (want == -1) { /* a tag clash: only the generic promises */
        if (t && ad_tape_status(t) != AD_OK)
            check_msg(ad_tape_errmsg(t));
        if (!ad_node_is_nil(res)) { /* a node the table lacks: start afresh */
            retire_nodes(ft);
            ad_tape_reset(t);
        }
        return;
    }
    if (!post_record(S, ft, &p, res, want, op_name(o)))
        return;
    CHECK(same_shape(ad_node_shape(t, res), out));
    if (g_trace > 0) {
        fprintf(stderr, "  %s(", op_name(o));
        for (int k = 0; k < nin; k++)
            fprintf(stderr, "%s%d", k ? ", " : "", in[k].idx);
        fprintf(stderr, "; c = %g)\n", c);
    }
    fnode *nd = add_node(ft, res, out, K_OP);
    nd->spec = (int)(o - OPS);
    nd->nin = nin;
    nd->c = c;
    for (int k = 0; k < nin; k++) {
        nd->in[k] = in[k].idx;
        nd->rg |= ft->nodes[in[k].idx].rg;
    }
    opnd self = {res, H_VALID, ft->n - 1};
    check_accessors(ft, self);
    check_forward(ft, ft->n - 1);
    g_recorded[nd->spec]++;
}

/* Reads operands and a constant for op o. */
static int read_operands(state *S, const opspec *o, opnd *in)
{
    ftape *ft = cur(S);
    const int arity = op_arity(o);
    for (int k = 0; k < arity; k++)
        in[k] = k == 0 ? pick(S, ft, &S->r) : pick_for(S, ft, &S->r, o, k, &in[0]);
    return arity;
}

static void act_op(state *S)
{
    const opspec *o = &OPS[rd_u8(&S->r) % NOPS];
    opnd in[4];
    int n = read_operands(S, o, in);
    double c = o->takes_c ? rd_double(&S->r) : 0.0;
    if (o->rule == R_FROM_C)
        c = (double)(rd_u8(&S->r) % 9);
    record_op(S, o, in, n, c, 0, NULL, 0);
}

/* A built-in through its descriptor (ad_builtin_op, ad_apply), sometimes
 * with the wrong operand count, a NULL operand array or no descriptor. */
static void act_apply_builtin(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const size_t count = ad_builtin_count();
    const size_t i = rd_u8(r) % (count + 1);
    const ad_opdef *def = ad_builtin_op(i);
    unsigned mode = rd_u8(r);
    if (i == count) {
        CHECK(def == NULL);
        pre p;
        pre_call(S, ft, &p);
        ad_node h[1] = {ft->n ? ft->nodes[0].h : ad_nil()};
        ad_node res = ad_apply(ft->t, NULL, h, 1, 0.0);
        post_record(S, ft, &p, res, AD_EMISUSE, "apply");
        return;
    }
    CHECK(def != NULL && def->name != NULL);
    const opspec *o = spec_by_name(def->name);
    if (!o)
        return; /* a built-in this harness does not know yet: add it to OPS */
    CHECK(def->arity == o->arity);
    opnd in[4];
    int n = read_operands(S, o, in);
    if ((mode & 7) == 7 && n > 1)
        n--;
    else if ((mode & 7) == 6 && n < 4)
        in[n++] = pick(S, ft, r);
    const double c = rd_double(r);
    record_op(S, o, in, n, c, 1, def, (mode & 0x18) == 0x18 && n > 0);
}

/* A custom or built-in op found by name in the tape's registry. */
static void act_apply_named(state *S)
{
    static const char *const names[] = {"cube", "fma3", "sum4", "reshape0", "add",
                                        "matvec", "softmax_xent", "nosuch", ""};
    rd *r = &S->r;
    ftape *ft = cur(S);
    const char *name = names[rd_u8(r) % (sizeof names / sizeof names[0])];
    const unsigned mode = rd_u8(r);
    const opspec *o = spec_by_name(name);
    int known = o != NULL;
    if (o && o->custom) {
        known = 0;
        for (int i = 0; i < 4; i++)
            if (CUSTOM[i] == o->custom)
                known = ft->with_registry && S->registered[i];
    }
    if (!known || (mode & 0xf0) == 0xf0) {
        pre p;
        pre_call(S, ft, &p);
        ad_node h[2] = {ad_nil(), ad_nil()};
        if ((mode & 0xf0) == 0xf0) {
            ad_node res = ad_apply_named(ft->t, NULL, h, 1, 0.0);
            post_record(S, ft, &p, res, AD_EMISUSE, "apply");
        } else {
            ad_node res = ad_apply_named(ft->t, name, h, 1, 0.0);
            post_record(S, ft, &p, res, AD_ENOTFOUND, "apply");
        }
        return;
    }
    opnd in[4];
    const int n = read_operands(S, o, in);
    double c = o->rule == R_FROM_C ? (double)(rd_u8(r) % 9) : rd_double(r);
    if (ft->n >= MAXN)
        return;
    /* the same expectations as a direct recording, through the name */
    int want = AD_OK;
    ad_shape out = {0, 0, -1};
    for (int k = 0; k < n; k++)
        if (in[k].cls != H_VALID)
            want = AD_EMISUSE;
    for (int k = 0; k < n && want == AD_OK; k++)
        if (in[k].idx < 0)
            return;
    if (want == AD_OK) {
        ad_shape s[4];
        for (int k = 0; k < n; k++)
            s[k] = ft->nodes[in[k].idx].shape;
        want = oracle(o, s, c, &out);
        if (want == AD_OK && ad_shape_size(out) * sizeof(double) > ALLOC_CAP)
            want = AD_ENOMEM;
    }
    if (!ft->own_alloc && shape_verdict(out) == AD_OK && ad_shape_size(out) > MAXSIZE)
        return; /* realloc would be asked for it */
    ad_node h[4];
    for (int k = 0; k < n; k++)
        h[k] = in[k].h;
    pre p;
    pre_call(S, ft, &p);
    ad_node res = ad_apply_named(ft->t, name, h, n, c);
    if (!post_record(S, ft, &p, res, want, name))
        return;
    CHECK(same_shape(ad_node_shape(ft->t, res), out));
    fnode *nd = add_node(ft, res, out, K_OP);
    nd->spec = (int)(o - OPS);
    nd->nin = n;
    nd->c = c;
    for (int k = 0; k < n; k++) {
        nd->in[k] = in[k].idx;
        nd->rg |= ft->nodes[in[k].idx].rg;
    }
    opnd self = {res, H_VALID, ft->n - 1};
    check_accessors(ft, self);
    check_forward(ft, ft->n - 1);
}

/* ---- sweeps ---- */

/* After a successful sweep from node out (table index) with seed (NULL:
 * 1): every adjoint against a reference reverse pass, and the ad_param
 * buffers against what accumulation or AD_SWEEP_ASSIGN promise. before:
 * gpool as it was before the sweep. */
NOCOV static void check_sweep(ftape *ft, int out, const double *seed, int assign, const double *before,
                        int values)
{
    ad_tape *t = ft->t;
    const size_t mark = scratch_used;
    double *ref[MAXN], *mag[MAXN];
    int dep[MAXN] = {0};
    for (int i = 0; i < ft->n; i++) {
        ref[i] = scratch_get(ft->nodes[i].size);
        mag[i] = scratch_get(ft->nodes[i].size);
        if (!ref[i] || !mag[i] || ft->nodes[i].size > MAXSIZE) {
            scratch_used = mark;
            return;
        }
        memset(ref[i], 0, ft->nodes[i].size * sizeof(double));
        memset(mag[i], 0, ft->nodes[i].size * sizeof(double));
    }
    /* what the output depends on */
    dep[out] = 1;
    for (int i = out; i >= 0; i--)
        if (dep[i] && ft->nodes[i].kind == K_OP)
            for (int k = 0; k < ft->nodes[i].nin; k++)
                dep[ft->nodes[i].in[k]] = 1;
    for (size_t e = 0; e < ft->nodes[out].size; e++) {
        const double sd = seed ? seed[e] : 1.0;
        ref[out][e] += sd;
        mag[out][e] += fabs(sd);
    }
    /* each consumer's vjp, applied to the engine's own adjoint of it */
    for (int c = out; c >= 0; c--) {
        const fnode *nd = &ft->nodes[c];
        if (!dep[c] || nd->kind != K_OP || !nd->rg)
            continue;
        const double *g = ad_grad(t, nd->h), *y = ad_value(t, nd->h);
        CHECK(g != NULL && y != NULL);
        const double *x[4];
        ad_shape s[4];
        for (int k = 0; k < nd->nin; k++) {
            x[k] = ad_value(t, ft->nodes[nd->in[k]].h);
            s[k] = ft->nodes[nd->in[k]].shape;
        }
        if (values)
            g_swept[nd->spec]++;
        for (int k = 0; k < nd->nin; k++) {
            const int i = nd->in[k];
            if (!ft->nodes[i].rg)
                continue;
            ref_vjp(&OPS[nd->spec], k, x, s, nd->c, nd->shape, y, g, ref[i], mag[i]);
        }
    }
    for (int i = 0; i < ft->n; i++) {
        const fnode *nd = &ft->nodes[i];
        const double *g = ad_grad(t, nd->h);
        CHECK((g != NULL) == (nd->rg != 0));
        if (!g || nd->kind == K_PARAM)
            continue;
        for (size_t e = 0; e < nd->size; e++) {
            if (!dep[i])
                CHECK(g[e] == 0.0); /* "0 for a node the output does not depend on" */
            else if (values)
                CHECK(close_to(g[e], ref[i][e], mag[i][e]));
        }
    }
    /* the caller's gradient buffers */
    static double want[POOL], wmag[POOL];
    static unsigned char covered[POOL];
    memset(covered, 0, sizeof covered);
    for (int e = 0; e < POOL; e++)
        want[e] = before[e], wmag[e] = fabs(before[e]);
    for (int i = 0; i < ft->n; i++) {
        const fnode *nd = &ft->nodes[i];
        if (nd->kind != K_PARAM || nd->goff < 0)
            continue;
        for (size_t e = 0; e < nd->size; e++) {
            const size_t at = (size_t)nd->goff + e;
            if (assign && !covered[at])
                want[at] = 0.0, wmag[at] = 0.0;
            covered[at] = 1;
            want[at] += ref[i][e];
            wmag[at] += mag[i][e];
        }
    }
    for (int e = 0; e < POOL; e++) {
        if (!covered[e])
            CHECK(memcmp(&gpool[e], &before[e], sizeof(double)) == 0);
        else if (values)
            CHECK(close_to(gpool[e], want[e], wmag[e]));
    }
    scratch_used = mark;
}

static void act_sweep(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const unsigned kind = rd_u8(r) % 7;
    const unsigned extra = rd_u8(r);
    opnd o = pick(S, ft, r);
    size_t n = o.cls == H_VALID && o.idx >= 0 ? ft->nodes[o.idx].size : 1;
    if (n > MAXSIZE)
        return;
    rd_fill(r, seedbuf, n);
    const double *seed = seedbuf;
    unsigned flags = 0;
    int want = AD_OK;
    const int scalar = o.cls == H_VALID && o.idx >= 0 && ft->nodes[o.idx].shape.ndim == 0;
    if (o.cls != H_VALID)
        want = AD_EMISUSE;
    switch (kind) {
    case 0: seed = NULL; break;                                        /* ad_backward */
    case 1: break;                                                     /* ad_backward_seed */
    case 2: seed = (extra & 1) ? NULL : seed; break;                   /* ad_sweep, adding */
    case 3: seed = (extra & 1) ? NULL : seed; flags = AD_SWEEP_ASSIGN; break;
    case 4: flags = 2u << (extra % 8); want = AD_EMISUSE; break;       /* unknown flags */
    case 5: seed = NULL; want = AD_EMISUSE; break;                     /* backward_seed(NULL) */
    default: seed = NULL; flags = AD_SWEEP_ASSIGN; break;
    }
    if (want == AD_OK && !seed && !scalar)
        want = AD_EMISUSE;
    if (want == AD_OK && o.idx < 0)
        return; /* tag clash */
    static double before[POOL];
    memcpy(before, gpool, sizeof gpool);
    pre p;
    pre_call(S, ft, &p);
    int rc;
    if (kind == 0)
        rc = ad_backward(ft->t, o.h);
    else if (kind == 1 || kind == 5)
        rc = ad_backward_seed(ft->t, o.h, seed);
    else
        rc = ad_sweep(ft->t, o.h, seed, flags);
    post_call(S, ft, &p, rc, want);
    if (rc != AD_OK) {
        if (ft->t && ad_tape_status(ft->t) == AD_OK)
            CHECK(memcmp(before, gpool, sizeof gpool) == 0); /* a refused sweep writes nothing */
        return;
    }
    /* the zeros and untouched buffers always; the numbers only when the
     * values are those the leaves now hold */
    check_sweep(ft, o.idx, seed, flags == AD_SWEEP_ASSIGN, before, !ft->dirty);
    if (extra & 0x80) {
        /* a second sweep gives the same adjoints, bit for bit */
        const size_t mark = scratch_used;
        double *copy[MAXN] = {0};
        for (int i = 0; i < ft->n; i++) {
            const double *g = ad_grad(ft->t, ft->nodes[i].h);
            if (g && ft->nodes[i].kind != K_PARAM && (copy[i] = scratch_get(ft->nodes[i].size)))
                memcpy(copy[i], g, ft->nodes[i].size * sizeof(double));
        }
        memcpy(before, gpool, sizeof gpool);
        pre_call(S, ft, &p);
        rc = ad_sweep(ft->t, o.h, seed, flags);
        post_call(S, ft, &p, rc, AD_OK);
        if (rc == AD_OK) {
            for (int i = 0; i < ft->n; i++)
                if (copy[i]) {
                    const double *g = ad_grad(ft->t, ft->nodes[i].h);
                    for (size_t e = 0; e < ft->nodes[i].size; e++)
                        CHECK(same(g[e], copy[i][e]));
                }
            if (flags == AD_SWEEP_ASSIGN)
                for (int e = 0; e < POOL; e++)
                    CHECK(same(gpool[e], before[e]));
        }
        scratch_used = mark;
    }
}

static void act_replay(state *S)
{
    ftape *ft = cur(S);
    const size_t mark = scratch_used;
    double *copy[MAXN] = {0};
    const int clean = !ft->dirty && ft->t && ad_tape_status(ft->t) == AD_OK;
    if (clean)
        for (int i = 0; i < ft->n; i++)
            if ((copy[i] = scratch_get(ft->nodes[i].size)))
                memcpy(copy[i], ad_value(ft->t, ft->nodes[i].h), ft->nodes[i].size * sizeof(double));
    pre p;
    pre_call(S, ft, &p);
    const unsigned long count = S->inj.count;
    int rc = ad_replay(ft->t);
    post_call(S, ft, &p, rc, AD_OK);
    CHECK(S->inj.count == count); /* replay never allocates */
    if (rc == AD_OK) {
        ft->dirty = 0;
        for (int i = 0; i < ft->n; i++) {
            check_forward(ft, i);
            if (copy[i]) {
                const double *v = ad_value(ft->t, ft->nodes[i].h);
                for (size_t e = 0; e < ft->nodes[i].size; e++)
                    CHECK(same(v[e], copy[i][e]));
            }
        }
    }
    scratch_used = mark;
}

static void act_reset(state *S)
{
    ftape *ft = cur(S);
    retire_nodes(ft);
    ad_tape_reset(ft->t); /* may allocate: it merges the arena's blocks into one */
    if (ft->t) {
        CHECK(ad_tape_status(ft->t) == AD_OK);
        CHECK(ad_tape_errmsg(ft->t)[0] == '\0');
        CHECK(ad_tape_len(ft->t) == 1);
    }
    for (int i = 0; i < ft->nstale; i++) {
        opnd o = {ft->stale[i], H_STALE, -1};
        if (!tag_clash(ft, o.h) && ft->t)
            check_accessors(ft, o);
    }
}

static void act_set_value(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    opnd o = pick(S, ft, r);
    const unsigned mode = rd_u8(r);
    size_t n = o.cls == H_VALID && o.idx >= 0 ? ft->nodes[o.idx].size : 1;
    if (n > MAXSIZE)
        return;
    rd_fill(r, dbuf, n);
    const int null_data = (mode & 15) == 15;
    int want = AD_OK;
    if (o.cls != H_VALID)
        want = AD_EMISUSE;
    else if (o.idx < 0)
        return;
    else if (null_data || ft->nodes[o.idx].kind == K_OP || ft->nodes[o.idx].kind == K_PARAM)
        want = AD_EMISUSE;
    pre p;
    pre_call(S, ft, &p);
    int rc = ad_set_value(ft->t, o.h, null_data ? NULL : dbuf);
    post_call(S, ft, &p, rc, want);
    if (rc == AD_OK) {
        const double *v = ad_value(ft->t, o.h);
        CHECK(memcmp(v, dbuf, n * sizeof(double)) == 0);
        ft->dirty = 1;
        if (mode & 0x80)
            act_replay(S);
    }
}

/* Writes into the caller's value pool; tapes that view it are dirty until
 * they replay. */
static void act_poke_params(state *S)
{
    rd *r = &S->r;
    const unsigned at = rd_u16(r) % POOL, k = 1 + rd_u8(r) % 64;
    const double v = rd_double(r), step = rd_double(r);
    for (unsigned i = 0; i < k && at + i < POOL; i++)
        vpool[at + i] = v + step * i;
    S->tp[0].dirty = S->tp[1].dirty = 1;
    if (rd_u8(r) & 1)
        for (unsigned i = 0; i < k && at + i < POOL; i++)
            gpool[at + i] = v - step * i;
}

static void act_accessors(state *S)
{
    ftape *ft = cur(S);
    opnd o = pick(S, ft, &S->r);
    check_accessors(ft, o);
    check_len(ft);
    check_memory(ft);
}

static void act_set_name(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    opnd o = pick(S, ft, r);
    char name[24];
    const unsigned len = rd_u8(r) % 20;
    for (unsigned i = 0; i < len; i++)
        name[i] = (char)(1 + rd_u8(r) % 255);
    name[len] = '\0';
    const int null_name = len == 19;
    pre p;
    pre_call(S, ft, &p);
    int rc = ad_set_name(ft->t, o.h, null_name ? NULL : name);
    if (ft->t) {
        CHECK(ad_tape_status(ft->t) == p.st); /* names never touch the status */
        CHECK(ad_tape_len(ft->t) == p.len);
    }
    if (o.cls != H_VALID || null_name || !ft->t) {
        CHECK(rc == AD_EMISUSE);
        return;
    }
    if (o.idx < 0)
        return;
    CHECK(rc == AD_OK || (rc == AD_ENOMEM && S->inj.failures > p.fails));
    if (rc == AD_OK) {
        const char *got = ad_node_name(ft->t, o.h);
        CHECK(got != NULL && strcmp(got, name) == 0);
    }
}

/* ---- trace and DOT export ---- */

typedef struct sink {
    char buf[4096];
    size_t len, total;
} sink;

static void sink_write(void *ud, const char *text, size_t len)
{
    sink *s = ud;
    CHECK(text != NULL || len == 0);
    for (size_t i = 0; i < len && s->len < sizeof s->buf - 1; i++)
        s->buf[s->len++] = text[i];
    s->buf[s->len] = '\0';
    s->total += len;
}

static FILE *devnull(void)
{
    static FILE *f;
    if (!f)
        f = fopen("/dev/null", "w");
    return f;
}

static void print_opts(state *S, ad_print_opts *po, char *errbuf, size_t cap)
{
    rd *r = &S->r;
    memset(po, 0, sizeof *po);
    const unsigned m = rd_u8(r);
    if (m & 1) {
        po->alloc = hook_fn;
        po->alloc_ud = &S->chk_al;
    }
    po->max_values = m >> 4;
    if (m & 2) {
        po->errbuf = errbuf;
        po->errcap = 1 + rd_u8(r) % cap;
        errbuf[0] = '\0';
    }
}

static void check_print(state *S, const ad_print_opts *po, int rc, const sink *out,
                        unsigned long fails, long blocks)
{
    CHECK(S->chk_al.live_blocks == blocks); /* scratch memory all given back */
    CHECK(rc == AD_OK || rc == AD_EMISUSE || rc == AD_ENOMEM);
    if (rc == AD_ENOMEM)
        CHECK(S->inj.failures > fails);
    if (rc != AD_OK && po->errbuf && po->errcap > 1) {
        CHECK(po->errbuf[0] != '\0');
        CHECK(strlen(po->errbuf) < po->errcap);
    }
    if (rc == AD_OK && out)
        CHECK(out->total > 0);
}

static void act_export_dot(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const unsigned mode = rd_u8(r);
    opnd o = (mode & 1) ? pick(S, ft, r) : (opnd){ad_nil(), H_VALID, -2};
    char errbuf[200];
    ad_print_opts po;
    print_opts(S, &po, errbuf, sizeof errbuf);
    sink *out = calloc(1, sizeof *out);
    const unsigned long fails = S->inj.failures;
    const long blocks = S->chk_al.live_blocks;
    int rc;
    if (mode & 2)
        rc = ad_export_dot_fprint((mode & 4) ? NULL : devnull(), ft->t, o.h, &po);
    else
        rc = ad_export_dot(ft->t, o.h, sink_write, out, &po);
    check_print(S, &po, rc, (mode & 2) ? NULL : out, fails, blocks);
    /* a nil output means the whole tape */
    const int good = ft->t && ad_tape_status(ft->t) == AD_OK &&
                     (o.cls == H_VALID || o.cls == H_NIL) && !((mode & 2) && (mode & 4));
    if (!good)
        CHECK(rc == AD_EMISUSE);
    else if (o.idx != -1)
        CHECK(rc == AD_OK || rc == AD_ENOMEM);
    if (rc == AD_OK && !(mode & 2))
        CHECK(strncmp(out->buf, "digraph", 7) == 0);
    free(out);
}

static void act_trace(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const unsigned mode = rd_u8(r);
    opnd o = pick(S, ft, r);
    char errbuf[200];
    ad_print_opts po;
    print_opts(S, &po, errbuf, sizeof errbuf);
    sink *out = calloc(1, sizeof *out);
    const unsigned long fails = S->inj.failures;
    const long blocks = S->chk_al.live_blocks;
    int rc;
    if (mode & 2)
        rc = ad_trace_fprint((mode & 4) ? NULL : devnull(), ft->t, o.h, &po);
    else
        rc = ad_trace(ft->t, o.h, sink_write, out, &po);
    check_print(S, &po, rc, (mode & 2) ? NULL : out, fails, blocks);
    if (!ft->t || ad_tape_status(ft->t) != AD_OK || o.cls != H_VALID || ((mode & 2) && (mode & 4)))
        CHECK(rc == AD_EMISUSE);
    free(out);
}

/* ---- the checks of check.h ---- */

/* A function for the checks: a few built-in ops on the inputs, summed to
 * a scalar (or, on request, returned as they are, or nil). */
typedef struct prog {
    int n;
    unsigned char op[6], arg[6];
    double c[6];
    int ret;
} prog;

static ad_node prog_fn(ad_tape *t, const ad_node *in, int n, void *ud)
{
    const prog *p = ud;
    ad_node acc = in[0];
    for (int i = 0; i < p->n; i++) {
        const opspec *o = &OPS[p->op[i] % NOPS];
        if (o->custom)
            continue; /* built-ins only: the checks' tape has no registry of ours */
        const ad_node other = in[p->arg[i] % (unsigned)n];
        if (o->f1)
            acc = o->f1(t, acc);
        else if (o->f1c)
            acc = o->f1c(t, acc, p->c[i]);
        else if (o->f2)
            acc = (p->arg[i] & 0x80) ? o->f2(t, other, acc) : o->f2(t, acc, other);
        else
            acc = o->f3(t, acc, other, in[0]);
    }
    if (p->ret == 1)
        return acc;
    if (p->ret == 2)
        return ad_nil();
    return ad_node_shape(t, acc).ndim == 0 ? acc : ad_sum(t, acc);
}

static int hand_fn(const double *const *point, double *const *grad, int n, void *ud)
{
    const unsigned *mode = ud;
    for (int i = 0; i < n; i++)
        if (grad[i])
            grad[i][0] = point[i][0]; /* any numbers: the check compares, it cannot know */
    return (*mode & 0x40) != 0;
}

typedef struct check_setup {
    ad_check_input in[3];
    double vals[3][9], grads[3][9];
    prog p;
    ad_check_opts opts;
    int n;
} check_setup;

static void read_check(state *S, check_setup *cs)
{
    rd *r = &S->r;
    memset(cs, 0, sizeof *cs);
    cs->n = 1 + (int)(rd_u8(r) % 3);
    for (int i = 0; i < cs->n; i++) {
        const unsigned b = rd_u8(r);
        const uint32_t a = 1 + b % 3, c = 1 + (b >> 2) % 3;
        cs->in[i].shape = (b >> 4) % 3 == 0 ? ad_shape_scalar()
                          : (b >> 4) % 3 == 1 ? ad_shape_vec(a) : ad_shape_mat(a, c);
        if ((b >> 6) == 3 && rd_u8(r) == 0)
            cs->in[i].shape.ndim = 5; /* invalid */
        rd_fill(r, cs->vals[i], 9);
        rd_fill(r, cs->grads[i], 9);
        cs->in[i].value = (rd_u8(r) == 255) ? NULL : cs->vals[i];
        cs->in[i].grad = cs->grads[i];
        cs->in[i].role = (int)(rd_u8(r) % 3);
        cs->in[i].name = (b & 1) ? "x" : NULL;
    }
    cs->p.n = (int)(rd_u8(r) % 7);
    for (int i = 0; i < cs->p.n && i < 6; i++) {
        cs->p.op[i] = (unsigned char)rd_u8(r);
        cs->p.arg[i] = (unsigned char)rd_u8(r);
        cs->p.c[i] = rd_double(r);
    }
    if (cs->p.n > 6)
        cs->p.n = 6;
    const unsigned m = rd_u8(r);
    cs->p.ret = m % 8 == 7 ? 1 : m % 8 == 6 ? 2 : 0;
    ad_check_opts *o = &cs->opts;
    static const double tols[4] = {0, 1e-6, 1e-3, -1};
    o->atol = tols[(m >> 3) & 3];
    o->rtol = tols[(m >> 5) & 3];
    const unsigned m2 = rd_u8(r);
    static const double steps[4] = {0, 1e-4, 1e-7, -1e-3};
    o->step = steps[m2 & 3];
    o->directions = (int)((m2 >> 2) & 3) - 1;
    o->points = (int)((m2 >> 4) & 3) - 1;
    o->spread = (m2 & 0x40) ? 0.5 : 0.0;
    o->seed = rd_u8(r);
    o->flags = (m2 & 0x80) ? AD_CHECK_ALL_ROWS : 0;
    static const char *const kinks[] = {"cube", NULL};
    o->kink_ops = (m & 0x80) ? kinks : NULL;
    if (rd_u8(r) & 1) {
        o->alloc = hook_fn;
        o->alloc_ud = &S->chk_al;
    }
    o->registry = S->reg;
}

static void check_report(state *S, int rc, const ad_check_report *rep, unsigned long fails)
{
    CHECK(rc == rep->status);
    CHECK(rep->text != NULL);
    CHECK(strlen(rep->text) == rep->text_len);
    if (rc != AD_OK) {
        CHECK(rep->errmsg[0] != '\0');
        CHECK(strlen(rep->errmsg) < AD_CHECK_MSG_CAP);
        if (rc == AD_ENOMEM)
            CHECK(S->inj.failures > fails);
        return;
    }
    CHECK(rep->errmsg[0] == '\0');
    CHECK(rep->failed <= rep->checked);
    CHECK(rep->kinks <= rep->checked);
    CHECK(rep->passed == (rep->failed == 0));
    CHECK(rep->nentries == 0 || rep->entries != NULL);
    for (size_t i = 0; i < rep->nentries; i++)
        CHECK(rep->entries[i].verdict >= AD_ELEM_OK && rep->entries[i].verdict <= AD_ELEM_KINK);
}

static void act_gradcheck(state *S)
{
    check_setup *cs = calloc(1, sizeof *cs);
    read_check(S, cs);
    const unsigned long fails = S->inj.failures;
    const long blocks = S->chk_al.live_blocks;
    ad_check_report rep;
    int rc = ad_gradcheck(prog_fn, &cs->p, cs->in, cs->n, &cs->opts, &rep);
    check_report(S, rc, &rep, fails);
    ad_check_report_free(&rep);
    ad_check_report_free(&rep);
    CHECK(S->chk_al.live_blocks == blocks);
    free(cs);
}

static void act_handcheck(state *S)
{
    check_setup *cs = calloc(1, sizeof *cs);
    read_check(S, cs);
    unsigned mode = rd_u8(&S->r);
    if (cs->opts.points > 2)
        cs->opts.points = 2;
    const unsigned long fails = S->inj.failures;
    const long blocks = S->chk_al.live_blocks;
    ad_check_report rep;
    int rc = ad_handcheck(prog_fn, &cs->p, cs->in, cs->n, (mode & 1) ? hand_fn : NULL, &mode,
                          &cs->opts, &rep);
    check_report(S, rc, &rep, fails);
    ad_check_report_free(&rep);
    CHECK(S->chk_al.live_blocks == blocks);
    free(cs);
}

/* ad_check_grad of a node against a copy of its own gradient: passes
 * whenever the gradient is finite. */
static void act_check_grad(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    opnd o = pick(S, ft, r);
    const unsigned mode = rd_u8(r);
    const double *g = ad_grad(ft->t, o.h);
    size_t n = o.cls == H_VALID && o.idx >= 0 ? ft->nodes[o.idx].size : 1;
    if (n > MAXSIZE)
        return;
    int finite = 1;
    if (g) {
        memcpy(dbuf, g, n * sizeof(double));
        for (size_t i = 0; i < n; i++)
            finite &= isfinite(g[i]) != 0;
    } else {
        rd_fill(r, dbuf, n);
    }
    ad_check_opts opts;
    memset(&opts, 0, sizeof opts);
    if (mode & 1) {
        opts.alloc = hook_fn;
        opts.alloc_ud = &S->chk_al;
    }
    opts.flags = (mode & 2) && n <= 64 ? AD_CHECK_ALL_ROWS : 0;
    const unsigned long fails = S->inj.failures;
    const long blocks = S->chk_al.live_blocks;
    ad_check_report rep;
    int rc = ad_check_grad(ft->t, o.h, (mode & 4) && (mode & 8) ? NULL : dbuf,
                           (mode & 16) ? &opts : NULL, &rep);
    check_report(S, rc, &rep, fails);
    const int good = ft->t && ad_tape_status(ft->t) == AD_OK && o.cls == H_VALID && g &&
                     !((mode & 4) && (mode & 8));
    if (!good)
        CHECK(rc == AD_EMISUSE);
    else if (o.idx >= 0) {
        CHECK(rc == AD_OK || rc == AD_ENOMEM);
        if (rc == AD_OK && finite)
            CHECK(rep.passed && rep.failed == 0 && rep.checked == n);
    }
    ad_check_report_free(&rep);
    CHECK(S->chk_al.live_blocks == blocks);
}

/* ---- derivative modes ---- */

/* The derivative of node out, seeded with seed (NULL: ones), with respect
 * to every node of the table, computed here from the engine's values
 * through every operand (constants too): ref[i], and in mag[i] the sum
 * over all paths of the products of the local derivatives' magnitudes,
 * which bounds the rounding of any order of evaluation (forward or
 * reverse). Returns 0 when the nodes do not fit the scratch. */
NOCOV static int ref_reverse(ftape *ft, int out, const double *seed, double **ref, double **mag)
{
    static double junk[MAXSIZE];
    int dep[MAXN] = {0};
    for (int i = 0; i <= out; i++) {
        const size_t n = ft->nodes[i].size;
        if (n > MAXSIZE || !(ref[i] = scratch_get(n)) || !(mag[i] = scratch_get(n)))
            return 0;
        memset(ref[i], 0, n * sizeof(double));
        memset(mag[i], 0, n * sizeof(double));
    }
    dep[out] = 1;
    for (size_t e = 0; e < ft->nodes[out].size; e++) {
        ref[out][e] = seed ? seed[e] : 1.0;
        mag[out][e] = fabs(ref[out][e]);
    }
    for (int c = out; c >= 0; c--) {
        const fnode *nd = &ft->nodes[c];
        if (!dep[c] || nd->kind != K_OP)
            continue;
        const double *x[4];
        ad_shape s[4];
        for (int k = 0; k < nd->nin; k++) {
            x[k] = ad_value(ft->t, ft->nodes[nd->in[k]].h);
            s[k] = ft->nodes[nd->in[k]].shape;
        }
        const double *y = ad_value(ft->t, nd->h);
        for (int k = 0; k < nd->nin; k++) {
            const int i = nd->in[k];
            dep[i] = 1;
            ref_vjp(&OPS[nd->spec], k, x, s, nd->c, nd->shape, y, ref[c], ref[i], junk);
            ref_vjp(&OPS[nd->spec], k, x, s, nd->c, nd->shape, y, mag[c], junk, mag[i]);
        }
    }
    return 1;
}

/* Reference Jacobian (M x N, and path magnitudes) of node out with respect
 * to the nodes in[0..n-1] (table indices, their elements flattened in
 * order). Returns 0 when it does not fit. */
NOCOV static int ref_jacobian(ftape *ft, int out, int n, const int *in, double *J, double *Jm)
{
    static double seed[64];
    const size_t M = ft->nodes[out].size;
    size_t N = 0;
    for (int i = 0; i < n; i++)
        N += ft->nodes[in[i]].size;
    if (M > 64)
        return 0;
    for (size_t r = 0; r < M; r++) {
        const size_t mark = scratch_used;
        double *ref[MAXN], *mag[MAXN];
        memset(seed, 0, M * sizeof(double));
        seed[r] = 1.0;
        if (!ref_reverse(ft, out, seed, ref, mag)) {
            scratch_used = mark;
            return 0;
        }
        /* A non-finite term anywhere on the way (0 * inf included) makes
         * the row unknown: forward mode multiplies every element's local
         * derivative by its tangent, zero or not, and IEEE gives NaN. */
        int finite = 1;
        for (int i = 0; i <= out; i++)
            for (size_t e = 0; e < ft->nodes[i].size; e++)
                finite &= isfinite(ref[i][e]) && isfinite(mag[i][e]);
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            const int j = in[i];
            for (size_t e = 0; e < ft->nodes[j].size; e++) {
                J[r * N + off + e] = j <= out ? ref[j][e] : 0.0;
                Jm[r * N + off + e] = !finite ? INFINITY : j <= out ? mag[j][e] : 0.0;
            }
            off += ft->nodes[j].size;
        }
        scratch_used = mark;
    }
    return 1;
}

/* Whether a custom op without forward-mode rules is on the tape. */
static int tape_lacks_rules(const ftape *ft)
{
    for (int i = 0; i < ft->n; i++)
        if (ft->nodes[i].kind == K_OP && OPS[ft->nodes[i].spec].custom == &reshape0_def)
            return 1;
    return 0;
}

static int tangents_current(const ftape *ft) { return ft->K > 0 && ft->tan_n == ft->n; }

static void act_tangents(state *S)
{
    static const int ks[8] = {1, 2, 3, 4, 0, -1, 4097, 9};
    ftape *ft = cur(S);
    int k = ks[rd_u8(&S->r) % 8];
    if (!ft->own_alloc && k > 4 && k <= 4096)
        k = 4; /* realloc would serve any size */
    pre p;
    pre_call(S, ft, &p);
    const int rc = ad_tangents(ft->t, k);
    post_call(S, ft, &p, rc, k < 1 || k > 4096 ? AD_EMISUSE : AD_OK);
    if (rc == AD_OK) {
        ft->K = k;
        ft->tan_n = ft->n;
        ft->fwd = 0;
        memset(ft->seeded, 0, sizeof ft->seeded); /* every tangent 0 */
    } else if (rc == AD_ENOMEM) {
        ft->K = 0;
    }
}

/* Picks a leaf of the current tape (mostly), for tangents and drivers. */
static opnd pick_leaf(state *S, ftape *ft, rd *r)
{
    const unsigned sel = rd_u8(r);
    if (sel < 200 && ft->n) {
        for (int j = 0; j < ft->n; j++) {
            const int i = (int)((sel + (unsigned)j) % (unsigned)ft->n);
            if (ft->nodes[i].kind != K_OP) {
                opnd o = {ft->nodes[i].h, H_VALID, i};
                return o;
            }
        }
    }
    return pick(S, ft, r);
}

static void act_set_tangent(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    opnd o = pick_leaf(S, ft, r);
    const unsigned mode = rd_u8(r);
    if (o.cls == H_VALID && o.idx < 0)
        return;
    const size_t K = ft->K > 0 ? (size_t)ft->K : 1;
    const size_t n = K * (o.cls == H_VALID ? ft->nodes[o.idx].size : 1);
    if (n > MAXSIZE)
        return;
    rd_fill(r, dbuf, n);
    const int null_data = (mode & 15) == 15;
    int want = AD_OK;
    if (o.cls != H_VALID || !tangents_current(ft) || null_data || ft->nodes[o.idx].kind == K_OP)
        want = AD_EMISUSE;
    if (want == AD_OK && !tangents_current(ft))
        return;
    pre p;
    pre_call(S, ft, &p);
    const int rc = ad_set_tangent(ft->t, o.h, null_data ? NULL : dbuf);
    post_call(S, ft, &p, rc, want);
    if (rc == AD_OK) {
        ft->fwd = 0;
        if (n <= TANCAP) {
            memcpy(ft->tanbuf[o.idx], dbuf, n * sizeof(double));
            ft->seeded[o.idx] = 1;
        } else {
            ft->seeded[o.idx] = -1;
        }
    }
}

/* Node w's tangents after a forward sweep: J_w applied to the seeds. */
NOCOV static void check_tangents(ftape *ft, int w)
{
    const size_t K = (size_t)ft->K, M = ft->nodes[w].size;
    const double *tw = ad_tangent(ft->t, ft->nodes[w].h);
    CHECK(tw != NULL);
    int in[MAXN], n = 0;
    size_t N = 0;
    for (int i = 0; i < ft->n; i++) {
        if (ft->seeded[i] < 0)
            return; /* a seed the harness does not know */
        if (ft->seeded[i] > 0)
            in[n++] = i, N += ft->nodes[i].size;
    }
    if (M > 16 || N > 256 || K > 8)
        return;
    static double J[16 * 256], Jm[16 * 256];
    if (n && !ref_jacobian(ft, w, n, in, J, Jm))
        return;
    for (size_t d = 0; d < K; d++)
        for (size_t r = 0; r < M; r++) {
            double want = 0, mag = 0;
            size_t off = 0;
            for (int i = 0; i < n; i++) {
                const size_t si = ft->nodes[in[i]].size;
                for (size_t j = 0; j < si; j++) {
                    const double t = ft->tanbuf[in[i]][d * si + j];
                    want += J[r * N + off + j] * t;
                    mag += Jm[r * N + off + j] * fabs(t);
                }
                off += si;
            }
            if (g_trace > 0)
                fprintf(stderr, "  tangent %zu of node %d[%zu] = %.17g, reference %.17g (%g)\n", d,
                        w, r, tw[d * M + r], want, mag);
            CHECK(close_to(tw[d * M + r], want, mag));
        }
}

static void act_forward(state *S)
{
    ftape *ft = cur(S);
    const unsigned w = rd_u8(&S->r);
    int want = AD_OK;
    if (!tangents_current(ft) || tape_lacks_rules(ft))
        want = AD_EMISUSE;
    pre p;
    pre_call(S, ft, &p);
    const int rc = ad_forward(ft->t);
    post_call(S, ft, &p, rc, want);
    if (rc != AD_OK)
        return;
    ft->dirty = 0; /* it recomputes every value, as ad_replay does */
    ft->fwd = 1;
    for (int i = 0; i < ft->n; i++)
        check_forward(ft, i);
    if (ft->n)
        check_tangents(ft, (int)(w % (unsigned)ft->n));
    CHECK(ad_tangent(ft->t, ad_nil()) == NULL);
}

static void act_backward_tangent(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    opnd o = pick(S, ft, r);
    if (o.cls == H_VALID && o.idx < 0)
        return;
    const size_t n = o.cls == H_VALID ? ft->nodes[o.idx].size : 1;
    if (n > MAXSIZE)
        return;
    rd_fill(r, seedbuf, n);
    const int with_seed = rd_u8(r) & 1;
    int want = AD_OK;
    if (o.cls != H_VALID || !tangents_current(ft) || !ft->fwd ||
        (!with_seed && ft->nodes[o.idx].shape.ndim != 0))
        want = AD_EMISUSE;
    /* a reverse-mode ad_jacobian sweeps forward on a tape with reshape0
     * (no forward rules), which ad_backward_tangent refuses */
    if (want == AD_OK && tape_lacks_rules(ft))
        want = AD_EMISUSE;
    static double before[POOL];
    memcpy(before, gpool, sizeof gpool);
    pre p;
    pre_call(S, ft, &p);
    const int rc = ad_backward_tangent(ft->t, o.h, with_seed ? seedbuf : NULL);
    if (want == AD_OK || rc != AD_OK)
        post_call(S, ft, &p, rc, want);
    CHECK(memcmp(before, gpool, sizeof gpool) == 0); /* never the caller's buffers */
    if (rc == AD_OK)
        for (int i = 0; i < ft->n; i++)
            CHECK((ad_grad_tangent(ft->t, ft->nodes[i].h) != NULL) == (ft->nodes[i].rg != 0));
}

/* ad_jvp, ad_hvp, ad_jacobian (each mode) and ad_hessian, against the
 * reference Jacobian (the Hessian: exact symmetry). */
static void act_driver(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const unsigned kind = rd_u8(r) % 7, mode = rd_u8(r);
    opnd out = pick(S, ft, r);
    const int n = (int)(rd_u8(r) % 4); /* 0: refused */
    opnd in[3];
    ad_node h[3];
    int idx[3];
    size_t N = 0;
    int known = out.cls != H_VALID || out.idx >= 0;
    for (int i = 0; i < n; i++) {
        in[i] = pick_leaf(S, ft, r);
        h[i] = in[i].h;
        idx[i] = in[i].idx;
        known &= in[i].cls != H_VALID || in[i].idx >= 0;
        N += in[i].cls == H_VALID && in[i].idx >= 0 ? ft->nodes[in[i].idx].size : 1;
    }
    const size_t M = out.cls == H_VALID && out.idx >= 0 ? ft->nodes[out.idx].size : 1;
    if (!known || M * (N ? N : 1) > 2048 || N > 48)
        return; /* small enough to stay fast, references included */
    const int null_buf = (mode & 7) == 7;
    const unsigned jmode = kind >= 3 && kind <= 5 ? kind - 3 : (mode >> 4) % 4;
    const int need_grad = kind != 0; /* all but ad_jvp */
    const int scalar_out = kind == 1 || kind == 6;
    /* what must happen */
    int want = AD_OK;
    if (out.cls != H_VALID || n < 1)
        want = AD_EMISUSE;
    for (int i = 0; i < n && want == AD_OK; i++)
        if (in[i].cls != H_VALID || ft->nodes[idx[i]].kind == K_OP ||
            (need_grad && !ft->nodes[idx[i]].rg))
            want = AD_EMISUSE;
    if (want == AD_OK && (null_buf || (scalar_out && M != 1)))
        want = AD_EMISUSE;
    if (want == AD_OK && kind >= 2 && kind <= 5 && jmode > AD_JAC_REVERSE)
        want = AD_EMISUSE;
    const int uses_fwd = kind == 0 || kind == 1 || kind == 6 ||
                         jmode == AD_JAC_FORWARD || (jmode == AD_JAC_AUTO && N <= M);
    if (want == AD_OK && uses_fwd && tape_lacks_rules(ft))
        want = AD_EMISUSE;
    /* the buffers */
    static double v[3][MAXSIZE / 3 + 8], out1[MAXSIZE], J[MAXSIZE], hv[3][MAXSIZE / 3 + 8];
    static double gr[3][MAXSIZE / 3 + 8];
    const double *vp[3];
    double *hvp[3], *grp[3];
    for (int i = 0; i < n; i++) {
        const size_t si = in[i].cls == H_VALID ? ft->nodes[idx[i]].size : 1;
        if (si > MAXSIZE / 3)
            return;
        rd_fill(r, v[i], si);
        vp[i] = v[i];
        hvp[i] = hv[i];
        grp[i] = (mode & 8) ? NULL : gr[i];
    }
    pre p;
    pre_call(S, ft, &p);
    int rc;
    switch (kind) {
    case 0: rc = ad_jvp(ft->t, out.h, n, n ? h : NULL, null_buf ? NULL : vp, out1); break;
    case 1: rc = ad_hvp(ft->t, out.h, n, n ? h : NULL, vp, null_buf ? NULL : hvp, grp); break;
    case 6: rc = ad_hessian(ft->t, out.h, n, n ? h : NULL, null_buf ? NULL : J); break;
    default: rc = ad_jacobian(ft->t, out.h, n, n ? h : NULL, null_buf ? NULL : J, jmode); break;
    }
    post_call(S, ft, &p, rc, want);
    if (g_trace > 0) {
        fprintf(stderr, "  driver %u (jacobian mode %u) of node %d on", kind, jmode, out.idx);
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %d", idx[i]);
        fprintf(stderr, ": %d\n", rc);
    }
    if (rc == AD_ENOMEM)
        ft->K = 0;
    if (rc != AD_OK)
        return;
    /* the drivers set up their own tangent storage and run a forward sweep */
    ft->dirty = 0;
    ft->fwd = 1;
    ft->tan_n = ft->n;
    ft->K = kind == 0 || kind == 1 ? 1
            : kind == 6 ? (int)(N < 8 ? N : 8)
            : uses_fwd ? (int)(N < 32 ? N : 32) : 1;
    for (int i = 0; i < ft->n; i++)
        ft->seeded[i] = 0;
    for (int i = 0; i < n; i++)
        ft->seeded[idx[i]] = -1;
    for (int i = 0; i < ft->n; i++)
        check_forward(ft, i);
    if (kind == 6) {
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < i; j++)
                CHECK(same(J[i * N + j], J[j * N + i])); /* "exactly symmetric" */
        return;
    }
    static double Jr[MAXSIZE], Jm[MAXSIZE];
    if (!ref_jacobian(ft, out.idx, n, idx, Jr, Jm))
        return;
    if (kind == 0) {
        for (size_t row = 0; row < M; row++) {
            double want_v = 0, mag = 0;
            size_t off = 0;
            for (int i = 0; i < n; i++) {
                const size_t si = ft->nodes[idx[i]].size;
                for (size_t j = 0; j < si; j++) {
                    want_v += Jr[row * N + off + j] * v[i][j];
                    mag += Jm[row * N + off + j] * fabs(v[i][j]);
                }
                off += si;
            }
            CHECK(close_to(out1[row], want_v, mag));
        }
    } else if (kind == 1) {
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            const size_t si = ft->nodes[idx[i]].size;
            for (size_t j = 0; j < si && grp[i]; j++)
                CHECK(close_to(gr[i][j], Jr[off + j], Jm[off + j]));
            off += si;
        }
    } else {
        for (size_t e = 0; e < M * N; e++) {
            if (g_trace > 0 && !close_to(J[e], Jr[e], Jm[e]))
                fprintf(stderr, "  J[%zu][%zu] = %.17g, reference %.17g (magnitude %g)\n", e / N,
                        e % N, J[e], Jr[e], Jm[e]);
            CHECK(close_to(J[e], Jr[e], Jm[e]));
        }
    }
}

/* ---- workspaces ---- */

/* A workspace of the current tape: its replay gives the tape's values and
 * its sweep the tape's adjoints, bit for bit; misuse is refused. */
static void act_workspace(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const unsigned mode = rd_u8(r);
    opnd o = pick(S, ft, r);
    const size_t n = o.cls == H_VALID && o.idx >= 0 ? ft->nodes[o.idx].size : 1;
    if (n > MAXSIZE)
        return;
    rd_fill(r, seedbuf, n);
    ad_tape_opts opts = {hook_fn, &S->ws_al, NULL};
    const unsigned long fails = S->inj.failures;
    int st = -1;
    /* without the hook the workspace uses the tape's allocator */
    ad_workspace *ws = ad_workspace_new(ft->t, (mode & 1) ? NULL : &opts, (mode & 2) ? NULL : &st);
    if (!ft->t || ad_tape_status(ft->t) != AD_OK) {
        CHECK(ws == NULL);
        CHECK((mode & 2) || st == AD_EMISUSE);
        return;
    }
    if (!ws) {
        CHECK((mode & 2) || st == AD_ENOMEM);
        CHECK(S->inj.failures > fails);
        CHECK(S->ws_al.live_blocks == 0);
        return;
    }
    CHECK((mode & 2) || st == AD_OK);
    if (!(mode & 1))
        CHECK(ad_workspace_memory(ws) == S->ws_al.live_bytes);
    CHECK(ad_workspace_errmsg(ws) != NULL);
    int rc = ad_workspace_replay(ws);
    CHECK(rc == AD_OK);
    CHECK(ad_workspace_errmsg(ws)[0] == '\0');
    for (int i = 0; i < ft->n && !ft->dirty; i++) {
        const double *a = ad_workspace_value(ws, ft->nodes[i].h), *b = ad_value(ft->t, ft->nodes[i].h);
        CHECK(a != NULL);
        for (size_t e = 0; e < ft->nodes[i].size; e++)
            CHECK(same(a[e], b[e]));
    }
    /* misuse */
    CHECK(ad_workspace_value(ws, ad_nil()) == NULL);
    CHECK(ad_workspace_grad(ws, ad_nil()) == NULL);
    CHECK(ad_workspace_sweep(ws, ad_nil(), NULL, 0) == AD_EMISUSE);
    check_msg(ad_workspace_errmsg(ws));
    CHECK(ad_workspace_set_value(ws, ad_nil(), dbuf) == AD_EMISUSE);
    CHECK(ad_workspace_bind(ws, ad_nil(), NULL, NULL) == AD_EMISUSE);
    for (int i = 0; i < ft->n; i++) {
        const fnode *nd = &ft->nodes[i];
        if (nd->kind == K_OP)
            CHECK(ad_workspace_set_value(ws, nd->h, dbuf) == AD_EMISUSE);
        if (nd->kind != K_PARAM)
            CHECK(ad_workspace_bind(ws, nd->h, NULL, NULL) == AD_EMISUSE);
        else if (nd->goff < 0)
            CHECK(ad_workspace_bind(ws, nd->h, NULL, gpool) == AD_EMISUSE);
    }
    /* a node recorded after the workspace is not the workspace's */
    if (ft->n > 0 && ft->n < MAXN && (mode & 4)) {
        opnd a = {ft->nodes[0].h, H_VALID, 0};
        const int n0 = ft->n;
        record_op(S, &OPS[4], &a, 1, 0.0, 0, NULL, 0); /* neg */
        if (ft->n == n0 + 1) {
            CHECK(ad_workspace_value(ws, ft->nodes[ft->n - 1].h) == NULL);
            CHECK(ad_workspace_sweep(ws, ft->nodes[ft->n - 1].h, seedbuf, 0) == AD_EMISUSE);
        }
    }
    /* the same sweep on both, when the tape's values are current and its
     * ad_param gradient buffers do not overlap (the workspace's are its own) */
    if (o.cls == H_VALID && o.idx >= 0 && o.idx < ft->n && !ft->dirty && !(mode & 4)) {
        static unsigned char used[POOL];
        int overlap = 0;
        memset(used, 0, sizeof used);
        for (int i = 0; i < ft->n; i++)
            if (ft->nodes[i].kind == K_PARAM && ft->nodes[i].goff >= 0)
                for (size_t e = 0; e < ft->nodes[i].size; e++)
                    overlap |= used[ft->nodes[i].goff + (int)e]++;
        const int with_seed = (mode & 8) || ft->nodes[o.idx].shape.ndim != 0;
        const double *seed = with_seed ? seedbuf : NULL;
        rc = ad_workspace_sweep(ws, o.h, seed, 0);
        CHECK(rc == AD_OK);
        pre p;
        pre_call(S, ft, &p);
        const int rt = ad_sweep(ft->t, o.h, seed, AD_SWEEP_ASSIGN);
        post_call(S, ft, &p, rt, AD_OK);
        if (rt == AD_OK) {
            for (int i = 0; i < ft->n; i++) {
                const fnode *nd = &ft->nodes[i];
                const double *a = ad_workspace_grad(ws, nd->h), *b = ad_grad(ft->t, nd->h);
                CHECK((a != NULL) == (b != NULL));
                if (!a || (nd->kind == K_PARAM && overlap))
                    continue;
                for (size_t e = 0; e < nd->size; e++)
                    CHECK(same(a[e], b[e]));
            }
        }
    }
    ad_workspace_free(ws);
    CHECK(S->ws_al.live_blocks == 0);
}

/* ---- the gradient as a tape ---- */

/* Takes the nodes recorded by the library itself (ad_gradient_nodes) from
 * index from on into the table, through the introspection API, checking
 * each against the oracle and the reference. Returns 0 when one cannot be
 * tracked (table full, an op the harness does not know). */
static int adopt_nodes(ftape *ft, size_t from)
{
    ad_tape *t = ft->t;
    const size_t len = ad_tape_len(t);
    for (size_t id = from; id < len; id++) {
        if (ft->n >= MAXN)
            return 0;
        const ad_node h = ad_tape_node(t, id);
        CHECK(!ad_node_is_nil(h) && ad_node_index(t, h) == id);
        const ad_opdef *def = ad_node_op(t, h);
        CHECK(def != NULL);
        ad_node in[AD_MAX_ARITY];
        const int k = ad_node_inputs(t, h, in);
        const ad_shape shape = ad_node_shape(t, h);
        CHECK(k >= 0 && shape_verdict(shape) == AD_OK);
        if (k == 0) { /* a constant (zeros, ones, a seed of 1) */
            CHECK(!ad_node_requires_grad(t, h) && !ad_node_is_variable(t, h));
            add_node(ft, h, shape, K_CONST);
            continue;
        }
        const opspec *o = spec_by_name(def->name);
        if (!o || op_arity(o) != k)
            return 0;
        int idx[AD_MAX_ARITY], rg = 0;
        ad_shape s[AD_MAX_ARITY];
        for (int i = 0; i < k; i++) {
            idx[i] = -1;
            for (int j = 0; j < ft->n; j++)
                if (ft->nodes[j].h.id_ == in[i].id_ && ft->nodes[j].h.tag_ == in[i].tag_)
                    idx[i] = j;
            if (idx[i] < 0)
                return 0;
            s[i] = ft->nodes[idx[i]].shape;
            rg |= ft->nodes[idx[i]].rg;
        }
        const double c = ad_node_const(t, h);
        ad_shape want;
        CHECK(oracle(o, s, c, &want) == AD_OK && same_shape(want, shape));
        CHECK(ad_node_requires_grad(t, h) == rg);
        fnode *nd = add_node(ft, h, shape, K_OP);
        nd->spec = (int)(o - OPS);
        nd->nin = k;
        nd->c = c;
        nd->rg = rg;
        for (int i = 0; i < k; i++)
            nd->in[i] = idx[i];
        check_forward(ft, ft->n - 1);
    }
    return 1;
}

/* ad_gradient_nodes: the recorded gradient's values against the
 * reference derivatives; from then on its nodes are ordinary nodes of the
 * table, so sweeps, tangents and drivers over them check second (and
 * higher) derivatives op by op. */
static void act_gradient_nodes(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    opnd out = pick(S, ft, r);
    const unsigned mode = rd_u8(r);
    opnd seed = (mode & 1) ? pick_for(S, ft, r, &OPS[1], 1, &out) : (opnd){ad_nil(), H_NIL, -1};
    const int n = (int)(rd_u8(r) % 4);
    opnd in[3];
    ad_node h[3], grads[3];
    int known = (out.cls != H_VALID || out.idx >= 0) && (seed.cls != H_VALID || seed.idx >= 0);
    for (int i = 0; i < n; i++) {
        in[i] = pick(S, ft, r);
        h[i] = in[i].h;
        known &= in[i].cls != H_VALID || in[i].idx >= 0;
    }
    if (!known || !ft->t)
        return;
    const int null_grads = (mode & 6) == 6;
    int want = AD_OK;
    if (null_grads || n < 1 || out.cls != H_VALID)
        want = AD_EMISUSE;
    for (int i = 0; i < n && want == AD_OK; i++)
        if (in[i].cls != H_VALID)
            want = AD_EMISUSE;
    if (want == AD_OK) {
        const ad_shape os = ft->nodes[out.idx].shape;
        if (seed.cls == H_NIL)
            want = os.ndim == 0 ? AD_OK : AD_EMISUSE;
        else if (seed.cls != H_VALID)
            want = AD_EMISUSE;
        else if (!same_shape(ft->nodes[seed.idx].shape, os))
            want = AD_ESHAPE;
    }
    for (int i = 0; i <= out.idx && want == AD_OK; i++)
        if (ft->nodes[i].kind == K_OP && OPS[ft->nodes[i].spec].custom == &reshape0_def)
            want = AD_EMISUSE; /* a custom op without vjp_ops */
    pre p;
    pre_call(S, ft, &p);
    const int rc = ad_gradient_nodes(ft->t, out.h, seed.h, n, n ? h : NULL, null_grads ? NULL : grads);
    /* a recording call: the status is sticky, nodes may have been added */
    CHECK(rc == ad_tape_status(ft->t));
    if (p.st != AD_OK) {
        CHECK(rc == p.st && ad_tape_len(ft->t) == p.len);
        return;
    }
    if (rc != AD_OK) {
        check_msg(ad_tape_errmsg(ft->t));
        if (want == AD_OK)
            CHECK(rc == AD_ENOMEM && S->inj.failures > p.fails);
        else
            CHECK(rc == want);
        if (rc != AD_ENOMEM)
            CHECK(ad_tape_len(ft->t) == p.len);
        for (int i = 0; i < n && !null_grads; i++)
            CHECK(ad_node_is_nil(grads[i]));
    } else {
        CHECK(want == AD_OK);
    }
    if (g_trace > 0) {
        fprintf(stderr, "  gradient_nodes of %d (seed %d) w.r.t.", out.idx, seed.idx);
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %d", in[i].idx);
        fprintf(stderr, ": %d, %zu nodes added\n", rc, ad_tape_len(ft->t) - p.len);
    }
    const int n0 = ft->n;
    if (!adopt_nodes(ft, p.len)) {
        retire_nodes(ft);
        ad_tape_reset(ft->t);
        return;
    }
    if (rc != AD_OK)
        return;
    g_recorded[NOPS]++; /* counted apart: a gradient recorded */
    /* each grads[i] holds d out / d in[i], as the reference computes it */
    const size_t mark = scratch_used;
    double *ref[MAXN], *mag[MAXN];
    const double *sv = seed.cls == H_VALID ? ad_value(ft->t, seed.h) : NULL;
    const int have_ref = ref_reverse(ft, out.idx, sv, ref, mag);
    for (int i = 0; i < n; i++) {
        int gi = -1;
        for (int j = n0; j < ft->n; j++)
            if (ft->nodes[j].h.id_ == grads[i].id_)
                gi = j;
        for (int j = 0; j < n0 && gi < 0; j++) /* a gradient may be an existing node */
            if (ft->nodes[j].h.id_ == grads[i].id_)
                gi = j;
        CHECK(gi >= 0);
        const fnode *src = &ft->nodes[in[i].idx], *gn = &ft->nodes[gi];
        CHECK(same_shape(gn->shape, src->shape));
        const double *gv = ad_value(ft->t, gn->h);
        for (size_t e = 0; e < gn->size; e++) {
            if (g_trace > 0)
                fprintf(stderr, "  d/d%d[%zu] = %.17g (node %d), reference %.17g\n", in[i].idx, e,
                        gv[e], gi, have_ref && in[i].idx <= out.idx ? ref[in[i].idx][e] : 0.0);
            /* d out / d out is the seed; below it, only what needs a
             * gradient gets one: a constant leaf (or a node computed from
             * constants) gets 0 even when out depends on it */
            if (in[i].idx > out.idx || (!src->rg && in[i].idx != out.idx))
                CHECK(gv[e] == 0.0);
            else if (have_ref && !ft->dirty)
                CHECK(close_to(gv[e], ref[in[i].idx][e], mag[in[i].idx][e]));
        }
    }
    scratch_used = mark;
}

/* ---- code generation ---- */

/* A stream for ad_codegen's output (fopencookie): keeps the first CAP
 * bytes and counts all, or refuses every write after fail_after bytes. */
#define CG_CAP ((size_t)1 << 20)
typedef struct cgsink {
    char *buf;
    size_t len, total, fail_after; /* fail_after 0: never fails */
    int refused;
} cgsink;

NOCOV static ssize_t cgsink_write(void *c, const char *p, size_t n)
{
    cgsink *k = c;
    if (k->fail_after && k->total + n > k->fail_after) {
        k->refused = 1;
        return -1;
    }
    if (k->buf) {
        const size_t room = CG_CAP - 1 - k->len, m = n < room ? n : room;
        memcpy(k->buf + k->len, p, m);
        k->len += m;
        k->buf[k->len] = '\0';
    }
    k->total += n;
    return (ssize_t)n;
}

static FILE *cgsink_open(cgsink *k, char *buf, size_t fail_after)
{
    memset(k, 0, sizeof *k);
    k->buf = buf;
    if (buf)
        buf[0] = '\0';
    k->fail_after = fail_after;
    cookie_io_functions_t io = {NULL, cgsink_write, NULL, NULL};
    return fopencookie(k, "w", io);
}

/* A stream every write to fails: /dev/null opened for reading. */
static FILE *readonly_stream(void)
{
    static FILE *f;
    if (!f)
        f = fopen("/dev/null", "r");
    clearerr(f);
    return f;
}

/* One stream of ad_codegen as the input chooses it: kind 0 in memory,
 * 1 /dev/null, 2 read-only (every write fails), 3 in memory failing after
 * a number of bytes. *can_fail: writes may fail; *must_fail: they will. */
typedef struct cgstream {
    FILE *f;
    cgsink sink;
    int kind, cookie;
} cgstream;

static void cgstream_open(cgstream *s, unsigned kind, size_t fail_after, char *buf)
{
    memset(s, 0, sizeof *s);
    s->kind = (int)(kind & 3);
    switch (s->kind) {
    case 0: s->f = cgsink_open(&s->sink, buf, 0), s->cookie = 1; break;
    case 1: s->f = devnull(); break;
    case 2: s->f = readonly_stream(); break;
    default: s->f = cgsink_open(&s->sink, buf, fail_after ? fail_after : 1), s->cookie = 1; break;
    }
    if (!s->f) /* fopencookie failed: /dev/null instead */
        s->f = devnull(), s->kind = 1, s->cookie = 0;
}

static void cgstream_close(cgstream *s)
{
    if (s->cookie)
        fclose(s->f);
    else if (s->kind == 1)
        fflush(s->f);
}

/* ad_codegen's options from the input: a prefix (valid or not), what
 * (unknown bits too), use_float, max_stmts 0..5, a header name. */
typedef struct cgopts {
    ad_codegen_opts o;
    int prefix_ok, with_hdr;
    unsigned src_kind, hdr_kind, nulls;
    size_t fail_after;
    int twice;
} cgopts;

static void rd_cgopts(rd *r, cgopts *c)
{
    static const char *const prefixes[12] = {
        "P", "gen_f", "x9", "A123456789012345678901234567890123456789012345678901234567890123",
        "fz", "codegen_fuzz",
        /* refused: */
        NULL, "", "9lives", "_under", "has space",
        "A1234567890123456789012345678901234567890123456789012345678901234"};
    memset(c, 0, sizeof *c);
    const unsigned m1 = rd_u8(r), m2 = rd_u8(r), m3 = rd_u8(r);
    const unsigned pi = (m1 & 15) % 12;
    c->o.prefix = prefixes[pi];
    c->prefix_ok = pi < 6;
    c->with_hdr = (m1 & 16) != 0;
    c->o.header_name = (m1 & 32) ? "fuzz_gen.h" : NULL;
    c->o.use_float = (m1 & 64) != 0;
    c->twice = (m1 & 128) != 0;
    c->o.what = m2 & 31u;
    if ((m2 & 0xe0) == 0xe0)
        c->o.what |= 32u << (m3 & 3); /* an unknown bit */
    static const size_t stmts[8] = {0, 1, 2, 3, 4, 5, 0, 3};
    c->o.max_stmts = stmts[(m3 >> 2) & 7];
    c->src_kind = rd_u8(r);
    c->hdr_kind = c->src_kind >> 2;
    /* mostly in memory or /dev/null */
    if ((c->src_kind & 0xf0) != 0xf0)
        c->src_kind &= 1, c->hdr_kind &= 1;
    c->fail_after = 1 + (size_t)rd_u8(r) * 97;
    c->nulls = m3 >> 5; /* 1: opts NULL, 2: src NULL, 3: in NULL, 4: n = 0 */
}

/* Whether node i of the table depends on node j (structurally). */
NOCOV static void cg_marks(const ftape *ft, int out, const int *in, int n, unsigned char *act,
                           unsigned char *need)
{
    memset(act, 0, MAXN);
    memset(need, 0, MAXN);
    for (int k = 0; k < n; k++)
        act[in[k]] = 1;
    for (int i = 0; i < ft->n; i++)
        for (int k = 0; k < ft->nodes[i].nin && ft->nodes[i].kind == K_OP; k++)
            act[i] |= act[ft->nodes[i].in[k]];
    need[out] = 1;
    for (int i = out; i >= 0; i--)
        if (need[i] && act[i] && ft->nodes[i].kind == K_OP)
            for (int k = 0; k < ft->nodes[i].nin; k++)
                need[ft->nodes[i].in[k]] = 1;
}

/* A hash of every value of the table (ad_codegen only reads the tape). */
NOCOV static uint64_t values_hash(const ftape *ft)
{
    uint64_t h = 1469598103934665603u;
    for (int i = 0; i < ft->n; i++) {
        const double *v = ad_value(ft->t, ft->nodes[i].h);
        if (!v || ft->nodes[i].size > MAXSIZE)
            continue;
        const unsigned char *b = (const unsigned char *)v;
        for (size_t e = 0; e < ft->nodes[i].size * sizeof(double); e++)
            h = (h ^ b[e]) * 1099511628211u;
    }
    return h;
}

static char g_cgbuf[2][CG_CAP], g_cgbuf2[CG_CAP];

/* Calls ad_codegen on t with the options c and checks what only depends
 * on the outcome: the status (want: AD_EMISUSE predicted, AD_OK
 * otherwise; late: the misuse is found after the first allocation), the
 * message, the streams, the memory. Returns the status. */
static int run_codegen(state *S, ad_tape *t, hook *al, ad_node out, int n, const ad_node *in,
                       const cgopts *c, int want, int late)
{
    cgstream src, hdr;
    cgstream_open(&src, c->src_kind, c->fail_after, g_cgbuf[0]);
    if (c->with_hdr)
        cgstream_open(&hdr, c->hdr_kind, c->fail_after, g_cgbuf[1]);
    const int st0 = t ? ad_tape_status(t) : AD_EMISUSE;
    char msg0[300];
    snprintf(msg0, sizeof msg0, "%s", ad_tape_errmsg(t));
    const size_t len0 = ad_tape_len(t);
    const size_t bytes0 = al ? al->live_bytes : 0;
    const long blocks0 = al ? al->live_blocks : 0;
    const unsigned long fails = S->inj.failures;
    const int nulls = (int)c->nulls;
    if (nulls >= 1 && nulls <= 4)
        want = AD_EMISUSE, late = 0;
    const int rc = ad_codegen(t, out, nulls == 4 ? 0 : n, nulls == 3 ? NULL : in,
                              nulls == 1 ? NULL : &c->o, nulls == 2 ? NULL : src.f,
                              c->with_hdr ? hdr.f : NULL);
    const int src_fail = src.kind == 2 || (src.kind == 3 && src.sink.refused);
    const int hdr_fail = c->with_hdr && (hdr.kind == 2 || (hdr.kind == 3 && hdr.sink.refused));
    const int cg_failed = ferror(src.f) || (c->with_hdr && ferror(hdr.f));
    const size_t src_total = src.sink.total, hdr_total = c->with_hdr ? hdr.sink.total : 0;
    cgstream_close(&src);
    if (c->with_hdr)
        cgstream_close(&hdr);
    (void)cg_failed;
    if (g_trace > 0)
        fprintf(stderr, "  codegen: %d (want %d%s), src kind %d (%zu bytes), hdr %s: %s\n", rc,
                want, late ? ", late" : "", src.kind, src_total,
                c->with_hdr ? "yes" : "no", t ? ad_tape_errmsg(t) : "");
    if (!t) {
        CHECK(rc == AD_EMISUSE);
        return rc;
    }
    /* not sticky; nothing recorded; every byte given back */
    CHECK(ad_tape_status(t) == st0);
    CHECK(ad_tape_len(t) == len0);
    if (al) {
        CHECK(al->live_bytes == bytes0);
        CHECK(al->live_blocks == blocks0);
    }
    const char *msg = ad_tape_errmsg(t);
    CHECK(msg != NULL);
    if (st0 != AD_OK) {
        CHECK(rc == st0);
        CHECK(strcmp(msg, msg0) == 0);
        return rc;
    }
    if (rc == AD_OK) {
        if (g_trace > 0 && (src.kind == 0 || src.kind == 3))
            fprintf(stderr, "  codegen: %s table form, %s loops in the first %zu bytes\n",
                    strstr(g_cgbuf[0], "_tab_") ? "a" : "no",
                    strstr(g_cgbuf[0], "for (unsigned long it") ? "with" : "no", src.sink.len);
        if (g_trace > 0 && getenv("FUZZ_API_CGDUMP") && src.kind == 0) { /* the source, to read */
            FILE *d = fopen(getenv("FUZZ_API_CGDUMP"), "w");
            if (d)
                fputs(g_cgbuf[0], d), fclose(d);
        }
        CHECK(msg[0] == '\0');
        CHECK(want == AD_OK);
        CHECK(!src_fail && !hdr_fail); /* a refused write is reported */
        if (src.kind == 0 || src.kind == 3) {
            CHECK(src_total > 0);
            if (src_total < CG_CAP - 1) {
                char sym[96];
                snprintf(sym, sizeof sym, "%s_work_size", c->o.prefix);
                CHECK(strstr(g_cgbuf[0], sym) != NULL);
                if (c->o.header_name) {
                    CHECK(strstr(g_cgbuf[0], "#include \"fuzz_gen.h\"") != NULL);
                }
            }
        }
        if (c->with_hdr && (hdr.kind == 0 || hdr.kind == 3)) {
            CHECK(hdr_total > 0);
            if (hdr_total < CG_CAP - 1)
                CHECK(strstr(g_cgbuf[1], c->o.prefix) != NULL);
        }
        /* the same output every time (unless the allocator failed: without
         * their scratch, the passes are written statement by statement) */
        if (c->twice && src.kind == 0 && src_total < CG_CAP - 1 && S->inj.failures == fails) {
            cgsink k2;
            FILE *f2 = cgsink_open(&k2, g_cgbuf2, 0);
            if (f2) {
                const int rc2 = ad_codegen(t, out, n, in, &c->o, f2, NULL);
                fclose(f2);
                CHECK(rc2 == AD_OK || (rc2 == AD_ENOMEM && S->inj.failures > fails));
                if (rc2 == AD_OK && g_trace > 0 && strcmp(g_cgbuf2, g_cgbuf[0]) != 0) {
                    size_t d = 0;
                    while (g_cgbuf2[d] == g_cgbuf[0][d])
                        d++;
                    d = d > 200 ? d - 200 : 0;
                    fprintf(stderr, "  first output:\n%.600s\n  second:\n%.600s\n",
                            g_cgbuf[0] + d, g_cgbuf2 + d);
                }
                if (rc2 == AD_OK && S->inj.failures == fails)
                    CHECK(k2.total == src_total && strcmp(g_cgbuf2, g_cgbuf[0]) == 0);
            }
        }
        return rc;
    }
    check_msg(msg);
    CHECK(msg_names(msg, "codegen"));
    if (rc == AD_ENOMEM) {
        CHECK(S->inj.failures > fails); /* only when the hook said no */
        CHECK(want == AD_OK || late);
        return rc;
    }
    if (want == AD_EMISUSE) {
        CHECK(rc == AD_EMISUSE);
        return rc;
    }
    CHECK(rc == AD_EIO);
    CHECK(src_fail || hdr_fail);
    return rc;
}

/* ad_codegen on a node of the current tape with some leaves as inputs. */
static void act_codegen(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    cgopts c;
    rd_cgopts(r, &c);
    opnd out = pick(S, ft, r);
    const int n = 1 + (int)(rd_u8(r) % 4);
    opnd in[4];
    ad_node h[4];
    int idx[4];
    int known = out.cls != H_VALID || out.idx >= 0;
    for (int i = 0; i < n; i++) {
        in[i] = pick_leaf(S, ft, r);
        h[i] = in[i].h;
        idx[i] = in[i].idx;
        known &= in[i].cls != H_VALID || in[i].idx >= 0;
    }
    if (!known || !ft->t)
        return;
    /* what the call must answer */
    int want = AD_OK, late = 0;
    if (!c.prefix_ok || (c.o.what & ~AD_CODEGEN_ALL) || out.cls != H_VALID)
        want = AD_EMISUSE;
    for (int i = 0; i < n; i++)
        if (in[i].cls != H_VALID || ft->nodes[idx[i]].kind == K_OP)
            want = AD_EMISUSE;
    if (want == AD_OK && (c.o.what & AD_CODEGEN_HVP) && ft->nodes[out.idx].size != 1)
        want = AD_EMISUSE;
    if (want == AD_OK) {
        late = 1;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++)
                if (idx[i] == idx[j])
                    want = AD_EMISUSE; /* an input twice */
        unsigned char act[MAXN], need[MAXN];
        cg_marks(ft, out.idx, idx, n, act, need);
        if (!act[out.idx])
            want = AD_EMISUSE; /* the output depends on no input */
        for (int i = 0; i <= out.idx; i++)
            if (act[i] && need[i] && ft->nodes[i].kind == K_OP && OPS[ft->nodes[i].spec].custom)
                want = AD_EMISUSE; /* a custom op with no code generation rule */
    }
    const uint64_t hv = ft->t && ad_tape_status(ft->t) == AD_OK ? values_hash(ft) : 0;
    if (run_codegen(S, ft->t, ft->own_alloc ? &ft->al : NULL, out.h, n, h, &c, want, late) == AD_OK)
        g_cg_ok++;
    if (ft->t && ad_tape_status(ft->t) == AD_OK)
        CHECK(values_hash(ft) == hv); /* only read */
}

/* A tape of a few thousand scalar ops, made pseudo-randomly from a few
 * bytes, through ad_codegen: large enough for the level order, the groups
 * and the table form of passes with more than 2048 statements outside
 * repeated blocks (and, with repeat set, for repeated blocks as loops).
 * It lives on a tape of its own, freed at the end. Once per input. */
static void act_codegen_big(state *S)
{
    rd *r = &S->r;
    const unsigned seed = rd_u16(r), size = rd_u8(r), shape = rd_u8(r);
    cgopts c;
    rd_cgopts(r, &c);
    /* 50-200 ms each under the sanitizers: one input in 32 that asks,
     * once per input */
    if ((size & 0xf8) != 0x30 || S->big_runs++ >= 1)
        return;
    /* the level order's scratch holds 255 forms of about 4 KiB: more than
     * the other tapes' cap */
    S->big_al.cap = (size_t)8 << 20;
    ad_tape_opts opts = {hook_fn, &S->big_al, NULL};
    ad_tape *t = ad_tape_new(&opts);
    if (!t)
        return;
    uint32_t x = seed * 2654435761u + 12345u;
#define NEXT() (x ^= x << 13, x ^= x >> 17, x ^= x << 5, x)
    enum { WIN = 12, NLEAF = 6 };
    const int nops = 2300 + (int)(size % 4) * 100; /* 2300..2600 */
    const int repeat = (shape & 3) == 0;            /* one block over and over */
    const int tensors = (shape & 12) != 0;          /* a few tensor ops cut the stretches */
    ad_node leaf[NLEAF + 1], win[WIN];
    unsigned wmask[WIN]; /* the leaves each node of the window depends on */
    int nleaf = 0;
    for (int i = 0; i < NLEAF; i++) {
        const double v = 0.25 + 0.125 * (double)(NEXT() % 16);
        leaf[nleaf++] = (i % 3 == 2) ? ad_scalar(t, v) : ad_scalar_var(t, v);
    }
    double vv[4] = {0.5, -1, 2, 0.25};
    const ad_node vecv = ad_variable(t, ad_shape_vec(4), vv);
    leaf[nleaf++] = vecv;
    for (int i = 0; i < WIN; i++)
        win[i] = leaf[i % NLEAF], wmask[i] = 1u << (i % NLEAF);
    ad_node last = win[0];
    unsigned lmask = wmask[0];
    static ad_node (*const un[])(ad_tape *, ad_node) = {ad_tanh, ad_sin, ad_square, ad_neg,
                                                        ad_sigmoid, ad_atan, ad_abs, ad_cos};
    static ad_node (*const bin[])(ad_tape *, ad_node, ad_node) = {ad_add, ad_sub, ad_mul, ad_div};
    for (int k = 0; k < nops; k++) {
        const uint32_t z = repeat ? (uint32_t)(k % 8) * 0x9e3779b9u : NEXT();
        /* a: the node about to leave the ring, so every node is read (and
         * levels are about WIN wide); b: any in the window */
        const int ia = repeat ? (int)((z >> 8) % WIN) : k % WIN, ib = (int)((z >> 16) % WIN);
        const ad_node a = win[ia], b = win[ib];
        unsigned m = wmask[ia];
        ad_node y;
        switch (z % 16) {
        case 0: case 1: case 2: case 3: y = bin[z % 4](t, a, b), m |= wmask[ib]; break;
        case 4: y = ad_scale(t, a, 0.5 + (double)((z >> 4) % 7)); break;
        case 5: y = ad_add_const(t, a, (double)((z >> 4) % 5) - 2.0); break;
        case 6:
            if (tensors && !repeat) { /* a vector op, and its sum back to a scalar */
                y = ad_sum(t, ad_mul(t, ad_scale(t, vecv, 1.5), ad_tanh(t, vecv)));
                y = ad_add(t, y, a);
                m |= 1u << NLEAF;
                break;
            }
            /* fall through */
        default: y = un[(z >> 4) % 8](t, a); break;
        }
        const int slot = k % WIN; /* a ring: the oldest node goes */
        win[slot] = y, wmask[slot] = m;
        last = y, lmask = m;
    }
    for (int i = 0; i < WIN && !repeat; i++) /* the output reads most of the chain */
        if (win[i].id_ != last.id_)
            last = ad_add(t, last, win[i]), lmask |= wmask[i];
#undef NEXT
    if (g_trace > 0)
        fprintf(stderr, "  codegen_big: %zu nodes, %.1f ms\n", ad_tape_len(t),
                (double)clock() * 1000.0 / CLOCKS_PER_SEC);
    const int n = 1 + (int)(shape >> 4) % NLEAF;
    ad_node in[NLEAF + 1];
    unsigned imask = 0;
    for (int i = 0; i < n; i++) {
        const int j = (i * 2 + (int)(shape >> 2)) % nleaf;
        in[i] = leaf[j];
        imask |= 1u << j;
    }
    /* the inputs are distinct leaves; the output may depend on none */
    int want = AD_OK, late = 0;
    if (!c.prefix_ok || (c.o.what & ~AD_CODEGEN_ALL))
        want = AD_EMISUSE;
    else if (!(lmask & imask))
        want = AD_EMISUSE, late = 1;
    if (run_codegen(S, t, &S->big_al, last, n, in, &c, want, late) == AD_OK)
        g_cgbig_ok++;
    if (g_trace > 0)
        fprintf(stderr, "  codegen_big: done, %.1f ms\n", (double)clock() * 1000.0 / CLOCKS_PER_SEC);
    ad_tape_free(t);
    CHECK(S->big_al.live_blocks == 0 && S->big_al.live_bytes == 0);
}

/* ---- sparse Jacobians and Hessians ---- */

#define SP_MAXN 48    /* input elements the harness checks */
#define SP_MAXNNZ 4096

static void act_sparse_eval(state *S);

/* ad_sparse_jacobian_new / ad_sparse_hessian_new on outputs and leaves of
 * the current tape; the pattern's order and its CSR form. */
static void act_sparse_new(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    const unsigned mode = rd_u8(r), nulls = rd_u8(r);
    const int hess = mode & 1;
    const int nout = 1 + (int)((mode >> 1) % 3), nin = 1 + (int)((mode >> 3) % 3);
    unsigned flags = 0;
    if ((mode & 0xe0) == 0x20)
        flags = AD_SPARSE_DISTANCE2;
    else if ((mode & 0xe0) == 0x40)
        flags = 1u << (1 + (nulls & 7)); /* unknown */
    opnd out[3], in[3];
    ad_node ho[3], hi[3];
    int known = 1;
    for (int k = 0; k < nout; k++) {
        out[k] = pick(S, ft, r);
        ho[k] = out[k].h;
        known &= out[k].cls != H_VALID || out[k].idx >= 0;
    }
    for (int i = 0; i < nin; i++) {
        in[i] = pick_leaf(S, ft, r);
        hi[i] = in[i].h;
        known &= in[i].cls != H_VALID || in[i].idx >= 0;
    }
    if (!known)
        return;
    ad_sparse_free(ft->sp); /* one at a time */
    ft->sp = NULL;
    const int null_sp = (nulls >> 4) == 1, null_out = (nulls >> 4) == 2, null_in = (nulls >> 4) == 3,
              zero = (nulls >> 4) == 4;
    int want = AD_OK, late = 0;
    if (null_sp || null_out || null_in || zero)
        want = AD_EMISUSE;
    if (flags & ~(hess ? (unsigned)AD_SPARSE_DISTANCE2 : 0u))
        want = AD_EMISUSE;
    for (int k = 0; k < nout; k++)
        if (out[k].cls != H_VALID)
            want = AD_EMISUSE;
    for (int i = 0; i < nin; i++)
        if (in[i].cls != H_VALID || ft->nodes[in[i].idx].kind == K_OP || !ft->nodes[in[i].idx].rg)
            want = AD_EMISUSE;
    if (tape_lacks_rules(ft))
        want = AD_EMISUSE;
    if (want == AD_OK)
        for (int i = 0; i < nin; i++)
            for (int j = 0; j < i; j++)
                if (in[i].idx == in[j].idx)
                    want = AD_EMISUSE, late = 1;
    size_t N = 0, M = 0;
    for (int i = 0; want == AD_OK && i < nin; i++)
        N += ft->nodes[in[i].idx].size;
    for (int k = 0; want == AD_OK && k < nout; k++)
        M += ft->nodes[out[k].idx].size;
    ad_sparse *sp = (ad_sparse *)&sp; /* must be overwritten with NULL on error */
    pre p;
    pre_call(S, ft, &p);
    const long blocks = ft->al.live_blocks;
    const int no = zero ? 0 : nout;
    int rc = hess ? ad_sparse_hessian_new(ft->t, no, null_out ? NULL : ho, nin,
                                          null_in ? NULL : hi, flags, null_sp ? NULL : &sp)
                  : ad_sparse_jacobian_new(ft->t, no, null_out ? NULL : ho, nin,
                                           null_in ? NULL : hi, flags, null_sp ? NULL : &sp);
    if (g_trace > 0)
        fprintf(stderr, "  sparse_%s_new: %d (want %d), %zu x %zu, nnz %zu, colours %zu: %s\n",
                hess ? "hessian" : "jacobian", rc, want, ad_sparse_rows(rc ? NULL : sp),
                ad_sparse_cols(rc ? NULL : sp), ad_sparse_nnz(rc ? NULL : sp),
                ad_sparse_colors(rc ? NULL : sp), ad_tape_errmsg(ft->t));
    if (late && rc == AD_ENOMEM)
        want = AD_ENOMEM;
    post_call(S, ft, &p, rc, want);
    /* out of memory while laying out the tangent storage (the message
     * says "directions"): it is gone; earlier, it is as it was */
    if (rc == AD_ENOMEM && strstr(ad_tape_errmsg(ft->t), "directions"))
        ft->K = 0;
    if (rc != AD_OK) {
        if (!null_sp)
            CHECK(sp == NULL);
        if (ft->own_alloc && ft->t && ft->K != 0)
            CHECK(ft->al.live_blocks == blocks); /* nothing kept (but the tangent storage) */
        if (ft->t && ad_tape_status(ft->t) == AD_OK) {
            const char *msg = ad_tape_errmsg(ft->t);
            CHECK(strncmp(msg, hess ? "sparse_hessian" : "sparse_jacobian",
                          hess ? 14 : 15) == 0);
        }
        return;
    }
    CHECK(sp != NULL);
    g_sp_made++;
    /* it laid out the tangent storage for its colours, every tangent 0 */
    const size_t nc = ad_sparse_colors(sp);
    ft->K = nc == 0 ? 1 : nc < 64 ? (int)nc : 64;
    ft->tan_n = ft->n;
    ft->fwd = 0;
    memset(ft->seeded, 0, sizeof ft->seeded);
    CHECK(ft->n == 0 || ad_tangent(ft->t, ft->nodes[0].h) == NULL); /* no sweep yet */
    ft->sp = sp;
    ft->sp_hess = hess;
    ft->sp_nout = nout;
    ft->sp_nin = nin;
    for (int k = 0; k < nout; k++)
        ft->sp_out[k] = out[k].idx;
    for (int i = 0; i < nin; i++)
        ft->sp_in[i] = in[i].idx;
    ft->sp_gen = ft->gen;
    ft->sp_len = ad_tape_len(ft->t);
    const size_t rows = ad_sparse_rows(sp), cols = ad_sparse_cols(sp), nnz = ad_sparse_nnz(sp);
    CHECK(cols == N);
    CHECK(rows == (hess ? N : M));
    CHECK(nnz <= rows * cols);
    CHECK(ad_sparse_colors(sp) <= cols);
    CHECK(nnz == 0 || ad_sparse_colors(sp) >= 1);
    ad_sparse_pattern(sp, NULL, NULL);
    ad_sparse_csr(sp, NULL, NULL);
    if (nnz > SP_MAXNNZ || rows > SP_MAXNNZ)
        return;
    static int pr[SP_MAXNNZ], pc[SP_MAXNNZ], cc[SP_MAXNNZ];
    static size_t rp[SP_MAXNNZ + 1];
    ad_sparse_pattern(sp, pr, pc);
    ad_sparse_csr(sp, rp, cc);
    CHECK(rp[0] == 0 && rp[rows] == nnz);
    for (size_t q = 0; q < nnz; q++) {
        CHECK(pr[q] >= 0 && (size_t)pr[q] < rows && pc[q] >= 0 && (size_t)pc[q] < cols);
        CHECK(cc[q] == pc[q]);
        CHECK(rp[pr[q]] <= q && q < rp[pr[q] + 1]);
        if (hess)
            CHECK(pr[q] >= pc[q]); /* the lower triangle */
        if (q)
            CHECK(pr[q] > pr[q - 1] || (pr[q] == pr[q - 1] && pc[q] > pc[q - 1]));
    }
    for (size_t i = 0; i < rows; i++)
        CHECK(rp[i] <= rp[i + 1]);
    if (nulls & 8) /* evaluated at once (before anything is recorded on top) */
        act_sparse_eval(S);
}

/* ad_sparse_eval of the current tape's sparse object: the values against
 * the reference Jacobian (every entry outside the pattern 0 in it), or a
 * Hessian's against ad_hessian of each output; misuse refused. */
static void act_sparse_eval(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    unsigned mode = rd_u8(r);
    if (!(mode & 0x80)) /* mostly as it should be called */
        mode = (mode & 1) | (ft->sp && ft->sp_hess && (mode & 2) ? 4 : 0);
    static double xv[MAXSIZE], wv[MAXSIZE], values[MAXSIZE];
    ad_sparse *sp = ft->sp;
    if (!sp) {
        CHECK(ad_sparse_eval(NULL, NULL, 0, NULL, 0, values) == AD_EMISUSE);
        ad_sparse_free(NULL);
        CHECK(ad_sparse_nnz(NULL) == 0 && ad_sparse_rows(NULL) == 0 && ad_sparse_colors(NULL) == 0);
        return;
    }
    const size_t N = ad_sparse_cols(sp), nnz = ad_sparse_nnz(sp);
    size_t M = 0;
    int scalar_outs = 1, has_param = 0;
    const int fresh = ft->sp_gen == ft->gen && ft->t && ad_tape_len(ft->t) == ft->sp_len;
    if (fresh) {
        for (int k = 0; k < ft->sp_nout; k++) {
            M += ft->nodes[ft->sp_out[k]].size;
            scalar_outs &= ft->nodes[ft->sp_out[k]].shape.ndim == 0;
        }
        for (int i = 0; i < ft->sp_nin; i++)
            has_param |= ft->nodes[ft->sp_in[i]].kind == K_PARAM;
    }
    if (N > MAXSIZE / 2 || M > MAXSIZE / 2 || nnz > MAXSIZE)
        return;
    /* x: 0 NULL, 1 given, 2 one short, 3 NULL with a count; w likewise */
    const unsigned xm = mode & 3, wm = (mode >> 2) & 3;
    const int null_values = (mode & 0x70) == 0x70;
    rd_fill(r, xv, N ? N : 1);
    rd_fill(r, wv, M ? M : 1);
    const double *x = xm == 1 || xm == 2 ? xv : NULL;
    const size_t nx = xm == 1 ? N : xm == 2 ? N - 1 + 2 * (N == 0) : xm == 3 ? 1 : 0;
    const double *w = wm == 1 || wm == 2 ? wv : NULL;
    const size_t nw = wm == 1 ? M : wm == 2 ? M + 1 : wm == 3 ? 2 : 0;
    int want = AD_OK;
    if (!fresh || null_values)
        want = AD_EMISUSE;
    else if ((x == NULL) != (nx == 0) || (x && nx != N) || (x && has_param))
        want = AD_EMISUSE;
    else if ((w == NULL) != (nw == 0) || (w && !ft->sp_hess) || (w && nw != M))
        want = AD_EMISUSE;
    else if (ft->sp_hess && !w && !scalar_outs)
        want = AD_EMISUSE;
    pre p;
    pre_call(S, ft, &p);
    const unsigned long count = S->inj.count;
    const int rc = ad_sparse_eval(sp, x, nx, w, nw, null_values ? NULL : values);
    if (g_trace > 0)
        fprintf(stderr, "  sparse_eval: %d (want %d): %s\n", rc, want, ad_tape_errmsg(ft->t));
    post_call(S, ft, &p, rc, want);
    if (rc != AD_OK && ft->t && ad_tape_status(ft->t) == AD_OK)
        CHECK(strncmp(ad_tape_errmsg(ft->t), "sparse_eval", 11) == 0);
    if (want != AD_OK)
        CHECK(S->inj.count == count); /* refused before anything */
    if (rc == AD_ENOMEM) {
        if (strstr(ad_tape_errmsg(ft->t), "directions"))
            ft->K = 0;
        if (x)
            ft->dirty = 1; /* the point was written, not evaluated */
    }
    if (rc != AD_OK)
        return;
    /* it carried tangents through a forward sweep (and, for a Hessian, a
     * reverse one) and evaluated the tape at the point */
    const size_t nc = ad_sparse_colors(sp);
    ft->dirty = 0;
    ft->fwd = 1;
    ft->tan_n = ft->n;
    ft->K = nc == 0 ? 1 : nc < 64 ? (int)nc : 64;
    for (int i = 0; i < ft->n; i++)
        ft->seeded[i] = 0;
    for (int i = 0; i < ft->sp_nin; i++)
        ft->seeded[ft->sp_in[i]] = -1;
    for (int i = 0; i < ft->n; i++)
        check_forward(ft, i);
    if (x) { /* the point is in the inputs */
        size_t off = 0;
        for (int i = 0; i < ft->sp_nin; i++) {
            const fnode *nd = &ft->nodes[ft->sp_in[i]];
            CHECK(memcmp(ad_value(ft->t, nd->h), xv + off, nd->size * sizeof(double)) == 0);
            off += nd->size;
        }
    }
    if (nnz > SP_MAXNNZ || N > SP_MAXN)
        return;
    static int pr[SP_MAXNNZ], pc[SP_MAXNNZ];
    ad_sparse_pattern(sp, pr, pc);
    static unsigned char in_pat[SP_MAXNNZ * 4];
    if (!ft->sp_hess) {
        if (M * N > 2048)
            return;
        static double Jr[MAXSIZE], Jm[MAXSIZE];
        memset(in_pat, 0, M * N);
        for (size_t q = 0; q < nnz; q++)
            in_pat[(size_t)pr[q] * N + (size_t)pc[q]] = 1;
        size_t row0 = 0;
        for (int k = 0; k < ft->sp_nout; k++) {
            const int o = ft->sp_out[k];
            const size_t Mk = ft->nodes[o].size;
            if (!ref_jacobian(ft, o, ft->sp_nin, ft->sp_in, Jr + row0 * N, Jm + row0 * N))
                return;
            row0 += Mk;
        }
        g_sp_jac++;
        for (size_t q = 0; q < nnz; q++) {
            const size_t e = (size_t)pr[q] * N + (size_t)pc[q];
            if (g_trace > 0 && !close_to(values[q], Jr[e], Jm[e]))
                fprintf(stderr, "  J[%d][%d] = %.17g, reference %.17g (%g)\n", pr[q], pc[q],
                        values[q], Jr[e], Jm[e]);
            CHECK(close_to(values[q], Jr[e], Jm[e]));
        }
        for (size_t e = 0; e < M * N; e++)
            if (!in_pat[e] && isfinite(Jm[e])) {
                if (g_trace > 0 && Jm[e] != 0.0)
                    fprintf(stderr, "  J[%zu][%zu] = %.17g (%g) outside the pattern\n", e / N,
                            e % N, Jr[e], Jm[e]);
                CHECK(Jr[e] == 0.0 && Jm[e] == 0.0); /* the pattern holds every dependence */
            }
        return;
    }
    /* a Hessian: against ad_hessian of each (scalar) output, weighted */
    if (!scalar_outs || N > 16 || ft->sp_nout > 3)
        return;
    static double H[16 * 16], Hs[16 * 16], Hk[16 * 16];
    memset(H, 0, sizeof H);
    memset(Hs, 0, sizeof Hs);
    ad_node hin[3];
    for (int i = 0; i < ft->sp_nin; i++)
        hin[i] = ft->nodes[ft->sp_in[i]].h;
    int finite = 1;
    for (int k = 0; k < ft->sp_nout; k++) {
        pre p2;
        pre_call(S, ft, &p2);
        const int rc2 = ad_hessian(ft->t, ft->nodes[ft->sp_out[k]].h, ft->sp_nin, hin, Hk);
        post_call(S, ft, &p2, rc2, AD_OK);
        if (rc2 != AD_OK) {
            ft->K = 0;
            return;
        }
        ft->K = (int)(N < 8 ? N : 8);
        const double wk = w ? w[k] : 1.0;
        for (size_t e = 0; e < N * N; e++) {
            finite &= isfinite(Hk[e]) && isfinite(wk * Hk[e]);
            H[e] += wk * Hk[e];
            Hs[e] += fabs(wk * Hk[e]);
        }
    }
    for (size_t q = 0; q < nnz; q++)
        finite &= isfinite(values[q]);
    if (!finite)
        return;
    g_sp_hess++;
    memset(in_pat, 0, N * N);
    for (size_t q = 0; q < nnz; q++)
        in_pat[(size_t)pr[q] * N + (size_t)pc[q]] = 1;
    for (size_t q = 0; q < nnz; q++) {
        const size_t e = (size_t)pr[q] * N + (size_t)pc[q];
        double mag = fabs(values[q]);
        for (size_t j = 0; j < N; j++)
            mag += Hs[(size_t)pr[q] * N + j] + Hs[j * N + (size_t)pc[q]];
        if (g_trace > 0)
            fprintf(stderr, "  H[%d][%d] = %.17g, ad_hessian %.17g (%g)\n", pr[q], pc[q],
                    values[q], H[e], mag);
        CHECK(fabs(values[q] - H[e]) <= 1e-7 * mag + TINY);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j <= i; j++)
            if (!in_pat[i * N + j]) {
                if (g_trace > 0 && Hs[i * N + j] != 0.0)
                    fprintf(stderr, "  H[%zu][%zu] = %.17g outside the pattern\n", i, j,
                            H[i * N + j]);
                CHECK(Hs[i * N + j] == 0.0); /* the pattern holds every coupling */
            }
}

static void act_sparse_free(state *S)
{
    ftape *ft = cur(S);
    ad_sparse_free(ft->sp);
    ft->sp = NULL;
}

/* ---- tapes, registry, allocator ---- */

static void open_tape(state *S, ftape *ft, unsigned mode)
{
    ft->own_alloc = (mode & 1) == 0;
    ft->with_registry = (mode & 2) != 0;
    ad_tape_opts opts = {ft->own_alloc ? hook_fn : NULL, ft->own_alloc ? &ft->al : NULL,
                         ft->with_registry ? S->reg : NULL};
    const unsigned long fails = S->inj.failures;
    ft->t = ad_tape_new((mode & 4) && !ft->with_registry && ft->own_alloc ? NULL : &opts);
    if ((mode & 4) && !ft->with_registry && ft->own_alloc)
        ft->own_alloc = 0; /* NULL options: realloc/free */
    if (!ft->t) {
        CHECK(ft->own_alloc && S->inj.failures > fails);
        CHECK(ft->al.live_blocks == 0);
    } else {
        CHECK(ad_tape_status(ft->t) == AD_OK);
        CHECK(ad_tape_len(ft->t) == 1);
        check_memory(ft);
    }
    ft->n = 0;
    ft->dirty = 0;
}

static void close_tape(ftape *ft)
{
    retire_nodes(ft);
    ad_sparse_free(ft->sp); /* before its tape */
    ft->sp = NULL;
    ad_tape_free(ft->t);
    ft->t = NULL;
    CHECK(ft->al.live_blocks == 0);
    CHECK(ft->al.live_bytes == 0);
}

static void act_switch(state *S)
{
    if (!S->tape_b_open) {
        open_tape(S, &S->tp[1], S->tape_b_mode);
        S->tape_b_open = 1;
    }
    S->cur ^= 1;
}

static void act_renew_tape(state *S)
{
    const unsigned mode = rd_u8(&S->r);
    ftape *ft = cur(S);
    close_tape(ft);
    open_tape(S, ft, mode);
}

static void act_registry(state *S)
{
    rd *r = &S->r;
    const unsigned what = rd_u8(r) % 12;
    static const ad_opdef *const bad[] = {NULL,       &bad_noname, &bad_empty, &bad_arity0,
                                          &bad_arity5, &bad_nofwd, &bad_novjp};
    if (!S->reg) {
        CHECK(ad_registry_add(NULL, &cube_def) == AD_EMISUSE);
        CHECK(ad_registry_find(NULL, "add") != NULL);
        CHECK(ad_registry_find(NULL, "cube") == NULL);
        return;
    }
    const unsigned long fails = S->inj.failures;
    int rc;
    if (what < 7) {
        rc = ad_registry_add(S->reg, bad[what]);
        CHECK(rc == AD_EMISUSE);
    } else if (what == 7) {
        rc = ad_registry_add(S->reg, &dup_add);
        CHECK(rc == AD_EEXIST);
        CHECK(ad_registry_find(S->reg, "add") != &dup_add);
    } else {
        const int i = (int)(what - 8);
        rc = ad_registry_add(S->reg, CUSTOM[i]);
        if (S->registered[i])
            CHECK(rc == AD_EEXIST);
        else
            CHECK(rc == AD_OK || (rc == AD_ENOMEM && S->inj.failures > fails));
        if (rc == AD_OK)
            S->registered[i] = 1;
        CHECK((ad_registry_find(S->reg, CUSTOM[i]->name) == CUSTOM[i]) == S->registered[i]);
    }
    const char *msg = ad_registry_errmsg(S->reg);
    CHECK(msg != NULL);
    if (rc != AD_OK)
        check_msg(msg);
    CHECK(ad_registry_find(S->reg, NULL) == NULL);
    CHECK(ad_registry_find(S->reg, "") == NULL);
}

/* Arms the injector: the k-th allocation from now fails (and, sticky,
 * every one after it); k 0 disarms. */
static void act_arm(state *S)
{
    rd *r = &S->r;
    const unsigned k = rd_u8(r);
    S->inj.fail_at = k ? S->inj.count + (k & 0x3f) + 1 : 0;
    S->inj.sticky = (k & 0x40) != 0;
}

/* Calls on a NULL tape and other static answers. */
static void act_null(state *S)
{
    rd *r = &S->r;
    ad_node h = S->tp[0].n ? S->tp[0].nodes[0].h : ad_nil();
    double d = 1.0;
    CHECK(ad_node_is_nil(ad_add(NULL, h, h)));
    CHECK(ad_node_is_nil(ad_scale(NULL, h, 2.0)));
    CHECK(ad_node_is_nil(ad_affine(NULL, h, h, h)));
    CHECK(ad_node_is_nil(ad_constant(NULL, ad_shape_scalar(), &d)));
    CHECK(ad_node_is_nil(ad_param(NULL, ad_shape_scalar(), &d, NULL)));
    CHECK(ad_node_is_nil(ad_apply_named(NULL, "add", &h, 1, 0)));
    CHECK(ad_backward(NULL, h) == AD_EMISUSE);
    CHECK(ad_backward_seed(NULL, h, &d) == AD_EMISUSE);
    CHECK(ad_sweep(NULL, h, NULL, 0) == AD_EMISUSE);
    CHECK(ad_replay(NULL) == AD_EMISUSE);
    CHECK(ad_set_value(NULL, h, &d) == AD_EMISUSE);
    CHECK(ad_tape_status(NULL) == AD_EMISUSE);
    CHECK(ad_tape_errmsg(NULL) != NULL);
    CHECK(ad_tape_len(NULL) == 0);
    CHECK(ad_set_name(NULL, h, "x") == AD_EMISUSE);
    ad_tape_reset(NULL);
    ad_tape_free(NULL);
    ad_registry_free(NULL);
    CHECK(strcmp(ad_version(), AD_VERSION_STRING) == 0);
    const int code = (int)rd_u8(r) - 128;
    const char *s = ad_strstatus(code);
    CHECK(s != NULL && s[0] != '\0');
    CHECK(ad_builtin_op(ad_builtin_count()) == NULL);
    CHECK(ad_builtin_op((size_t)-1) == NULL);
    ad_check_report_free(NULL);
    ad_check_report rep;
    CHECK(ad_gradcheck(NULL, NULL, NULL, 0, NULL, &rep) == AD_EMISUSE);
    check_report(S, AD_EMISUSE, &rep, S->inj.failures);
    ad_check_report_free(&rep);
}

/* ------------------------------------------------------------------ */
/* The action table: one line per action. Append new actions (new ops
 * go in OPS; a parser or a derivative mode goes here); some appear more
 * than once to weigh them. */
/* ------------------------------------------------------------------ */

typedef struct action {
    const char *name;
    void (*run)(state *S);
} action;

/* ad_codegen_sparse on the current tape's ad_sparse (or a NULL one): the
 * status against what can be predicted (bad options, a pattern made before
 * the last reset or recording, custom ops -- which have no code generation
 * rule here), the message, the streams, the memory, the tape untouched. */
static void act_codegen_sparse(state *S)
{
    rd *r = &S->r;
    ftape *ft = cur(S);
    cgopts c;
    rd_cgopts(r, &c);
    const int null_sp = c.nulls == 3 || c.nulls == 4;
    if (!ft->t || (!ft->sp && !null_sp))
        return;
    ad_sparse *sp = null_sp ? NULL : ft->sp;
    hook *al = ft->own_alloc ? &ft->al : NULL;
    cgstream src, hdr;
    cgstream_open(&src, c.src_kind, c.fail_after, g_cgbuf[0]);
    if (c.with_hdr)
        cgstream_open(&hdr, c.hdr_kind, c.fail_after, g_cgbuf[1]);
    const int st0 = ad_tape_status(ft->t);
    const size_t len0 = ad_tape_len(ft->t);
    const size_t bytes0 = al ? al->live_bytes : 0;
    const long blocks0 = al ? al->live_blocks : 0;
    const unsigned long fails = S->inj.failures;
    const uint64_t hv = st0 == AD_OK ? values_hash(ft) : 0;
    const int rc = ad_codegen_sparse(sp, c.nulls == 1 ? NULL : &c.o, c.nulls == 2 ? NULL : src.f,
                                     c.with_hdr ? hdr.f : NULL);
    const int src_fail = src.kind == 2 || (src.kind == 3 && src.sink.refused);
    const int hdr_fail = c.with_hdr && (hdr.kind == 2 || (hdr.kind == 3 && hdr.sink.refused));
    const size_t src_total = src.sink.total;
    cgstream_close(&src);
    if (c.with_hdr)
        cgstream_close(&hdr);
    if (g_trace > 0)
        fprintf(stderr, "  codegen_sparse: %d, src kind %d (%zu bytes): %s\n", rc, src.kind,
                src_total, ad_tape_errmsg(ft->t));
    if (!sp) {
        CHECK(rc == AD_EMISUSE);
        return;
    }
    CHECK(ad_tape_status(ft->t) == st0); /* not sticky, nothing recorded */
    CHECK(ad_tape_len(ft->t) == len0);
    if (al) {
        CHECK(al->live_bytes == bytes0);
        CHECK(al->live_blocks == blocks0);
    }
    if (st0 == AD_OK)
        CHECK(values_hash(ft) == hv);
    const char *msg = ad_tape_errmsg(ft->t);
    CHECK(msg != NULL);
    if (st0 != AD_OK) { /* a failed recording: refused, its message kept or one of misuse */
        CHECK(rc != AD_OK);
        return;
    }
    const int fresh = ft->sp_gen == ft->gen && ad_tape_len(ft->t) == ft->sp_len;
    int custom = 0;
    for (int i = 0; i < ft->n; i++)
        custom |= ft->nodes[i].kind == K_OP && OPS[ft->nodes[i].spec].custom;
    const int misuse = c.nulls == 1 || c.nulls == 2 || !c.prefix_ok
                       || (c.o.what & ~(unsigned)AD_CODEGEN_FORWARD) || !fresh;
    if (rc == AD_OK) {
        CHECK(!misuse);
        CHECK(msg[0] == '\0');
        CHECK(!src_fail && !hdr_fail);
        if ((src.kind == 0 || src.kind == 3) && src_total < CG_CAP - 1) {
            char sym[96];
            snprintf(sym, sizeof sym, "%s_sparse_pattern", c.o.prefix);
            CHECK(strstr(g_cgbuf[0], sym) != NULL);
        }
        return;
    }
    check_msg(msg);
    CHECK(msg_names(msg, "codegen_sparse"));
    if (rc == AD_ENOMEM) {
        CHECK(S->inj.failures > fails);
        return;
    }
    if (rc == AD_EMISUSE) {
        CHECK(misuse || custom);
        return;
    }
    CHECK(rc == AD_EIO);
    CHECK(src_fail || hdr_fail);
}

static const action ACTIONS[] = {
    {"constant", act_constant},
    {"variable", act_variable},
    {"scalar", act_scalar},
    {"scalar_var", act_scalar_var},
    {"param", act_param},
    {"op", act_op},
    {"op", act_op},
    {"op", act_op},
    {"op", act_op},
    {"apply_builtin", act_apply_builtin},
    {"apply_named", act_apply_named},
    {"sweep", act_sweep},
    {"sweep", act_sweep},
    {"replay", act_replay},
    {"reset", act_reset},
    {"set_value", act_set_value},
    {"poke_params", act_poke_params},
    {"accessors", act_accessors},
    {"set_name", act_set_name},
    {"export_dot", act_export_dot},
    {"trace", act_trace},
    {"gradcheck", act_gradcheck},
    {"handcheck", act_handcheck},
    {"check_grad", act_check_grad},
    {"switch_tape", act_switch},
    {"renew_tape", act_renew_tape},
    {"registry", act_registry},
    {"arm_alloc_failure", act_arm},
    {"null_tape", act_null},
    {"variable", act_variable},
    {"param", act_param},
    {"op", act_op},
    {"tangents", act_tangents},
    {"set_tangent", act_set_tangent},
    {"forward", act_forward},
    {"backward_tangent", act_backward_tangent},
    {"driver", act_driver},
    {"driver", act_driver},
    {"workspace", act_workspace},
    {"set_tangent", act_set_tangent},
    {"gradient_nodes", act_gradient_nodes},
    {"gradient_nodes", act_gradient_nodes},
    {"codegen", act_codegen},
    {"codegen", act_codegen},
    {"codegen_big", act_codegen_big},
    {"sparse_new", act_sparse_new},
    {"sparse_eval", act_sparse_eval},
    {"sparse_eval", act_sparse_eval},
    {"sparse_free", act_sparse_free},
    {"codegen_sparse", act_codegen_sparse},
};
#define NACTIONS (sizeof ACTIONS / sizeof ACTIONS[0])
#define MAX_ACTIONS 400

static int g_stats;
static double g_action_time[64];
static unsigned long g_action_runs[64];

static void print_stats(void)
{
    fprintf(stderr, "action            runs  seconds\n");
    for (size_t i = 0; i < NACTIONS; i++)
        fprintf(stderr, "%2zu %-16s %8lu %8.3f\n", i, ACTIONS[i].name, g_action_runs[i],
                g_action_time[i]);
    fprintf(stderr, "op            recorded  in checked sweeps\n");
    for (size_t i = 0; i < NOPS; i++)
        fprintf(stderr, "%-12s %9lu %9lu\n", op_name(&OPS[i]), g_recorded[i], g_swept[i]);
    fprintf(stderr, "gradients recorded by ad_gradient_nodes: %lu\n", g_recorded[NOPS]);
    fprintf(stderr, "codegen OK: %lu small, %lu big; sparse objects made: %lu, evaluations "
            "checked: %lu Jacobians, %lu Hessians\n", g_cg_ok, g_cgbig_ok, g_sp_made, g_sp_jac,
            g_sp_hess);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static state S_;
    state *S = &S_;
    memset(S, 0, sizeof *S);
    S->r.p = data;
    S->r.n = size;
    scratch_used = 0;
    g_action = "setup";
    static double vinit[POOL];
    if (vinit[1] == 0.0)
        for (int i = 0; i < POOL; i++)
            vinit[i] = (double)((i * 7) % 17 - 8) / 4.0;
    memcpy(vpool, vinit, sizeof vpool);
    memset(gpool, 0, sizeof gpool);
    S->tp[0].tanbuf = g_tanbuf[0];
    S->tp[1].tanbuf = g_tanbuf[1];
    S->tp[0].al.inj = S->tp[1].al.inj = S->reg_al.inj = S->chk_al.inj = S->ws_al.inj =
        S->big_al.inj = &S->inj;

    /* header: the allocation to fail (0: none), sticky or not, the second
     * tape's options, and the custom ops to register (none: no registry) */
    const unsigned fail = rd_u8(&S->r), hdr = rd_u8(&S->r);
    S->inj.fail_at = fail;
    S->inj.sticky = (hdr & 1) != 0;
    /* a registry only when the header asks for custom ops in it */
    const unsigned long fails = S->inj.failures;
    S->reg = (hdr >> 4) ? ad_registry_new(hook_fn, &S->reg_al) : NULL;
    if (!S->reg && (hdr >> 4))
        CHECK(S->inj.failures > fails && S->reg_al.live_blocks == 0);
    for (int i = 0; i < 4 && S->reg; i++)
        if ((hdr >> (4 + i)) & 1) {
            const unsigned long f0 = S->inj.failures;
            int rc = ad_registry_add(S->reg, CUSTOM[i]);
            CHECK(rc == AD_OK || (rc == AD_ENOMEM && S->inj.failures > f0));
            S->registered[i] = rc == AD_OK;
        }
    open_tape(S, &S->tp[0], 2); /* the hook and the registry */
    S->tape_b_mode = (hdr >> 1) & 7; /* opened by the first switch_tape */

    if (g_trace < 0) {
        g_trace = getenv("FUZZ_API_TRACE") != NULL;
        if (getenv("FUZZ_API_STATS"))
            atexit(print_stats), g_stats = 1;
    }
    for (int n = 0; n < MAX_ACTIONS && rd_more(&S->r); n++) {
        const action *a = &ACTIONS[rd_u8(&S->r) % NACTIONS];
        g_action = a->name;
        if (g_trace) /* FUZZ_API_TRACE=1: the actions of an input, for a report */
            fprintf(stderr, "action %d: %s on tape %d (%zu nodes, status %d)\n", n, a->name,
                    S->cur, ad_tape_len(cur(S)->t), ad_tape_status(cur(S)->t));
        scratch_used = 0;
        const clock_t c0 = g_stats ? clock() : 0;
        a->run(S);
        if (g_stats) {
            g_action_time[a - ACTIONS] += (double)(clock() - c0) / CLOCKS_PER_SEC;
            g_action_runs[a - ACTIONS]++;
        }
        check_len(cur(S));
        check_memory(cur(S));
    }

    g_action = "teardown";
    for (int i = 0; i < 2; i++)
        close_tape(&S->tp[i]);
    ad_registry_free(S->reg);
    CHECK(S->reg_al.live_blocks == 0 && S->chk_al.live_blocks == 0 && S->ws_al.live_blocks == 0);
    CHECK(S->big_al.live_blocks == 0);
    return 0;
}
