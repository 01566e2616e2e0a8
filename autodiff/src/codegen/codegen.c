/* codegen.c -- ad_codegen: a recorded tape written out as C99 that needs
 * no tape, no allocator and nothing but <math.h> (docs/codegen.md).
 *
 * The plan, in three steps over the node array (never recursion):
 *   1. analysis: which nodes depend on an input (ACT), which the output or
 *      a replay guard needs (NEED), which carry derivatives (DIFF); every
 *      other node the output reads is baked in as a constant;
 *   2. layout: each ACT and NEED node gets a slot in the value region of
 *      the work array; its adjoint, tangent and adjoint tangent sit at the
 *      same offset in the regions after it;
 *   3. emission: a pass (forward values, reverse adjoints, forward
 *      tangents, forward-over-reverse) writes one statement per scalar
 *      node and one loop nest per tensor op, cut into functions of at most
 *      max_stmts statements, then the public functions call them in order.
 *
 * Elementwise ops are written from their lines in scalar_ops.h: FWD, DER,
 * D2 (binary: DA, DB, DAA, DAB, DBB) are stringized, macros expanded, into
 * one small inline function each, and the helpers those formulas call are
 * the stringized AD__SCALAR_HELPERS -- so the generated code and the tape
 * compute from one text. Tensor ops are loops here, one rule per op
 * (forward, vjp); forward mode and forward-over-reverse of a tensor op
 * come from those two by its class: linear ops run forward on the
 * tangents and their vjp on the adjoint tangents, bilinear ones
 * (products) add the vjp at the tangents; the nonlinear ones (softmax,
 * norm, the solvers, ...) have their own tangent and second-order rules,
 * the tape's jvp and so (em_jvp, em_so). solve, solve_spd and logdet
 * keep their factors in the work array from the forward, and call
 * helpers written into the file (LU, Cholesky; ops_solve.c's
 * algorithms); a singular matrix sets flag 2. Structure ops
 * (reshape, slice, take, concat, slice_add, index_add) become gathers
 * through an index table that the library's own forward kernel computes,
 * run once on 0, 1, 2, ... at generation. */
#include "internal.h"
#include "scalar_ops.h"
#include "sparse_internal.h"
#include "autodiff/codegen.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define CG_STR_(...) #__VA_ARGS__
#define CG_STR(...) CG_STR_(__VA_ARGS__)

/* ---- the elementwise formulas, as text ---- */

typedef struct ew_text {
    const char *name;
    unsigned code;
    int binary, takes_c;
    const char *f, *d[5]; /* unary: d[0] = DER, d[1] = D2; binary: DA DB DAA DAB DBB */
} ew_text;

#define CG_UN(NAME, CODE, TAKES_C, FWD, DER, D2, GOPS)                                       \
    {#NAME, CODE, 0, TAKES_C, CG_STR(FWD), {CG_STR(DER), CG_STR(D2), NULL, NULL, NULL}},
#define CG_BIN(NAME, CODE, FWD, DA, DB, DAA, DAB, DBB, GA, GB)                               \
    {#NAME, CODE, 1, 0, CG_STR(FWD), {CG_STR(DA), CG_STR(DB), CG_STR(DAA), CG_STR(DAB), CG_STR(DBB)}},
static const ew_text ew_texts[] = {AD__UNARY_OPS(CG_UN) AD__BINARY_OPS(CG_BIN)
                                       AD__COMPARE_OPS(CG_BIN)};
#define CG_NEW (sizeof ew_texts / sizeof ew_texts[0])
_Static_assert(sizeof ew_texts / sizeof ew_texts[0] == AD__INLINE_END - 1,
               "every op with an inline form has its formulas as text");

static const char cg_helpers[] = CG_STR(AD__SCALAR_HELPERS);

/* ---- state ---- */

enum {
    F_ACT = 1,   /* depends on an input: computed by the generated code */
    F_NEED = 2,  /* the output or a replay guard reads it              */
    F_DIFF = 4,  /* carries an adjoint and a tangent                   */
    F_BAKED = 8, /* written out as a constant array                    */
    F_MAP = 16,  /* its index table is written out                     */
    F_WIDE = 32, /* read by a tensor op or the output: lives in w      */
    F_LOCAL = 64, /* small tapes: value and adjoint in local variables  */
    F_NOTAN = 128 /* ad_codegen_sparse, Hessian: no tangent read         */
};

typedef struct cgnode {
    const double *val; /* its value now (baked when not ACT) */
    double c;
    size_t off; /* slot in each region */
    size_t aux; /* solve, solve_spd, logdet: their factors' slot in region X */
    ad_shape shape;
    uint32_t in[AD_MAX_ARITY];
    int32_t input; /* index into the inputs, or -1 */
    uint16_t op;
    uint8_t nin, flags;
} cgnode;

enum { PASS_F, PASS_R, PASS_T, PASS_H };

typedef struct cg {
    ad_tape *t;
    FILE *f;
    int err;     /* a write failed */
    int status;  /* first error found while emitting (a refused op) */
    const char *P;
    cgnode *n;
    size_t len;
    uint32_t out;
    int nin;
    const ad_node *in;
    size_t nv, gb, tb, gtb, zb, ws, zsize;
    size_t xb, sb;  /* regions X (factors) and S (their scratch) */
    unsigned lin;   /* LIN_* bits: the solvers' helpers to write */
    unsigned what;
    int fl;
    size_t max_stmts, fuse_max, stmts;
    unsigned nchunk[4];
    int pass;
    bool fused; /* writing the one-function forward and vjp of a small tape */
    size_t ngd; /* replay guards: count */
    const ew_text *ew[AD__INLINE_END];
    unsigned char used[AD__INLINE_END];
    /* ad_codegen_sparse (at the end of this file) */
    bool in_w;     /* the inputs' values and tangents live in w, like a node's */
    bool no_adj;   /* PASS_H: adjoint tangents only (a direction after the first) */
    bool ft, ft_in; /* PASS_F writes each statement's tangents right after it */
    bool sparse;    /* ad_codegen_sparse: its runs (em_run), no level order */
    size_t K, ts;  /* K > 1: the tangent passes carry K directions, ts apart */
    char dsfx[40]; /* " + k * tsUL" */
    int nouts;     /* > 0: the outputs are outs[0..nouts), out the last of them */
    const uint32_t *outs;
    uint32_t *maxuse; /* per node: its last reader (UINT32_MAX: an output); NULL */
    uint32_t *lj;     /* per node: 1 + its place in a run's block, when a local */
    unsigned char *hl; /* Hessian: per node, its adjoints were locals (not zeroed) */
    size_t dsb;        /* Hessian: the region of first derivatives kept (0: none) */
    unsigned char *za; /* Hessian: per node, ZA_T / ZA_G (sp_mark_za); NULL: none */
    uint32_t *lr;      /* Hessian: per node, its last reader (outputs too); NULL: no fusion */
    uint32_t *fu;      /* Hessian: 1 + its place in the block of the run being recomputed */
    unsigned char *fz; /* Hessian: per node, recomputed in the reverse pass (not in PASS_F) */
    bool fzout;        /* Hessian: an output among them (P_forward runs the reverse pass) */
} cg;

/* ad_codegen_sparse, Hessian (cg.za): the node's adjoint tangents are
 * identically 0 (not read, written or zeroed); its first-order adjoint is
 * read by nothing (an input's: not written or zeroed) */
enum { ZA_T = 1, ZA_G = 2, ZA_1 = 4 }; /* ZA_1: one statement adds to its adjoint:
                                           it sets it (= 0 there), not zeroed */

static void em(cg *g, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A loop of at most 8 iterations, "for (unsigned long i = 0; i < 3UL;":
 * the one-function form of a small tape unrolls it. */
static bool unroll_at(const char *s)
{
    while (*s == ' ')
        s++;
    if (strncmp(s, "for (unsigned long ", 19) != 0)
        return false;
    s += 19;
    const char v = *s;
    if (v < 'a' || v > 'z' || strncmp(s + 1, " = 0; ", 6) != 0 || s[7] != v
        || strncmp(s + 8, " < ", 3) != 0)
        return false;
    char *e;
    const unsigned long n = strtoul(s + 11, &e, 10);
    return e != s + 11 && n <= 8 && strncmp(e, "UL;", 3) == 0;
}

/* Formats into a buffer and fwrite()s it to the caller's stream (the
 * library never prints: check-abi.sh); a long piece goes through a buffer
 * from the tape's allocator. */
static void em(cg *g, const char *fmt, ...)
{
    if (g->err)
        return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) {
        g->err = 1;
        return;
    }
    if ((size_t)n < sizeof buf) {
        const char *s = buf;
        /* the one-function form: P_UNROLL before each short loop's line */
        for (const char *l = buf; g->fused && l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
            if (unroll_at(l)) {
                char u[80];
                const int k = snprintf(u, sizeof u, "%s_UNROLL\n", g->P);
                if (fwrite(s, 1, (size_t)(l - s), g->f) != (size_t)(l - s) || k < 0
                    || fwrite(u, 1, (size_t)k, g->f) != (size_t)k)
                    g->err = 1;
                s = l;
            }
        const size_t left = (size_t)n - (size_t)(s - buf);
        if (fwrite(s, 1, left, g->f) != left)
            g->err = 1;
        return;
    }
    char *big = ad__alloc(&g->t->mem, (size_t)n + 1);
    if (!big) {
        g->err = 2; /* out of memory, reported as such */
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (fwrite(big, 1, (size_t)n, g->f) != (size_t)n)
        g->err = 1;
    ad__free(&g->t->mem, big, (size_t)n + 1);
}

static bool is_ident(const char *p);
static const ad_codegen_rule *custom_rule(const ad_opdef *d);

static const char *opname(unsigned op)
{
    return op < AD_OP_COUNT && ad__ops[op] ? ad__ops[op]->def.name : "custom";
}

/* A double as a C literal that reads back exactly. */
static const char *num(double v, char *buf)
{
    if (v != v)
        return strcpy(buf, "NAN");
    if (v > 1e308 * 10)
        return strcpy(buf, "HUGE_VAL");
    if (v < -1e308 * 10)
        return strcpy(buf, "(-HUGE_VAL)");
    snprintf(buf, 40, "%.17g", v);
    if (!strpbrk(buf, ".en"))
        strcat(buf, ".0");
    if (buf[0] == '-') { /* (-1.0): safe after any operator */
        memmove(buf + 1, buf, strlen(buf) + 1);
        buf[0] = '(';
        strcat(buf, ")");
    }
    return buf;
}

static size_t nsize(const cgnode *x) { return ad_shape_size(x->shape); }
static bool is_ew(unsigned op) { return op > AD_OP_LEAF && op < AD__INLINE_END; }
static bool all_scalar(const cg *g, const cgnode *x)
{
    if (nsize(x) != 1)
        return false;
    for (int k = 0; k < x->nin; k++)
        if (nsize(&g->n[x->in[k]]) != 1)
            return false;
    return true;
}

/* ---- references ---- */

/* In a tangent pass carrying K > 1 directions (ad_codegen_sparse), what a
 * scalar statement's tangent slot adds: direction k's is ts reals on. */
static const char *cg_dir(const cg *g) { return g->K > 1 ? g->dsfx : ""; }

/* Element e of node id's value: in[k][e], w[...], or a literal. */
static const char *vel(const cg *g, uint32_t id, size_t e, char *buf)
{
    const cgnode *x = &g->n[id];
    if (x->input >= 0 && !g->in_w)
        snprintf(buf, 64, "in[%d][%zu]", (int)x->input, e);
    else if (g->fu && g->fu[id]) /* ad_codegen_sparse: recomputed in a reverse run */
        snprintf(buf, 64, "l%u", (unsigned)g->fu[id] - 1);
    else if (g->lj && g->lj[id] && g->pass != PASS_H && !g->hl) /* ad_codegen_sparse: a run's local */
        snprintf(buf, 64, "l%u", (unsigned)g->lj[id] - 1);
    else if (g->fused && (x->flags & F_LOCAL))
        snprintf(buf, 64, "v%u", (unsigned)id);
    else if (x->flags & F_ACT)
        snprintf(buf, 64, "w[%zu]", x->off + e);
    else
        num(x->val[e], buf);
    return buf;
}
/* Node id's value as a pointer expression. */
static const char *vptr(const cg *g, uint32_t id, char *buf)
{
    const cgnode *x = &g->n[id];
    if (x->input >= 0 && !g->in_w)
        snprintf(buf, 64, "in[%d]", (int)x->input);
    else if (x->flags & F_ACT)
        snprintf(buf, 64, "(w + %zu)", x->off);
    else
        snprintf(buf, 64, "%s_k%u", g->P, (unsigned)id);
    return buf;
}
static bool diff(const cg *g, uint32_t id) { return (g->n[id].flags & F_DIFF) != 0; }
/* tangent: v[k] for an input, the zero region for a node without one */
static const char *tptr(const cg *g, uint32_t id, char *buf)
{
    const cgnode *x = &g->n[id];
    if (x->input >= 0 && !g->in_w)
        snprintf(buf, 64, "v[%d]", (int)x->input);
    else if (x->flags & F_DIFF)
        snprintf(buf, 64, "(w + %zu)", g->tb + x->off);
    else
        snprintf(buf, 64, "(w + %zu)", g->zb);
    return buf;
}
static const char *tel(const cg *g, uint32_t id, size_t e, char *buf)
{
    const cgnode *x = &g->n[id];
    if (x->input >= 0 && !g->in_w)
        snprintf(buf, 64, "v[%d][%zu]", (int)x->input, e);
    else if (g->fu && g->fu[id])
        snprintf(buf, 64, "lt%u[k]", (unsigned)g->fu[id] - 1);
    else if (g->lj && g->lj[id] && g->pass != PASS_H && !g->hl)
        snprintf(buf, 64, "lt%u[k]", (unsigned)g->lj[id] - 1);
    else if (x->flags & F_DIFF)
        snprintf(buf, 64, "w[%zu%s]", g->tb + x->off + e, cg_dir(g));
    else
        strcpy(buf, "0.0");
    return buf;
}
static size_t gslot(const cg *g, uint32_t id, size_t e) { return g->gb + g->n[id].off + e; }
/* a scalar node's adjoint: a local, or its slot */
static const char *aref(const cg *g, uint32_t id, char *buf)
{
    if (g->fused && (g->n[id].flags & F_LOCAL))
        snprintf(buf, 64, "u%u", (unsigned)id);
    else if (g->lj && g->lj[id] && g->pass == PASS_H) /* ad_codegen_sparse: a run's local */
        snprintf(buf, 64, "ua%u", (unsigned)g->lj[id] - 1);
    else
        snprintf(buf, 64, "w[%zu]", gslot(g, id, 0));
    return buf;
}
static size_t gtslot(const cg *g, uint32_t id, size_t e) { return g->gtb + g->n[id].off + e; }

/* ---- chunks: functions of at most max_stmts statements ---- */

static const char pass_letter[4] = {'f', 'r', 't', 'h'};

static void chunk_open(cg *g)
{
    const char L = pass_letter[g->pass];
    const unsigned k = g->nchunk[g->pass]++;
    if (g->pass == PASS_F)
        em(g, "%s_CHUNK int %s_%c%u(const %s_real *const *in, %s_real *restrict w)\n{\n"
              "    int br = 0;\n    (void)in;\n",
           g->P, g->P, L, k, g->P, g->P);
    else if (g->pass == PASS_R)
        em(g, "%s_CHUNK void %s_%c%u(const %s_real *const *in, %s_real *restrict w)\n{\n"
              "    (void)in;\n",
           g->P, g->P, L, k, g->P, g->P);
    else
        em(g, "%s_CHUNK void %s_%c%u(const %s_real *const *in, const %s_real *const *v, "
              "%s_real *restrict w)\n{\n    (void)in;\n    (void)v;\n",
           g->P, g->P, L, k, g->P, g->P, g->P);
    g->stmts = 0;
}
static void chunk_close(cg *g)
{
    em(g, g->pass == PASS_F ? "    return br;\n}\n\n" : "}\n\n");
}
/* Before each statement: a new function when this one is full. */
static void stmt(cg *g)
{
    if (g->fused)
        return;
    if (g->stmts >= g->max_stmts) {
        const int pass = g->pass;
        if (g->ft) /* ad_codegen_sparse: tangents go into the forward's chunks */
            g->pass = PASS_F;
        chunk_close(g);
        chunk_open(g);
        g->pass = pass;
    }
    g->stmts++;
}

/* ---- index tables of the structure ops ---- */

/* Runs the op's own forward on 0, 1, 2, ...: out[j] is then the element
 * of the (first, or a and b joined) data operand that out[j] reads. For
 * slice_add and index_add, the slice / take of x that v is added to. */
static int index_table(cg *g, uint32_t id, double **tab, size_t *ntab)
{
    const cgnode *x = &g->n[id];
    unsigned op = x->op;
    ad_shape xs = g->n[x->in[0]].shape, os = x->shape;
    size_t nx = ad_shape_size(xs);
    if (op == AD_OP_CONCAT)
        nx += nsize(&g->n[x->in[1]]);
    if (op == AD_OP_SLICE_ADD || op == AD_OP_INDEX_ADD) {
        os = g->n[x->in[2]].shape;
        op = op == AD_OP_SLICE_ADD ? AD_OP_SLICE : AD_OP_TAKE;
    }
    const size_t no = ad_shape_size(os);
    double *buf = ad__alloc(&g->t->mem, (nx + no) * sizeof *buf);
    if (!buf)
        return AD_ENOMEM;
    for (size_t i = 0; i < nx; i++)
        buf[i] = (double)i;
    ad_tensor args[2];
    memset(args, 0, sizeof args);
    args[0].val = buf, args[0].shape = xs;
    if (x->op == AD_OP_CONCAT)
        args[1].val = buf + ad_shape_size(xs), args[1].shape = g->n[x->in[1]].shape;
    else
        args[1].val = (double *)g->n[x->in[1]].val, args[1].shape = g->n[x->in[1]].shape;
    ad_call call;
    memset(&call, 0, sizeof call);
    call.out.val = buf + nx, call.out.shape = os;
    call.in = args, call.nin = 2, call.c = x->c;
    ad__ops[op]->def.forward(&call);
    *tab = buf;
    *ntab = no;
    return AD_OK;
}

static bool has_table(unsigned op)
{
    return op == AD_OP_SLICE || op == AD_OP_TAKE || op == AD_OP_CONCAT
           || op == AD_OP_SLICE_ADD || op == AD_OP_INDEX_ADD;
}

/* ---- tensor ops: forward and vjp rules ---- */

/* rows and columns: a vector is one row */
static void rows_cols(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 2 ? s.rows : 1;
    *C = s.ndim == 2 ? s.cols : s.rows;
}
/* the reduced view of the axis ops: G groups of L, element (gi, l) at gi gs + l ls */
static void red_of(ad_shape x, double axis, size_t *G, size_t *L, size_t *gs, size_t *ls)
{
    *G = 1, *L = ad_shape_size(x), *gs = 0, *ls = 1;
    if (x.ndim == 2 && axis == 0.0)
        *G = x.cols, *L = x.rows, *gs = 1, *ls = x.cols;
    else if (x.ndim == 2)
        *G = x.rows, *L = x.cols, *gs = x.cols, *ls = 1;
}

typedef enum { CL_NONE, CL_LINEAR, CL_BILINEAR } opclass;

static opclass class_of(unsigned op)
{
    switch (op) {
    case AD_OP_SUM: case AD_OP_MEAN: case AD_OP_TRANSPOSE: case AD_OP_TRACE:
    case AD_OP_SUM_AXIS: case AD_OP_MEAN_AXIS: case AD_OP_MAX_AXIS: case AD_OP_MIN_AXIS:
    case AD_OP_SELECT: case AD_OP_RESHAPE: case AD_OP_SLICE: case AD_OP_TAKE:
    case AD_OP_CONCAT: case AD_OP_SLICE_ADD: case AD_OP_INDEX_ADD:
        return CL_LINEAR;
    case AD_OP_DOT: case AD_OP_MATVEC: case AD_OP_MATVEC_T: case AD_OP_MATMUL:
    case AD_OP_MATMUL_NT: case AD_OP_OUTER: case AD_OP_AFFINE:
        return CL_BILINEAR;
    default:
        return CL_NONE;
    }
}
/* the nonlinear tensor ops: their own tangent (em_jvp) and second-order
 * (em_so) rules, as the tape's jvp and so */
static bool own_rules(unsigned op)
{
    return op == AD_OP_LOGSUMEXP || op == AD_OP_SOFTMAX || op == AD_OP_LOG_SOFTMAX
           || op == AD_OP_SOFTMAX_XENT || op == AD_OP_NORM || op == AD_OP_SOLVE
           || op == AD_OP_SOLVE_SPD || op == AD_OP_LOGDET;
}
/* tensor ops with a forward and a vjp here */
static bool supported(unsigned op)
{
    return is_ew(op) || class_of(op) != CL_NONE || op == AD_OP_MAX_MASK || own_rules(op);
}

/* ---- solve, solve_spd, logdet: the factors ----
 * Forward factors A as ops_solve.c does (LU with partial pivoting; for
 * solve_spd Cholesky of S = (A + A^T) / 2) into the node's slot of region
 * X, fx in the generated code, which the derivative passes then solve
 * with:
 *   fx[0]  0; k + 1 when pivot k failed (singular: NaN, flag 2); -1 when
 *          A has a NaN or infinite entry (NaN, no flag) -- the tape's INFO
 *   fx[1]  logdet: 1 when A^-T below is that of these factors (the
 *          forward clears it; made once per call, as the tape's inv_t)
 *   fx + 2 the factors (n x n), then LU's perm (n), logdet's A^-T (n x n).
 * Region S is the scratch of one node at a time (3 n x m, logdet n x n). */
enum { LIN_LU = 1, LIN_CHOL = 2, LIN_INV = 4 };
static bool is_solver(unsigned op)
{
    return op == AD_OP_SOLVE || op == AD_OP_SOLVE_SPD || op == AD_OP_LOGDET;
}
static size_t aux_size(const cg *g, const cgnode *x)
{
    const size_t n = g->n[x->in[0]].shape.rows;
    return 2 + n * n + (x->op != AD_OP_SOLVE_SPD ? n : 0) + (x->op == AD_OP_LOGDET ? n * n : 0);
}
static size_t scratch_size(const cg *g, const cgnode *x)
{
    const size_t n = g->n[x->in[0]].shape.rows;
    return x->op == AD_OP_LOGDET ? n * n : 3 * nsize(x);
}
/* a solve's n, m (right-hand sides per row) and the pointers to its
 * factors: fx (the slot), f, perm */
static void em_factors(cg *g, const cgnode *x, bool write, size_t *n, size_t *m)
{
    *n = g->n[x->in[0]].shape.rows;
    *m = x->shape.ndim == 2 ? x->shape.cols : 1;
    em(g, "        %s%s_real *fx = w + %zu;\n        const %s_real *f = fx + 2", write ? "" : "const ",
       g->P, g->xb + x->aux, g->P);
    if (x->op != AD_OP_SOLVE_SPD)
        em(g, ", *perm = fx + %zu", 2 + *n * *n);
    em(g, ";\n        (void)f;\n");
    if (x->op != AD_OP_SOLVE_SPD)
        em(g, "        (void)perm;\n");
}
/* NaN into n elements of p (+=: adjoints stay NaN when added to) */
static void em_nan(cg *g, const char *p, size_t n, const char *as)
{
    em(g, "            for (unsigned long i = 0; i < %zuUL; i++)\n                %s[i] %s NAN;\n", n,
       p, as);
}

/* The argmax / argmin loop of max_axis, min_axis and max_mask (the first
 * extreme; a NaN is the extreme), leaving the index in b. */
static void em_arg(cg *g, size_t gs, size_t L, size_t ls, bool min)
{
    em(g, "        unsigned long b = gi * %zuUL;\n", gs);
    em(g, "        %s_real m = a0[b];\n", g->P);
    em(g, "        for (unsigned long l = 1; l < %zuUL && m == m; l++) {\n", L);
    em(g, "            const %s_real u = a0[gi * %zuUL + l * %zuUL];\n", g->P, gs, ls);
    em(g, "            if (u %c m || u != u) {\n", min ? '<' : '>');
    em(g, "                m = u;\n                b = gi * %zuUL + l * %zuUL;\n", gs, ls);
    em(g, "            }\n        }\n");
}

/* Forward of a tensor op into o (as: "=" or "+="), operands a0..a3; pick
 * names the array max_axis / min_axis read at the extreme (a0, or t0 for
 * its tangent). */
static void em_fwd(cg *g, uint32_t id, const char *as, const char *pick)
{
    const cgnode *x = &g->n[id];
    const char *R_ = g->P;
    const size_t N = nsize(x);
    const ad_shape s0 = g->n[x->in[0]].shape;
    const size_t n0 = ad_shape_size(s0);
    switch (x->op) {
    case AD_OP_SUM: case AD_OP_MEAN:
        em(g, "    {\n        %s_real s = 0;\n        for (unsigned long i = 0; i < %zuUL; i++)\n"
              "            s += a0[i];\n        o[0] %s s",
           R_, n0, as);
        if (x->op == AD_OP_MEAN)
            em(g, " / %zu.0", n0);
        em(g, ";\n    }\n");
        break;
    case AD_OP_TRACE: {
        const size_t n = s0.rows;
        em(g, "    {\n        %s_real s = 0;\n        for (unsigned long i = 0; i < %zuUL; i++)\n"
              "            s += a0[i * %zuUL];\n        o[0] %s s;\n    }\n",
           R_, n, n + 1, as);
        break;
    }
    case AD_OP_DOT:
        em(g, "    {\n        %s_real s = 0;\n        for (unsigned long i = 0; i < %zuUL; i++)\n"
              "            s += a0[i] * a1[i];\n        o[0] %s s;\n    }\n",
           R_, n0, as);
        break;
    case AD_OP_MATVEC: /* W (k, n) x (n) */
        em(g, "    for (unsigned long r = 0; r < %uUL; r++) {\n        %s_real s = 0;\n"
              "        for (unsigned long j = 0; j < %uUL; j++)\n"
              "            s += a0[r * %uUL + j] * a1[j];\n        o[r] %s s;\n    }\n",
           s0.rows, R_, s0.cols, s0.cols, as);
        break;
    case AD_OP_MATVEC_T: /* W (k, n)^T x (k) */
        em(g, "    for (unsigned long j = 0; j < %uUL; j++) {\n        %s_real s = 0;\n"
              "        for (unsigned long r = 0; r < %uUL; r++)\n"
              "            s += a0[r * %uUL + j] * a1[r];\n        o[j] %s s;\n    }\n",
           s0.cols, R_, s0.rows, s0.cols, as);
        break;
    case AD_OP_MATMUL: { /* A (m, k) B (k, n) */
        const unsigned m = s0.rows, k = s0.cols, n = g->n[x->in[1]].shape.cols;
        em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
              "        for (unsigned long j = 0; j < %uUL; j++) {\n            %s_real s = 0;\n"
              "            for (unsigned long p = 0; p < %uUL; p++)\n"
              "                s += a0[i * %uUL + p] * a1[p * %uUL + j];\n"
              "            o[i * %uUL + j] %s s;\n        }\n",
           m, n, R_, k, k, n, n, as);
        break;
    }
    case AD_OP_MATMUL_NT: { /* A (m, k) B (n, k)^T */
        const unsigned m = s0.rows, k = s0.cols, n = g->n[x->in[1]].shape.rows;
        em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
              "        for (unsigned long j = 0; j < %uUL; j++) {\n            %s_real s = 0;\n"
              "            for (unsigned long p = 0; p < %uUL; p++)\n"
              "                s += a0[i * %uUL + p] * a1[j * %uUL + p];\n"
              "            o[i * %uUL + j] %s s;\n        }\n",
           m, n, R_, k, k, k, n, as);
        break;
    }
    case AD_OP_OUTER: { /* u (m) v (n) */
        const size_t n = nsize(&g->n[x->in[1]]);
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            o[i * %zuUL + j] %s a0[i] * a1[j];\n",
           n0, n, n, as);
        break;
    }
    case AD_OP_TRANSPOSE: /* A (m, n) -> (n, m) */
        em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
              "        for (unsigned long j = 0; j < %uUL; j++)\n"
              "            o[j * %uUL + i] %s a0[i * %uUL + j];\n",
           s0.rows, s0.cols, s0.rows, as, s0.cols);
        break;
    case AD_OP_AFFINE: { /* W (k, n), x (n) or X (B, n), b (k) */
        const unsigned k = s0.rows, n = s0.cols;
        const ad_shape xs = g->n[x->in[1]].shape;
        const unsigned B = xs.ndim == 2 ? xs.rows : 1;
        em(g, "    for (unsigned long s = 0; s < %uUL; s++)\n"
              "        for (unsigned long r = 0; r < %uUL; r++) {\n            %s_real acc = 0;\n"
              "            for (unsigned long j = 0; j < %uUL; j++)\n"
              "                acc += a0[r * %uUL + j] * a1[s * %uUL + j];\n"
              "            o[s * %uUL + r] %s acc + a2[r];\n        }\n",
           B, k, R_, n, n, n, k, as);
        break;
    }
    case AD_OP_SUM_AXIS: case AD_OP_MEAN_AXIS: {
        size_t G, L, gs, ls;
        red_of(s0, x->c, &G, &L, &gs, &ls);
        char sc[48];
        num(x->op == AD_OP_MEAN_AXIS ? 1.0 / (double)L : 1.0, sc);
        em(g, "    for (unsigned long gi = 0; gi < %zuUL; gi++) {\n        %s_real s = 0;\n"
              "        for (unsigned long l = 0; l < %zuUL; l++)\n"
              "            s += a0[gi * %zuUL + l * %zuUL];\n        o[gi] %s s * %s;\n    }\n",
           G, R_, L, gs, ls, as, sc);
        break;
    }
    case AD_OP_MAX_AXIS: case AD_OP_MIN_AXIS: {
        size_t G, L, gs, ls;
        red_of(s0, x->c, &G, &L, &gs, &ls);
        em(g, "    for (unsigned long gi = 0; gi < %zuUL; gi++) {\n", G);
        em_arg(g, gs, L, ls, x->op == AD_OP_MIN_AXIS);
        em(g, "        o[gi] %s %s[b];\n    }\n", as, pick);
        break;
    }
    case AD_OP_MAX_MASK: {
        size_t G, L, gs, ls;
        red_of(s0, x->c, &G, &L, &gs, &ls);
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        o[i] = 0;\n", N);
        em(g, "    for (unsigned long gi = 0; gi < %zuUL; gi++) {\n", G);
        em_arg(g, gs, L, ls, false);
        em(g, "        o[b] = 1;\n    }\n");
        break;
    }
    case AD_OP_SELECT: {
        const size_t sc = nsize(&g->n[x->in[0]]) == 1 && N != 1 ? 0 : 1;
        const size_t sa = nsize(&g->n[x->in[1]]) == 1 && N != 1 ? 0 : 1;
        const size_t sb = nsize(&g->n[x->in[2]]) == 1 && N != 1 ? 0 : 1;
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n"
              "        o[i] %s a0[i * %zuUL] != 0 ? a1[i * %zuUL] : a2[i * %zuUL];\n",
           N, as, sc, sa, sb);
        break;
    }
    case AD_OP_RESHAPE:
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        o[i] %s a0[i];\n", N, as);
        break;
    case AD_OP_SLICE: case AD_OP_TAKE:
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        o[i] %s a0[%s_m%u[i]];\n", N,
           as, g->P, (unsigned)id);
        break;
    case AD_OP_CONCAT:
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++) {\n"
              "        const unsigned long m = %s_m%u[i];\n"
              "        o[i] %s m < %zuUL ? a0[m] : a1[m - %zuUL];\n    }\n",
           N, g->P, (unsigned)id, as, n0, n0);
        break;
    case AD_OP_SLICE_ADD: case AD_OP_INDEX_ADD: {
        const size_t nvv = nsize(&g->n[x->in[2]]);
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        o[i] %s a0[i];\n", N, as);
        em(g, "    for (unsigned long k = 0; k < %zuUL; k++)\n        o[%s_m%u[k]] += a2[k];\n",
           nvv, g->P, (unsigned)id);
        break;
    }
    case AD_OP_LOGSUMEXP: case AD_OP_SOFTMAX: case AD_OP_LOG_SOFTMAX: {
        size_t R, C;
        rows_cols(s0, &R, &C);
        const bool lse = x->op == AD_OP_LOGSUMEXP;
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n", R);
        em(g, "        const %s_real *z = a0 + r * %zuUL;\n        %s_real m = z[0], s = 0;\n", R_,
           C, R_);
        if (lse) /* logsumexp's max: the plain one (ops_loss.c) */
            em(g, "        for (unsigned long j = 1; j < %zuUL; j++)\n"
                  "            m = z[j] > m ? z[j] : m;\n", C);
        else /* softmax's: a NaN is the max (ops_axis.c) */
            em(g, "        for (unsigned long j = 1; j < %zuUL && m == m; j++)\n"
                  "            m = z[j] > m || z[j] != z[j] ? z[j] : m;\n", C);
        em(g, "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            s += exp(z[j] - m);\n", C);
        if (lse)
            em(g, "        o[r] %s m + log(s);\n    }\n", as);
        else if (x->op == AD_OP_SOFTMAX)
            em(g, "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            o[r * %zuUL + j] %s exp(z[j] - m) / s;\n    }\n", C, C, as);
        else
            em(g, "        {\n            const %s_real l = m + log(s);\n"
                  "            for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "                o[r * %zuUL + j] %s z[j] - l;\n        }\n    }\n",
               R_, C, C, as);
        break;
    }
    case AD_OP_SOFTMAX_XENT: {
        size_t R, C;
        rows_cols(s0, &R, &C);
        em(g, "    {\n        %s_real loss = 0;\n", R_);
        em(g, "        for (unsigned long r = 0; r < %zuUL; r++) {\n", R);
        em(g, "            const %s_real *z = a0 + r * %zuUL, *y = a1 + r * %zuUL;\n", R_, C, C);
        em(g, "            %s_real m = z[0], s = 0, lse;\n", R_);
        em(g, "            for (unsigned long j = 1; j < %zuUL; j++)\n"
              "                m = z[j] > m ? z[j] : m;\n"
              "            for (unsigned long j = 0; j < %zuUL; j++)\n"
              "                s += exp(z[j] - m);\n            lse = m + log(s);\n"
              "            for (unsigned long j = 0; j < %zuUL; j++)\n"
              "                loss += y[j] * (lse - z[j]);\n        }\n"
              "        o[0] %s loss;\n    }\n",
           C, C, C, as);
        break;
    }
    case AD_OP_NORM:
        em(g, "    {\n        %s_real s = 0, mx = 0, q = 0, y;\n"
              "        for (unsigned long i = 0; i < %zuUL; i++)\n            s += a0[i] * a0[i];\n"
              "        if (s >= 2.2250738585072014e-308 && s <= 1.7976931348623157e308) {\n"
              "            y = sqrt(s);\n        } else {\n"
              "            for (unsigned long i = 0; i < %zuUL; i++) {\n"
              "                const %s_real u = fabs(a0[i]);\n"
              "                if (u != u) { mx = u; break; }\n"
              "                mx = u > mx ? u : mx;\n            }\n"
              "            if (mx != mx || mx == 0 || mx > 1.7976931348623157e308) {\n"
              "                y = mx;\n            } else {\n"
              "                for (unsigned long i = 0; i < %zuUL; i++)\n"
              "                    q += (a0[i] / mx) * (a0[i] / mx);\n"
              "                y = mx * sqrt(q);\n            }\n        }\n"
              "        o[0] %s y;\n    }\n",
           R_, n0, n0, R_, n0, as);
        break;
    case AD_OP_SOLVE: case AD_OP_SOLVE_SPD: case AD_OP_LOGDET: {
        /* factor (singular: NaN and flag 2, as the tape's AD_ESINGULAR) */
        size_t n, m;
        const bool spd = x->op == AD_OP_SOLVE_SPD;
        em(g, "    {\n");
        em_factors(g, x, true, &n, &m);
        if (spd)
            em(g, "        const long st = %s_chol(a0, %zuUL, fx + 2);\n", R_, n);
        else
            em(g, "        const long st = %s_lu(a0, %zuUL, fx + 2, fx + %zu);\n", R_, n, 2 + n * n);
        em(g, "        fx[0] = (%s_real)st;\n        fx[1] = 0;\n        if (st != 0) {\n", R_);
        em_nan(g, "o", N, "=");
        em(g, "            if (st > 0)\n                br |= 2;\n        } else {\n");
        if (x->op == AD_OP_SOLVE)
            em(g, "            %s_lu_solve(f, perm, %zuUL, %zuUL, a1, o);\n", R_, n, m);
        else if (spd)
            em(g, "            for (unsigned long i = 0; i < %zuUL; i++)\n                o[i] = a1[i];\n"
                  "            %s_chol_solve(f, %zuUL, %zuUL, o);\n", N, R_, n, m);
        else /* log|det A| = sum log|U_kk| */
            em(g, "            %s_real s = 0;\n            for (unsigned long i = 0; i < %zuUL; i++)\n"
                  "                s += log(fabs(f[i * %zuUL]));\n            o[0] = s;\n",
               R_, n, n + 1);
        em(g, "        }\n    }\n");
        break;
    }
    default:
        break;
    }
}

/* Vjp of a tensor op: adds into g0..g3 (has[k]: operand k gets one) from
 * g, values a0..a3 and o. */
static void em_vjp(cg *g, uint32_t id, const bool *has)
{
    const cgnode *x = &g->n[id];
    const char *R_ = g->P;
    const size_t N = nsize(x);
    const ad_shape s0 = g->n[x->in[0]].shape;
    const size_t n0 = ad_shape_size(s0);
    switch (x->op) {
    case AD_OP_SUM: case AD_OP_MEAN:
        if (has[0]) {
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        g0[i] += g[0]", n0);
            if (x->op == AD_OP_MEAN)
                em(g, " / %zu.0", n0);
            em(g, ";\n");
        }
        break;
    case AD_OP_TRACE:
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n        g0[i * %uUL] += g[0];\n",
               s0.rows, s0.rows + 1);
        break;
    case AD_OP_DOT:
        for (int k = 0; k < 2; k++)
            if (has[k])
                em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n"
                      "        g%d[i] += g[0] * a%d[i];\n", n0, k, 1 - k);
        break;
    case AD_OP_MATVEC: /* dW = g x^T, dx = W^T g */
        if (has[0])
            em(g, "    for (unsigned long r = 0; r < %uUL; r++)\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            g0[r * %uUL + j] += g[r] * a1[j];\n", s0.rows, s0.cols, s0.cols);
        if (has[1])
            em(g, "    for (unsigned long r = 0; r < %uUL; r++)\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            g1[j] += a0[r * %uUL + j] * g[r];\n", s0.rows, s0.cols, s0.cols);
        break;
    case AD_OP_MATVEC_T: /* y = W^T x: dW = x g^T, dx = W g */
        if (has[0])
            em(g, "    for (unsigned long r = 0; r < %uUL; r++)\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            g0[r * %uUL + j] += a1[r] * g[j];\n", s0.rows, s0.cols, s0.cols);
        if (has[1])
            em(g, "    for (unsigned long r = 0; r < %uUL; r++) {\n        %s_real s = 0;\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            s += a0[r * %uUL + j] * g[j];\n        g1[r] += s;\n    }\n",
               s0.rows, R_, s0.cols, s0.cols);
        break;
    case AD_OP_MATMUL: { /* dA = G B^T, dB = A^T G */
        const unsigned m = s0.rows, k = s0.cols, n = g->n[x->in[1]].shape.cols;
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
                  "        for (unsigned long p = 0; p < %uUL; p++) {\n            %s_real s = 0;\n"
                  "            for (unsigned long j = 0; j < %uUL; j++)\n"
                  "                s += g[i * %uUL + j] * a1[p * %uUL + j];\n"
                  "            g0[i * %uUL + p] += s;\n        }\n", m, k, R_, n, n, n, k);
        if (has[1])
            em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
                  "        for (unsigned long p = 0; p < %uUL; p++)\n"
                  "            for (unsigned long j = 0; j < %uUL; j++)\n"
                  "                g1[p * %uUL + j] += a0[i * %uUL + p] * g[i * %uUL + j];\n",
               m, k, n, n, k, n);
        break;
    }
    case AD_OP_MATMUL_NT: { /* C = A B^T: dA = G B, dB = G^T A */
        const unsigned m = s0.rows, k = s0.cols, n = g->n[x->in[1]].shape.rows;
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            for (unsigned long p = 0; p < %uUL; p++)\n"
                  "                g0[i * %uUL + p] += g[i * %uUL + j] * a1[j * %uUL + p];\n",
               m, n, k, k, n, k);
        if (has[1])
            em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            for (unsigned long p = 0; p < %uUL; p++)\n"
                  "                g1[j * %uUL + p] += g[i * %uUL + j] * a0[i * %uUL + p];\n",
               m, n, k, k, n, k);
        break;
    }
    case AD_OP_OUTER: {
        const size_t n = nsize(&g->n[x->in[1]]);
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++) {\n        %s_real s = 0;\n"
                  "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            s += g[i * %zuUL + j] * a1[j];\n        g0[i] += s;\n    }\n",
               n0, R_, n, n);
        if (has[1])
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n"
                  "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            g1[j] += g[i * %zuUL + j] * a0[i];\n", n0, n, n);
        break;
    }
    case AD_OP_TRANSPOSE:
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %uUL; i++)\n"
                  "        for (unsigned long j = 0; j < %uUL; j++)\n"
                  "            g0[i * %uUL + j] += g[j * %uUL + i];\n",
               s0.rows, s0.cols, s0.cols, s0.rows);
        break;
    case AD_OP_AFFINE: {
        const unsigned k = s0.rows, n = s0.cols;
        const ad_shape xs = g->n[x->in[1]].shape;
        const unsigned B = xs.ndim == 2 ? xs.rows : 1;
        if (has[0])
            em(g, "    for (unsigned long s = 0; s < %uUL; s++)\n"
                  "        for (unsigned long r = 0; r < %uUL; r++)\n"
                  "            for (unsigned long j = 0; j < %uUL; j++)\n"
                  "                g0[r * %uUL + j] += g[s * %uUL + r] * a1[s * %uUL + j];\n",
               B, k, n, n, k, n);
        if (has[1])
            em(g, "    for (unsigned long s = 0; s < %uUL; s++)\n"
                  "        for (unsigned long r = 0; r < %uUL; r++)\n"
                  "            for (unsigned long j = 0; j < %uUL; j++)\n"
                  "                g1[s * %uUL + j] += g[s * %uUL + r] * a0[r * %uUL + j];\n",
               B, k, n, n, k, n);
        if (has[2])
            em(g, "    for (unsigned long s = 0; s < %uUL; s++)\n"
                  "        for (unsigned long r = 0; r < %uUL; r++)\n"
                  "            g2[r] += g[s * %uUL + r];\n", B, k, k);
        break;
    }
    case AD_OP_SUM_AXIS: case AD_OP_MEAN_AXIS: {
        size_t G, L, gs, ls;
        red_of(s0, x->c, &G, &L, &gs, &ls);
        char sc[48];
        num(x->op == AD_OP_MEAN_AXIS ? 1.0 / (double)L : 1.0, sc);
        if (has[0])
            em(g, "    for (unsigned long gi = 0; gi < %zuUL; gi++)\n"
                  "        for (unsigned long l = 0; l < %zuUL; l++)\n"
                  "            g0[gi * %zuUL + l * %zuUL] += g[gi] * %s;\n", G, L, gs, ls, sc);
        break;
    }
    case AD_OP_MAX_AXIS: case AD_OP_MIN_AXIS: {
        size_t G, L, gs, ls;
        red_of(s0, x->c, &G, &L, &gs, &ls);
        if (has[0]) {
            em(g, "    for (unsigned long gi = 0; gi < %zuUL; gi++) {\n", G);
            em_arg(g, gs, L, ls, x->op == AD_OP_MIN_AXIS);
            em(g, "        g0[b] += g[gi];\n    }\n");
        }
        break;
    }
    case AD_OP_SELECT: { /* the taken branch gets g, the other exactly nothing */
        const size_t sc = nsize(&g->n[x->in[0]]) == 1 && N != 1 ? 0 : 1;
        const size_t sa = nsize(&g->n[x->in[1]]) == 1 && N != 1 ? 0 : 1;
        const size_t sb = nsize(&g->n[x->in[2]]) == 1 && N != 1 ? 0 : 1;
        if (has[1] || has[2]) {
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++) {\n", N);
            em(g, "        if (a0[i * %zuUL] != 0) {\n", sc);
            if (has[1])
                em(g, "            g1[i * %zuUL] += g[i];\n", sa);
            em(g, "        } else {\n");
            if (has[2])
                em(g, "            g2[i * %zuUL] += g[i];\n", sb);
            em(g, "        }\n    }\n");
        }
        break;
    }
    case AD_OP_RESHAPE:
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        g0[i] += g[i];\n", N);
        break;
    case AD_OP_SLICE: case AD_OP_TAKE:
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        g0[%s_m%u[i]] += g[i];\n",
               N, g->P, (unsigned)id);
        break;
    case AD_OP_CONCAT:
        if (has[0] || has[1]) {
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++) {\n"
                  "        const unsigned long m = %s_m%u[i];\n", N, g->P, (unsigned)id);
            em(g, "        if (m < %zuUL) {\n", n0);
            if (has[0])
                em(g, "            g0[m] += g[i];\n");
            em(g, "        } else {\n");
            if (has[1])
                em(g, "            g1[m - %zuUL] += g[i];\n", n0);
            em(g, "        }\n    }\n");
        }
        break;
    case AD_OP_SLICE_ADD: case AD_OP_INDEX_ADD: {
        const size_t nvv = nsize(&g->n[x->in[2]]);
        if (has[0])
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        g0[i] += g[i];\n", N);
        if (has[2])
            em(g, "    for (unsigned long k = 0; k < %zuUL; k++)\n        g2[k] += g[%s_m%u[k]];\n",
               nvv, g->P, (unsigned)id);
        break;
    }
    case AD_OP_LOGSUMEXP: {
        size_t R, C;
        rows_cols(s0, &R, &C);
        if (has[0])
            em(g, "    for (unsigned long r = 0; r < %zuUL; r++)\n"
                  "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            g0[r * %zuUL + j] += g[r] * exp(a0[r * %zuUL + j] - o[r]);\n",
               R, C, C, C);
        break;
    }
    case AD_OP_SOFTMAX: case AD_OP_LOG_SOFTMAX: {
        size_t R, C;
        rows_cols(s0, &R, &C);
        if (!has[0])
            break;
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n"
              "        const %s_real *y = o + r * %zuUL, *gy = g + r * %zuUL;\n"
              "        %s_real s = 0;\n", R, R_, C, C, R_);
        if (x->op == AD_OP_SOFTMAX) /* dx = y (g - <g, y>) */
            em(g, "        for (unsigned long j = 0; j < %zuUL; j++)\n            s += gy[j] * y[j];\n"
                  "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            g0[r * %zuUL + j] += y[j] * (gy[j] - s);\n    }\n", C, C, C);
        else /* dx = g - exp(y) sum g */
            em(g, "        for (unsigned long j = 0; j < %zuUL; j++)\n            s += gy[j];\n"
                  "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            g0[r * %zuUL + j] += gy[j] - exp(y[j]) * s;\n    }\n", C, C, C);
        break;
    }
    case AD_OP_SOFTMAX_XENT: {
        size_t R, C;
        rows_cols(s0, &R, &C);
        if (!has[0] && !has[1])
            break;
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n", R);
        em(g, "        const %s_real *z = a0 + r * %zuUL, *y = a1 + r * %zuUL;\n", R_, C, C);
        em(g, "        %s_real m = z[0], s = 0, lse, ys = 0;\n", R_);
        em(g, "        for (unsigned long j = 1; j < %zuUL; j++)\n"
              "            m = z[j] > m ? z[j] : m;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            s += exp(z[j] - m);\n        lse = m + log(s);\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            ys += y[j];\n"
              "        (void)ys;\n", C, C, C);
        if (has[0])
            em(g, "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            g0[r * %zuUL + j] += g[0] * (exp(z[j] - lse) * ys - y[j]);\n", C, C);
        if (has[1])
            em(g, "        for (unsigned long j = 0; j < %zuUL; j++)\n"
                  "            g1[r * %zuUL + j] += g[0] * (lse - z[j]);\n", C, C);
        em(g, "    }\n");
        break;
    }
    case AD_OP_NORM:
        if (has[0])
            em(g, "    {\n        const %s_real s = o[0] == 0 ? 0 : g[0] / o[0];\n"
                  "        for (unsigned long i = 0; i < %zuUL; i++)\n"
                  "            g0[i] += s * a0[i];\n    }\n", R_, n0);
        break;
    case AD_OP_SOLVE: case AD_OP_SOLVE_SPD: { /* dB = A^-T G, dA = -dB X^T (spd: sym) */
        if (!has[0] && !has[1])
            break;
        size_t n, m;
        const int spd = x->op == AD_OP_SOLVE_SPD;
        em(g, "    {\n");
        em_factors(g, x, false, &n, &m);
        em(g, "        %s_real *s1 = w + %zu, *s2 = s1 + %zu;\n        (void)s2;\n"
              "        if (fx[0] != 0) {\n", R_, g->sb, N);
        if (has[0])
            em_nan(g, "g0", n * n, "+=");
        if (has[1])
            em_nan(g, "g1", N, "+=");
        em(g, "        } else {\n");
        if (spd)
            em(g, "            for (unsigned long i = 0; i < %zuUL; i++)\n                s1[i] = g[i];\n"
                  "            %s_chol_solve(f, %zuUL, %zuUL, s1);\n", N, R_, n, m);
        else
            em(g, "            %s_lu_solve_t(f, perm, %zuUL, %zuUL, g, s1, s2);\n", R_, n, m);
        if (has[1])
            em(g, "            for (unsigned long i = 0; i < %zuUL; i++)\n                g1[i] += s1[i];\n",
               N);
        if (has[0])
            em(g, "            %s_sub_pqt(g0, s1, o, %zuUL, %zuUL, %d);\n", R_, n, m, spd);
        em(g, "        }\n    }\n");
        break;
    }
    case AD_OP_LOGDET: /* dA = g A^-T */
        if (!has[0])
            break;
        em(g, "    {\n");
        {
            size_t n, m;
            em_factors(g, x, true, &n, &m);
            em(g, "        if (fx[0] != 0) {\n");
            em_nan(g, "g0", n * n, "+=");
            em(g, "        } else {\n            const %s_real *Z = %s_inv_t(fx, %zuUL, w + %zu);\n"
                  "            for (unsigned long i = 0; i < %zuUL; i++)\n"
                  "                g0[i] += g[0] * Z[i];\n        }\n    }\n",
               R_, R_, n, g->sb, n * n);
        }
        break;
    default:
        break;
    }
}

/* The tangent of a nonlinear tensor op (own_rules), the tape's jvp: into
 * to from the values a0.., o and the operands' tangents t0.. (tan[k]
 * false: operand k has none, its terms are left out). */
static void em_jvp(cg *g, uint32_t id, const bool *tan)
{
    const cgnode *x = &g->n[id];
    const char *R_ = g->P;
    const size_t N = nsize(x);
    const ad_shape s0 = g->n[x->in[0]].shape;
    const size_t n0 = ad_shape_size(s0);
    const bool t0 = tan[0], t1 = x->nin > 1 && tan[1];
    if (!t0 && !t1) { /* no operand moves: 0, as the tape's sweep */
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        to[i] = 0;\n", N);
        return;
    }
    size_t R, C;
    rows_cols(s0, &R, &C);
    switch (x->op) {
    case AD_OP_LOGSUMEXP: /* ty_r = p_r . tz_r */
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n        %s_real s = 0;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            s += exp(a0[r * %zuUL + j] - o[r]) * t0[r * %zuUL + j];\n"
              "        to[r] = s;\n    }\n", R, R_, C, C, C);
        break;
    case AD_OP_SOFTMAX: /* ty = y (tx - <y, tx>) */
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n"
              "        const %s_real *y = o + r * %zuUL, *tx = t0 + r * %zuUL;\n        %s_real b = 0;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            b += y[j] * tx[j];\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            to[r * %zuUL + j] = y[j] * (tx[j] - b);\n    }\n", R, R_, C, C, R_, C, C, C);
        break;
    case AD_OP_LOG_SOFTMAX: /* ty = tx - <p, tx> */
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n"
              "        const %s_real *y = o + r * %zuUL, *tx = t0 + r * %zuUL;\n        %s_real b = 0;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            b += exp(y[j]) * tx[j];\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            to[r * %zuUL + j] = tx[j] - b;\n    }\n", R, R_, C, C, R_, C, C, C);
        break;
    case AD_OP_SOFTMAX_XENT: /* tL = sum (p S - y) tz + (lse - z) ty, per row */
        em(g, "    {\n        %s_real tl = 0;\n", R_);
        em(g, "        for (unsigned long r = 0; r < %zuUL; r++) {\n", R);
        em(g, "            const %s_real *z = a0 + r * %zuUL, *y = a1 + r * %zuUL;\n", R_, C, C);
        em(g, "            %s_real m = z[0], s = 0, lse, S = 0;\n", R_);
        em(g, "            for (unsigned long j = 1; j < %zuUL; j++)\n"
              "                m = z[j] > m ? z[j] : m;\n"
              "            for (unsigned long j = 0; j < %zuUL; j++)\n"
              "                s += exp(z[j] - m);\n            lse = m + log(s);\n"
              "            for (unsigned long j = 0; j < %zuUL; j++)\n                S += y[j];\n"
              "            (void)S, (void)lse;\n"
              "            for (unsigned long j = 0; j < %zuUL; j++) {\n", C, C, C, C);
        if (t0)
            em(g, "                tl += (exp(z[j] - lse) * S - y[j]) * t0[r * %zuUL + j];\n", C);
        if (t1)
            em(g, "                tl += (lse - z[j]) * t1[r * %zuUL + j];\n", C);
        em(g, "            }\n        }\n        to[0] = tl;\n    }\n");
        break;
    case AD_OP_NORM: /* ty = <x, tx> / y; 0 at y = 0 */
        em(g, "    {\n        %s_real s = 0;\n        for (unsigned long i = 0; i < %zuUL; i++)\n"
              "            s += a0[i] * t0[i];\n        to[0] = o[0] != 0 ? s / o[0] : 0;\n    }\n",
           R_, n0);
        break;
    case AD_OP_SOLVE: case AD_OP_SOLVE_SPD: { /* tX = A^-1 (tB - tA X) (spd: tS) */
        size_t n, m;
        const bool spd = x->op == AD_OP_SOLVE_SPD;
        em(g, "    {\n");
        em_factors(g, x, false, &n, &m);
        em(g, "        %s_real *s1 = w + %zu;\n        (void)s1;\n        if (fx[0] != 0) {\n", R_,
           g->sb);
        em_nan(g, "to", N, "=");
        em(g, "        } else {\n");
        em(g, "            %s_residual(%s, %s, %s, o, %zuUL, %zuUL, %d);\n", R_, spd ? "to" : "s1",
           t1 ? "t1" : "0", t0 ? "t0" : "0", n, m, spd);
        if (spd)
            em(g, "            %s_chol_solve(f, %zuUL, %zuUL, to);\n", R_, n, m);
        else
            em(g, "            %s_lu_solve(f, perm, %zuUL, %zuUL, s1, to);\n", R_, n, m);
        em(g, "        }\n    }\n");
        break;
    }
    case AD_OP_LOGDET: { /* ty = <A^-T, tA> */
        size_t n, m;
        em(g, "    {\n");
        em_factors(g, x, true, &n, &m);
        em(g, "        if (fx[0] != 0) {\n            to[0] = NAN;\n        } else {\n"
              "            const %s_real *Z = %s_inv_t(fx, %zuUL, w + %zu);\n            %s_real s = 0;\n"
              "            for (unsigned long i = 0; i < %zuUL; i++)\n                s += Z[i] * t0[i];\n"
              "            to[0] = s;\n        }\n    }\n", R_, R_, n, g->sb, R_, n * n);
        break;
    }
    default:
        break;
    }
}

/* The second-order term of a nonlinear tensor op (own_rules), the tape's
 * so: the derivative of its vjp at the adjoint g along the tangents t0..
 * (tan[k] false: 0), added into the operands' adjoint tangents g0..
 * (has[k]); some tangent and some has[k] are set (else there is none). */
static void em_so(cg *g, uint32_t id, const bool *tan, const bool *has)
{
    const cgnode *x = &g->n[id];
    const char *R_ = g->P;
    const size_t N = nsize(x);
    const ad_shape s0 = g->n[x->in[0]].shape;
    const size_t n0 = ad_shape_size(s0);
    const bool t0 = tan[0], t1 = x->nin > 1 && tan[1];
    size_t R, C;
    rows_cols(s0, &R, &C);
    switch (x->op) {
    case AD_OP_LOGSUMEXP: /* g_r p_r (tz_r - p_r . tz_r), a row of g = 0 skipped */
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n"
              "        const %s_real gr = g[r], y = o[r];\n        %s_real pz = 0;\n"
              "        if (gr == 0)\n            continue;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            pz += exp(a0[r * %zuUL + j] - y) * t0[r * %zuUL + j];\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            g0[r * %zuUL + j] += gr * exp(a0[r * %zuUL + j] - y) * (t0[r * %zuUL + j] - pz);\n"
              "    }\n", R, R_, R_, C, C, C, C, C, C, C);
        break;
    case AD_OP_SOFTMAX: /* ty (g - <g, y>) - y <g, ty>, ty = y (tx - <y, tx>) */
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n"
              "        const %s_real *y = o + r * %zuUL, *gy = g + r * %zuUL, *tx = t0 + r * %zuUL;\n"
              "        %s_real a = 0, b = 0, gty = 0;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            a += gy[j] * y[j];\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            b += y[j] * tx[j];\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            gty += gy[j] * y[j] * (tx[j] - b);\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            g0[r * %zuUL + j] += y[j] * (tx[j] - b) * (gy[j] - a) - y[j] * gty;\n    }\n",
           R, R_, C, C, C, R_, C, C, C, C, C);
        break;
    case AD_OP_LOG_SOFTMAX: /* -sum(g) p (tx - <p, tx>), a row with sum(g) = 0 skipped */
        em(g, "    for (unsigned long r = 0; r < %zuUL; r++) {\n"
              "        const %s_real *y = o + r * %zuUL, *gy = g + r * %zuUL, *tx = t0 + r * %zuUL;\n"
              "        %s_real S = 0, b = 0;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            S += gy[j];\n"
              "        if (S == 0)\n            continue;\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n            b += exp(y[j]) * tx[j];\n"
              "        for (unsigned long j = 0; j < %zuUL; j++)\n"
              "            g0[r * %zuUL + j] -= S * exp(y[j]) * (tx[j] - b);\n    }\n",
           R, R_, C, C, C, R_, C, C, C, C);
        break;
    case AD_OP_SOFTMAX_XENT: { /* per row, pz = p . tz, tS = sum ty:
                                * tgz += g (S p (tz - pz) + p tS - ty), tgy += g (pz - tz) */
        char TZ[64] = "0", TY[64] = "0";
        if (t0)
            snprintf(TZ, sizeof TZ, "t0[r * %zuUL + j]", C);
        if (t1)
            snprintf(TY, sizeof TY, "t1[r * %zuUL + j]", C);
        em(g, "    if (g[0] != 0)\n        for (unsigned long r = 0; r < %zuUL; r++) {\n", R);
        em(g, "            const %s_real *z = a0 + r * %zuUL, *y = a1 + r * %zuUL;\n", R_, C, C);
        em(g, "            %s_real m = z[0], s = 0, lse, S = 0, tS = 0, pz = 0;\n", R_);
        em(g, "            for (unsigned long j = 1; j < %zuUL; j++)\n"
              "                m = z[j] > m ? z[j] : m;\n"
              "            for (unsigned long j = 0; j < %zuUL; j++)\n"
              "                s += exp(z[j] - m);\n            lse = m + log(s);\n", C, C);
        em(g, "            for (unsigned long j = 0; j < %zuUL; j++) {\n                S += y[j];\n"
              "                tS += %s;\n                pz += exp(z[j] - lse) * %s;\n            }\n",
           C, TY, TZ);
        em(g, "            for (unsigned long j = 0; j < %zuUL; j++) {\n"
              "                const %s_real p = exp(z[j] - lse);\n                (void)p;\n", C, R_);
        if (has[0])
            em(g, "                g0[r * %zuUL + j] += g[0] * (S * p * (%s - pz) + p * tS - %s);\n",
               C, TZ, TY);
        if (has[1])
            em(g, "                g1[r * %zuUL + j] += g[0] * (pz - %s);\n", C, TZ);
        em(g, "            }\n        }\n");
        break;
    }
    case AD_OP_NORM: /* g (tx - x <x, tx> / y^2) / y; 0 at y = 0 */
        em(g, "    if (o[0] != 0 && g[0] != 0) {\n        %s_real s = 0, u;\n"
              "        for (unsigned long i = 0; i < %zuUL; i++)\n            s += a0[i] * t0[i];\n"
              "        u = s / (o[0] * o[0]);\n        for (unsigned long i = 0; i < %zuUL; i++)\n"
              "            g0[i] += g[0] * (t0[i] - a0[i] * u) / o[0];\n    }\n", R_, n0, n0);
        break;
    case AD_OP_SOLVE: case AD_OP_SOLVE_SPD: {
        /* dB = A^-T G, tX = A^-1 (tB - tA X): d(dB) = -A^-T tA^T dB,
         * d(dA) = -d(dB) X^T - dB tX^T (spd: A^-1, tS, symmetric parts) */
        size_t n, m;
        const int spd = x->op == AD_OP_SOLVE_SPD;
        const char *T0 = t0 ? "t0" : "0", *T1 = t1 ? "t1" : "0";
        em(g, "    {\n");
        em_factors(g, x, false, &n, &m);
        em(g, "        %s_real *s1 = w + %zu, *s2 = s1 + %zu, *s3 = s2 + %zu;\n"
              "        if (fx[0] != 0) {\n", R_, g->sb, N, N);
        if (has[0])
            em_nan(g, "g0", n * n, "+=");
        if (has[1])
            em_nan(g, "g1", N, "+=");
        em(g, "        } else {\n");
        if (spd)
            em(g, "            for (unsigned long i = 0; i < %zuUL; i++)\n                s1[i] = g[i];\n"
                  "            %s_chol_solve(f, %zuUL, %zuUL, s1);\n"
                  "            %s_residual(s2, %s, %s, o, %zuUL, %zuUL, 1);\n"
                  "            %s_chol_solve(f, %zuUL, %zuUL, s2);\n",
               N, R_, n, m, R_, T1, T0, n, m, R_, n, m);
        else
            em(g, "            %s_lu_solve_t(f, perm, %zuUL, %zuUL, g, s1, s2);\n"
                  "            %s_residual(s3, %s, %s, o, %zuUL, %zuUL, 0);\n"
                  "            %s_lu_solve(f, perm, %zuUL, %zuUL, s3, s2);\n",
               R_, n, m, R_, T1, T0, n, m, R_, n, m);
        if (has[0]) /* s1 = dB, s2 = tX */
            em(g, "            %s_sub_pqt(g0, s1, s2, %zuUL, %zuUL, %d);\n", R_, n, m, spd);
        em(g, "            %s_mul_mt(s3, %s, s1, %zuUL, %zuUL, %d);\n", R_, T0, n, m, spd);
        if (spd)
            em(g, "            %s_chol_solve(f, %zuUL, %zuUL, s3);\n", R_, n, m);
        else
            em(g, "            %s_lu_solve_t(f, perm, %zuUL, %zuUL, s3, s3, s2);\n", R_, n, m);
        if (has[1]) /* s3 = d(dB) */
            em(g, "            for (unsigned long i = 0; i < %zuUL; i++)\n                g1[i] += s3[i];\n",
               N);
        if (has[0])
            em(g, "            %s_sub_pqt(g0, s3, o, %zuUL, %zuUL, %d);\n", R_, n, m, spd);
        em(g, "        }\n    }\n");
        break;
    }
    case AD_OP_LOGDET: { /* d(g A^-T) along tA = -g Z tA^T Z, Z = A^-T */
        size_t n, m;
        em(g, "    {\n");
        em_factors(g, x, true, &n, &m);
        em(g, "        if (fx[0] != 0) {\n");
        em_nan(g, "g0", n * n, "+=");
        em(g, "        } else {\n            %s_real *W = w + %zu;\n"
              "            const %s_real *Z = %s_inv_t(fx, %zuUL, W);\n"
              "            %s_mul_mt(W, t0, Z, %zuUL, %zuUL, 0);\n"
              "            for (unsigned long i = 0; i < %zuUL; i++)\n"
              "                for (unsigned long j = 0; j < %zuUL; j++) {\n"
              "                    %s_real acc = 0;\n"
              "                    for (unsigned long q = 0; q < %zuUL; q++)\n"
              "                        acc += Z[i * %zuUL + q] * W[q * %zuUL + j];\n"
              "                    g0[i * %zuUL + j] += g[0] * acc;\n                }\n"
              "        }\n    }\n",
           R_, g->sb, R_, R_, n, R_, n, n, n, n, R_, n, n, n, n);
        break;
    }
    default:
        break;
    }
}

/* ---- elementwise ops: one statement (a scalar) or one loop nest ---- */

/* The strings an elementwise body is written with. */
typedef struct ewref {
    char x[128], y[128], o[128], gv[128], to[128], gto[128];
    char ga[2][128], ta[2][128], gta[2][128];
    char c[64]; /* the constant when it varies in a loop (else empty) */
    bool has[2];
} ewref;

/* A formula of scalar_ops.h with its variables x, y, z, c replaced by
 * the C expressions given (token by token: cos, c and copysign stay
 * apart), in parentheses: what the forward and reverse passes write
 * inline -- no call per node for the compiler to inline. */
static void subst(const char *f, const char *X, const char *Y, const char *Z, const char *C,
                  char *out, size_t cap)
{
    size_t n = 0;
    const char *p = f;
#define PUT(ch) (n + 1 < cap ? (void)(out[n++] = (ch)) : (void)0)
    PUT('(');
    while (*p) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'
            || (*p >= '0' && *p <= '9') || *p == '.') {
            const char *q = p;
            while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_'
                   || (*q >= '0' && *q <= '9') || *q == '.')
                q++;
            const char *rep = NULL;
            if (q - p == 1 && !(*p >= '0' && *p <= '9'))
                rep = *p == 'x' ? X : *p == 'y' ? Y : *p == 'z' ? Z : *p == 'c' ? C : NULL;
            if (rep)
                for (const char *r = rep; *r; r++)
                    PUT(*r);
            else
                for (const char *r = p; r < q; r++)
                    PUT(*r);
            p = q;
        } else {
            PUT(*p);
            p++;
        }
    }
    PUT(')');
#undef PUT
    out[n] = '\0';
}

/* A derivative that is a finite number whatever the operands (add's 1,
 * scale's c): *v is it, and g * v needs no strong-zero test. */
static bool const_der(const char *d, double c, double *v)
{
    char *end;
    if (!strcmp(d, "c")) {
        *v = c;
        return c - c == 0.0;
    }
    const bool neg = d[0] == '-';
    const double u = strtod(d + neg, &end);
    if (*end || end == d + neg)
        return false;
    *v = neg ? -u : u;
    return true;
}

/* dst += g * d, the strong zero kept unless d is a finite constant */
static void em_acc(cg *g, const char *ind, const char *dst, const char *gv, const char *der,
                   double c, const char *X, const char *Y, const char *Z, const char *C,
                   bool cvar)
{
    double v;
    if (cvar && !strcmp(der, "c")) {
        em(g, "%s%s += %s * %s;\n", ind, dst, gv, C); /* c from a loop's table: finite */
        return;
    }
    if (const_der(der, c, &v)) {
        char b[48];
        if (v == 1.0)
            em(g, "%s%s += %s;\n", ind, dst, gv);
        else if (v == -1.0)
            em(g, "%s%s -= %s;\n", ind, dst, gv);
        else if (v != 0.0)
            em(g, "%s%s += %s * %s;\n", ind, dst, gv, num(v, b));
        return;
    }
    char d[1200];
    subst(der, X, Y, Z, C, d, sizeof d);
    em(g, "%s%s += %s_SZ(%s, %s);\n", ind, dst, g->P, gv, d);
}

static void em_ew_body_dirs(cg *g, const cgnode *x, const ewref *r, const char *ind);
static void em_ft_body(cg *g, const cgnode *x, const ewref *r, const char *ind);

static void em_ew_body(cg *g, const cgnode *x, const ewref *r, const char *ind)
{
    if ((g->K > 1 || g->no_adj || g->in_w) && (g->pass == PASS_T || g->pass == PASS_H)) {
        em_ew_body_dirs(g, x, r, ind); /* ad_codegen_sparse */
        return;
    }
    const ew_text *e = g->ew[x->op];
    const char *P = g->P;
    char cbuf[48];
    const char *c = r->c[0] ? r->c : num(e->takes_c ? x->c : 0.0, cbuf);
    if (!e->binary) {
        char d[600];
        snprintf(d, sizeof d, "%s_%s_d(%s, %s, %s)", P, e->name, r->x, r->o, c);
        switch (g->pass) {
        case PASS_F: {
            char f[1200];
            subst(e->f, r->x, "0.0", "0.0", c, f, sizeof f);
            em(g, "%s%s = %s;\n", ind, r->o, f);
            break;
        }
        case PASS_R:
            if (r->has[0])
                em_acc(g, ind, r->ga[0], r->gv, e->d[0], x->c, r->x, r->o, "0.0", c, r->c[0]);
            break;
        case PASS_T:
            if (r->has[0])
                em(g, "%s%s = %s * %s;\n", ind, r->to, d, r->ta[0]);
            else
                em(g, "%s%s = 0;\n", ind, r->to);
            break;
        default: /* forward over reverse: ga += g f'; gta += gto f' + g f'' ta */
            if (r->has[0])
                em(g, "%s{\n%s    const double d = %s, gg = %s;\n"
                      "%s    %s += %s_SZ(gg, d);\n"
                      "%s    %s += %s * d + %s_SZ(gg, %s_%s_d2(%s, %s, %s)) * %s;\n%s}\n",
                   ind, ind, d, r->gv, ind, r->ga[0], P, ind, r->gta[0], r->gto, P, P, e->name,
                   r->x, r->o, c, r->ta[0], ind);
            break;
        }
        return;
    }
    static const char *const dn[5] = {"da", "db", "daa", "dab", "dbb"};
    char d[5][600];
    for (int k = 0; k < 5; k++)
        snprintf(d[k], sizeof d[k], "%s_%s_%s(%s, %s, %s)", P, e->name, dn[k], r->x, r->y, r->o);
    switch (g->pass) {
    case PASS_F: {
        char f[1200];
        subst(e->f, r->x, r->y, "0.0", "0.0", f, sizeof f);
        em(g, "%s%s = %s;\n", ind, r->o, f);
        break;
    }
    case PASS_R:
        for (int k = 0; k < 2; k++)
            if (r->has[k])
                em_acc(g, ind, r->ga[k], r->gv, e->d[k], 0.0, r->x, r->y, r->o, "0.0", false);
        break;
    case PASS_T:
        em(g, "%s%s = ", ind, r->to);
        if (r->has[0])
            em(g, "%s * %s", d[0], r->ta[0]);
        if (r->has[0] && r->has[1])
            em(g, " + ");
        if (r->has[1])
            em(g, "%s * %s", d[1], r->ta[1]);
        if (!r->has[0] && !r->has[1])
            em(g, "0");
        em(g, ";\n");
        break;
    default:
        em(g, "%s{\n%s    const double da = %s, db = %s, gg = %s, go = %s;\n", ind, ind, d[0],
           d[1], r->gv, r->gto);
        em(g, "%s    const double tu = %s, tv = %s;\n", ind, r->has[0] ? r->ta[0] : "0.0",
           r->has[1] ? r->ta[1] : "0.0");
        em(g, "%s    const double gaa = %s_SZ(gg, %s), gab = %s_SZ(gg, %s), gbb = %s_SZ(gg, %s);\n"
              "%s    (void)da, (void)db, (void)gaa, (void)gab, (void)gbb, (void)tu, (void)tv;\n",
           ind, P, d[2], P, d[3], P, d[4], ind);
        if (r->has[0])
            em(g, "%s    %s += %s_SZ(gg, da);\n%s    %s += go * da + gaa * tu + gab * tv;\n", ind,
               r->ga[0], P, ind, r->gta[0]);
        if (r->has[1])
            em(g, "%s    %s += %s_SZ(gg, db);\n%s    %s += go * db + gab * tu + gbb * tv;\n", ind,
               r->ga[1], P, ind, r->gta[1]);
        em(g, "%s}\n", ind);
        break;
    }
}

/* The replay guard of comparison id, if it has one: br set when an
 * element differs from its recorded outcome. o: the value's element
 * (scalar) or pointer (tensor). */
/* Comparison id's replay guard: its recorded outcomes, or NULL if it has
 * none (guards are kept in node order; statements may come in level
 * order). */
static const unsigned char *guard_rec(const cg *g, uint32_t id)
{
    uint32_t node = 0;
    const unsigned char *rec = NULL;
    size_t lo = 0, hi = g->ngd;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        ad__guard_at(g->t, mid, &node, &rec);
        if (node < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= g->ngd)
        return NULL;
    ad__guard_at(g->t, lo, &node, &rec);
    return node == id ? rec : NULL;
}

static void em_guard(cg *g, uint32_t id, bool scalar, const char *o, const char *ind)
{
    const unsigned char *rec = guard_rec(g, id);
    if (!rec)
        return;
    if (scalar) {
        em(g, "%sbr |= %s != %d;\n", ind, o, rec[0] ? 1 : 0);
        return;
    }
    const size_t n = nsize(&g->n[id]);
    em(g, "%s{\n%s    static const unsigned char rec[%zu] = {", ind, ind, n);
    for (size_t i = 0; i < n; i++)
        em(g, "%s%d", i ? (i % 32 ? "," : ",\n        ") : "", rec[i] ? 1 : 0);
    em(g, "};\n%s    for (unsigned long i = 0; i < %zuUL; i++)\n%s        br |= o[i] != rec[i];\n"
          "%s}\n", ind, n, ind, ind);
}

/* operand k's strides over the output's rows x cols (broadcasting) */
static void bstride(ad_shape s, size_t R, size_t C, size_t *rs, size_t *cs)
{
    const size_t n = ad_shape_size(s);
    if (n == R * C)
        *rs = C, *cs = 1;
    else if (n == 1)
        *rs = 0, *cs = 0;
    else if (s.ndim == 2 && s.cols == 1 && s.rows == R)
        *rs = 1, *cs = 0; /* a column */
    else
        *rs = 0, *cs = 1; /* a row */
}

/* The references of a scalar elementwise node's statement. */
static void scalar_refs(const cg *g, uint32_t id, ewref *r)
{
    const cgnode *x = &g->n[id];
    memset(r, 0, sizeof *r);
    for (int k = 0; k < x->nin; k++)
        r->has[k] = diff(g, x->in[k]);
    vel(g, x->in[0], 0, r->x);
    if (x->nin > 1)
        vel(g, x->in[1], 0, r->y);
    vel(g, id, 0, r->o);
    aref(g, id, r->gv);
    if (g->fu && g->fu[id])
        snprintf(r->to, sizeof r->to, "lt%u[k]", (unsigned)g->fu[id] - 1);
    else if (g->lj && g->lj[id] && !g->hl)
        snprintf(r->to, sizeof r->to, "lt%u[k]", (unsigned)g->lj[id] - 1);
    else
        snprintf(r->to, sizeof r->to, "w[%zu%s]", g->tb + x->off, cg_dir(g));
    snprintf(r->gto, sizeof r->gto, "w[%zu%s]", gtslot(g, id, 0), cg_dir(g));
    if (g->lj && g->lj[id] && g->pass == PASS_H)
        snprintf(r->gto, sizeof r->gto, "uat%u[k]", (unsigned)g->lj[id] - 1);
    for (int k = 0; k < x->nin; k++) {
        aref(g, x->in[k], r->ga[k]);
        snprintf(r->gta[k], sizeof r->gta[k], "w[%zu%s]", gtslot(g, x->in[k], 0), cg_dir(g));
        if (g->lj && g->lj[x->in[k]] && g->pass == PASS_H)
            snprintf(r->gta[k], sizeof r->gta[k], "uat%u[k]", (unsigned)g->lj[x->in[k]] - 1);
        tel(g, x->in[k], 0, r->ta[k]);
    }
}

static void em_ew(cg *g, uint32_t id)
{
    const cgnode *x = &g->n[id];
    ewref r;
    memset(&r, 0, sizeof r);
    const int nin = x->nin;
    for (int k = 0; k < nin; k++)
        r.has[k] = diff(g, x->in[k]);
    char b0[64], b1[64];
    if (all_scalar(g, x)) {
        scalar_refs(g, id, &r);
        em_ew_body(g, x, &r, "    ");
        if (g->pass == PASS_F && ad__is_compare(x->op))
            em_guard(g, id, true, r.o, "    ");
        return;
    }
    /* a loop nest over the output's rows x cols */
    size_t R, C;
    if (x->shape.ndim == 2)
        R = x->shape.rows, C = x->shape.cols;
    else
        R = 1, C = nsize(x);
    char idx[2][48];
    for (int k = 0; k < nin; k++) {
        size_t rs, cs;
        bstride(g->n[x->in[k]].shape, R, C, &rs, &cs);
        snprintf(idx[k], 64, "r * %zuUL + j * %zuUL", rs, cs);
    }
    em(g, "    {\n");
    for (int k = 0; k < nin; k++)
        em(g, "        const %s_real *a%d = %s;\n", g->P, k, vptr(g, x->in[k], k ? b1 : b0));
    if (g->pass == PASS_F)
        em(g, "        %s_real *o = w + %zu;\n", g->P, x->off);
    else
        em(g, "        const %s_real *o = w + %zu;\n", g->P, x->off);
    if (g->pass == PASS_R || g->pass == PASS_H)
        em(g, "        const %s_real *g = w + %zu;\n", g->P, gslot(g, id, 0));
    if (g->pass == PASS_T)
        em(g, "        %s_real *to = w + %zu;\n", g->P, g->tb + x->off);
    if (g->pass == PASS_H)
        em(g, "        const %s_real *gt = w + %zu;\n", g->P, gtslot(g, id, 0));
    for (int k = 0; k < nin; k++) {
        if (!r.has[k] || g->pass == PASS_F)
            continue;
        if (g->pass != PASS_T)
            em(g, "        %s_real *g%d = w + %zu;\n        (void)g%d;\n", g->P, k,
               gslot(g, x->in[k], 0), k);
        if (g->pass == PASS_T || g->pass == PASS_H)
            em(g, "        const %s_real *t%d = %s;\n        (void)t%d;\n", g->P, k,
               tptr(g, x->in[k], b0), k);
        if (g->pass == PASS_H)
            em(g, "        %s_real *gt%d = w + %zu;\n        (void)gt%d;\n", g->P, k,
               gtslot(g, x->in[k], 0), k);
    }
    em(g, "        (void)o;\n");
    for (int k = 0; k < nin; k++)
        em(g, "        (void)a%d;\n", k);
    if (g->pass == PASS_R || g->pass == PASS_H)
        em(g, "        (void)g;\n");
    if (g->pass == PASS_H)
        em(g, "        (void)gt;\n");
    strcpy(r.x, "xv");
    if (nin > 1)
        strcpy(r.y, "yv");
    strcpy(r.o, g->pass == PASS_F ? "o[i]" : "zv");
    strcpy(r.gv, "g[i]");
    strcpy(r.to, "to[i]");
    strcpy(r.gto, "gt[i]");
    for (int k = 0; k < nin; k++) {
        snprintf(r.ga[k], sizeof r.ga[k], "g%d[%s]", k, idx[k]);
        snprintf(r.ta[k], sizeof r.ta[k], "t%d[%s]", k, idx[k]);
        snprintf(r.gta[k], sizeof r.gta[k], "gt%d[%s]", k, idx[k]);
    }
    em(g, "        for (unsigned long r = 0; r < %zuUL; r++)\n"
          "            for (unsigned long j = 0; j < %zuUL; j++) {\n"
          "                const unsigned long i = r * %zuUL + j;\n",
       R, C, C);
    /* the operands' (and the output's) values, read once */
    em(g, "                const double xv = a0[%s]%s%s%s;\n", idx[0], nin > 1 ? ", yv = a1[" : "",
       nin > 1 ? idx[1] : "", nin > 1 ? "]" : "");
    if (g->pass != PASS_F)
        em(g, "                const double zv = o[i];\n                (void)zv;\n");
    em(g, "                (void)i, (void)xv%s;\n", nin > 1 ? ", (void)yv" : "");
    em_ew_body(g, x, &r, "                ");
    em(g, "            }\n");
    if (g->pass == PASS_F && ad__is_compare(x->op))
        em_guard(g, id, false, "o", "        ");
    em(g, "    }\n");
}

/* ---- tensor ops in each pass ---- */

/* operand k is read through a pointer (an index operand is not: its
 * table is written out instead) */
static bool reads_operand(unsigned op, int k) { return !(has_table(op) && op != AD_OP_CONCAT && k == 1); }

/* Opens a block binding a0..: values (tangents: tan[k] set), o, g, g0..:
 * adjoints (or adjoint tangents), has[k] set. */
typedef struct binding {
    const char *a[AD_MAX_ARITY]; /* pointer expressions; NULL: not read */
    char o[64], g[64], gk[AD_MAX_ARITY][64];
    bool has[AD_MAX_ARITY];
    const char *tk[AD_MAX_ARITY]; /* tangents: max_axis's, own_rules' (NULL: none) */
    const char *to;               /* own_rules' tangent out */
} binding;

static void em_open(cg *g, const cgnode *x, const binding *b, bool out_written)
{
    em(g, "    {\n");
    for (int k = 0; k < x->nin; k++)
        if (b->a[k])
            em(g, "        const %s_real *a%d = %s;\n        (void)a%d;\n", g->P, k, b->a[k], k);
    for (int k = 0; k < x->nin; k++)
        if (b->tk[k])
            em(g, "        const %s_real *t%d = %s;\n        (void)t%d;\n", g->P, k, b->tk[k], k);
    if (b->to)
        em(g, "        %s_real *to = %s;\n", g->P, b->to);
    em(g, "        %s%s_real *o = %s;\n        (void)o;\n", out_written ? "" : "const ", g->P,
       b->o);
    if (b->g[0]) /* (void): an op whose operands need no adjoint reads no g */
        em(g, "        const %s_real *g = %s;\n        (void)g;\n", g->P, b->g);
    for (int k = 0; k < x->nin; k++)
        if (b->has[k])
            em(g, "        %s_real *g%d = %s;\n", g->P, k, b->gk[k]);
}

/* A custom op: a call of the caller's function (ad_codegen_rule). */
static void em_custom(cg *g, uint32_t id)
{
    const cgnode *x = &g->n[id];
    const ad_codegen_rule *rule = custom_rule(ad_node_op(g->t, ad__handle(g->t, id)));
    char b[64];
    em(g, "    {\n        const %s_real *ins[%d] = {", g->P, x->nin);
    for (int k = 0; k < x->nin; k++)
        em(g, "%s%s", k ? ", " : "", vptr(g, x->in[k], b));
    em(g, "};\n        static const unsigned long sz[%d] = {", x->nin + 1);
    for (int k = 0; k < x->nin; k++)
        em(g, "%zuUL, ", nsize(&g->n[x->in[k]]));
    char c[48];
    em(g, "%zuUL};\n", nsize(x));
    if (g->pass == PASS_F) {
        em(g, "        %s(ins, w + %zu, sz, %s);\n    }\n", rule->forward, x->off, num(x->c, c));
        return;
    }
    em(g, "        %s_real *gins[%d] = {", g->P, x->nin);
    for (int k = 0; k < x->nin; k++) {
        if (diff(g, x->in[k]))
            em(g, "%sw + %zu", k ? ", " : "", gslot(g, x->in[k], 0));
        else
            em(g, "%s0", k ? ", " : "");
    }
    em(g, "};\n        %s(ins, w + %zu, w + %zu, gins, sz, %s);\n    }\n", rule->vjp, x->off,
       gslot(g, id, 0), num(x->c, c));
}

static void em_tensor(cg *g, uint32_t id)
{
    const cgnode *x = &g->n[id];
    if (x->op >= AD_OP_COUNT) { /* only forward and reverse get here */
        em_custom(g, id);
        return;
    }
    char vb[AD_MAX_ARITY][64], tbf[AD_MAX_ARITY][64], zb[64];
    snprintf(zb, sizeof zb, "(w + %zu)", g->zb);
    binding b;
    memset(&b, 0, sizeof b);
    for (int k = 0; k < x->nin; k++) {
        vptr(g, x->in[k], vb[k]);
        tptr(g, x->in[k], tbf[k]);
    }
    const opclass cl = class_of(x->op);
    bool grad_to[AD_MAX_ARITY] = {false, false, false, false};
    for (int k = 0; k < x->nin; k++)
        grad_to[k] = reads_operand(x->op, k) && diff(g, x->in[k])
                     && !(x->op == AD_OP_SELECT && k == 0);
    switch (g->pass) {
    case PASS_F:
        for (int k = 0; k < x->nin; k++)
            b.a[k] = reads_operand(x->op, k) ? vb[k] : NULL;
        snprintf(b.o, 64, "w + %zu", x->off);
        em_open(g, x, &b, true);
        em_fwd(g, id, "=", "a0");
        em(g, "    }\n");
        break;
    case PASS_R:
    case PASS_H: {
        /* the adjoints: vjp of g at the values */
        for (int k = 0; k < x->nin; k++) {
            b.a[k] = reads_operand(x->op, k) ? vb[k] : NULL;
            b.has[k] = grad_to[k];
            snprintf(b.gk[k], 64, "w + %zu", gslot(g, x->in[k], 0));
        }
        snprintf(b.o, 64, "w + %zu", x->off);
        snprintf(b.g, 64, "w + %zu", gslot(g, id, 0));
        if (!g->no_adj) { /* ad_codegen_sparse: once, not per direction */
            em_open(g, x, &b, false);
            em_vjp(g, id, b.has);
            em(g, "    }\n");
        }
        if (g->pass == PASS_R)
            break;
        /* adjoint tangents: the vjp (linear in g) of the adjoint tangent */
        for (int k = 0; k < x->nin; k++)
            snprintf(b.gk[k], 64, "w + %zu", gtslot(g, x->in[k], 0));
        snprintf(b.g, 64, "w + %zu", gtslot(g, id, 0));
        stmt(g);
        em_open(g, x, &b, false);
        em_vjp(g, id, b.has);
        em(g, "    }\n");
        bool tan[AD_MAX_ARITY] = {false, false, false, false}, any_tan = false, any_has = false;
        for (int k = 0; k < x->nin; k++) {
            tan[k] = diff(g, x->in[k]);
            any_tan |= tan[k], any_has |= b.has[k];
        }
        if (own_rules(x->op) && any_tan && any_has) { /* plus its second-order term */
            for (int k = 0; k < x->nin; k++)
                b.tk[k] = tan[k] ? tbf[k] : NULL;
            snprintf(b.g, 64, "w + %zu", gslot(g, id, 0));
            stmt(g);
            em_open(g, x, &b, false);
            em_so(g, id, tan, b.has);
            em(g, "    }\n");
        }
        if (cl == CL_BILINEAR) { /* plus the vjp of g at the tangents */
            for (int k = 0; k < x->nin; k++)
                b.a[k] = tbf[k];
            if (x->op == AD_OP_AFFINE) /* b's vjp reads no value: no term */
                b.has[2] = false;
            snprintf(b.g, 64, "w + %zu", gslot(g, id, 0));
            stmt(g);
            em_open(g, x, &b, false);
            em_vjp(g, id, b.has);
            em(g, "    }\n");
        }
        break;
    }
    case PASS_T:
        snprintf(b.o, 64, "w + %zu", g->tb + x->off);
        if (own_rules(x->op)) { /* its own rule: from the values and the tangents */
            bool tan[AD_MAX_ARITY] = {false, false, false, false};
            char to[64];
            memcpy(to, b.o, sizeof to);
            for (int k = 0; k < x->nin; k++) {
                b.a[k] = vb[k];
                tan[k] = diff(g, x->in[k]);
                b.tk[k] = tan[k] ? tbf[k] : NULL;
            }
            snprintf(b.o, 64, "w + %zu", x->off);
            b.to = to;
            em_open(g, x, &b, false);
            em_jvp(g, id, tan);
            em(g, "    }\n");
        } else if (cl == CL_LINEAR) {
            for (int k = 0; k < x->nin; k++)
                b.a[k] = reads_operand(x->op, k) ? tbf[k] : NULL;
            const char *pick = "a0";
            if (x->op == AD_OP_SELECT)
                b.a[0] = vb[0]; /* the condition's value decides */
            if (x->op == AD_OP_MAX_AXIS || x->op == AD_OP_MIN_AXIS)
                b.a[0] = vb[0], b.tk[0] = tbf[0], pick = "t0";
            em_open(g, x, &b, true);
            em_fwd(g, id, "=", pick);
            em(g, "    }\n");
        } else { /* bilinear: f(ta, b) + f(a, tb) */
            int terms = 0;
            for (int k = 0; k < 2; k++) {
                const bool bias = x->op == AD_OP_AFFINE && k == 0 && diff(g, x->in[2]);
                if (!diff(g, x->in[k]) && !bias)
                    continue;
                for (int j = 0; j < x->nin; j++)
                    b.a[j] = j == k ? tbf[j] : vb[j];
                if (x->op == AD_OP_AFFINE)
                    b.a[2] = k == 0 ? tbf[2] : zb;
                if (terms)
                    stmt(g);
                em_open(g, x, &b, true);
                em_fwd(g, id, terms ? "+=" : "=", "a0");
                em(g, "    }\n");
                terms++;
            }
            if (x->op == AD_OP_AFFINE && !terms) /* unreachable: DIFF has a diff operand */
                em(g, "    /* no tangent */\n");
        }
        break;
    }
}


/* ---- loops: statements of one form written once ----
 *
 * A chunked pass writes statements of one form as one loop, two ways:
 *  - runs: a block of L scalar elementwise statements (no comparison)
 *    followed by R - 1 blocks that are its twins, every slot and input
 *    index advancing by one fixed step per block (W1: 8 statements per
 *    term, slots by 8, inputs by 1). The loop executes the statements the
 *    straight-line code would, in the same order: the same results bit for
 *    bit.
 *  - groups: when a pass keeps more than LEVEL_MIN statements outside runs
 *    (a large tape with no repetition in node order), its statements are
 *    ordered by level -- 1 + the highest level among the operands computed
 *    in the pass -- which puts every operand before its uses, and every use
 *    before the operand's adjoint is read. The twins of one level do not
 *    read each other, so GROUP_MIN or more of them are one loop. Values come
 *    out the same bit for bit; an adjoint sums the same terms, possibly in
 *    another order (rounding of the order: 1e-16 relative per term).
 * A number that differs between the blocks -- a slot, an input index, a
 * constant c -- comes from the loop counter when it advances by one fixed
 * step, and from a static const table otherwise; the compiler sees one
 * body instead of R. */

enum { RUN_MAXL = 32, RUN_MINR = 4, RUN_MINS = 32 };
enum { LEVEL_MIN = 2048, GROUP_MIN = 8, GROUP_SCAN = 16 };

typedef struct run {
    size_t p, L, R; /* statements ids[p .. p + L * R), blocks of L */
} run;

static bool finite_c(double c) { return c - c == 0.0; }

/* statement a has statement b's form: op, flags, operand kinds, baked
 * literals; constants c equal, or both finite (then a table holds them) */
static bool twin_ex(const cg *g, uint32_t a, uint32_t b, bool cmp)
{
    const cgnode *x = &g->n[a], *y = &g->n[b];
    if (x->op != y->op || !is_ew(x->op) || (!cmp && ad__is_compare(x->op)) || !all_scalar(g, x)
        || !all_scalar(g, y) || (x->flags & (F_DIFF | F_NOTAN)) != (y->flags & (F_DIFF | F_NOTAN)))
        return false;
    if (g->za && g->za[a] != g->za[b]) /* ad_codegen_sparse, Hessian */
        return false;
    /* constants that differ come from a table; not in ad_codegen_sparse,
     * whose runs keep their text (em_run) */
    if (memcmp(&x->c, &y->c, sizeof x->c) != 0
        && (g->sparse || !(g->ew[x->op]->takes_c && finite_c(x->c) && finite_c(y->c))))
        return false;
    for (int k = 0; k < x->nin; k++) {
        const cgnode *u = &g->n[x->in[k]], *v = &g->n[y->in[k]];
        if ((u->input >= 0) != (v->input >= 0)
            || (u->flags & (F_ACT | F_DIFF)) != (v->flags & (F_ACT | F_DIFF)))
            return false;
        if (!(u->flags & F_ACT) && memcmp(u->val, v->val, sizeof *u->val) != 0)
            return false; /* baked: the same literal */
    }
    return true;
}

/* runs and groups: no comparison (each has its own replay guard) */
static bool twin(const cg *g, uint32_t a, uint32_t b) { return twin_ex(g, a, b, false); }

/* the numbers a statement's references are made of: its slot, each
 * operand's slot and input index */
static int coords(const cg *g, uint32_t id, long long *c)
{
    const cgnode *x = &g->n[id];
    int n = 0;
    c[n++] = (long long)x->off;
    for (int k = 0; k < x->nin; k++) {
        c[n++] = (long long)g->n[x->in[k]].off;
        c[n++] = g->n[x->in[k]].input;
    }
    return n;
}

/* block r of the run from p (blocks of L) is block 0's twin, each number
 * r steps (block 1 - block 0) on */
static bool block_fits(const cg *g, const uint32_t *ids, size_t p, size_t L, size_t r)
{
    for (size_t j = 0; j < L; j++) {
        const uint32_t a0 = ids[p + j], a1 = ids[p + L + j], ar = ids[p + r * L + j];
        if (!twin(g, a0, ar))
            return false;
        long long c0[1 + 2 * AD_MAX_ARITY], c1[1 + 2 * AD_MAX_ARITY], cr[1 + 2 * AD_MAX_ARITY];
        const int n = coords(g, a0, c0);
        coords(g, a1, c1);
        coords(g, ar, cr);
        for (int k = 0; k < n; k++)
            if (cr[k] - c0[k] != (long long)r * (c1[k] - c0[k]))
                return false;
    }
    return true;
}

/* the runs among the m statements ids[], the shortest block first at
 * each place; returns their count (at most m / RUN_MINS) */
static size_t find_runs(const cg *g, const uint32_t *ids, size_t m, run *runs)
{
    size_t nr = 0;
    for (size_t p = 0; p < m;) {
        size_t L = 1, R = 0;
        for (; L <= RUN_MAXL && p + RUN_MINR * L <= m; L++) {
            R = 1;
            while (p + (R + 1) * L <= m && block_fits(g, ids, p, L, R))
                R++;
            if (R >= RUN_MINR && L * R >= RUN_MINS)
                break;
            R = 0;
        }
        if (R) {
            runs[nr].p = p, runs[nr].L = L, runs[nr].R = R;
            nr++;
            p += L * R;
        } else
            p++;
    }
    return nr;
}

/* The fields of an ewref that hold indices, each with at most LQ numbers
 * right after a '[' (in[3][0]: two). */
enum { LNF = 12, LQ = 3, LNC = LNF * LQ };
enum { LC_LIT, LC_AFF, LC_TAB };

typedef struct lcol {
    unsigned char kind;
    unsigned long base;
    long long step;
    size_t tab; /* LC_TAB: its column in the statement's table */
} lcol;

/* statement j of a loop's body: block 0's references and its columns */
typedef struct lstmt {
    ewref r0;
    char skel[LNF][128]; /* its fields without the numbers */
    int q[LNF];
    lcol col[LNC];
    size_t ntab;
    bool cvar; /* c differs between the blocks: from a table */
    uint32_t first; /* a table's form: its first statement */
} lstmt;

static char *lfield(ewref *r, int f)
{
    switch (f) {
    case 0: return r->x;
    case 1: return r->y;
    case 2: return r->o;
    case 3: return r->gv;
    case 4: return r->to;
    case 5: return r->gto;
    default: break;
    }
    f -= 6;
    return f < 2 ? r->ga[f] : f < 4 ? r->ta[f - 2] : r->gta[f - 4];
}

/* The numbers right after a '[' in s, into v (at most LQ), and s without
 * them into skel; -1 when there are more or one is too large. */
static int lnums(const char *s, unsigned long *v, char *skel)
{
    int q = 0;
    char prev = 0;
    while (*s) {
        if (prev == '[' && *s >= '0' && *s <= '9') {
            char *e;
            const unsigned long long u = strtoull(s, &e, 10);
            if (q == LQ || u > 0xffffffffULL)
                return -1;
            v[q++] = (unsigned long)u;
            s = e;
            prev = '0';
            continue;
        }
        prev = *skel++ = *s++;
    }
    *skel = '\0';
    return q;
}

/* Block 0's text of field f with its numbers as functions of it (a
 * table's: tab[it * stride + column]). */
static void lrender(const lstmt *S, const char *tab, size_t stride, int f, char *out, size_t cap)
{
    ewref r0 = S->r0;
    const char *s = lfield(&r0, f);
    size_t n = 0;
    int k = 0;
    char prev = 0;
    while (*s && n + 1 < cap) {
        if (prev == '[' && *s >= '0' && *s <= '9') {
            char *e;
            strtoull(s, &e, 10);
            const lcol *c = &S->col[f * LQ + k++];
            int w;
            if (c->kind == LC_LIT)
                w = snprintf(out + n, cap - n, "%lu", c->base);
            else if (c->kind == LC_AFF)
                w = snprintf(out + n, cap - n, "%luUL %c it * %lluUL", c->base,
                             c->step < 0 ? '-' : '+',
                             (unsigned long long)(c->step < 0 ? -c->step : c->step));
            else
                w = snprintf(out + n, cap - n, "%s[it * %zuUL + %zuUL]", tab, stride, c->tab);
            if (w < 0 || (size_t)w >= cap - n)
                break;
            n += (size_t)w;
            s = e;
            prev = '0';
            continue;
        }
        prev = out[n++] = *s++;
    }
    out[n] = '\0';
}

/* Statements base[it * L + j] (block it, statement j) as one loop over
 * it (back: blocks and statements in reverse order). The blocks must be
 * twins whose statements can run in this order. false, nothing written,
 * if their references do not line up or the scratch cannot be had (then
 * the caller writes them one by one). */
static bool em_loop(cg *g, const uint32_t *base, size_t L, size_t R, bool back, bool affine)
{
    ad__mem *mem = &g->t->mem;
    /* affine (a run: block_fits checked every slot and input index): the
     * numbers of blocks 0 and 1 tell them all; only constants are read
     * from every block */
    const size_t RV = affine && R > 2 ? 2 : R;
    lstmt *S = ad__alloc(mem, L * sizeof *S);
    unsigned long *V = ad__alloc(mem, RV * L * LNC * sizeof *V);
    double *C = ad__alloc(mem, R * L * sizeof *C);
    bool ok = S && V && C;
    char skel[128], fx[128];
    for (size_t j = 0; j < L && ok; j++) {
        lstmt *s = &S[j];
        memset(s, 0, sizeof *s);
        for (size_t it = 0; it < R && ok; it++) {
            const uint32_t id = base[it * L + j];
            C[it * L + j] = g->n[id].c;
            if (it >= RV)
                continue;
            ewref r;
            scalar_refs(g, id, &r);
            unsigned long *v = V + (it * L + j) * LNC;
            if (it == 0)
                s->r0 = r;
            for (int f = 0; f < LNF && ok; f++) {
                const int q = lnums(lfield(&r, f), v + f * LQ, it ? skel : s->skel[f]);
                if (it == 0)
                    s->q[f] = q, ok = q >= 0;
                else
                    ok = q == s->q[f] && !strcmp(skel, s->skel[f]);
            }
        }
        /* each number: the same in every block, a fixed step, or a table */
        for (int c = 0; c < LNC && ok; c++) {
            lcol *col = &s->col[c];
            if (c % LQ >= s->q[c / LQ])
                continue;
            const unsigned long v0 = V[j * LNC + c];
            const long long st = R > 1 ? (long long)V[(L + j) * LNC + c] - (long long)v0 : 0;
            bool lit = true, aff = true;
            for (size_t it = 1; it < RV; it++) {
                const unsigned long vi = V[(it * L + j) * LNC + c];
                lit = lit && vi == v0;
                aff = aff && (long long)vi - (long long)v0 == (long long)it * st;
            }
            col->base = v0, col->step = st;
            col->kind = lit ? LC_LIT : aff ? LC_AFF : LC_TAB;
            if (col->kind == LC_TAB)
                col->tab = s->ntab++;
        }
        for (size_t it = 1; it < R && ok; it++)
            s->cvar = s->cvar || memcmp(&C[it * L + j], &C[j], sizeof *C) != 0;
    }
    if (ok) {
        stmt(g);
        g->stmts += L - 1; /* the loop's body counts */
        em(g, "    {\n");
        for (size_t j = 0; j < L; j++) {
            const lstmt *s = &S[j];
            if (s->ntab) {
                em(g, "        static const unsigned long lt%zu[%zu] = {", j, R * s->ntab);
                size_t k = 0;
                for (size_t it = 0; it < R; it++)
                    for (int c = 0; c < LNC; c++)
                        if (c % LQ < s->q[c / LQ] && s->col[c].kind == LC_TAB)
                            em(g, "%s%lu", k++ % 16 ? "," : (k > 1 ? ",\n            " : ""),
                               V[(it * L + j) * LNC + c]);
                em(g, "};\n");
            }
            if (s->cvar) {
                char b[48];
                em(g, "        static const double lc%zu[%zu] = {", j, R);
                for (size_t it = 0; it < R; it++)
                    em(g, "%s%s", it % 8 ? ", " : (it ? ",\n            " : ""),
                       num(C[it * L + j], b));
                em(g, "};\n");
            }
        }
        if (back)
            em(g, "        for (unsigned long it = %zuUL; it-- > 0;) {\n", R);
        else
            em(g, "        for (unsigned long it = 0; it < %zuUL; it++) {\n", R);
        for (size_t jj = 0; jj < L; jj++) {
            const size_t j = back ? L - 1 - jj : jj;
            const lstmt *s = &S[j];
            ewref r;
            memset(&r, 0, sizeof r);
            r.has[0] = s->r0.has[0], r.has[1] = s->r0.has[1];
            char tab[32];
            snprintf(tab, sizeof tab, "lt%zu", j);
            for (int f = 0; f < LNF; f++) {
                lrender(s, tab, s->ntab, f, fx, sizeof fx);
                strcpy(lfield(&r, f), fx);
            }
            if (s->cvar)
                snprintf(r.c, sizeof r.c, "lc%zu[it]", j);
            em_ew_body(g, &g->n[base[j]], &r, "            ");
        }
        em(g, "        }\n    }\n");
    }
    if (C)
        ad__free(mem, C, R * L * sizeof *C);
    if (V)
        ad__free(mem, V, RV * L * LNC * sizeof *V);
    if (S)
        ad__free(mem, S, L * sizeof *S);
    return ok;
}

/* t = s0 with each index (a number right after '[') that differs in s1,
 * block 1's text, written as a function of it; false if the texts differ
 * elsewhere */
static bool idx_text(const char *s0, const char *s1, char *t, size_t cap)
{
    size_t n = 0;
    char prev = 0;
    while (*s0 && *s1) {
        if (prev == '[' && *s0 >= '0' && *s0 <= '9' && *s1 >= '0' && *s1 <= '9') {
            char *e0, *e1;
            const unsigned long a = strtoul(s0, &e0, 10), b = strtoul(s1, &e1, 10);
            const int k = a == b  ? snprintf(t + n, cap - n, "%lu", a)
                          : b > a ? snprintf(t + n, cap - n, "%luUL + it * %luUL", a, b - a)
                                  : snprintf(t + n, cap - n, "%luUL - it * %luUL", a, a - b);
            if (k < 0 || (size_t)k >= cap - n)
                return false;
            n += (size_t)k;
            s0 = e0, s1 = e1;
            prev = '0';
            continue;
        }
        if (*s0 != *s1 || n + 1 >= cap)
            return false;
        prev = t[n++] = *s0;
        s0++, s1++;
    }
    t[n] = '\0';
    return !*s0 && !*s1;
}

/* statement j of a run's block, its references as functions of it */
static bool run_refs(const cg *g, const uint32_t *ids, const run *u, size_t j, ewref *r)
{
    ewref r0, r1;
    scalar_refs(g, ids[u->p + j], &r0);
    scalar_refs(g, ids[u->p + u->L + j], &r1);
    memset(r, 0, sizeof *r);
    r->has[0] = r0.has[0], r->has[1] = r0.has[1];
#define CG_IDX(F) idx_text(r0.F, r1.F, r->F, sizeof r->F)
    bool ok = CG_IDX(x) && CG_IDX(y) && CG_IDX(o) && CG_IDX(gv) && CG_IDX(to) && CG_IDX(gto);
    for (int k = 0; k < 2; k++)
        ok = ok && CG_IDX(ga[k]) && CG_IDX(ta[k]) && CG_IDX(gta[k]);
#undef CG_IDX
    return ok;
}

/* ad_codegen_sparse's runs (ids[] in tape order, affine numbers and
 * identical constants): a run as a loop (backward: blocks and statements
 * in reverse order), what only the block reads in locals;
 * false, nothing written, if it cannot be (then its statements are
 * written one by one) */
static bool run_locals(cg *g, const uint32_t *ids, const run *u, int mode);

static bool sp_fuse(cg *g, const uint32_t *ids, const run *u, int mode);

static bool em_run(cg *g, const uint32_t *ids, const run *u, bool back)
{
    ewref r;
    /* a Hessian's forward: the statements its reverse pass recomputes
     * (sp_fuse), in locals l<j>, lt<j>[k] when the block alone reads them,
     * not at all when every statement is such */
    const bool ffu = !back && g->pass == PASS_F && g->ft && sp_fuse(g, ids, u, 3);
    if (ffu && sp_fuse(g, ids, u, 4)) {
        sp_fuse(g, ids, u, 0);
        return true;
    }
    const bool fus = back && g->pass == PASS_H && sp_fuse(g, ids, u, 1);
    const bool loc = g->maxuse && (back ? g->pass == PASS_H && g->hl : !g->hl)
                     && run_locals(g, ids, u, 1); /* ad_codegen_sparse */
    bool ok = true;
    for (size_t j = 0; j < u->L && ok; j++)
        ok = run_refs(g, ids, u, j, &r);
    if (fus) { /* and the references of its forward statements */
        g->pass = PASS_F;
        for (size_t j = 0; j < u->L && ok; j++)
            ok = run_refs(g, ids, u, j, &r);
        g->pass = PASS_H;
    }
    if (!ok) {
        if (loc)
            run_locals(g, ids, u, 3);
        if (fus || ffu)
            sp_fuse(g, ids, u, 0);
        return false;
    }
    stmt(g);
    g->stmts += u->L - 1; /* the loop's body counts */
    if (back)
        em(g, "    for (unsigned long it = %zuUL; it-- > 0;) {\n", u->R);
    else
        em(g, "    for (unsigned long it = 0; it < %zuUL; it++) {\n", u->R);
    if (loc)
        run_locals(g, ids, u, 2);
    for (size_t j = 0; j < u->L && (fus || ffu); j++)
        if (g->fu[ids[u->p + j]])
            em(g, "        %s_real l%zu, lt%zu[%zu];\n        (void)l%zu, (void)lt%zu;\n", g->P, j, j,
               g->K, j, j);
    if (fus) { /* the recomputed values and tangents first */
        g->pass = PASS_F;
        for (size_t j = 0; j < u->L; j++) {
            const uint32_t id = ids[u->p + j];
            if (!g->fu[id])
                continue;
            run_refs(g, ids, u, j, &r);
            em_ft_body(g, &g->n[id], &r, "        ");
            if (g->maxuse[id] == UINT32_MAX) { /* an output: its value stored too */
                char s0[64], s1[64], o[128];
                snprintf(s0, sizeof s0, "w[%zu]", g->n[id].off);
                snprintf(s1, sizeof s1, "w[%zu]", g->n[ids[u->p + u->L + j]].off);
                if (idx_text(s0, s1, o, sizeof o))
                    em(g, "        %s = l%zu;\n", o, j);
                else
                    g->err = 1; /* not reached: run_refs checked the same references */
            }
        }
        g->pass = PASS_H;
    }
    for (size_t jj = 0; jj < u->L; jj++) {
        const size_t j = back ? u->L - 1 - jj : jj;
        run_refs(g, ids, u, j, &r);
        if (g->ft && (g->n[ids[u->p + j]].flags & F_DIFF)) /* ad_codegen_sparse */
            em_ft_body(g, &g->n[ids[u->p + j]], &r, "        ");
        else
            em_ew_body(g, &g->n[ids[u->p + j]], &r, "        ");
    }
    em(g, "    }\n");
    if (loc)
        run_locals(g, ids, u, 0);
    if (fus)
        sp_fuse(g, ids, u, 2);
    if (ffu)
        sp_fuse(g, ids, u, 0);
    return true;
}

/* ---- passes ---- */

static bool emits(const cg *g, uint32_t id, int pass)
{
    const cgnode *x = &g->n[id];
    if (x->op == AD_OP_LEAF || !(x->flags & F_NEED) || !(x->flags & F_ACT))
        return false;
    if (pass == PASS_F)
        return true;
    return (x->flags & F_DIFF) != 0;
}

static void em_stmt_dirs(cg *g, uint32_t id);

static void em_stmt(cg *g, uint32_t id)
{
    if (g->ft && g->pass == PASS_F && !g->ft_in) { /* ad_codegen_sparse: value, tangents */
        const bool tan = (g->n[id].flags & (F_DIFF | F_NOTAN)) == F_DIFF;
        if ((g->n[id].flags & F_DIFF) && is_ew(g->n[id].op) && all_scalar(g, &g->n[id])) {
            ewref r;
            stmt(g);
            scalar_refs(g, id, &r);
            em_ft_body(g, &g->n[id], &r, "    ");
            return;
        }
        g->ft_in = true;
        em_stmt(g, id);
        if (tan) {
            g->pass = PASS_T;
            em_stmt(g, id);
            g->pass = PASS_F;
        }
        g->ft_in = false;
        return;
    }
    if (g->K > 1 && (g->pass == PASS_T || g->pass == PASS_H)
        && !(is_ew(g->n[id].op) && all_scalar(g, &g->n[id]))) {
        em_stmt_dirs(g, id); /* ad_codegen_sparse: a tensor statement per direction */
        return;
    }
    if (!g->fused)
        stmt(g);
    if (is_ew(g->n[id].op))
        em_ew(g, id);
    else
        em_tensor(g, id);
}

/* Statements ids[0..m) in that order (back: the reverse), the runs among
 * them (nr of them, found by find_runs) as loops. */
static void em_seq(cg *g, const uint32_t *ids, size_t m, const run *runs, size_t nr, bool back)
{
    for (size_t i = 0; i <= nr && !g->err; i++) {
        /* forward: the gap before run i, then run i; back: run nr - i,
         * then the gap before it, each backward */
        const size_t k = back ? nr - i : i;
        const size_t gap0 = k ? runs[k - 1].p + runs[k - 1].L * runs[k - 1].R : 0;
        const size_t gap1 = k < nr ? runs[k].p : m;
        for (size_t q = gap0; q < gap1 && !back; q++)
            em_stmt(g, ids[q]);
        if (k < nr) {
            const run *u = &runs[k];
            if (!(g->sparse ? em_run(g, ids, u, back) : em_loop(g, ids + u->p, u->L, u->R, back, true)))
                for (size_t q = 0; q < u->L * u->R; q++)
                    em_stmt(g, ids[back ? u->p + u->L * u->R - 1 - q : u->p + q]);
        }
        for (size_t q = gap1; q > gap0 && back; q--)
            em_stmt(g, ids[q - 1]);
    }
}

/* ---- level order, and tables for what stays irregular ----
 *
 * A pass in level order (see "loops" above) is planned first: each level's
 * groups, then its other statements, among which runs are still found (a
 * chain of sums, one per level, is one). What is left are stretches of
 * statements of no common form, each with different operands: a long
 * irregular tape, a chain of different ops. Those of SW_MIN or more scalar
 * elementwise statements (comparisons too) become records of one table
 * per pass: the statement's form, the numbers of its references, its
 * constant, its replay guard. One function per pass, P_tab_<pass>, runs
 * records a..b through a switch on the form, whose cases are the forms'
 * texts with the record's numbers; each stretch is one call of it. The
 * compiler sees each form once instead of each node. */

enum { SW_MIN = 4, SW_FORMS = 255 };
enum { LO_ONE, LO_RUN, LO_GROUP, LO_SW };

typedef struct lop {
    unsigned char kind;
    size_t p, n, L, R, r0; /* seq[p ..]: n statements (a run: L x R); LO_SW: first record */
} lop;

typedef struct lkey {
    uint32_t lev, op, id;
} lkey;

static int lkey_cmp(const void *a, const void *b)
{
    const lkey *x = a, *y = b;
    if (x->lev != y->lev)
        return x->lev < y->lev ? -1 : 1;
    if (x->op != y->op)
        return x->op < y->op ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool switchable(const cg *g, uint32_t id) { return twin_ex(g, id, id, true); }

/* The forms of the records (the LO_SW pieces' statements, in order) into
 * F[0..cap), each record's into form[]; their count, or 0 when there are
 * more than cap, or too many for the records (the cases would be as long
 * as the statements). */
static size_t sw_forms(const cg *g, const uint32_t *seq, const lop *op, size_t nop, lstmt *F,
                       size_t cap, unsigned char *form)
{
    size_t nf = 0, q = 0;
    unsigned long v[LNC];
    char skel[128];
    for (size_t o = 0; o < nop; o++) {
        if (op[o].kind != LO_SW)
            continue;
        for (size_t i = 0; i < op[o].n; i++, q++) {
            const uint32_t id = seq[op[o].p + i];
            size_t f = 0;
            while (f < nf && !twin_ex(g, F[f].first, id, true))
                f++;
            if (f == nf) {
                if (nf == cap)
                    return 0;
                lstmt *s = &F[nf++];
                memset(s, 0, sizeof *s);
                scalar_refs(g, id, &s->r0);
                s->first = id;
                for (int k = 0; k < LNF; k++)
                    if ((s->q[k] = lnums(lfield(&s->r0, k), v + k * LQ, s->skel[k])) < 0)
                        return 0;
            } else {
                ewref r;
                scalar_refs(g, id, &r);
                for (int k = 0; k < LNF; k++)
                    if (lnums(lfield(&r, k), v + k * LQ, skel) != F[f].q[k]
                        || strcmp(skel, F[f].skel[k]) != 0)
                        return 0;
            }
            form[q] = (unsigned char)f;
        }
    }
    return 2 * nf <= q ? nf : 0;
}

/* The table function of this pass (records 0..nrec), before its chunks. */
static void em_tabfn(cg *g, const uint32_t *seq, const lop *op, size_t nop, lstmt *F, size_t nf,
                     const unsigned char *form, size_t nrec)
{
    const char *P = g->P, L = pass_letter[g->pass];
    size_t K = 1;
    for (size_t f = 0; f < nf; f++) {
        size_t t = 0;
        for (int c = 0; c < LNC; c++)
            if (c % LQ < F[f].q[c / LQ])
                F[f].col[c].kind = LC_TAB, F[f].col[c].tab = t++;
        K = t > K ? t : K;
    }
    bool cvar = false, guards = false;
    for (size_t o = 0, q = 0; o < nop; o++)
        for (size_t i = 0; op[o].kind == LO_SW && i < op[o].n; i++, q++) {
            const cgnode *x = &g->n[seq[op[o].p + i]];
            cvar = cvar || memcmp(&x->c, &g->n[F[form[q]].first].c, sizeof x->c) != 0;
            guards = guards || (g->pass == PASS_F && ad__is_compare(x->op));
        }
    if (g->pass == PASS_F)
        em(g, "static int %s_tab_%c(const %s_real *const *in, %s_real *restrict w, "
              "unsigned long a, unsigned long b)\n{\n    int br = 0;\n",
           P, L, P, P);
    else if (g->pass == PASS_R)
        em(g, "static void %s_tab_%c(const %s_real *const *in, %s_real *restrict w, "
              "unsigned long a, unsigned long b)\n{\n",
           P, L, P, P);
    else
        em(g, "static void %s_tab_%c(const %s_real *const *in, const %s_real *const *v, "
              "%s_real *restrict w, unsigned long a, unsigned long b)\n{\n    (void)v;\n",
           P, L, P, P, P);
    em(g, "    static const unsigned char sf[%zu] = {", nrec);
    for (size_t q = 0; q < nrec; q++)
        em(g, "%s%u", q % 32 ? "," : (q ? ",\n        " : ""), form[q]);
    em(g, "};\n    static const unsigned long st[%zu] = {", nrec * K);
    size_t w = 0;
    char skel[128], b[48];
    unsigned long v[LNC];
    for (size_t o = 0; o < nop; o++)
        for (size_t i = 0; op[o].kind == LO_SW && i < op[o].n; i++) {
            ewref r;
            scalar_refs(g, seq[op[o].p + i], &r);
            size_t t = 0;
            for (int k = 0; k < LNF; k++) {
                const int q = lnums(lfield(&r, k), v, skel);
                for (int j = 0; j < q; j++, t++)
                    em(g, "%s%lu", w++ % 16 ? "," : (w > 1 ? ",\n        " : ""), v[j]);
            }
            for (; t < K; t++)
                em(g, "%s0", w++ % 16 ? "," : (w > 1 ? ",\n        " : ""));
        }
    em(g, "};\n");
    if (cvar) {
        em(g, "    static const double sc[%zu] = {", nrec);
        size_t q = 0;
        for (size_t o = 0; o < nop; o++)
            for (size_t i = 0; op[o].kind == LO_SW && i < op[o].n; i++, q++)
                em(g, "%s%s", q % 8 ? ", " : (q ? ",\n        " : ""),
                   num(g->n[seq[op[o].p + i]].c, b));
        em(g, "};\n");
    }
    if (guards) { /* the comparisons' recorded outcomes; 2: none */
        em(g, "    static const unsigned char sg[%zu] = {", nrec);
        size_t q = 0;
        for (size_t o = 0; o < nop; o++)
            for (size_t i = 0; op[o].kind == LO_SW && i < op[o].n; i++, q++) {
                const uint32_t id = seq[op[o].p + i];
                const unsigned char *rec = ad__is_compare(g->n[id].op) ? guard_rec(g, id) : NULL;
                em(g, "%s%d", q % 32 ? "," : (q ? ",\n        " : ""), rec ? rec[0] != 0 : 2);
            }
        em(g, "};\n");
    }
    if (g->pass == PASS_R || g->pass == PASS_H)
        em(g, "    for (unsigned long it = b; it-- > a;) {\n");
    else
        em(g, "    for (unsigned long it = a; it < b; it++) {\n");
    em(g, "        switch (sf[it]) {\n");
    for (size_t f = 0; f < nf; f++) {
        const lstmt *s = &F[f];
        ewref r;
        char fx[128];
        memset(&r, 0, sizeof r);
        r.has[0] = s->r0.has[0], r.has[1] = s->r0.has[1];
        for (int k = 0; k < LNF; k++) {
            lrender(s, "st", K, k, fx, sizeof fx);
            strcpy(lfield(&r, k), fx);
        }
        if (cvar)
            strcpy(r.c, "sc[it]");
        em(g, "        case %zu:\n", f);
        em_ew_body(g, &g->n[s->first], &r, "            ");
        if (guards && ad__is_compare(g->n[s->first].op))
            em(g, "            br |= sg[it] < 2 && %s != sg[it];\n", r.o);
        em(g, "            break;\n");
    }
    em(g, "        default:\n            break;\n        }\n    }\n    (void)in;\n%s}\n\n",
       g->pass == PASS_F ? "    return br;\n" : "");
}

/* Plans the pass (statements ids[0..m), ascending) in level order, writes
 * its table function and its chunks (opened here; the caller closes the
 * last). false, nothing written, if the scratch cannot be had. */
static bool em_levels(cg *g, const uint32_t *ids, size_t m, bool back)
{
    ad__mem *mem = &g->t->mem;
    const size_t rcap = m / RUN_MINS + 1;
    uint32_t *lev = ad__alloc(mem, g->len * sizeof *lev);
    lkey *k = ad__alloc(mem, m * sizeof *k);
    int32_t *cls = ad__alloc(mem, m * sizeof *cls);
    uint32_t *seq = ad__alloc(mem, m * sizeof *seq), *tmp = ad__alloc(mem, m * sizeof *tmp);
    lop *op = ad__alloc(mem, m * sizeof *op);
    run *runs = ad__alloc(mem, rcap * sizeof *runs);
    unsigned char *form = ad__alloc(mem, m);
    const bool ok = lev && k && cls && seq && tmp && op && runs && form;
    lstmt *F = NULL; /* the forms, when there are records: about 4 KiB each */
    size_t nF = 0;
    size_t nop = 0, out = 0, nrec = 0;
    if (ok) {
        memset(lev, 0, g->len * sizeof *lev);
        for (size_t q = 0; q < m; q++) { /* ids ascend: operands first */
            const cgnode *x = &g->n[ids[q]];
            uint32_t l = 0;
            for (int j = 0; j < x->nin; j++)
                l = lev[x->in[j]] > l ? lev[x->in[j]] : l;
            lev[ids[q]] = l + 1;
            k[q].lev = l + 1, k[q].op = x->op, k[q].id = ids[q];
        }
        qsort(k, m, sizeof *k, lkey_cmp);
        size_t st0 = 0; /* the stretch of other statements not yet planned: seq[st0 .. out) */
        for (size_t s = 0; s <= m; ) {
            size_t le = s, ns = 0;
            while (le < m && k[le].lev == k[s].lev)
                le++;
            /* this level's groups (when it has any, or at the end, the
             * stretch before them is planned first) */
            size_t ng = 0;
            for (size_t a = s; a < le;) { /* an op: k[a .. b), its twins into classes */
                size_t b = a;
                while (b < le && k[b].op == k[a].op)
                    b++;
                uint32_t rep[GROUP_SCAN];
                size_t cnt[GROUP_SCAN], nc = 0;
                for (size_t q = a; q < b; q++) {
                    int32_t c = -1;
                    for (size_t r = 0; r < nc && c < 0; r++)
                        if (twin(g, rep[r], k[q].id))
                            c = (int32_t)r;
                    if (c < 0 && nc < GROUP_SCAN && twin(g, k[q].id, k[q].id))
                        rep[nc] = k[q].id, cnt[nc] = 0, c = (int32_t)nc++;
                    cls[q] = c;
                    if (c >= 0)
                        cnt[c]++;
                }
                for (size_t q = a; q < b; q++)
                    if (cls[q] >= 0 && cnt[cls[q]] >= GROUP_MIN)
                        ng++;
                    else
                        tmp[ns++] = k[q].id, cls[q] = -2; /* not in a group */
                a = b;
            }
            if ((ng || le == m) && out > st0) { /* the stretch: runs, tables, single statements */
                const size_t n = out - st0, nr = find_runs(g, seq + st0, n, runs);
                for (size_t i = 0, x = 0; i <= nr; i++) {
                    const size_t gap1 = i < nr ? runs[i].p : n;
                    while (x < gap1) {
                        size_t y = x;
                        while (y < gap1 && switchable(g, seq[st0 + y]))
                            y++;
                        if (y - x >= SW_MIN) {
                            op[nop].kind = LO_SW, op[nop].p = st0 + x, op[nop].n = y - x;
                            op[nop++].r0 = nrec;
                            nrec += y - x;
                            x = y;
                        } else {
                            y = y > x ? y : x + 1;
                            for (; x < y; x++)
                                op[nop].kind = LO_ONE, op[nop++].p = st0 + x;
                        }
                    }
                    if (i < nr) {
                        op[nop].kind = LO_RUN, op[nop].p = st0 + runs[i].p;
                        op[nop].L = runs[i].L, op[nop++].R = runs[i].R;
                        x = runs[i].p + runs[i].L * runs[i].R;
                    }
                }
                st0 = out;
            }
            if (s == m)
                break;
            /* the groups, each contiguous in seq */
            for (size_t a = s; a < le; a++) {
                if (cls[a] < 0)
                    continue;
                const int32_t c = cls[a];
                op[nop].kind = LO_GROUP, op[nop].p = out, op[nop].n = 0;
                for (size_t q = a; q < le; q++)
                    if (cls[q] == c && k[q].op == k[a].op)
                        seq[out++] = k[q].id, op[nop].n++, cls[q] = -1;
                nop++;
                st0 = out;
            }
            memcpy(seq + out, tmp, ns * sizeof *tmp);
            out += ns;
            s = le;
        }
        nF = nrec < SW_FORMS ? nrec : SW_FORMS;
        F = nrec ? ad__alloc(mem, nF * sizeof *F) : NULL;
        size_t nf = F ? sw_forms(g, seq, op, nop, F, nF, form) : 0; /* else one by one */
        if (nf)
            em_tabfn(g, seq, op, nop, F, nf, form, nrec);
        g->nchunk[g->pass] = 0;
        chunk_open(g);
        for (size_t i = 0; i < nop && !g->err; i++) {
            const lop *u = &op[back ? nop - 1 - i : i];
            size_t cnt = u->kind == LO_ONE ? 1 : u->kind == LO_RUN ? u->L * u->R : u->n;
            if (u->kind == LO_SW && nf) {
                stmt(g);
                if (g->pass == PASS_F)
                    em(g, "    br |= %s_tab_f(in, w, %zuUL, %zuUL);\n", g->P, u->r0, u->r0 + u->n);
                else if (g->pass == PASS_R)
                    em(g, "    %s_tab_r(in, w, %zuUL, %zuUL);\n", g->P, u->r0, u->r0 + u->n);
                else
                    em(g, "    %s_tab_%c(in, v, w, %zuUL, %zuUL);\n", g->P, pass_letter[g->pass],
                       u->r0, u->r0 + u->n);
                continue;
            }
            if ((u->kind == LO_RUN && em_loop(g, seq + u->p, u->L, u->R, back, true))
                || (u->kind == LO_GROUP && em_loop(g, seq + u->p, 1, u->n, back, false)))
                continue;
            for (size_t q = 0; q < cnt; q++) /* one by one */
                em_stmt(g, seq[back ? u->p + cnt - 1 - q : u->p + q]);
        }
    }
    if (form)
        ad__free(mem, form, m);
    if (F)
        ad__free(mem, F, nF * sizeof *F);
    if (runs)
        ad__free(mem, runs, rcap * sizeof *runs);
    if (op)
        ad__free(mem, op, m * sizeof *op);
    if (tmp)
        ad__free(mem, tmp, m * sizeof *tmp);
    if (seq)
        ad__free(mem, seq, m * sizeof *seq);
    if (cls)
        ad__free(mem, cls, m * sizeof *cls);
    if (k)
        ad__free(mem, k, m * sizeof *k);
    if (lev)
        ad__free(mem, lev, g->len * sizeof *lev);
    return ok;
}

static void em_pass(cg *g, int pass)
{
    g->pass = pass;
    const bool back = pass == PASS_R || pass == PASS_H;
    size_t m = 0;
    for (uint32_t id = 1; id < g->len && !g->fused; id++)
        m += emits(g, id, pass);
    /* a chunked pass: its statements in tape order and the runs among
     * them; planned in level order when many stay outside runs (without
     * the scratch -- the allocator failed -- neither: the same results,
     * one by one) */
    uint32_t *ids = m ? ad__alloc(&g->t->mem, m * sizeof *ids) : NULL;
    const size_t rcap = m / RUN_MINS + 1;
    run *runs = ids ? ad__alloc(&g->t->mem, rcap * sizeof *runs) : NULL;
    size_t nr = 0;
    bool done = false;
    if (runs) {
        size_t q = 0, inside = 0;
        for (uint32_t id = 1; id < g->len; id++)
            if (emits(g, id, pass))
                ids[q++] = id;
        nr = find_runs(g, ids, m, runs);
        for (size_t r = 0; r < nr; r++)
            inside += runs[r].L * runs[r].R;
        done = !g->sparse && m - inside > LEVEL_MIN && em_levels(g, ids, m, back);
    }
    if (!done) {
        if (!g->fused) {
            g->nchunk[pass] = 0;
            chunk_open(g);
        }
        if (runs)
            em_seq(g, ids, m, runs, nr, back);
        else
            for (uint32_t i = 1; i < g->len && !g->err; i++) {
                const uint32_t id = back ? (uint32_t)g->len - i : i;
                if (emits(g, id, pass))
                    em_stmt(g, id);
            }
    }
    if (runs)
        ad__free(&g->t->mem, runs, rcap * sizeof *runs);
    if (ids)
        ad__free(&g->t->mem, ids, m * sizeof *ids);
    if (!g->fused)
        chunk_close(g);
}

/* ---- analysis ---- */

static bool is_ident(const char *p)
{
    size_t n = 0;
    if (!p || !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return false;
    for (; p[n]; n++) {
        const char ch = p[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
              || ch == '_'))
            return false;
    }
    return n <= 64;
}

/* a custom op's code generation rule, when its descriptor has one */
static const ad_codegen_rule *custom_rule(const ad_opdef *d)
{
    if (!d || d->size < offsetof(ad_opdef, codegen) + sizeof d->codegen)
        return NULL;
    return d->codegen;
}

static const char *mode_name(unsigned what)
{
    return what & AD_CODEGEN_JVP ? "JVP" : "HVP";
}

/* Regions X (the solvers' factors, every mode) and S (their scratch, for
 * the derivatives) from off on; returns the end. (A layout of its own --
 * another pass's -- calls it after its regions.) */
static size_t lin_layout(cg *g, size_t off, bool scratch)
{
    size_t ss = 0;
    g->xb = off;
    for (uint32_t id = 1; id < g->len && g->lin; id++) {
        cgnode *x = &g->n[id];
        if ((x->flags & (F_ACT | F_NEED)) != (F_ACT | F_NEED) || !is_solver(x->op))
            continue;
        x->aux = off - g->xb;
        off += aux_size(g, x);
        ss = scratch_size(g, x) > ss ? scratch_size(g, x) : ss;
    }
    g->sb = off;
    return off + (scratch ? ss : 0);
}

static int analyse(cg *g)
{
    ad_tape *t = g->t;
    static const char who[] = "codegen";
    for (uint32_t id = 1; id < g->len; id++) {
        cgnode *x = &g->n[id];
        const ad__node *nd = ad__N(t, id);
        const uint64_t h = nd->h;
        memset(x, 0, sizeof *x);
        x->input = -1;
        if (!(h & AD__EXT)) {
            x->op = (uint16_t)ad__opc(h);
            x->val = &nd->v;
            x->shape = ad_shape_scalar();
            if (x->op != AD_OP_LEAF) {
                const ew_text *e = g->ew[x->op];
                x->nin = e->binary ? 2 : 1;
                x->in[0] = ad__a(h);
                if (e->binary)
                    x->in[1] = ad__b(h);
                x->c = e->takes_c ? t->consts[ad__b(h)] : 0.0;
            }
        } else {
            const ad__ext *r = ad__X(t, ad__a(h));
            x->op = ad__opc(h) == AD_OP_LEAF ? AD_OP_LEAF : r->op;
            x->val = r->call.out.val;
            x->shape = r->call.out.shape;
            x->c = r->call.c;
            x->nin = x->op == AD_OP_LEAF ? 0 : (uint8_t)r->call.nin;
            for (int k = 0; k < x->nin; k++)
                x->in[k] = r->in[k];
        }
    }
    for (int k = 0; k < g->nin; k++) {
        cgnode *x = &g->n[g->in[k].id_];
        if (x->input >= 0) /* marked here: linear in the inputs (W1 has 10^5) */
            return ad__fail_call(t, AD_EMISUSE, "%s: input %d (node %u) is input %d too", who, k,
                                 (unsigned)g->in[k].id_, (int)x->input);
        x->input = k;
        x->flags |= F_ACT | F_NEED;
    }
    for (uint32_t id = 1; id < g->len; id++) {
        cgnode *x = &g->n[id];
        for (int k = 0; k < x->nin; k++)
            if (g->n[x->in[k]].flags & F_ACT)
                x->flags |= F_ACT;
    }
    if (!g->nouts && !(g->n[g->out].flags & F_ACT))
        return ad__fail_call(t, AD_EMISUSE, "%s: the output (node %u) does not depend on any input",
                             who, (unsigned)g->out);
    g->n[g->out].flags |= F_NEED;
    for (int k = 0; k < g->nouts; k++) /* ad_codegen_sparse: every output */
        g->n[g->outs[k]].flags |= F_NEED;
    /* every comparison before the output is a replay guard to check */
    for (size_t i = 0; i < g->ngd; i++) {
        uint32_t node;
        const unsigned char *rec;
        ad__guard_at(t, i, &node, &rec);
        if (node < g->out && (g->n[node].flags & F_ACT))
            g->n[node].flags |= F_NEED;
    }
    for (uint32_t id = (uint32_t)g->len - 1; id >= 1; id--) {
        cgnode *x = &g->n[id];
        if ((x->flags & (F_ACT | F_NEED)) != (F_ACT | F_NEED))
            continue;
        for (int k = 0; k < x->nin; k++)
            g->n[x->in[k]].flags |= F_NEED;
    }
    for (uint32_t id = 1; id < g->len; id++) {
        cgnode *x = &g->n[id];
        if ((x->flags & (F_ACT | F_NEED)) != (F_ACT | F_NEED))
            continue;
        if (!ad__is_compare(x->op) && x->op != AD_OP_MAX_MASK)
            x->flags |= F_DIFF;
        if (x->op == AD_OP_LEAF)
            continue;
        if (x->op >= AD_OP_COUNT) {
            const ad_opdef *d = ad_node_op(t, ad__handle(t, id));
            const ad_codegen_rule *rule = custom_rule(d);
            if (!rule || !is_ident(rule->forward))
                return ad__fail_call(t, AD_EMISUSE,
                                     "%s: custom op '%s' (node %u) has no code generation rule "
                                     "(set its descriptor's codegen, with a C function name, and "
                                     "size = sizeof(ad_opdef))",
                                     who, d->name, (unsigned)id);
            if ((x->flags & F_DIFF)
                && (g->what & (AD_CODEGEN_VJP | AD_CODEGEN_JACOBIAN | AD_CODEGEN_HVP))
                && !is_ident(rule->vjp))
                return ad__fail_call(t, AD_EMISUSE,
                                     "%s: custom op '%s' (node %u) has no vjp function for "
                                     "generated code (codegen->vjp)",
                                     who, d->name, (unsigned)id);
            if ((x->flags & F_DIFF) && (g->what & (AD_CODEGEN_JVP | AD_CODEGEN_HVP)))
                return ad__fail_call(t, AD_EMISUSE,
                                     "%s: custom op '%s' (node %u) has no %s rule for generated "
                                     "code (%s%s%s)",
                                     who, d->name, (unsigned)id, mode_name(g->what),
                                     g->sparse ? "sparse values need it: evaluate this one with "
                                                 "ad_sparse_eval"
                                               : "leave AD_CODEGEN_",
                                     g->sparse ? "" : mode_name(g->what),
                                     g->sparse ? "" : " out of what");
            for (int k = 0; k < x->nin; k++)
                if (!(g->n[x->in[k]].flags & F_ACT))
                    g->n[x->in[k]].flags |= F_BAKED;
            continue;
        }
        if (!supported(x->op))
            return ad__fail_call(t, AD_EMISUSE, "%s: op '%s' (node %u) has no code generation rule",
                                 who, opname(x->op), (unsigned)id);
        if (has_table(x->op) && x->op != AD_OP_CONCAT && (g->n[x->in[1]].flags & F_ACT))
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: op '%s' (node %u): its index operand (node %u) depends on an "
                                 "input; generated code fixes indices at generation",
                                 who, opname(x->op), (unsigned)id, (unsigned)x->in[1]);
        if ((g->what & (AD_CODEGEN_JVP | AD_CODEGEN_HVP)) && (x->flags & F_DIFF)
            && !is_ew(x->op) && class_of(x->op) == CL_NONE && !own_rules(x->op))
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: op '%s' (node %u) has no %s rule for generated code (leave "
                                 "AD_CODEGEN_%s out of what)",
                                 who, opname(x->op), (unsigned)id, mode_name(g->what),
                                 mode_name(g->what));
        if (is_ew(x->op))
            g->used[x->op] = 1;
        const bool by_ptr = !(is_ew(x->op) && all_scalar(g, x));
        for (int k = 0; k < x->nin; k++) {
            cgnode *a = &g->n[x->in[k]];
            if (!(a->flags & F_ACT) && by_ptr && reads_operand(x->op, k))
                a->flags |= F_BAKED;
        }
        if (has_table(x->op))
            x->flags |= F_MAP;
        if (is_solver(x->op))
            g->lin |= x->op == AD_OP_SOLVE_SPD ? LIN_CHOL
                      : x->op == AD_OP_LOGDET  ? LIN_LU | LIN_INV
                                               : LIN_LU;
    }
    /* small tapes: scalar nodes only elementwise statements read live in
     * locals (F_LOCAL) in the one-function forward and vjp */
    g->n[g->out].flags |= F_WIDE;
    for (uint32_t id = 1; id < g->len; id++) {
        const cgnode *x = &g->n[id];
        if ((x->flags & (F_ACT | F_NEED)) != (F_ACT | F_NEED) || x->op == AD_OP_LEAF)
            continue;
        if (!(is_ew(x->op) && all_scalar(g, x)))
            for (int k = 0; k < x->nin; k++)
                g->n[x->in[k]].flags |= F_WIDE;
    }
    for (uint32_t id = 1; id < g->len; id++) {
        cgnode *x = &g->n[id];
        if ((x->flags & (F_ACT | F_NEED)) == (F_ACT | F_NEED) && x->input < 0 && is_ew(x->op)
            && all_scalar(g, x) && !(x->flags & F_WIDE))
            x->flags |= F_LOCAL;
    }
    /* layout */
    size_t off = 0, zs = 1;
    for (uint32_t id = 1; id < g->len; id++) {
        cgnode *x = &g->n[id];
        if ((x->flags & (F_ACT | F_NEED)) != (F_ACT | F_NEED))
            continue;
        x->off = off;
        off += nsize(x);
        zs = nsize(x) > zs ? nsize(x) : zs;
    }
    g->nv = off;
    g->zsize = zs;
    const bool need_g = (g->what & (AD_CODEGEN_VJP | AD_CODEGEN_HVP | AD_CODEGEN_JACOBIAN)) != 0;
    const bool need_t = (g->what & (AD_CODEGEN_JVP | AD_CODEGEN_HVP)) != 0;
    const bool need_gt = (g->what & AD_CODEGEN_HVP) != 0;
    g->gb = off;
    off += need_g ? g->nv : 0;
    g->tb = off;
    off += need_t ? g->nv : 0;
    g->gtb = off;
    off += need_gt ? g->nv : 0;
    g->zb = off;
    off += need_t ? zs : 0;
    off = lin_layout(g, off, need_g || need_t);
    g->ws = off ? off : 1;
    return AD_OK;
}

/* ---- the files ---- */

static void em_decls(cg *g)
{
    const char *P = g->P;
    em(g, "/* Reals the work array needs (for every function below). */\n"
          "unsigned long %s_work_size(void);\n", P);
    if (g->what & AD_CODEGEN_FORWARD)
        em(g, "/* out = f(in). */\n"
              "int %s_forward(const %s_real *const *in, %s_real *out, %s_real *work);\n", P, P, P,
           P);
    if (g->what & AD_CODEGEN_VJP)
        em(g, "/* grad[i] = seed^T J_i (grad NULL or grad[i] NULL: skipped); out = f(in). */\n"
              "int %s_vjp(const %s_real *const *in, const %s_real *seed, %s_real *out,\n"
              "    %s_real *const *grad, %s_real *work);\n", P, P, P, P, P, P);
    if ((g->what & AD_CODEGEN_VJP) && nsize(&g->n[g->out]) == 1)
        em(g, "/* grad[i] = d out / d in[i] (grad NULL or grad[i] NULL: skipped). */\n"
              "int %s_gradient(const %s_real *const *in, %s_real *out, %s_real *const *grad,\n"
              "    %s_real *work);\n", P, P, P, P, P);
    if (g->what & AD_CODEGEN_JVP)
        em(g, "/* jv = J v, v[i] of in[i]'s size. */\n"
              "int %s_jvp(const %s_real *const *in, const %s_real *const *v, %s_real *out,\n"
              "    %s_real *jv, %s_real *work);\n", P, P, P, P, P, P);
    if (g->what & AD_CODEGEN_HVP)
        em(g, "/* hv[i] = (H v)_i and grad[i] = d out / d in[i] (NULL: skipped). */\n"
              "int %s_hvp(const %s_real *const *in, const %s_real *const *v, %s_real *out,\n"
              "    %s_real *const *grad, %s_real *const *hv, %s_real *work);\n", P, P, P, P, P, P,
           P);
    if (g->what & AD_CODEGEN_JACOBIAN)
        em(g, "/* J[r * %s_IN_SIZE + c] = d out_r / d x_c, x the inputs joined. */\n"
              "int %s_jacobian(const %s_real *const *in, %s_real *out, %s_real *J, %s_real *work);\n",
           P, P, P, P, P, P);
}

static void em_typedef(cg *g)
{
    em(g, "#ifndef %s_REAL_DEFINED\n#define %s_REAL_DEFINED\ntypedef %s %s_real;\n#endif\n\n", g->P,
       g->P, g->fl ? "float" : "double", g->P);
}

static void em_header(cg *g)
{
    const char *P = g->P;
    em(g, "/* %s.h -- generated by autodiff %s (ad_codegen); do not edit.\n"
          " * Every function returns 0, or 1 when a recorded comparison (a replay\n"
          " * guard) came out otherwise: the results are then those of the\n"
          " * recorded branch.%s work: %s_work_size() reals, one array per\n"
          " * thread. */\n",
       P, AD_VERSION_STRING,
       g->lin ? " Bit 2 (2, or 3 with a guard) is set when a solve's\n"
                " * matrix is singular to working precision: its results are NaN\n"
                " * (the tape's AD_ESINGULAR)."
              : "",
       P);
    em(g, "#ifndef %s_GENERATED_H\n#define %s_GENERATED_H\n\n#ifdef __cplusplus\nextern \"C\" {\n"
          "#endif\n\n", P, P);
    em_typedef(g);
    size_t N = 0;
    for (int k = 0; k < g->nin; k++)
        N += nsize(&g->n[g->in[k].id_]);
    em(g, "#define %s_N_IN %d /* inputs */\n#define %s_IN_SIZE %zuUL /* their elements */\n"
          "#define %s_OUT_SIZE %zuUL /* the output's elements */\n#define %s_WORK_SIZE %zuUL\n",
       P, g->nin, P, N, P, nsize(&g->n[g->out]), P, g->ws);
    for (int k = 0; k < g->nin && g->nin <= 64; k++) { /* not for 10^5 inputs */
        const cgnode *x = &g->n[g->in[k].id_];
        em(g, "#define %s_IN%d_SIZE %zuUL /* %u x %u */\n", P, k, nsize(x), x->shape.rows,
           x->shape.cols);
    }
    em(g, "\n");
    em_decls(g);
    em(g, "\n#ifdef __cplusplus\n}\n#endif\n#endif\n");
}

/* the stringized helpers, a function per line, each marked as maybe
 * unused (clang warns of an unused static inline function) */
static void em_helpers(cg *g)
{
    static const char si[] = "static inline ";
    em(g, "#if defined(__GNUC__)\n#define %s_HELPER static inline __attribute__((unused))\n#else\n"
          "#define %s_HELPER static inline\n#endif\n", g->P, g->P);
    const char *p = strstr(cg_helpers, si);
    while (p) {
        p += sizeof si - 1;
        const char *q = strstr(p, si);
        const int len = q ? (int)(q - p) : (int)strlen(p);
        em(g, "%s_HELPER %.*s\n", g->P, len, p);
        p = q;
    }
    em(g, "\n");
}

static void em_ew_helpers(cg *g)
{
    const char *P = g->P;
    em(g, "#define %s_SZ(g, d) ((g) == 0 ? 0.0 : (g) * (d)) /* a zero adjoint gives 0 */\n\n", P);
    /* the forward and reverse passes write the formulas inline; the
     * tangent passes call these */
    for (unsigned op = 1; op < AD__INLINE_END && (g->what & (AD_CODEGEN_JVP | AD_CODEGEN_HVP));
         op++) {
        if (!g->used[op])
            continue;
        const ew_text *e = g->ew[op];
        if (!e->binary) {
            em(g, "%s_HELPER double %s_%s_f(double x, double c)\n{\n    (void)c;\n"
                  "    return %s;\n}\n", P, P, e->name, e->f);
            static const char *const sfx[2] = {"d", "d2"};
            for (int k = 0; k < 2; k++)
                em(g, "%s_HELPER double %s_%s_%s(double x, double y, double c)\n{\n"
                      "    (void)x, (void)y, (void)c;\n    return %s;\n}\n", P, P, e->name, sfx[k],
                   e->d[k]);
        } else {
            em(g, "%s_HELPER double %s_%s_f(double x, double y)\n{\n    return %s;\n}\n", P, P,
               e->name, e->f);
            static const char *const sfx[5] = {"da", "db", "daa", "dab", "dbb"};
            for (int k = 0; k < 5; k++)
                em(g, "%s_HELPER double %s_%s_%s(double x, double y, double z)\n{\n"
                      "    (void)x, (void)y, (void)z;\n    return %s;\n}\n", P, P, e->name, sfx[k],
                   e->d[k]);
        }
    }
    em(g, "\n");
}

/* ---- the solvers' helpers, written into the file when a solve,
 * solve_spd or logdet is on the way: the algorithms of ops_solve.c (the
 * same factorisation, pivoting, order of operations and singular test),
 * on P_real arrays. In the text, $ stands for the prefix and ~ for the
 * pivot threshold's epsilon (that of the generated type). ---- */

static const char lin_lu[] =
    "/* P A = L U, partial pivoting: f holds L below the diagonal (unit\n"
    " * diagonal) and U on and above it; row i of P A is row perm[i] of A.\n"
    " * Returns 0; k + 1 when pivot k is at most n eps max|A_ij| in magnitude\n"
    " * (singular to working precision); -1 when A has a NaN or infinity. */\n"
    "$_HELPER long $_lu(const $_real *A, unsigned long n, $_real *f, $_real *perm)\n{\n"
    "    double amax = 0, lim;\n"
    "    for (unsigned long i = 0; i < n * n; i++) {\n"
    "        const double a = fabs(A[i]);\n"
    "        if (!(a <= 1.7976931348623157e308))\n            return -1;\n"
    "        amax = a > amax ? a : amax;\n    }\n"
    "    lim = (double)n * ~ * amax;\n"
    "    for (unsigned long i = 0; i < n * n; i++)\n        f[i] = A[i];\n"
    "    for (unsigned long i = 0; i < n; i++)\n        perm[i] = ($_real)i;\n"
    "    for (unsigned long k = 0; k < n; k++) {\n"
    "        unsigned long p = k;\n        double best = fabs(f[k * n + k]);\n        $_real d;\n"
    "        for (unsigned long i = k + 1; i < n; i++)\n"
    "            if (fabs(f[i * n + k]) > best) {\n"
    "                best = fabs(f[i * n + k]);\n                p = i;\n            }\n"
    "        if (p != k) {\n            $_real s;\n"
    "            for (unsigned long j = 0; j < n; j++) {\n"
    "                s = f[k * n + j];\n                f[k * n + j] = f[p * n + j];\n"
    "                f[p * n + j] = s;\n            }\n"
    "            s = perm[k];\n            perm[k] = perm[p];\n            perm[p] = s;\n        }\n"
    "        d = f[k * n + k];\n"
    "        if (!(fabs(d) > lim))\n            return (long)k + 1;\n"
    "        for (unsigned long i = k + 1; i < n; i++) {\n"
    "            const $_real l = f[i * n + k] / d;\n            f[i * n + k] = l;\n"
    "            if (l != 0)\n"
    "                for (unsigned long j = k + 1; j < n; j++)\n"
    "                    f[i * n + j] -= l * f[k * n + j];\n        }\n    }\n    return 0;\n}\n"
    "/* X = A^-1 B (n x m) with the factors; B and X distinct */\n"
    "$_HELPER void $_lu_solve(const $_real *f, const $_real *perm, unsigned long n,\n"
    "    unsigned long m, const $_real *B, $_real *X)\n{\n"
    "    for (unsigned long i = 0; i < n; i++)\n"
    "        for (unsigned long c = 0; c < m; c++)\n"
    "            X[i * m + c] = B[(unsigned long)perm[i] * m + c];\n"
    "    for (unsigned long i = 1; i < n; i++) /* L y = P B */\n"
    "        for (unsigned long k = 0; k < i; k++) {\n"
    "            const $_real a = f[i * n + k];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    X[i * m + c] -= a * X[k * m + c];\n        }\n"
    "    for (unsigned long i = n; i-- > 0;) { /* U x = y */\n"
    "        $_real d;\n"
    "        for (unsigned long k = i + 1; k < n; k++) {\n"
    "            const $_real a = f[i * n + k];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    X[i * m + c] -= a * X[k * m + c];\n        }\n"
    "        d = f[i * n + i];\n"
    "        for (unsigned long c = 0; c < m; c++)\n            X[i * m + c] /= d;\n    }\n}\n"
    "/* Y = A^-T G (n x m): U^T z = G, L^T w = z, Y = P^T w; W scratch, G may be Y */\n"
    "$_HELPER void $_lu_solve_t(const $_real *f, const $_real *perm, unsigned long n,\n"
    "    unsigned long m, const $_real *G, $_real *Y, $_real *W)\n{\n"
    "    for (unsigned long i = 0; i < n * m; i++)\n        W[i] = G[i];\n"
    "    for (unsigned long k = 0; k < n; k++) {\n"
    "        const $_real d = f[k * n + k];\n"
    "        for (unsigned long c = 0; c < m; c++)\n            W[k * m + c] /= d;\n"
    "        for (unsigned long i = k + 1; i < n; i++) {\n"
    "            const $_real a = f[k * n + i];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    W[i * m + c] -= a * W[k * m + c];\n        }\n    }\n"
    "    for (unsigned long k = n; k-- > 0;)\n"
    "        for (unsigned long i = 0; i < k; i++) {\n"
    "            const $_real a = f[k * n + i];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    W[i * m + c] -= a * W[k * m + c];\n        }\n"
    "    for (unsigned long i = 0; i < n; i++)\n"
    "        for (unsigned long c = 0; c < m; c++)\n"
    "            Y[(unsigned long)perm[i] * m + c] = W[i * m + c];\n}\n";

static const char lin_chol[] =
    "/* S = L L^T, S = (A + A^T) / 2, L lower (zeros above). Returns 0; j + 1\n"
    " * when pivot j is at most n eps max|S_ij| (not positive definite); -1\n"
    " * when A has a NaN or infinity. */\n"
    "$_HELPER long $_chol(const $_real *A, unsigned long n, $_real *L)\n{\n"
    "    double amax = 0, lim;\n"
    "    for (unsigned long i = 0; i < n; i++)\n"
    "        for (unsigned long j = 0; j < n; j++) {\n"
    "            const double a = fabs(0.5 * (A[i * n + j] + A[j * n + i]));\n"
    "            if (!(a <= 1.7976931348623157e308))\n                return -1;\n"
    "            amax = a > amax ? a : amax;\n        }\n"
    "    lim = (double)n * ~ * amax;\n"
    "    for (unsigned long i = 0; i < n * n; i++)\n        L[i] = 0;\n"
    "    for (unsigned long j = 0; j < n; j++) {\n"
    "        $_real d = A[j * n + j], r;\n"
    "        for (unsigned long k = 0; k < j; k++)\n            d -= L[j * n + k] * L[j * n + k];\n"
    "        if (!(d > lim))\n            return (long)j + 1;\n"
    "        r = sqrt(d);\n        L[j * n + j] = r;\n"
    "        for (unsigned long i = j + 1; i < n; i++) {\n"
    "            $_real s = 0.5 * (A[i * n + j] + A[j * n + i]);\n"
    "            for (unsigned long k = 0; k < j; k++)\n"
    "                s -= L[i * n + k] * L[j * n + k];\n"
    "            L[i * n + j] = s / r;\n        }\n    }\n    return 0;\n}\n"
    "/* X = S^-1 X in place (n x m): L y = X, then L^T x = y */\n"
    "$_HELPER void $_chol_solve(const $_real *L, unsigned long n, unsigned long m, $_real *X)\n{\n"
    "    for (unsigned long i = 0; i < n; i++) {\n"
    "        const $_real d = L[i * n + i];\n"
    "        for (unsigned long k = 0; k < i; k++) {\n"
    "            const $_real a = L[i * n + k];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    X[i * m + c] -= a * X[k * m + c];\n        }\n"
    "        for (unsigned long c = 0; c < m; c++)\n            X[i * m + c] /= d;\n    }\n"
    "    for (unsigned long k = n; k-- > 0;) {\n"
    "        const $_real d = L[k * n + k];\n"
    "        for (unsigned long c = 0; c < m; c++)\n            X[k * m + c] /= d;\n"
    "        for (unsigned long i = 0; i < k; i++) {\n"
    "            const $_real a = L[k * n + i];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    X[i * m + c] -= a * X[k * m + c];\n        }\n    }\n}\n";

static const char lin_inv[] =
    "/* logdet's A^-T from the factors in its slot fx (ops_solve.c's layout\n"
    " * above), made on the first call after a forward; W n x n scratch */\n"
    "$_HELPER const $_real *$_inv_t($_real *fx, unsigned long n, $_real *W)\n{\n"
    "    $_real *Z = fx + 2 + n * n + n;\n"
    "    if (fx[1] == 0) {\n"
    "        for (unsigned long i = 0; i < n * n; i++)\n            Z[i] = 0;\n"
    "        for (unsigned long i = 0; i < n; i++)\n            Z[i * n + i] = 1;\n"
    "        $_lu_solve_t(fx + 2, fx + 2 + n * n, n, n, Z, Z, W);\n"
    "        fx[1] = 1;\n    }\n    return Z;\n}\n";

static const char lin_common[] =
    "/* R = T - M X (n x m; T 0: zero, M 0: no product); sym: (M + M^T) / 2 for M */\n"
    "$_HELPER void $_residual($_real *R, const $_real *T, const $_real *M, const $_real *X,\n"
    "    unsigned long n, unsigned long m, int sym)\n{\n"
    "    for (unsigned long i = 0; i < n * m; i++)\n        R[i] = T ? T[i] : 0;\n"
    "    if (!M)\n        return;\n"
    "    for (unsigned long i = 0; i < n; i++)\n"
    "        for (unsigned long k = 0; k < n; k++) {\n"
    "            const $_real a = sym ? 0.5 * (M[i * n + k] + M[k * n + i]) : M[i * n + k];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    R[i * m + c] -= a * X[k * m + c];\n        }\n}\n"
    "/* R = -M^T Q (n x m; M 0: zero); sym: -(M + M^T) / 2 Q */\n"
    "$_HELPER void $_mul_mt($_real *R, const $_real *M, const $_real *Q, unsigned long n,\n"
    "    unsigned long m, int sym)\n{\n"
    "    for (unsigned long i = 0; i < n * m; i++)\n        R[i] = 0;\n"
    "    if (!M)\n        return;\n"
    "    for (unsigned long i = 0; i < n; i++)\n"
    "        for (unsigned long k = 0; k < n; k++) {\n"
    "            const $_real a = sym ? 0.5 * (M[i * n + k] + M[k * n + i]) : M[k * n + i];\n"
    "            if (a != 0)\n                for (unsigned long c = 0; c < m; c++)\n"
    "                    R[i * m + c] -= a * Q[k * m + c];\n        }\n}\n"
    "/* D -= P Q^T (n x n from n x m); sym: D -= (P Q^T + Q P^T) / 2 */\n"
    "$_HELPER void $_sub_pqt($_real *D, const $_real *P, const $_real *Q, unsigned long n,\n"
    "    unsigned long m, int sym)\n{\n"
    "    for (unsigned long i = 0; i < n; i++)\n"
    "        for (unsigned long j = 0; j < n; j++) {\n"
    "            $_real acc = 0;\n"
    "            for (unsigned long c = 0; c < m; c++)\n"
    "                acc += sym ? P[i * m + c] * Q[j * m + c] + Q[i * m + c] * P[j * m + c]\n"
    "                           : P[i * m + c] * Q[j * m + c];\n"
    "            D[i * n + j] -= sym ? 0.5 * acc : acc;\n        }\n}\n";

/* a template: $ the prefix, ~ the epsilon of the pivot threshold */
static void em_tpl(cg *g, const char *text)
{
    char eps[48];
    num(g->fl ? (double)FLT_EPSILON : DBL_EPSILON, eps);
    for (const char *p = text; *p;) {
        const size_t k = strcspn(p, "$~");
        em(g, "%.*s", (int)k, p);
        p += k;
        if (*p)
            em(g, "%s", *p++ == '$' ? g->P : eps);
    }
}

static void em_lin_helpers(cg *g)
{
    if (!g->lin)
        return;
    if (g->lin & LIN_LU)
        em_tpl(g, lin_lu);
    if (g->lin & LIN_CHOL)
        em_tpl(g, lin_chol);
    if (g->lin & LIN_INV)
        em_tpl(g, lin_inv);
    em_tpl(g, lin_common);
    em(g, "\n");
}

/* baked constants and index tables */
static int em_consts(cg *g)
{
    char b[48];
    for (uint32_t id = 1; id < g->len && !g->err; id++) {
        const cgnode *x = &g->n[id];
        if (x->flags & F_BAKED) {
            const size_t n = nsize(x);
            em(g, "static const %s_real %s_k%u[%zu] = {", g->P, g->P, (unsigned)id, n);
            for (size_t i = 0; i < n; i++)
                em(g, "%s%s", i ? (i % 4 ? ", " : ",\n    ") : "", num(x->val[i], b));
            em(g, "};\n");
        }
        if ((x->flags & F_MAP) && (x->flags & F_NEED) && (x->flags & F_ACT)) {
            double *tab;
            size_t n;
            if (index_table(g, id, &tab, &n) != AD_OK)
                return ad__fail_call(g->t, AD_ENOMEM, "codegen: out of memory for the index "
                                                      "table of node %u", (unsigned)id);
            const double *m = tab + (x->op == AD_OP_CONCAT
                                         ? nsize(&g->n[x->in[0]]) + nsize(&g->n[x->in[1]])
                                         : nsize(&g->n[x->in[0]]));
            em(g, "static const unsigned long %s_m%u[%zu] = {", g->P, (unsigned)id, n);
            for (size_t i = 0; i < n; i++)
                em(g, "%s%luUL", i ? (i % 8 ? ", " : ",\n    ") : "", (unsigned long)m[i]);
            em(g, "};\n");
            const size_t nx = x->op == AD_OP_CONCAT ? nsize(&g->n[x->in[0]]) + nsize(&g->n[x->in[1]])
                                                    : nsize(&g->n[x->in[0]]);
            ad__free(&g->t->mem, tab, (nx + n) * sizeof *tab);
        }
    }
    em(g, "\n");
    return AD_OK;
}

static void em_calls(cg *g, int pass, const char *args, const char *ind)
{
    for (unsigned k = 0; k < g->nchunk[pass]; k++)
        em(g, "%s%s%s_%c%u(%s);\n", ind, pass == PASS_F ? "br |= " : "", g->P, pass_letter[pass], k,
           args);
}

static void em_zero(cg *g, size_t from, size_t n)
{
    em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        w[%zuUL + i] = 0;\n", n, from);
}

/* the locals of the one-function forward (and vjp: adjoints too) */
/* The one-function form's work array: for a work of at most FUSE_LOCAL
 * reals (2 KiB in double) an array of its own, which the compiler knows
 * nothing else can touch -- so it keeps the values in registers and drops
 * the stores --, else the caller's. */
enum { FUSE_LOCAL = 256 };
static void em_work(cg *g)
{
    if (g->ws <= FUSE_LOCAL)
        em(g, "    %s_real w[%zu];\n    (void)work;\n", g->P, g->ws);
    else
        em(g, "    %s_real *const w = work;\n", g->P);
}

static void em_locals(cg *g, bool adj)
{
    for (uint32_t id = 1; id < g->len; id++)
        if (g->n[id].flags & F_LOCAL) {
            em(g, "    %s_real v%u", g->P, (unsigned)id);
            if (adj)
                em(g, ", u%u = -0.0", (unsigned)id); /* see em_api: -0.0 + x is x */
            em(g, ";\n");
        }
    em(g, "    (void)w;\n");
}
static void em_locals_used(cg *g, bool adj)
{
    for (uint32_t id = 1; id < g->len; id++)
        if (g->n[id].flags & F_LOCAL)
            em(g, adj ? "    (void)v%u, (void)u%u;\n" : "    (void)v%u;\n", (unsigned)id,
               (unsigned)id);
}

/* the inputs' adjoints into grad: written out element by element when
 * there are few (small tapes), else the table loop of P_copy */
static void em_copy_small(cg *g)
{
    size_t total = 0;
    for (int k = 0; k < g->nin; k++)
        total += nsize(&g->n[g->in[k].id_]);
    if (g->nin > 8 || total > 32) {
        em(g, "    %s_copy(grad, w + %zuUL);\n", g->P, g->gb);
        return;
    }
    em(g, "    if (grad) {\n");
    for (int k = 0; k < g->nin; k++) {
        em(g, "        if (grad[%d]) {\n", k);
        for (size_t i = 0; i < nsize(&g->n[g->in[k].id_]); i++)
            em(g, "            grad[%d][%zu] = w[%zu];\n", k, i, gslot(g, g->in[k].id_, i));
        em(g, "        }\n");
    }
    em(g, "    }\n");
}

static void em_api(cg *g)
{
    const char *P = g->P;
    const cgnode *o = &g->n[g->out];
    const size_t M = nsize(o);
    char b[64];
    em(g, "unsigned long %s_work_size(void)\n{\n    return %zuUL;\n}\n\n", P, g->ws);
    size_t total = 0;
    for (int k = 0; k < g->nin; k++)
        total += nsize(&g->n[g->in[k].id_]);
    const bool copy_used = (g->what & AD_CODEGEN_HVP)
                           || ((g->what & AD_CODEGEN_VJP) && (!g->fused || g->nin > 8 || total > 32));
    if (copy_used || (g->what & AD_CODEGEN_JACOBIAN)) {
        /* the inputs: their sizes and slots, tables rather than code per input
         * (W1 has 10^5 inputs) */
        em(g, "static const unsigned long %s_in_size[%d] = {", P, g->nin);
        for (int k = 0; k < g->nin; k++)
            em(g, "%s%zuUL", k ? (k % 8 ? ", " : ",\n    ") : "", nsize(&g->n[g->in[k].id_]));
        em(g, "};\nstatic const unsigned long %s_in_slot[%d] = {", P, g->nin);
        for (int k = 0; k < g->nin; k++)
            em(g, "%s%zuUL", k ? (k % 8 ? ", " : ",\n    ") : "", g->n[g->in[k].id_].off);
        em(g, "};\n\n");
    }
    if (copy_used)
        em(g, "/* dst[k] = region's slots of input k (dst or dst[k] NULL: skipped) */\n"
              "static void %s_copy(%s_real *const *dst, const %s_real *region)\n{\n"
              "    if (dst)\n        for (unsigned long k = 0; k < %dUL; k++)\n"
              "            if (dst[k])\n"
              "                for (unsigned long i = 0; i < %s_in_size[k]; i++)\n"
              "                    dst[k][i] = region[%s_in_slot[k] + i];\n}\n\n",
           P, P, P, g->nin, P, P);
    if (g->nchunk[PASS_F]) {
        em(g, "static int %s_fwd(const %s_real *const *in, %s_real *restrict w)\n{\n"
              "    int br = 0;\n", P, P, P);
        em_calls(g, PASS_F, "in, w", "    ");
        em(g, "    return br;\n}\n\n");
    }
    em(g, "static void %s_out(const %s_real *const *in, const %s_real *w, %s_real *out)\n{\n"
          "    const %s_real *y = %s;\n    (void)in, (void)w;\n    if (out)\n"
          "        for (unsigned long i = 0; i < %zuUL; i++)\n            out[i] = y[i];\n}\n\n",
       P, P, P, P, P, vptr(g, g->out, b), M);
    if ((g->what & AD_CODEGEN_FORWARD) && g->fused) {
        em(g, "int %s_forward(const %s_real *const *in, %s_real *out, %s_real *work)\n{\n"
              "    int br = 0;\n", P, P, P, P);
        em_work(g);
        em_locals(g, false);
        em_pass(g, PASS_F);
        em_locals_used(g, false);
        em(g, "    %s_out(in, w, out);\n    return br;\n}\n\n", P);
    } else if (g->what & AD_CODEGEN_FORWARD)
        em(g, "int %s_forward(const %s_real *const *in, %s_real *out, %s_real *work)\n{\n"
              "    const int br = %s_fwd(in, work);\n    %s_out(in, work, out);\n    return br;\n}\n\n",
           P, P, P, P, P, P);
    if (g->nchunk[PASS_R]) {
        em(g, "static void %s_rev(const %s_real *const *in, %s_real *restrict w)\n{\n", P, P, P);
        em_calls(g, PASS_R, "in, w", "    ");
        em(g, "}\n\n");
    }
    if ((g->what & AD_CODEGEN_VJP) && g->fused) {
        /* one function: values and adjoints of the scalar nodes in locals */
        em(g, "%s_BODY int %s_vjp_(const %s_real *const *in, const %s_real *seed, %s_real *out,\n"
              "    %s_real *const *grad, %s_real *work)\n{\n    int br = 0;\n", P, P, P, P, P, P, P);
        em_work(g);
        em_locals(g, true);
        em_pass(g, PASS_F);
        /* zero only the adjoints that live in w: inputs and tensor ops'.
         * Every adjoint of this form starts at -0.0, not 0: -0.0 + x is x
         * for every x, so the compiler drops the first addition (0 + x is
         * not x when x is -0); a sum of the same terms in the same order,
         * except that one whose every term is -0 stays -0 (the tape: +0) */
        for (uint32_t id = 1; id < g->len; id++) {
            const cgnode *x = &g->n[id];
            if (!(x->flags & F_DIFF) || (x->flags & F_LOCAL))
                continue;
            if (nsize(x) <= 4)
                for (size_t i = 0; i < nsize(x); i++)
                    em(g, "    w[%zu] = -0.0;\n", gslot(g, id, i));
            else
                em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        w[%zuUL + i] = -0.0;\n",
                   nsize(x), gslot(g, id, 0));
        }
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        w[%zuUL + i] = seed[i];\n", M,
           gslot(g, g->out, 0));
        em_pass(g, PASS_R);
        em_locals_used(g, true);
        em_copy_small(g);
        /* the value last: out may not be an input, but the compiler cannot
         * know, and would read the inputs again after storing it */
        em(g, "    %s_out(in, w, out);\n", P);
        /* P_vjp and P_gradient call it, inlined into both (seed 1 folded
         * into P_gradient), also in a shared object where P_vjp could be
         * interposed */
        em(g, "    return br;\n}\n\n"
              "int %s_vjp(const %s_real *const *in, const %s_real *seed, %s_real *out,\n"
              "    %s_real *const *grad, %s_real *w)\n{\n"
              "    return %s_vjp_(in, seed, out, grad, w);\n}\n\n", P, P, P, P, P, P, P);
    } else if (g->what & AD_CODEGEN_VJP) {
        em(g, "int %s_vjp(const %s_real *const *in, const %s_real *seed, %s_real *out,\n"
              "    %s_real *const *grad, %s_real *w)\n{\n    const int br = %s_fwd(in, w);\n"
              "    %s_out(in, w, out);\n", P, P, P, P, P, P, P, P);
        em_zero(g, g->gb, g->nv);
        em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n        w[%zuUL + i] = seed[i];\n", M,
           gslot(g, g->out, 0));
        em(g, "    %s_rev(in, w);\n", P);
        em(g, "    %s_copy(grad, w + %zuUL);\n    return br;\n}\n\n", P, g->gb);
    }
    if (g->what & AD_CODEGEN_VJP) {
        if (M == 1)
            em(g, "int %s_gradient(const %s_real *const *in, %s_real *out, %s_real *const *grad,\n"
                  "    %s_real *work)\n{\n    static const %s_real one[1] = {1};\n"
                  "    return %s_vjp%s(in, one, out, grad, work);\n}\n\n", P, P, P, P, P, P, P,
               g->fused ? "_" : "");
    }
    if (g->what & (AD_CODEGEN_JVP | AD_CODEGEN_HVP)) {
        em(g, "static void %s_tan(const %s_real *const *in, const %s_real *const *v, "
              "%s_real *restrict w)\n{\n", P, P, P, P);
        em_zero(g, g->zb, g->zsize);
        em_calls(g, PASS_T, "in, v, w", "    ");
        em(g, "}\n\n");
    }
    if (g->what & AD_CODEGEN_JVP) {
        em(g, "int %s_jvp(const %s_real *const *in, const %s_real *const *v, %s_real *out,\n"
              "    %s_real *jv, %s_real *w)\n{\n    const int br = %s_fwd(in, w);\n"
              "    %s_out(in, w, out);\n    %s_tan(in, v, w);\n", P, P, P, P, P, P, P, P, P);
        em(g, "    {\n        const %s_real *t = %s;\n"
              "        for (unsigned long i = 0; i < %zuUL; i++)\n            jv[i] = t[i];\n    }\n",
           P, tptr(g, g->out, b), M);
        em(g, "    return br;\n}\n\n");
    }
    if (g->what & AD_CODEGEN_HVP) {
        em(g, "int %s_hvp(const %s_real *const *in, const %s_real *const *v, %s_real *out,\n"
              "    %s_real *const *grad, %s_real *const *hv, %s_real *w)\n{\n"
              "    const int br = %s_fwd(in, w);\n    %s_out(in, w, out);\n    %s_tan(in, v, w);\n",
           P, P, P, P, P, P, P, P, P, P);
        em_zero(g, g->gb, g->nv);
        em_zero(g, g->gtb, g->nv);
        em(g, "    w[%zuUL] = 1;\n", gslot(g, g->out, 0));
        em_calls(g, PASS_H, "in, v, w", "    ");
        em(g, "    %s_copy(grad, w + %zuUL);\n    %s_copy(hv, w + %zuUL);\n    return br;\n}\n\n",
           P, g->gb, P, g->gtb);
    }
    if (g->what & AD_CODEGEN_JACOBIAN) {
        size_t N = 0;
        for (int k = 0; k < g->nin; k++)
            N += nsize(&g->n[g->in[k].id_]);
        em(g, "int %s_jacobian(const %s_real *const *in, %s_real *out, %s_real *J, %s_real *w)\n{\n"
              "    const int br = %s_fwd(in, w);\n    %s_out(in, w, out);\n"
              "    for (unsigned long r = 0; r < %zuUL; r++) {\n", P, P, P, P, P, P, P, M);
        em(g, "        for (unsigned long i = 0; i < %zuUL; i++)\n            w[%zuUL + i] = 0;\n",
           g->nv, g->gb);
        em(g, "        w[%zuUL + r] = 1;\n        %s_rev(in, w);\n", gslot(g, g->out, 0), P);
        em(g, "        for (unsigned long k = 0, c = 0; k < %dUL; c += %s_in_size[k], k++)\n"
              "            for (unsigned long i = 0; i < %s_in_size[k]; i++)\n"
              "                J[r * %zuUL + c + i] = w[%zuUL + %s_in_slot[k] + i];\n",
           g->nin, P, P, N, g->gb, P);
        em(g, "    }\n    return br;\n}\n\n");
    }
}

static int em_source(cg *g, const char *header_name)
{
    size_t nodes = 0;
    for (uint32_t id = 1; id < g->len; id++)
        nodes += emits(g, id, PASS_F);
    em(g, "/* Generated by autodiff %s (ad_codegen): %s, %zu nodes computed, %s.\n"
          " * Do not edit; regenerate from the tape. Depends only on <math.h>; no\n"
          " * allocation; no static mutable state: reentrant with one work array per\n"
          " * thread. */\n", AD_VERSION_STRING, g->P, nodes, g->fl ? "float" : "double");
    if (header_name)
        em(g, "#include \"%s\"\n", header_name);
    em(g, "#include <math.h>\n\n");
    em_typedef(g);
    em_decls(g);
    em(g, "\n/* the formulas' helpers (autodiff's scalar_ops.h) */\n");
    em_helpers(g);
    em_ew_helpers(g);
    em_lin_helpers(g);
    /* the caller's functions of custom ops (each name once) */
    for (uint32_t id = 1; id < g->len; id++) {
        const cgnode *x = &g->n[id];
        if (x->op < AD_OP_COUNT || (x->flags & (F_ACT | F_NEED)) != (F_ACT | F_NEED))
            continue;
        const ad_codegen_rule *r = custom_rule(ad_node_op(g->t, ad__handle(g->t, id)));
        bool seen = false;
        for (uint32_t j = 1; j < id && !seen; j++)
            if (g->n[j].op >= AD_OP_COUNT && (g->n[j].flags & (F_ACT | F_NEED)) == (F_ACT | F_NEED))
                seen = custom_rule(ad_node_op(g->t, ad__handle(g->t, j))) == r;
        if (seen)
            continue;
        em(g, "/* custom op '%s': your functions */\n", ad_node_op(g->t, ad__handle(g->t, id))->name);
        em(g, "void %s(const %s_real *const *in, %s_real *out, const unsigned long *sizes, double c);\n",
           r->forward, g->P, g->P);
        if (is_ident(r->vjp))
            em(g, "void %s(const %s_real *const *in, const %s_real *out, const %s_real *g,\n"
                  "    %s_real *const *gin, const unsigned long *sizes, double c);\n",
               r->vjp, g->P, g->P, g->P, g->P);
    }
    /* each chunk is called once: GCC would inline them all into one function
     * of the whole pass, whose compile time grows faster than its size */
    em(g, "\n#if defined(__GNUC__)\n#define %s_CHUNK static __attribute__((noinline))\n#else\n"
          "#define %s_CHUNK static\n#endif\n", g->P, g->P);
    /* a small tape's loops of a few elements unrolled: their values then
     * stay in registers (GCC does not unroll at -O2 by itself) */
    em(g, "#if defined(__GNUC__)\n#define %s_BODY static inline __attribute__((always_inline))\n"
          "#else\n#define %s_BODY static inline\n#endif\n", g->P, g->P);
    em(g, "#if defined(__clang__)\n#define %s_UNROLL _Pragma(\"clang loop unroll(full)\")\n"
          "#elif defined(__GNUC__) && __GNUC__ >= 8\n#define %s_UNROLL _Pragma(\"GCC unroll 8\")\n"
          "#else\n#define %s_UNROLL\n#endif\n\n", g->P, g->P, g->P);
    const int st = em_consts(g);
    if (st != AD_OK)
        return st;
    /* a small tape: forward and vjp each one function, scalar nodes in
     * locals (the compiler keeps them in registers); the other modes, and
     * every mode of a large tape, call the chunks */
    size_t nstmt = 0;
    for (uint32_t id = 1; id < g->len; id++)
        nstmt += emits(g, id, PASS_F) + emits(g, id, PASS_R);
    const bool fused = nstmt <= g->fuse_max;
    const unsigned others = AD_CODEGEN_JVP | AD_CODEGEN_HVP | AD_CODEGEN_JACOBIAN;
    if (!fused || (g->what & others))
        em_pass(g, PASS_F);
    if ((!fused && (g->what & AD_CODEGEN_VJP)) || (g->what & (AD_CODEGEN_JACOBIAN | AD_CODEGEN_HVP)))
        em_pass(g, PASS_R);
    if (g->what & (AD_CODEGEN_JVP | AD_CODEGEN_HVP))
        em_pass(g, PASS_T);
    if (g->what & AD_CODEGEN_HVP)
        em_pass(g, PASS_H);
    g->fused = fused;
    em_api(g);
    return AD_OK;
}

int ad_codegen(ad_tape *t, ad_node out, int n, const ad_node *in, const ad_codegen_opts *opts,
               FILE *src, FILE *hdr)
{
    static const char who[] = "codegen";
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (!opts || !src || !in || n < 1)
        return ad__fail_call(t, AD_EMISUSE, "%s: %s", who,
                             !opts  ? "opts is NULL"
                             : !src ? "the source stream is NULL"
                             : !in  ? "in is NULL"
                                    : "no inputs (n < 1)");
    if (!is_ident(opts->prefix))
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the prefix '%.64s' is not a C identifier (a letter, then letters, "
                             "digits or '_'; at most 64)",
                             who, opts->prefix ? opts->prefix : "(null)");
    if (opts->what & ~AD_CODEGEN_ALL)
        return ad__fail_call(t, AD_EMISUSE, "%s: unknown bits 0x%x in what", who,
                             opts->what & ~AD_CODEGEN_ALL);
    if (!ad__check_call(t, out, who, 1))
        return t->call_status;
    uint32_t maxid = out.id_;
    for (int k = 0; k < n; k++) {
        ad__node *nd = ad__check_call(t, in[k], who, k + 3);
        if (!nd)
            return t->call_status;
        if (ad__opc(nd->h) != AD_OP_LEAF)
            return ad__fail_call(t, AD_EMISUSE, "%s: input %d (node %u) is not a leaf but op '%s'",
                                 who, k, (unsigned)in[k].id_, ad_node_op(t, in[k])->name);
        maxid = in[k].id_ > maxid ? in[k].id_ : maxid;
    }
    const bool scalar_out = ad_shape_size(ad_node_shape(t, out)) == 1;
    unsigned what = opts->what;
    if (what == 0)
        what = scalar_out ? AD_CODEGEN_ALL : AD_CODEGEN_ALL & ~AD_CODEGEN_HVP;
    if ((what & AD_CODEGEN_HVP) && !scalar_out) {
        char sb[48];
        return ad__fail_call(t, AD_EMISUSE, "%s: HVP asked of an output that is %s, not a scalar",
                             who, ad__shape_str(ad_node_shape(t, out), sb, sizeof sb));
    }

    cg g;
    memset(&g, 0, sizeof g);
    g.t = t;
    g.P = opts->prefix;
    g.out = out.id_;
    g.nin = n;
    g.in = in;
    g.len = (size_t)maxid + 1;
    g.what = what;
    g.fl = opts->use_float != 0;
    g.max_stmts = opts->max_stmts ? opts->max_stmts : 50;
    g.fuse_max = opts->max_stmts ? opts->max_stmts : 200;
    g.ngd = ad__guards_count(t);
    for (size_t i = 0; i < CG_NEW; i++)
        g.ew[ew_texts[i].code] = &ew_texts[i];
    g.n = ad__alloc(&t->mem, g.len * sizeof *g.n);
    if (!g.n)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for %zu nodes", who, g.len);
    int st = analyse(&g);
    bool src_err = false, hdr_err = false;
    if (st == AD_OK && hdr) {
        g.f = hdr;
        em_header(&g);
        hdr_err = g.err || fflush(hdr) != 0 || ferror(hdr);
        if (g.err == 2)
            st = AD_ENOMEM;
        g.err = 0;
    }
    if (st == AD_OK && !hdr_err) {
        g.f = src;
        st = em_source(&g, opts->header_name);
        src_err = g.err || fflush(src) != 0 || ferror(src);
        if (st == AD_OK && g.err == 2)
            st = AD_ENOMEM;
    }
    ad__free(&t->mem, g.n, g.len * sizeof *g.n);
    if (st == AD_ENOMEM && (hdr_err || src_err))
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for a line of output", who);
    if (st != AD_OK)
        return st;
    if (hdr_err || src_err)
        return ad__fail_call(t, AD_EIO, "%s: write error on the %s stream", who,
                             hdr_err ? "header" : "source");
    return AD_OK;
}

/* ---- ad_codegen_sparse: the values of an ad_sparse, in its order ----
 *
 * The same passes as ad_codegen's, with three changes of reference: the
 * inputs' values and tangents live in the work array like any node's (the
 * caller passes one flat x, copied in), the tangent passes carry K
 * directions -- one per colour, direction k of a slot ts = nv reals after
 * direction 0 -- and there are several outputs. A scalar statement's
 * derivatives are computed once and applied in a loop over the directions
 * (em_ew_body_dirs); any other statement is written once per direction
 * with the regions moved (em_stmt_dirs), its adjoint part (PASS_H) only
 * the first time. Runs are found and rerolled as in every pass. The
 * seeding, the recovery of each nonzero (one read at a precomputed slot:
 * ad_sparse's src and dir) and the pattern are tables. */

static bool cg_zero(const char *formula) { return !strcmp(formula, "0.0"); }

/* A Hessian keeps the first derivative of a scalar unary statement whose
 * formula calls a function (sin's cos(x)) in the forward pass, where it
 * comes with the value (one sincos), for the reverse pass to read instead
 * of calling again: its slot, the value's o = "w[...]" moved to the
 * region dsb (false: not kept). */
static bool dref(const cg *g, const cgnode *x, const char *o, char *buf, size_t cap)
{
    const ew_text *e = g->ew[x->op];
    if (!g->dsb || e->binary || !strchr(e->d[0], '(') || strncmp(o, "w[", 2) != 0)
        return false;
    const int n = snprintf(buf, cap, "w[%zuUL + %s", g->dsb, o + 2);
    return n > 0 && (size_t)n < cap;
}

/* A Jacobian's run: the statements at place j of the block whose every
 * reader is in the same block (in every block), and that are not an
 * output, keep their value and tangents in locals of the loop's body
 * (l<j>, lt<j>[k]) instead of the work array: the compiler keeps them in
 * registers, and the values and tangents nothing else reads are never
 * stored. A Hessian's reverse run does the same with the adjoints and
 * adjoint tangents (ua<j>, uat<j>[k], from 0): not zeroed, not stored.
 * mode 1: mark (false: none), 2: declare, 0: clear, 3: clear, the run not
 * written. */
static bool run_locals(cg *g, const uint32_t *ids, const run *u, int mode)
{
    bool any = false;
    for (size_t j = 0; j < u->L; j++) {
        if (mode == 2) {
            if (g->lj[ids[u->p + j]] && g->pass == PASS_H)
                em(g, "        %s_real ua%zu = 0, uat%zu[%zu] = {0};\n        (void)ua%zu, (void)uat%zu;\n",
                   g->P, j, j, g->K, j, j);
            else if (g->lj[ids[u->p + j]])
                em(g, "        %s_real l%zu, lt%zu[%zu];\n        (void)l%zu, (void)lt%zu;\n", g->P,
                   j, j, g->K, j, j);
            continue;
        }
        bool ok = mode == 1;
        for (size_t b = 0; b < u->R && ok; b++) {
            const uint32_t id = ids[u->p + b * u->L + j];
            const uint32_t last = ids[u->p + b * u->L + u->L - 1];
            ok = (g->n[id].flags & F_DIFF) && g->maxuse[id] != 0 && g->maxuse[id] <= last;
        }
        for (size_t b = 0; b < u->R; b++) {
            g->lj[ids[u->p + b * u->L + j]] = ok ? (uint32_t)j + 1 : 0;
            if (ok && g->pass == PASS_H) /* its adjoints need no zeroing */
                g->hl[ids[u->p + b * u->L + j]] = 1;
            if (mode == 3 && g->hl) /* the run was not written as a loop after all */
                g->hl[ids[u->p + b * u->L + j]] = 0;
        }
        any = any || ok;
    }
    return any;
}

/* Hessian: F_NOTAN on the scalar statements whose tangent nothing reads --
 * no later statement is nonlinear in them, none whose tangent is read is
 * a function of them (the running sum of an objective, a constraint's
 * linear terms): their tangents are not written. Scratch failed: none. */
static void sp_mark_notan(cg *g)
{
    unsigned char *need = ad__alloc(&g->t->mem, g->len);
    if (!need)
        return;
    memset(need, 0, g->len);
    for (uint32_t id = (uint32_t)g->len - 1; id >= 1; id--) {
        cgnode *x = &g->n[id];
        if (!emits(g, id, PASS_T))
            continue;
        if (!(is_ew(x->op) && all_scalar(g, x))) { /* tensor statements: every operand */
            for (int k = 0; k < x->nin; k++)
                need[x->in[k]] = 1;
            continue;
        }
        if (!need[id])
            x->flags |= F_NOTAN;
        const ew_text *e = g->ew[x->op];
        for (int k = 0; k < x->nin; k++)
            if (need[id]) /* its tangent statement reads theirs */
                need[x->in[k]] = 1;
        if (!e->binary) {
            if (!cg_zero(e->d[1]))
                need[x->in[0]] = 1;
        } else {
            if (!cg_zero(e->d[2]) || !cg_zero(e->d[3]))
                need[x->in[0]] = 1;
            if (!cg_zero(e->d[4]) || !cg_zero(e->d[3]))
                need[x->in[1]] = 1;
        }
    }
    ad__free(&g->t->mem, need, g->len);
}

/* Hessian: ZA_T on the scalar statements whose adjoint tangents are
 * identically 0 -- every reader is a scalar statement whose own adjoint
 * tangents are 0 and that adds no second-order term to this operand (the
 * outputs' adjoint tangents start at 0: the running sum of an objective, a
 * constraint's last linear terms); ZA_G on the inputs read by scalar
 * statements only (nothing reads an input's first-order adjoint, the
 * recovery reads its adjoint tangents). Scratch failed: za NULL. */
static void sp_mark_za(cg *g)
{
    g->za = ad__alloc(&g->t->mem, g->len);
    unsigned char *nz = g->za ? ad__alloc(&g->t->mem, g->len) : NULL;
    if (!nz) {
        if (g->za)
            ad__free(&g->t->mem, g->za, g->len);
        g->za = NULL;
        return;
    }
    memset(g->za, 0, g->len);
    /* nz bit 1: adjoint tangent may be nonzero; 2: read by a tensor
     * statement; 4, 8: one, more statements add to its adjoint */
    memset(nz, 0, g->len);
    for (uint32_t id = (uint32_t)g->len - 1; id >= 1; id--) {
        cgnode *x = &g->n[id];
        if (!emits(g, id, PASS_H))
            continue;
        if (!(is_ew(x->op) && all_scalar(g, x))) {
            for (int k = 0; k < x->nin; k++)
                nz[x->in[k]] = 3 | 8;
            continue;
        }
        for (int k = 0; k < x->nin; k++)
            if (diff(g, x->in[k]))
                nz[x->in[k]] |= nz[x->in[k]] & 4 ? 8 : 4;
        if (!(nz[id] & 1))
            g->za[id] |= ZA_T;
        const ew_text *e = g->ew[x->op];
        for (int k = 0; k < x->nin; k++) {
            bool so;
            if (!e->binary)
                so = !cg_zero(e->d[1]);
            else
                so = !cg_zero(e->d[3]) || !cg_zero(e->d[k ? 4 : 2]);
            if ((nz[id] & 1) || so)
                nz[x->in[k]] |= 1;
        }
    }
    for (int k = 0; k < g->nouts; k++) /* an output's adjoint gets its weight */
        nz[g->outs[k]] |= 2 | 8;
    for (uint32_t id = 1; id < g->len; id++) {
        if (g->n[id].op == AD_OP_LEAF && !(nz[id] & 2))
            g->za[id] |= ZA_G;
        if (g->n[id].op != AD_OP_LEAF && (nz[id] & (4 | 8)) == 4)
            g->za[id] |= ZA_1;
    }
    ad__free(&g->t->mem, nz, g->len);
}

/* Hessian: a reverse run recomputes at the top of its loop's body, in
 * locals l<j>, lt<j>[k], the values and tangents of its statements that
 * only their own block reads (an output's value aside: stored by it)
 * instead of reading them back from the forward pass, which keeps those in
 * locals of its own runs or does not compute them (fz). mode 1: mark them
 * (fu; false: none), 0: clear, 2: clear and record (fz); the forward's:
 * 3: mark the recorded ones that only their block (u's) reads (false:
 * none), 4: every statement of u marked. */
static bool sp_fuse(cg *g, const uint32_t *ids, const run *u, int mode)
{
    if (!g->lr || !g->fu || !g->fz || !g->maxuse)
        return false;
    const size_t n = u->L * u->R;
    if (mode == 4) {
        for (size_t q = 0; q < n; q++)
            if (!g->fu[ids[u->p + q]])
                return false;
        return true;
    }
    if (mode == 1 || mode == 3) {
        bool any = false;
        for (size_t j = 0; j < u->L; j++) {
            bool ok = true;
            for (size_t b = 0; b < u->R && ok; b++) {
                const uint32_t id = ids[u->p + b * u->L + j];
                ok = g->lr[id] <= ids[u->p + b * u->L + u->L - 1] && (g->n[id].flags & F_DIFF)
                     && (mode == 1 || g->fz[id]);
            }
            for (size_t b = 0; b < u->R; b++)
                g->fu[ids[u->p + b * u->L + j]] = ok ? (uint32_t)j + 1 : 0;
            any = any || ok;
        }
        return any;
    }
    for (size_t q = 0; q < n; q++) {
        const uint32_t id = ids[u->p + q];
        if (mode == 2 && g->fu[id]) {
            g->fz[id] = 1;
            g->fzout = g->fzout || g->maxuse[id] == UINT32_MAX;
        }
        g->fu[id] = 0;
    }
    return true;
}

/* the statement body of each direction: a loop over k, or with few
 * directions the body once per direction with k a constant (what
 * -funroll-loops would make of the loop; a tenth off the Jacobian of W6) */
static void em_dirs(cg *g, const char *ind, const char *body)
{
    if (g->K > 4) {
        em(g, "%sfor (unsigned long k = 0; k < %zuUL; k++) {\n%s%s}\n", ind, g->K, body, ind);
        return;
    }
    for (size_t k = 0; k < g->K; k++)
        em(g, "%s{\n%s    const unsigned long k = %zu;\n%s    (void)k;\n%s%s}\n", ind, ind, k,
           ind, body, ind);
}

static void em_ew_body_dirs(cg *g, const cgnode *x, const ewref *r, const char *ind)
{
    const ew_text *e = g->ew[x->op];
    const char *P = g->P;
    char cbuf[48], in2[64], body[2048];
    const char *c = num(e->takes_c ? x->c : 0.0, cbuf);
    snprintf(in2, sizeof in2, "%s    ", ind);
    if (!e->binary) {
        char d[600];
        snprintf(d, sizeof d, "%s_%s_d(%s, %s, %s)", P, e->name, r->x, r->o, c);
        if (g->pass == PASS_T) {
            if (!r->has[0]) {
                snprintf(body, sizeof body, "%s    %s = 0;\n", ind, r->to);
                em_dirs(g, ind, body);
                return;
            }
            em(g, "%s{\n%s    const double d = %s;\n", ind, ind, d);
            snprintf(body, sizeof body, "%s        %s = d * %s;\n", ind, r->to, r->ta[0]);
            em_dirs(g, in2, body);
            em(g, "%s}\n", ind);
        } else if (r->has[0]) {
            /* ad_codegen_sparse: what sp_mark_za found identically 0 or unread */
            const bool zo = g->za && (g->za[x - g->n] & ZA_T);
            const bool zt = g->za && (g->za[x->in[0]] & ZA_T);
            const bool zg = g->za && (g->za[x->in[0]] & ZA_G);
            if (zt && zg)
                return;
            char kept[160];
            /* d unread: not computed (an unused pow() call is not removed) */
            const bool used = (!g->no_adj && !zg) || (!zt && !zo);
            em(g, "%s{\n%s    const double d = %s, gg = %s;\n%s    (void)d, (void)gg;\n", ind, ind,
               !used ? "0.0" : dref(g, x, r->o, kept, sizeof kept) ? kept : d, r->gv, ind);
            double cv;
            if (!g->no_adj && g->za && (g->za[x->in[0]] & ZA_1) && !(g->lj && g->lj[x->in[0]]))
                em(g, "%s%s = 0;\n", in2, r->ga[0]); /* its one statement: not zeroed before */
            if (!g->no_adj && !zg && const_der(e->d[0], x->c, &cv)) /* as PASS_R: no zero test */
                em_acc(g, in2, r->ga[0], "gg", e->d[0], x->c, r->x, r->o, "0.0", c, false);
            else if (!g->no_adj && !zg)
                em(g, "%s%s += %s_SZ(gg, d);\n", in2, r->ga[0], P);
            body[0] = 0;
            if (zt)
                ; /* 0 by sp_mark_za: nothing to add */
            else if (cg_zero(e->d[1])) { /* linear: no second-order term, no tangent read */
                if (!zo)
                    snprintf(body, sizeof body, "%s        %s += %s * d;\n", ind, r->gta[0], r->gto);
            } else {
                em(g, "%s    const double h = %s_SZ(gg, %s_%s_d2(%s, %s, %s));\n", ind, P, P,
                   e->name, r->x, r->o, c);
                if (zo)
                    snprintf(body, sizeof body, "%s        %s += h * %s;\n", ind, r->gta[0],
                             r->ta[0]);
                else
                    snprintf(body, sizeof body, "%s        %s += %s * d + h * %s;\n", ind,
                             r->gta[0], r->gto, r->ta[0]);
            }
            if (body[0])
                em_dirs(g, in2, body);
            em(g, "%s}\n", ind);
        }
        return;
    }
    static const char *const dn[5] = {"da", "db", "daa", "dab", "dbb"};
    char d[5][600];
    for (int k = 0; k < 5; k++)
        snprintf(d[k], sizeof d[k], "%s_%s_%s(%s, %s, %s)", P, e->name, dn[k], r->x, r->y, r->o);
    if (g->pass == PASS_T) {
        if (!r->has[0] && !r->has[1]) {
            snprintf(body, sizeof body, "%s    %s = 0;\n", ind, r->to);
            em_dirs(g, ind, body);
            return;
        }
        em(g, "%s{\n%s    const double da = %s, db = %s;\n%s    (void)da, (void)db;\n", ind, ind,
           d[0], d[1], ind);
        snprintf(body, sizeof body, "%s        %s = %s%s%s%s%s%s;\n", ind, r->to,
                 r->has[0] ? "da * " : "", r->has[0] ? r->ta[0] : "",
                 r->has[0] && r->has[1] ? " + " : "", r->has[1] ? "db * " : "",
                 r->has[1] ? r->ta[1] : "", "");
        em_dirs(g, in2, body);
        em(g, "%s}\n", ind);
        return;
    }
    em(g, "%s{\n%s    const double da = %s, db = %s, gg = %s;\n", ind, ind, d[0], d[1], r->gv);
    em(g, "%s    const double gaa = %s_SZ(gg, %s), gab = %s_SZ(gg, %s), gbb = %s_SZ(gg, %s);\n"
          "%s    (void)da, (void)db, (void)gaa, (void)gab, (void)gbb;\n",
       ind, P, d[2], P, d[3], P, d[4], ind);
    /* ad_codegen_sparse: what sp_mark_za found identically 0 or unread */
    const bool zo = g->za && (g->za[x - g->n] & ZA_T);
    bool zt[2] = {false, false}, zg[2] = {false, false};
    for (int k = 0; k < 2 && g->za; k++) {
        zt[k] = (g->za[x->in[k]] & ZA_T) != 0;
        zg[k] = (g->za[x->in[k]] & ZA_G) != 0;
    }
    for (int k = 0; k < 2 && !g->no_adj; k++) {
        double cv;
        if (r->has[k] && g->za && (g->za[x->in[k]] & ZA_1) && !(g->lj && g->lj[x->in[k]]))
            em(g, "%s%s = 0;\n", in2, r->ga[k]); /* its one statement: not zeroed before */
        if (r->has[k] && !zg[k] && const_der(e->d[k], 0.0, &cv))
            em_acc(g, in2, r->ga[k], "gg", e->d[k], 0.0, r->x, r->y, r->o, "0.0", false);
        else if (r->has[k] && !zg[k])
            em(g, "%s%s += %s_SZ(gg, %s);\n", in2, r->ga[k], P, k ? "db" : "da");
    }
    /* the second-order terms that are not identically 0, and only the
     * tangents they read */
    const bool aa = !cg_zero(e->d[2]), ab = !cg_zero(e->d[3]), bb = !cg_zero(e->d[4]);
    const bool h0 = r->has[0] && !zt[0], h1 = r->has[1] && !zt[1];
    const bool tu = (h0 && aa) || (h1 && ab), tv = (h0 && ab) || (h1 && bb);
    int n = 0;
    body[0] = 0;
    if (!zo && (h0 || h1))
        n = snprintf(body, sizeof body, "%s        const double go = %s;\n", ind, r->gto);
    if (tu && n >= 0 && (size_t)n < sizeof body)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s        const double tu = %s;\n", ind,
                      r->has[0] ? r->ta[0] : "0.0");
    if (tv && n >= 0 && (size_t)n < sizeof body)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s        const double tv = %s;\n", ind,
                      r->has[1] ? r->ta[1] : "0.0");
    for (int k = 0; k < 2; k++) {
        if (!(k ? h1 : h0) || n < 0 || (size_t)n >= sizeof body)
            continue;
        const char *t1 = k ? (ab ? " + gab * tu" : "") : (aa ? " + gaa * tu" : "");
        const char *t2 = k ? (bb ? " + gbb * tv" : "") : (ab ? " + gab * tv" : "");
        if (zo && !*t1 && !*t2)
            continue;
        if (zo) /* the second-order terms only, without the leading " + " */
            n += snprintf(body + n, sizeof body - (size_t)n, "%s        %s += %s%s;\n", ind,
                          r->gta[k], *t1 ? t1 + 3 : t2 + 3, *t1 ? t2 : "");
        else
            n += snprintf(body + n, sizeof body - (size_t)n, "%s        %s += go * %s%s%s;\n", ind,
                          r->gta[k], k ? "db" : "da", t1, t2);
    }
    if (n > 0 && !(zo && !tu && !tv))
        em_dirs(g, in2, body);
    em(g, "%s}\n", ind);
}

/* a scalar statement's value and then its tangents, the operands read
 * once: sin and cos of one operand become one sincos. x^3 and x^4 (powc)
 * are written as products, not pow() (a few ulp from it) */
static void em_ft_body(cg *g, const cgnode *x, const ewref *r0, const char *ind)
{
    ewref r = *r0;
    char in2[64];
    snprintf(in2, sizeof in2, "%s    ", ind);
    em(g, "%s{\n%s    const double xv = %s", ind, ind, r0->x);
    if (x->nin > 1)
        em(g, ", yv = %s", r0->y);
    em(g, ";\n");
    strcpy(r.x, "xv");
    if (x->nin > 1)
        strcpy(r.y, "yv");
    g->pass = PASS_F;
    if (x->op == AD_OP_POWC && (x->c == 3.0 || x->c == 4.0)) /* pow: a quarter of W6's J */
        em(g, "%s    %s = %s;\n", ind, r0->o, x->c == 3.0 ? "xv * xv * xv" : "(xv * xv) * (xv * xv)");
    else
        em_ew_body(g, x, &r, in2);
    em(g, "%s    const double zv = %s;\n%s    (void)zv;\n", ind, r0->o, ind);
    char kept[160];
    if (dref(g, x, r0->o, kept, sizeof kept)) { /* the derivative the reverse pass reads */
        char cbuf[48];
        em(g, "%s    %s = %s_%s_d(xv, zv, %s);\n", ind, kept, g->P, g->ew[x->op]->name,
           num(g->ew[x->op]->takes_c ? x->c : 0.0, cbuf));
    }
    if (x->flags & F_NOTAN) { /* no tangent read */
        em(g, "%s}\n", ind);
        return;
    }
    strcpy(r.o, "zv");
    g->pass = PASS_T;
    em_ew_body(g, x, &r, in2);
    g->pass = PASS_F;
    em(g, "%s}\n", ind);
}

/* a statement that is not one scalar: once per direction, the tangent and
 * adjoint tangent regions moved to it; its adjoints (PASS_H) once */
static void em_stmt_dirs(cg *g, uint32_t id)
{
    const size_t tb = g->tb, gtb = g->gtb, K = g->K;
    g->K = 1;
    for (size_t k = 0; k < K && !g->err; k++) {
        g->tb = tb + k * g->ts;
        g->gtb = gtb + k * g->ts;
        g->no_adj = k > 0;
        stmt(g);
        if (is_ew(g->n[id].op))
            em_ew(g, id);
        else
            em_tensor(g, id);
    }
    g->tb = tb, g->gtb = gtb, g->K = K, g->no_adj = false;
}

/* static const unsigned long P_name[n] = {v...}; (n 0: one 0) */
static void em_table(cg *g, const char *type, const char *name, const size_t *v, size_t n)
{
    em(g, "static const %s %s_%s[%zu] = {", type, g->P, name, n ? n : 1);
    for (size_t i = 0; i < n; i++)
        em(g, "%s%zu", i ? (i % 12 ? ", " : ",\n    ") : "", v[i]);
    em(g, "%s};\n", n ? "" : "0");
}

/* ad_codegen_sparse: an index table read through P_name_at(i). When from
 * some entry H on it repeats with a short period p, each time moved by the
 * same d (v[i] = v[i - p] + d: a banded pattern's slots, the colours, the
 * inputs' slots) up to a few last entries (E on: a boundary), only its
 * first H + p entries and those last are written out and the rest computed
 * (the tables were a quarter of what a call of W6's Hessian read at
 * n = 10^5); else all of it. */
static void em_ptable(cg *g, const char *name, const size_t *v, size_t n)
{
    enum { PT_H = 4, PT_P = 8, PT_T = 8 };
    size_t H = 0, p = 0, E = 0;
    for (size_t h = 0; h <= PT_H && !p && n >= 64; h++)
        for (size_t q = 1; q <= PT_P && !p; q++) {
            const size_t d = v[h + q] - v[h];
            size_t i = h + q;
            while (i < n && v[i] - v[i - q] == d)
                i++;
            if (n - i <= PT_T && i >= h + 2 * q)
                H = h, p = q, E = i;
        }
    const char *P = g->P;
    if (!p) {
        em_table(g, "unsigned long", name, v, n);
        em(g, "#define %s_%s_at(i) %s_%s[i]\n", P, name, P, name);
        return;
    }
    size_t t[PT_H + PT_P + PT_T];
    for (size_t i = 0; i < H + p; i++)
        t[i] = v[i];
    for (size_t i = E; i < n; i++)
        t[H + p + i - E] = v[i];
    em_table(g, "unsigned long", name, t, H + p + n - E);
    em(g, "static unsigned long %s_%s_at(unsigned long i)\n{\n"
          "    if (i < %zuUL)\n        return %s_%s[i];\n", P, name, H + p, P, name);
    if (E < n)
        em(g, "    if (i >= %zuUL)\n        return %s_%s[%zuUL + i - %zuUL];\n", E, P, name, H + p, E);
    em(g, "    return %s_%s[%zuUL + (i - %zuUL) %% %zuUL] + (i - %zuUL) / %zuUL * %zuUL;\n}\n",
       P, name, H, H, p, H, p, v[H + p] - v[H]);
}

typedef struct sp_plan {
    const ad_sparse *sp;
    size_t K, nw, nconst, cbase, sink;
    bool fwd;
} sp_plan;

static void em_sparse_decls(cg *g, const sp_plan *pl)
{
    const char *P = g->P;
    em(g, "/* Reals the work array needs. */\nunsigned long %s_work_size(void);\n", P);
    if (pl->fwd)
        em(g, "/* out[0..%s_N_OUT) = the outputs' elements, in order, at x[0..%s_COLS). */\n"
              "int %s_forward(const %s_real *x, %s_real *out, %s_real *work);\n", P, P, P, P, P, P);
    if (pl->sp->hessian)
        em(g, "/* vals[0..%s_NNZ) = the lower triangle of the Hessian of sum_j wt[j] out_j\n"
              " * at x[0..%s_COLS), wt[0..%s_N_OUT) (NULL: 1 each), in %s_sparse_pattern's\n"
              " * order (ad_sparse_eval's). */\n", P, P, P, P);
    else
        em(g, "/* vals[0..%s_NNZ) = the Jacobian's nonzeros at x[0..%s_COLS), in\n"
              " * %s_sparse_pattern's order (ad_sparse_eval's); wt: unused (NULL). */\n", P, P, P);
    em(g, "int %s_sparse(const %s_real *x, const %s_real *wt, %s_real *vals, %s_real *work);\n"
          "/* rows[k], cols[k] of nonzero k (either may be NULL: not written). */\n"
          "void %s_sparse_pattern(int *rows, int *cols);\n", P, P, P, P, P, P);
}

static void em_sparse_header(cg *g, const sp_plan *pl)
{
    const char *P = g->P;
    const ad_sparse *sp = pl->sp;
    em(g, "/* %s.h -- generated by autodiff %s (ad_codegen_sparse); do not edit.\n"
          " * Every function returns 0, or 1 when a recorded comparison (a replay\n"
          " * guard) came out otherwise: the results are then those of the\n"
          " * recorded branch. work: %s_work_size() reals, one array per thread. */\n",
       P, AD_VERSION_STRING, P);
    em(g, "#ifndef %s_GENERATED_H\n#define %s_GENERATED_H\n\n#ifdef __cplusplus\nextern \"C\" {\n"
          "#endif\n\n", P, P);
    em_typedef(g);
    em(g, "#define %s_ROWS %zuUL /* %s */\n#define %s_COLS %zuUL /* columns: the inputs' "
          "elements */\n#define %s_NNZ %zuUL /* nonzeros */\n#define %s_COLORS %zuUL\n"
          "#define %s_N_OUT %zuUL /* the outputs' elements (weights) */\n#define %s_WORK_SIZE %zuUL\n\n",
       P, sp->nrows, sp->hessian ? "Hessian: the inputs' elements" : "the outputs' elements", P,
       sp->ncols, P, sp->nnz, P, sp->ncolors, P, pl->nw, P, g->ws);
    em_sparse_decls(g, pl);
    em(g, "\n#ifdef __cplusplus\n}\n#endif\n#endif\n");
}

/* the tables and the public functions */
/* the ranges of slots a Hessian zeroes, when few: groups of cnt ranges
 * of len slots, s0 + r * stride (r < cnt); more: tables (nz, nzt) */
enum { ZG_MAX = 16 };
typedef struct zgroup {
    size_t s0, stride, len, cnt;
} zgroup;
typedef struct zgroups {
    zgroup g[2][ZG_MAX];
    size_t n[2]; /* groups; ZG_MAX + 1: the tables */
} zgroups;

static size_t zgroup_of(const size_t *zs, const size_t *zl, size_t c, zgroup *gr)
{
    size_t n = 0;
    for (size_t i = 0; i < c; n++) {
        if (n == ZG_MAX)
            return ZG_MAX + 1;
        size_t j = i + 1;
        const size_t st = j < c && zl[j] == zl[i] ? zs[j] - zs[i] : 0;
        while (st && j < c && zl[j] == zl[i] && zs[j] - zs[j - 1] == st)
            j++;
        gr[n].s0 = zs[i], gr[n].stride = st, gr[n].len = zl[i], gr[n].cnt = j - i;
        i = j;
    }
    return n;
}

static void em_zgroups(cg *g, const zgroup *gr, size_t n, size_t base, size_t K, size_t nv)
{
    char kd[48] = "";
    if (K > 1)
        snprintf(kd, sizeof kd, " + k * %zuUL", nv);
    const char *ind = K > 1 ? "        " : "    ";
    for (size_t q = 0; q < n; q++) {
        const zgroup *z = &gr[q];
        if (K > 1)
            em(g, "    for (unsigned long k = 0; k < %zuUL; k++)\n", K);
        if (z->cnt > 1)
            em(g, "%sfor (unsigned long r = 0; r < %zuUL; r++)\n"
                  "%s    for (unsigned long i = 0; i < %zuUL; i++)\n"
                  "%s        w[%zuUL + r * %zuUL + i%s] = 0;\n",
               ind, z->cnt, ind, z->len, ind, base + z->s0, z->stride, kd);
        else
            em(g, "%sfor (unsigned long i = 0; i < %zuUL; i++)\n%s    w[%zuUL + i%s] = 0;\n", ind,
               z->len, ind, base + z->s0, kd);
    }
}

/* a Hessian's adjoint slots zeroed (em_sparse_api's tables or groups) */
static void sp_zero(cg *g, const ad_sparse *sp, bool zall, size_t nz, size_t nzt, size_t K,
                    size_t nv, const zgroups *zg)
{
    const char *P = g->P;
    if (!sp->hessian)
        return;
    if (zall) {
        em_zero(g, g->gb, nv);
        em_zero(g, g->gtb, K * nv);
    } else if (!g->za) { /* the slots of adjoints that are not a run's locals */
        if (nz)
            em(g, "    for (unsigned long r = 0; r < %zuUL; r++)\n"
                  "        for (unsigned long i = %s_zs[r]; i < %s_zs[r] + %s_zl[r]; i++) {\n"
                  "            w[%zuUL + i] = 0;\n"
                  "            for (unsigned long k = 0; k < %zuUL; k++)\n"
                  "                w[%zuUL + k * %zuUL + i] = 0;\n        }\n",
               nz, P, P, P, g->gb, K, g->gtb, nv);
    } else { /* ... and not found identically 0 or unread (sp_mark_za): few
                groups of ranges written out, or tables */
        if (zg->n[0] <= ZG_MAX)
            em_zgroups(g, zg->g[0], zg->n[0], g->gb, 1, nv);
        else if (nz)
            em(g, "    for (unsigned long r = 0; r < %zuUL; r++)\n"
                  "        for (unsigned long i = %s_zs[r]; i < %s_zs[r] + %s_zl[r]; i++)\n"
                  "            w[%zuUL + i] = 0;\n",
               nz, P, P, P, g->gb);
        if (zg->n[1] <= ZG_MAX)
            em_zgroups(g, zg->g[1], zg->n[1], g->gtb, K, nv);
        else if (nzt)
            em(g, "    for (unsigned long k = 0; k < %zuUL; k++)\n"
                  "        for (unsigned long r = 0; r < %zuUL; r++)\n"
                  "            for (unsigned long i = %s_zts[r]; i < %s_zts[r] + %s_ztl[r]; i++)\n"
                  "                w[%zuUL + k * %zuUL + i] = 0;\n",
               K, nzt, P, P, P, g->gtb, nv);
    }
}

static int em_sparse_api(cg *g, const sp_plan *pl)
{
    const char *P = g->P;
    const ad_sparse *sp = pl->sp;
    ad_tape *t = g->t;
    const size_t nv = g->nv, K = pl->K;
    size_t n = sp->ncols > sp->nnz ? sp->ncols : sp->nnz;
    n = n > pl->nw ? n : pl->nw;
    n = n > sp->nrows + 1 ? n : sp->nrows + 1;
    size_t *v = ad__alloc(&t->mem, n * sizeof *v);
    if (!v)
        return AD_ENOMEM;
    /* x into the inputs' slots; seeds */
    for (size_t c = 0; c < sp->ncols; c++)
        v[c] = g->n[sp->in_loc[c].id].off + sp->in_loc[c].e;
    em_ptable(g, "xslot", v, sp->ncols);
    for (size_t c = 0; c < sp->ncols; c++)
        v[c] = sp->color[c];
    em_ptable(g, "color", v, sp->ncols);
    /* where each nonzero is read */
    for (size_t q = 0; q < sp->nnz; q++) {
        const uint32_t s = sp->src[q];
        if (sp->hessian)
            v[q] = g->gtb + sp->dir[q] * nv + g->n[sp->in_loc[s].id].off + sp->in_loc[s].e;
        else
            v[q] = g->tb + sp->dir[q] * nv + g->n[sp->row_loc[s].id].off + sp->row_loc[s].e;
    }
    if (sp->nnz)
        em_ptable(g, "rec", v, sp->nnz);
    /* the pattern */
    for (size_t r = 0; r <= sp->nrows; r++)
        v[r] = sp->rowptr[r];
    if (sp->nnz)
        em_table(g, "unsigned long", "rowptr", v, sp->nrows + 1);
    for (size_t q = 0; q < sp->nnz; q++)
        v[q] = (size_t)sp->col[q];
    if (sp->nnz)
        em_table(g, "int", "col", v, sp->nnz);
    /* the outputs' elements: their adjoints (weights), values */
    size_t j = 0, m = 0;
    for (int k = 0; k < sp->nout; k++) {
        const cgnode *o = &g->n[sp->out_id[k]];
        const bool act = (o->flags & F_ACT) != 0;
        for (size_t e = 0; e < nsize(o); e++, j++)
            v[j] = act ? g->gb + o->off + e : pl->sink;
    }
    if (sp->hessian)
        em_ptable(g, "wslot", v, pl->nw);
    if (pl->fwd) {
        char b[48];
        j = 0;
        for (int k = 0; k < sp->nout; k++) {
            const cgnode *o = &g->n[sp->out_id[k]];
            const bool act = (o->flags & F_ACT) != 0;
            for (size_t e = 0; e < nsize(o); e++, j++)
                v[j] = act ? o->off + e : pl->cbase + m++;
        }
        em_table(g, "unsigned long", "oval", v, pl->nw);
        if (pl->nconst) {
            em(g, "static const %s_real %s_oconst[%zu] = {", P, P, pl->nconst);
            m = 0;
            for (int k = 0; k < sp->nout; k++) {
                const cgnode *o = &g->n[sp->out_id[k]];
                for (size_t e = 0; e < nsize(o) && !(o->flags & F_ACT); e++, m++)
                    em(g, "%s%s", m ? (m % 4 ? ", " : ",\n    ") : "", num(o->val[e], b));
            }
            em(g, "};\n");
        }
    }
    ad__free(&t->mem, v, n * sizeof *v);
    /* a Hessian: the ranges of the adjoint slots zeroed at each call --
     * not a run's locals, nor found identically 0 or unread (sp_mark_za);
     * zall (no scratch): all of them */
    size_t nz = 0, nzt = 0;
    bool zall = true;
    zgroups zgs;
    zgs.n[0] = zgs.n[1] = ZG_MAX + 1;
    if (sp->hessian && g->hl) {
        /* first-order adjoints (pass 0) and, with sp_mark_za's marks, the
         * adjoint tangents (pass 1: a table of their own) */
        unsigned char *z = ad__alloc(&t->mem, nv);
        size_t *zs = z ? ad__alloc(&t->mem, nv * sizeof *zs) : NULL;
        size_t *zl = zs ? ad__alloc(&t->mem, nv * sizeof *zl) : NULL;
        for (int pz = 0; zl && pz < (g->za ? 2 : 1); pz++) {
            memset(z, 1, nv);
            for (uint32_t id = 1; id < g->len; id++)
                if (g->hl[id] || (g->za && (g->za[id] & (pz ? ZA_T : ZA_G | ZA_1))))
                    memset(z + g->n[id].off, 0, nsize(&g->n[id]));
            size_t c = 0;
            for (size_t i = 0; i < nv; i++)
                if (z[i] && (i == 0 || !z[i - 1]))
                    zs[c] = i, zl[c++] = 1;
                else if (z[i])
                    zl[c - 1]++;
            zall = false;
            *(pz ? &nzt : &nz) = c;
            zgs.n[pz] = g->za ? zgroup_of(zs, zl, c, zgs.g[pz]) : ZG_MAX + 1;
            if (c && zgs.n[pz] > ZG_MAX) {
                em_table(g, "unsigned long", pz ? "zts" : "zs", zs, c);
                em_table(g, "unsigned long", pz ? "ztl" : "zl", zl, c);
            }
        }
        if (!zl)
            zall = true;
        if (zl)
            ad__free(&t->mem, zl, nv * sizeof *zl);
        if (zs)
            ad__free(&t->mem, zs, nv * sizeof *zs);
        if (z)
            ad__free(&t->mem, z, nv);
    }
    em(g, "\nunsigned long %s_work_size(void)\n{\n    return %zuUL;\n}\n\n", P, g->ws);
    em(g, "/* values and tangents */\n"
          "static int %s_fwd(const %s_real *x, %s_real *restrict w)\n{\n    int br = 0;\n", P, P,
       P);
    em(g, "    /* x; seeds: each input element the unit vector of its colour */\n"
          "    for (unsigned long c = 0; c < %zuUL; c++) {\n"
          "        %s_real *s = w + %zuUL + %s_xslot_at(c);\n"
          "        w[%s_xslot_at(c)] = x[c];\n"
          "        for (unsigned long k = 0; k < %zuUL; k++)\n            s[k * %zuUL] = 0;\n"
          "        s[%s_color_at(c) * %zuUL] = 1;\n    }\n",
       sp->ncols, P, g->tb, P, P, K, nv, P, nv);
    em_zero(g, g->zb, g->zsize);
    em_calls(g, PASS_F, "0, w", "    ");
    em(g, "    return br;\n}\n\n");
    if (pl->fwd) {
        em(g, "int %s_forward(const %s_real *x, %s_real *out, %s_real *w)\n{\n"
              "    const int br = %s_fwd(x, w);\n", P, P, P, P, P);
        if (pl->nconst)
            em(g, "    for (unsigned long i = 0; i < %zuUL; i++)\n"
                  "        w[%zuUL + i] = %s_oconst[i];\n", pl->nconst, pl->cbase, P);
        if (g->fzout) { /* outputs recomputed in the reverse pass (sp_fuse): run it, no weights */
            sp_zero(g, sp, zall, nz, nzt, K, nv, &zgs);
            em_calls(g, PASS_H, "0, 0, w", "    ");
        }
        em(g, "    for (unsigned long j = 0; j < %zuUL; j++)\n        out[j] = w[%s_oval[j]];\n"
              "    return br;\n}\n\n", pl->nw, P);
    }
    em(g, "int %s_sparse(const %s_real *x, const %s_real *wt, %s_real *vals, %s_real *w)\n{\n"
          "    const int br = %s_fwd(x, w);\n    (void)wt;\n", P, P, P, P, P, P);
    sp_zero(g, sp, zall, nz, nzt, K, nv, &zgs);
    if (sp->hessian) {
        em(g, "    for (unsigned long j = 0; j < %zuUL; j++)\n"
              "        w[%s_wslot_at(j)] += wt ? wt[j] : 1;\n", pl->nw, P);
        em_calls(g, PASS_H, "0, 0, w", "    ");
    }
    if (sp->nnz)
        em(g, "    for (unsigned long q = 0; q < %zuUL; q++)\n        vals[q] = w[%s_rec_at(q)];\n",
           sp->nnz, P);
    else
        em(g, "    (void)vals;\n");
    em(g, "    return br;\n}\n\n");
    em(g, "void %s_sparse_pattern(int *rows, int *cols)\n{\n"
          "    (void)rows, (void)cols;\n", P);
    if (!sp->nnz) {
        em(g, "}\n");
        return AD_OK;
    }
    em(g, "    for (unsigned long r = 0; r < %zuUL; r++)\n"
          "        for (unsigned long q = %s_rowptr[r]; q < %s_rowptr[r + 1]; q++) {\n"
          "            if (rows)\n                rows[q] = (int)r;\n"
          "            if (cols)\n                cols[q] = %s_col[q];\n        }\n}\n",
       sp->nrows, P, P, P);
    return AD_OK;
}

static int em_sparse_source(cg *g, const sp_plan *pl, const char *header_name)
{
    size_t nodes = 0;
    for (uint32_t id = 1; id < g->len; id++)
        nodes += emits(g, id, PASS_F);
    em(g, "/* Generated by autodiff %s (ad_codegen_sparse): %s, the sparse %s's values,\n"
          " * %zu nodes computed, %zu colours, %s.\n"
          " * Do not edit; regenerate from the tape. Depends only on <math.h>; no\n"
          " * allocation; no static mutable state: reentrant with one work array per\n"
          " * thread. */\n", AD_VERSION_STRING, g->P, pl->sp->hessian ? "Hessian" : "Jacobian",
       nodes, pl->sp->ncolors, g->fl ? "float" : "double");
    if (header_name)
        em(g, "#include \"%s\"\n", header_name);
    em(g, "#include <math.h>\n\n");
    em_typedef(g);
    em_sparse_decls(g, pl);
    em(g, "\n/* the formulas' helpers (autodiff's scalar_ops.h) */\n");
    em_helpers(g);
    em_ew_helpers(g);
    em_lin_helpers(g);
    em(g, "\n#if defined(__GNUC__)\n#define %s_CHUNK static __attribute__((noinline))\n#else\n"
          "#define %s_CHUNK static\n#endif\n\n", g->P, g->P);
    const int st = em_consts(g);
    if (st != AD_OK)
        return st;
    /* the passes (none without a statement: every output a constant) */
    size_t nf = 0, nd = 0;
    for (uint32_t id = 1; id < g->len; id++)
        nf += emits(g, id, PASS_F), nd += emits(g, id, PASS_T);
    g->K = pl->K;
    /* a Hessian's reverse pass first: the runs it recomputes (sp_fuse) are
     * not written in the forward pass */
    if (nd && pl->sp->hessian)
        em_pass(g, PASS_H);
    g->ft = true; /* one pass of values and tangents: a value is still in a
                     register when its tangents need it (sin and cos of one
                     operand become one sincos) */
    if (nf)
        em_pass(g, PASS_F);
    g->ft = false;
    g->K = 1;
    return em_sparse_api(g, pl);
}

int ad_codegen_sparse(const ad_sparse *sp, const ad_codegen_opts *opts, FILE *src, FILE *hdr)
{
    static const char who[] = "codegen_sparse";
    if (!sp)
        return AD_EMISUSE;
    ad_tape *t = sp->t;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (!opts || !src)
        return ad__fail_call(t, AD_EMISUSE, "%s: %s", who,
                             !opts ? "opts is NULL" : "the source stream is NULL");
    if (!is_ident(opts->prefix))
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the prefix '%.64s' is not a C identifier (a letter, then letters, "
                             "digits or '_'; at most 64)",
                             who, opts->prefix ? opts->prefix : "(null)");
    if (opts->what & ~AD_CODEGEN_FORWARD)
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: what may hold AD_CODEGEN_FORWARD only (0x%x asked); the other "
                             "functions of one output come from ad_codegen",
                             who, opts->what);
    if (t->generation != sp->generation || t->len != sp->len || t->next_ext != sp->next_ext)
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the tape was reset or recorded on since this pattern was made "
                             "(%zu nodes then, %zu now); make it again",
                             who, sp->len - 1, t->len - 1);
    cg g;
    memset(&g, 0, sizeof g);
    g.t = t;
    g.P = opts->prefix;
    g.sparse = true;
    g.nin = sp->nin;
    g.nouts = sp->nout;
    g.outs = sp->out_id;
    uint32_t maxid = 0;
    for (int k = 0; k < sp->nout; k++)
        g.out = sp->out_id[k] > g.out ? sp->out_id[k] : g.out;
    maxid = g.out;
    ad_node *in = ad__alloc(&t->mem, (size_t)sp->nin * sizeof *in);
    if (!in)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    for (int k = 0; k < sp->nin; k++) {
        in[k] = ad__handle(t, sp->in_id[k]);
        maxid = sp->in_id[k] > maxid ? sp->in_id[k] : maxid;
    }
    g.in = in;
    g.len = (size_t)maxid + 1;
    g.what = sp->hessian ? AD_CODEGEN_HVP : AD_CODEGEN_JVP;
    g.fl = opts->use_float != 0;
    g.max_stmts = opts->max_stmts ? opts->max_stmts : 50;
    g.ngd = ad__guards_count(t);
    g.in_w = true;
    g.K = 1;
    for (size_t i = 0; i < CG_NEW; i++)
        g.ew[ew_texts[i].code] = &ew_texts[i];
    g.n = ad__alloc(&t->mem, g.len * sizeof *g.n);
    if (!g.n) {
        ad__free(&t->mem, in, (size_t)sp->nin * sizeof *in);
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for %zu nodes", who, g.len);
    }
    int st = analyse(&g);
    sp_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.sp = sp;
    pl.K = sp->ncolors ? sp->ncolors : 1;
    pl.fwd = (opts->what & AD_CODEGEN_FORWARD) || opts->what == 0;
    for (int k = 0; k < sp->nout; k++) {
        const cgnode *o = &g.n[sp->out_id[k]];
        pl.nw += nsize(o);
        if (st == AD_OK && !(o->flags & F_ACT))
            pl.nconst += nsize(o);
    }
    if (st == AD_OK) {
        /* the outputs' slots last, in order: the recovery then reads the
         * rows' tangents (and the weights go) in one sweep each, not one
         * cache line per row (the slots of a run's blocks still advance by
         * one step: runs are found as before) */
        unsigned char *isout = ad__alloc(&t->mem, g.len);
        if (isout) {
            memset(isout, 0, g.len);
            for (int k = 0; k < sp->nout; k++)
                isout[sp->out_id[k]] = 1;
            size_t off = 0;
            for (int pass = 0; pass < 2; pass++)
                for (uint32_t id = 1; id < g.len; id++) {
                    cgnode *x = &g.n[id];
                    if ((x->flags & (F_ACT | F_NEED)) == (F_ACT | F_NEED) && isout[id] == pass) {
                        x->off = off;
                        off += nsize(x);
                    }
                }
            ad__free(&t->mem, isout, g.len);
        }
        /* the regions: values, [adjoints,] K tangents, [K adjoint tangents,]
         * zeros, constant outputs' values, a sink for their weights */
        const size_t nv = g.nv;
        const double need = (double)nv * (3.0 + 2.0 * (double)pl.K) + (double)g.zsize
                            + (double)pl.nconst + 1.0;
        if (need > 4294967296.0) {
            st = ad__fail_call(t, AD_ELIMIT, "%s: the work array would be %.0f reals (> 2^32)",
                               who, need);
        } else {
            g.gb = nv;
            g.tb = sp->hessian ? 2 * nv : nv;
            g.gtb = g.tb + pl.K * nv;
            g.dsb = sp->hessian ? g.gtb + pl.K * nv : 0; /* kept derivatives */
            g.zb = sp->hessian ? g.dsb + nv : g.gtb;
            pl.cbase = g.zb + g.zsize;
            pl.sink = pl.cbase + pl.nconst;
            g.ws = lin_layout(&g, pl.sink + 1, true);
            g.ts = nv;
            snprintf(g.dsfx, sizeof g.dsfx, " + k * %zuUL", nv);
            if (sp->hessian) {
                sp_mark_notan(&g);
                sp_mark_za(&g);
            }
            { /* runs keep what only their block reads in locals: a Jacobian's
                 values and tangents, a Hessian's adjoints */
                g.maxuse = ad__alloc(&t->mem, g.len * sizeof *g.maxuse);
                g.lj = ad__alloc(&t->mem, g.len * sizeof *g.lj);
                if (sp->hessian)
                    g.hl = ad__alloc(&t->mem, g.len);
                if (g.maxuse && g.lj && (g.hl || !sp->hessian)) {
                    if (g.hl)
                        memset(g.hl, 0, g.len);
                    memset(g.maxuse, 0, g.len * sizeof *g.maxuse);
                    memset(g.lj, 0, g.len * sizeof *g.lj);
                    for (uint32_t id = 1; id < g.len; id++)
                        for (int k = 0; k < g.n[id].nin && emits(&g, id, PASS_F); k++)
                            g.maxuse[g.n[id].in[k]] = id;
                    if (g.hl) { /* the recomputed runs (sp_fuse) */
                        g.lr = ad__alloc(&t->mem, g.len * sizeof *g.lr);
                        g.fu = g.lr ? ad__alloc(&t->mem, g.len * sizeof *g.fu) : NULL;
                        g.fz = g.fu ? ad__alloc(&t->mem, g.len) : NULL;
                        if (g.fz) {
                            memcpy(g.lr, g.maxuse, g.len * sizeof *g.lr);
                            memset(g.fu, 0, g.len * sizeof *g.fu);
                            memset(g.fz, 0, g.len);
                        } else { /* all three or none: no recomputed runs */
                            if (g.fu)
                                ad__free(&t->mem, g.fu, g.len * sizeof *g.fu);
                            if (g.lr)
                                ad__free(&t->mem, g.lr, g.len * sizeof *g.lr);
                            g.fu = NULL;
                            g.lr = NULL;
                        }
                    }
                    for (int k = 0; k < sp->nout; k++)
                        g.maxuse[sp->out_id[k]] = UINT32_MAX;
                } else {
                    if (g.maxuse)
                        ad__free(&t->mem, g.maxuse, g.len * sizeof *g.maxuse);
                    if (g.lj)
                        ad__free(&t->mem, g.lj, g.len * sizeof *g.lj);
                    if (g.hl)
                        ad__free(&t->mem, g.hl, g.len);
                    g.maxuse = g.lj = NULL;
                    g.hl = NULL;
                }
            }
        }
    }
    bool src_err = false, hdr_err = false;
    if (st == AD_OK && hdr) {
        g.f = hdr;
        em_sparse_header(&g, &pl);
        hdr_err = g.err || fflush(hdr) != 0 || ferror(hdr);
        if (g.err == 2)
            st = AD_ENOMEM;
        g.err = 0;
    }
    if (st == AD_OK && !hdr_err) {
        g.f = src;
        st = em_sparse_source(&g, &pl, opts->header_name);
        src_err = g.err || fflush(src) != 0 || ferror(src);
        if (st == AD_OK && g.err == 2)
            st = AD_ENOMEM;
    }
    if (g.maxuse)
        ad__free(&t->mem, g.maxuse, g.len * sizeof *g.maxuse);
    if (g.lj)
        ad__free(&t->mem, g.lj, g.len * sizeof *g.lj);
    if (g.hl)
        ad__free(&t->mem, g.hl, g.len);
    if (g.za)
        ad__free(&t->mem, g.za, g.len);
    if (g.fz)
        ad__free(&t->mem, g.fz, g.len);
    if (g.fu)
        ad__free(&t->mem, g.fu, g.len * sizeof *g.fu);
    if (g.lr)
        ad__free(&t->mem, g.lr, g.len * sizeof *g.lr);
    ad__free(&t->mem, g.n, g.len * sizeof *g.n);
    ad__free(&t->mem, in, (size_t)sp->nin * sizeof *in);
    if (st == AD_ENOMEM && !hdr_err && !src_err)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    if (st == AD_ENOMEM)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for a line of output", who);
    if (st != AD_OK)
        return st;
    if (hdr_err || src_err)
        return ad__fail_call(t, AD_EIO, "%s: write error on the %s stream", who,
                             hdr_err ? "header" : "source");
    return AD_OK;
}
