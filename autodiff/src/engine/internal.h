/*
 * internal.h -- the tape's data structures, shared by the library sources.
 *
 * Node layout (24 bytes, see docs/design.md):
 *
 *   h : op (6 bits) | EXT (1) | GRAD (1) | b (28 bits) | a (28 bits, on top)
 *   v : the value, for an inline scalar node; unused for an EXT node
 *   g : the adjoint, for an inline scalar node
 *
 * The op field is the op of an inline node, AD_OP_LEAF for a leaf, and
 * AD__OP_EXT for every other EXT node, whose op code is in its record: the
 * header needs room only for the ops that have an inline scalar form.
 *
 * An inline node is a scalar whose inputs (a, b) are inline too; its value
 * and adjoint live in the node, so a long chain of scalar ops touches one
 * array. Every other node is EXT: field a indexes an ad__ext record that
 * holds the descriptor, the operand ids and the node's ad_call (its value
 * and adjoint in the data arena, shape, operand views, op constant). For
 * an inline op with a constant (scale, add_const, pow_const), b indexes
 * the tape's constant table instead of a second operand.
 */
#ifndef AD_INTERNAL_H
#define AD_INTERNAL_H

#include "autodiff/autodiff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Kernels on the hot paths must be inlined into the loops that call them. */
#if defined(__GNUC__)
#define AD__INLINE static inline __attribute__((always_inline))
#else
#define AD__INLINE static inline
#endif

/* Tells the compiler a switch covers every value that can occur, so it
 * drops the range test in front of the jump table. */
#if defined(__GNUC__)
#define AD__UNREACHABLE() __builtin_unreachable()
#else
#define AD__UNREACHABLE() ((void)0)
#endif

#if defined(__GNUC__)
#define AD__COLD __attribute__((noinline, cold))
#else
#define AD__COLD
#endif

/* ---- node header bits ---- */
#define AD__OP_BITS 6
#define AD__OP_MASK ((uint64_t)((1u << AD__OP_BITS) - 1))
#define AD__EXT ((uint64_t)1 << 6)
#define AD__GRAD ((uint64_t)1 << 7)
#define AD__IDX_BITS 28
#define AD__IDX_MASK ((uint64_t)((1u << AD__IDX_BITS) - 1))
#define AD__MAX_NODES ((size_t)AD__IDX_MASK) /* ids 1 .. 2^28-2 */

/* ---- built-in op codes ---- */
typedef enum ad__opcode {
    AD_OP_LEAF = 0,
    AD_OP_ADD, AD_OP_SUB, AD_OP_MUL, AD_OP_DIV,
    AD_OP_NEG, AD_OP_SCALE, AD_OP_ADDC, AD_OP_SQUARE, AD_OP_SQRT,
    AD_OP_EXP, AD_OP_LOG, AD_OP_TANH, AD_OP_SIGMOID, AD_OP_RELU,
    AD_OP_ABS, AD_OP_POWC, AD_OP_STEP, AD_OP_SIGN,
    /* elementwise math */
    AD_OP_SIN, AD_OP_COS, AD_OP_TAN, AD_OP_ASIN, AD_OP_ACOS, AD_OP_ATAN,
    AD_OP_SINH, AD_OP_COSH, AD_OP_ASINH, AD_OP_ACOSH, AD_OP_ATANH,
    AD_OP_LOG1P, AD_OP_EXPM1, AD_OP_LOG2, AD_OP_LOG10, AD_OP_ERF, AD_OP_ERFC,
    AD_OP_SOFTPLUS, AD_OP_GELU, AD_OP_ELU, AD_OP_LEAKY_RELU,
    AD_OP_FLOOR, AD_OP_CEIL, AD_OP_ROUND, AD_OP_CLAMP_MIN, AD_OP_CLAMP_MAX,
    AD_OP_POW, AD_OP_ATAN2, AD_OP_HYPOT, AD_OP_MIN, AD_OP_MAX, /* 31 codes: 19..49 */
    /* comparisons */
    AD_OP_LT, AD_OP_LE, AD_OP_GT, AD_OP_GE, AD_OP_EQ, AD_OP_NE, /* contiguous: ad__is_compare */
    AD__INLINE_END, /* ops with an inline scalar form come before this */
    AD_OP_SUM = AD__INLINE_END, AD_OP_MEAN, AD_OP_DOT,
    AD_OP_MATVEC, AD_OP_MATVEC_T, AD_OP_MATMUL, AD_OP_MATMUL_NT,
    AD_OP_OUTER, AD_OP_TRANSPOSE,
    AD_OP_SOFTMAX_XENT, AD_OP_AFFINE, AD_OP_LOGSUMEXP,
    /* select (the comparisons above are its replay guards) */
    AD_OP_SELECT,
    /* structure */
    AD_OP_RESHAPE, AD_OP_SLICE, AD_OP_SLICE_ADD, AD_OP_TAKE, AD_OP_INDEX_ADD, AD_OP_CONCAT,
    /* reductions along an axis */
    AD_OP_SUM_AXIS, AD_OP_MEAN_AXIS, AD_OP_MAX_AXIS, AD_OP_MIN_AXIS, AD_OP_MAX_MASK,
    AD_OP_SOFTMAX, AD_OP_LOG_SOFTMAX, AD_OP_NORM,
    /* linear algebra */
    AD_OP_SOLVE, AD_OP_SOLVE_SPD, AD_OP_LOGDET, AD_OP_TRACE,
    AD_OP_COUNT
} ad__opcode;

/* The code of every EXT node whose descriptor is the caller's. */
#define AD_OP_CUSTOM ((unsigned)AD_OP_COUNT)

/* The header's op field holds an inline node's op, or AD_OP_LEAF, or
 * AD__OP_EXT for every EXT op node, whose code is in its record (ad__ext.op):
 * only ops with an inline form need a code that fits the header. */
#define AD__OP_EXT ((unsigned)((1u << AD__OP_BITS) - 1))
_Static_assert(AD__INLINE_END <= AD__OP_EXT, "inline op codes must fit the node header");
_Static_assert(AD_OP_CUSTOM <= 0xFFFFu, "op codes must fit ad__ext.op");

typedef struct ad__node {
    uint64_t h;
    double v;
    double g;
} ad__node;

_Static_assert(sizeof(ad__node) == 24, "a node is 24 bytes");

/* An EXT node's record. Its ad_call is built once, at recording: node
 * chunks and arena blocks never move, so the operand views stay valid, and
 * replay and the sweep call forward/vjp on it without re-binding. */
typedef struct ad__ext {
    const ad_opdef *def;
    ad_call call;                   /* out: this node (value, adjoint or NULL,
                                       shape); in = args; c; ud = def->ud  */
    ad_tensor args[AD_MAX_ARITY];   /* the operands as the op sees them    */
    uint32_t in[AD_MAX_ARITY];      /* the operands' node ids              */
    struct ad__ext *src[AD_MAX_ARITY]; /* each operand's record when it is an
                                       EXT node that needs a gradient, else
                                       NULL: the sweep's per-operand work */
    uint8_t dup;                    /* operand slots naming a node that
                                       another slot names too (dot(y, y)) */
    uint32_t node;                  /* the node this record belongs to     */
    uint16_t op;                    /* its op code (AD_OP_CUSTOM: def's)   */
    uint8_t reached;                /* set during a sweep when an adjoint arrives */
    uint8_t view;                   /* value is caller memory (ad_param)   */
    uint8_t caller_grad;            /* adjoint is caller memory (ad_param) */
    uint8_t checks;                 /* its op reports failures after forward
                                       (ad__opstate.check): replay asks */
    uint8_t hook;                   /* AD__HK_* (hooks.c); 0 in workspaces */
} ad__ext;

/* ---- gradient-ready hooks (hooks.c) ----
 * Flags on the EXT records of a tape with hooks, set when the hooks are
 * planned (the first sweep after a hook was set or the tape grew). */
#define AD__HK_OWN 1u   /* a parameter with an update hook: its gradient is
                           this sweep's alone (assigned) and scratch      */
#define AD__HK_FIRE 2u  /* some parameter's gradient is complete once this
                           record's vjp has run                            */
#define AD__HK_FUSED 4u /* this record's vjp applies an operand's update
                           row by row (ad__op.vjp_update)                  */

/* A fused update for one operand of a vjp: fn(ud, offset, w, g, n) as
 * ad_grad_hook.update; scratch has room for four rows of the operand. */
typedef struct ad__upd {
    void (*fn)(void *ud, size_t offset, double *value, const double *grad, size_t n);
    void (*scaled)(void *ud, size_t offset, double *value, double a, const double *x, size_t n);
    void *ud;
    double *scratch;
} ad__upd;

typedef struct ad__hooks ad__hooks;

/* ---- memory ---- */

typedef struct ad__mem {
    ad_alloc_fn fn;
    void *ud;
    size_t held;                /* bytes currently allocated */
} ad__mem;

void *ad__alloc(ad__mem *m, size_t n);
void *ad__realloc(ad__mem *m, void *p, size_t osize, size_t nsize);
void ad__free(ad__mem *m, void *p, size_t n);
void *ad__default_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Fixed-size records in chunks that never move: index i lives in
 * chunk[i >> shift] at (i & mask). */
typedef struct ad__pool {
    void **chunk;
    size_t nchunks;             /* chunks allocated        */
    size_t cap_chunks;          /* room in the chunk table */
    size_t elem;                /* bytes per record        */
    unsigned shift;
} ad__pool;

#define AD__NODE_SHIFT 13u
#define AD__EXT_SHIFT 8u

/* Makes room for index i (allocating a chunk if needed). 0 or AD_ENOMEM. */
int ad__pool_reserve(ad__pool *p, ad__mem *m, size_t i);
void ad__pool_free(ad__pool *p, ad__mem *m);

/* A bump allocator for tensor data in blocks; reset rewinds and, when the
 * last recording needed several blocks, merges them into one. */
typedef struct ad__block {
    struct ad__block *next;
    size_t size;                /* usable bytes after the header */
    size_t used;
} ad__block;

typedef struct ad__arena {
    ad__block *head;
    ad__block *cur;
} ad__arena;

double *ad__arena_alloc(ad__arena *a, ad__mem *m, size_t ndoubles);
void ad__arena_reset(ad__arena *a, ad__mem *m);
void ad__arena_free(ad__arena *a, ad__mem *m);

/* ---- the tape ---- */

/* What the sweeps keep between calls, per set of adjoints (the tape's own,
 * or a workspace's). */
typedef struct ad__sweepstate {
    bool adj_dirty;             /* adjoints hold a previous sweep   */
    bool grads_checked;         /* grads_shared is known for the
                                   ad_params recorded so far        */
    bool grads_shared;          /* two ad_param gradient buffers
                                   overlap (tied weights)           */
} ad__sweepstate;

/* One evaluation context: the nodes and EXT records a replay or a sweep
 * reads and writes. A tape evaluates its own (ad__tape_eval); a workspace
 * its private copies (workspace.c). Built per call: a few stores. */
typedef struct ad__eval {
    void *const *nodes;         /* node chunk table                 */
    void *const *exts;          /* EXT record chunk table           */
    const double *consts;       /* op constants of inline nodes     */
    size_t len, next_ext, ext_grads;
    ad__sweepstate *ss;
    ad__arena *arena;           /* scratch for the overlap check    */
    ad__mem *mem;
    ad__hooks *hooks;           /* the tape's, planned; NULL: none  */
} ad__eval;

/* Hooks (hooks.c). free/reset: with the tape. prepare: before a sweep of
 * the tape -- plans the hooks if needed and sets e->hooks when there are
 * any; AD_OK or a failed call's status (message set). fire: the hooks
 * whose gradient is complete after node's vjp (node 0: every hook not yet
 * fired, at the sweep's end). upd: the fused updates of record x, into
 * upd[] (NULL where none), marked applied. */
void ad__hooks_free(ad_tape *t);
void ad__hooks_reset(ad_tape *t);
int ad__hooks_prepare(ad_tape *t, ad__eval *e, const char *who);
void ad__hooks_fire(const ad__eval *e, uint32_t node, bool assign, size_t *nreached);
void ad__hooks_upd(const ad__eval *e, const ad__ext *x, const ad__upd **upd, ad__upd *store);

/* Frees the tape's tangent storage (modes.c). */
void ad__modes_free(ad_tape *t);

/* Replays every node. Returns NULL, or the first EXT record whose op's
 * check reported a failure (ad__opstate.check; the replay still ran to the end,
 * the failed node's value is NaN): the caller reports it with
 * ad__eval_failure. */
const ad__ext *ad__replay_eval(const ad__eval *e);
/* Sweeps from node out (checked by the caller) with seed (NULL: 1 for a
 * scalar). AD_OK, or AD_ENOMEM when the overlap check found no scratch
 * (nothing was changed then). */
int ad__sweep_eval(const ad__eval *e, uint32_t out, const double *seed, bool assign);
/* Finds whether e's ad_param gradient buffers overlap (ss->grads_shared);
 * AD_OK or AD_ENOMEM. */
int ad__check_shared(const ad__eval *e);
/* The ad_param gradient buffers of the caller's in e (for messages). */
size_t ad__count_caller_grads(const ad__eval *e);

typedef struct ad__name ad__name;
typedef struct ad__modes ad__modes; /* modes.c: tangent storage */

#define AD__MSG_CAP 256

struct ad_tape {
    ad__mem mem;
    const ad_registry *registry;
    ad__pool nodes;
    ad__pool exts;
    size_t len;                 /* nodes recorded, including node 0 */
    size_t rec_limit;           /* the recording fast path appends while
                                   len < rec_limit: the room in the allocated
                                   chunks (never beyond the id limit), or 0
                                   once the tape has an error, so the fast
                                   path tests neither room nor status    */
    uint64_t hbase;             /* ((uint64_t)tag << 32) + 1, tag being the
                                   value stamped on every handle: a handle
                                   h is a live node of this tape exactly
                                   when ad__hbits(h) - hbase < len - 1   */
    size_t next_ext;            /* ext records in use               */
    size_t ext_grads;           /* of them, those with a gradient
                                   buffer: when a sweep reached them
                                   all, none is left to zero        */
    double *consts;             /* op constants of inline nodes     */
    size_t nconsts, cap_consts;
    ad__arena arena;
    ad__name *names;            /* uthash: node id -> name          */
    uint32_t generation;
    ad__sweepstate ss;
    ad__modes *modes;           /* forward mode and second order, made
                                   on first use (modes.c)           */
    ad__hooks *hooks;           /* gradient-ready hooks (hooks.c), made
                                   by the first ad_set_grad_hook     */
    struct ad__guards *guards;  /* the recorded comparisons and
                                   their outcomes, made on the first
                                   comparison (guards.c)            */
    const struct ad__kernels *kern; /* dense kernels of the ops recorded
                                   from now on (dense.h)            */
    int status;                 /* the recording's first error (sticky) */
    int call_status;            /* the last non-recording call's result */
    char msg[AD__MSG_CAP];      /* the reason for status, or else for
                                   call_status                      */
};

/* Node i through the chunk table ch (the hot loops keep ch in a register). */
static inline ad__node *ad__Nc(void *const *ch, uint32_t i)
{
    return (ad__node *)ch[i >> AD__NODE_SHIFT] + (i & ((1u << AD__NODE_SHIFT) - 1));
}
static inline ad__node *ad__N(const ad_tape *t, uint32_t i) { return ad__Nc(t->nodes.chunk, i); }
static inline ad__ext *ad__Xc(void *const *ch, uint32_t i)
{
    return (ad__ext *)ch[i >> AD__EXT_SHIFT] + (i & ((1u << AD__EXT_SHIFT) - 1));
}
static inline ad__ext *ad__X(const ad_tape *t, uint32_t i) { return ad__Xc(t->exts.chunk, i); }

/* The tape's own evaluation context. */
static inline ad__eval ad__tape_eval(ad_tape *t)
{
    ad__eval e = {t->nodes.chunk, t->exts.chunk, t->consts, t->len, t->next_ext, t->ext_grads,
                  &t->ss, &t->arena, &t->mem, NULL};
    return e;
}
static inline unsigned ad__opc(uint64_t h) { return (unsigned)(h & AD__OP_MASK); }
/* a sits on top so that reading it is one shift. */
static inline uint32_t ad__a(uint64_t h) { return (uint32_t)(h >> 36); }
static inline uint32_t ad__b(uint64_t h) { return (uint32_t)((h >> 8) & AD__IDX_MASK); }
static inline uint64_t ad__hdr(unsigned op, uint64_t flags, uint32_t a, uint32_t b)
{
    return (uint64_t)op | flags | ((uint64_t)b << 8) | ((uint64_t)a << 36);
}

/* The tag stamped on this tape's handles (see hbase). */
static inline uint32_t ad__tag(const ad_tape *t) { return (uint32_t)(t->hbase >> 32); }

/* A handle as one 64-bit word (tag on top), and back. */
static inline uint64_t ad__hbits(ad_node n) { return (uint64_t)n.tag_ << 32 | n.id_; }
static inline ad_node ad__handle(const ad_tape *t, uint32_t id)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* One word, so the compiler returns it in one register. */
    const uint64_t u = (t->hbase - 1) | id;
    ad_node n;
    memcpy(&n, &u, sizeof n);
#else
    ad_node n = {id, ad__tag(t)};
#endif
    return n;
}

/* True when the last stored op constant is bit-for-bit c (so -0.0 and 0.0
 * stay apart): a constant repeated in a loop is stored once. */
static inline bool ad__const_repeats(const ad_tape *t, double c)
{
    if (t->nconsts == 0)
        return false;
    uint64_t x, y;
    memcpy(&x, &t->consts[t->nconsts - 1], sizeof x);
    memcpy(&y, &c, sizeof y);
    return x == y;
}

/* ---- errors ---- */

/* Records the first error (sticky) with a printf-style message; returns
 * the status. Never allocates. */
int ad__fail(ad_tape *t, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The same for a call that records nothing (a sweep, a replay,
 * set_value, a driver): the error is returned and its message kept in the
 * tape until the next such call, but the recording stays usable, so the
 * status is not set. When the recording has already failed, returns its
 * status and keeps its message. Never allocates. */
int ad__fail_call(ad_tape *t, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Starts a non-recording call: clears the previous call's error. Returns
 * the recording's status (a call on a failed recording does nothing). */
static inline int ad__begin_call(ad_tape *t)
{
    t->call_status = AD_OK;
    return t->status;
}

/* Writes "a scalar", "a vector of length 5" or "3x4" into buf. */
const char *ad__shape_str(ad_shape s, char *buf, size_t cap);

/* Looks up a handle; NULL and an error on the tape when it is nil, stale
 * or foreign. who names the op and operand for the message. */
ad__node *ad__check(ad_tape *t, ad_node n, const char *op, int operand);
/* The same for a non-recording call (ad__fail_call). */
ad__node *ad__check_call(ad_tape *t, ad_node n, const char *op, int operand);
/* The same without reporting (for read-only accessors). */
ad__node *ad__peek(const ad_tape *t, ad_node n);

/* The ad_tensor view of node i (value, adjoint or NULL, shape). */
void ad__view(const ad_tape *t, uint32_t i, ad_tensor *out);

/* ---- the op table ---- */

typedef struct ad__op {
    ad_opdef def;               /* the public part: what a custom op has   */
    bool scalar_form;           /* has inline scalar kernels (scalar_ops.h) */
    bool takes_const;           /* the node constant c is meaningful        */
    /* The vjp the sweep calls. Bit k of fresh set: in[k].grad holds no
     * gradient yet in this sweep (stale numbers, or a caller buffer the
     * sweep overwrites), so the op must write it (=) rather than add to it;
     * an op that would rather add zeroes it first (ad__zero_fresh). The
     * sweep never sets a bit for an operand that appears twice. def.vjp is
     * vjp_to(call, 0). */
    void (*vjp_to)(const ad_call *call, unsigned fresh);
    /* Forward mode, one direction: tout = J tin, written (=). tin[i] is
     * operand i's tangent, or NULL when it is zero. scratch holds
     * AD__JVP_SCRATCH(call) doubles. NULL: the op is linear and its
     * forward applied to the tangents is its JVP. */
    void (*jvp)(const ad_call *call, const double *const *tin, double *tout, double *scratch);
    /* The second-order term of a forward-over-reverse sweep: adds into
     * tg[i] (operand i's adjoint tangent; NULL: not wanted) the derivative
     * of the vjp with seed out.grad along the tangents tin (never NULL
     * here: zeros stand in). order2 says how it is obtained. */
    unsigned char order2;
    void (*so)(const ad_call *call, const double *const *tin, double *const *tg);
    /* The vjp as recorded ops (the gradient as a tape, grad_graph.c):
     * given the operand nodes in[], the node out, its constant c and the
     * adjoint node g (out's shape), records each operand's contribution
     * into dx[k] -- in the operand's shape, or in out's shape for an
     * elementwise operand that was broadcast (the caller sums it back) --
     * or ad_nil() for none. */
    void (*rvjp)(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g, ad_node *dx);
} ad__op;

/* The vjp_to of op with some operands' gradients consumed by a fused
 * update instead of written: upd[k] non-NULL for those (ad_set_grad_hook).
 * It computes every product that needs operand k's old values before it
 * calls upd[k]->fn on a row of them. NULL: op has no fused form
 * (ops_linalg.c: matvec's W, affine's W and b). */
/* Rows of dW a batch affine's fused update computes per block (its
 * scratch: this many rows of W). */
#define AD__UPD_BATCH_ROWS ((size_t)32)
typedef void (*ad__vjp_update_fn)(const ad_call *call, unsigned fresh, const ad__upd *const *upd);
ad__vjp_update_fn ad__vjp_update(unsigned op);

/* The rules of a built-in that keeps state in its node between calls
 * (solve and logdet keep their factorization), kept apart from ad__op so
 * that the many ops that need none say nothing:
 *   aux:   doubles of per-node storage that persists between the op's
 *          calls on one node (a factorization made by forward and reused
 *          by vjp, jvp and so, and their scratch), for these operand and
 *          output shapes; NULL for none. It is allocated with the node's
 *          value, right after it, so every call finds it as ad__aux(call)
 *          (every caller passes the node's own out.val, and out.val is the
 *          only pointer the rule relies on); ad_workspace_new copies it
 *          with the value, so each workspace has its own. An op with aux
 *          must have its own jvp (the linear/bilinear default runs forward
 *          into scratch, where there is no aux).
 *   check: called after every forward of the node (recording, ad_replay,
 *          a workspace's replay, the forward sweep of the modes): AD_OK,
 *          or the status of a failure forward found and left in the node
 *          (a singular matrix: the value is then NaN, all of it), with the
 *          reason written into msg (cap bytes; msg NULL: only the status).
 *          At recording the node is dropped and the error is sticky; at
 *          an evaluation the call reports it (not sticky). NULL: cannot
 *          fail. */
typedef struct ad__opstate {
    size_t (*aux)(const ad_shape *in, int nin, ad_shape out);
    int (*check)(const ad_call *call, char *msg, size_t cap);
} ad__opstate;

/* Indexed by op code (op_table.c): NULL for an op that needs neither. */
extern const ad__opstate *const ad__opstates[AD_OP_COUNT];

/* The node's per-node storage (ad__opstate.aux). */
static inline double *ad__aux(const ad_call *k)
{
    return k->out.val + ad_shape_size(k->out.shape);
}
/* Its size in doubles for an EXT record (0 for leaves and custom ops). */
size_t ad__aux_size(const ad__ext *x);
/* The message and status of a node whose check failed at an evaluation
 * (not at recording): "solve: A is singular (...) at node 7; its value is
 * NaN". */
int ad__eval_failure(const ad__ext *x, char *msg, size_t cap);

/* A constant of shape s filled with v, recorded on t (grad_graph.c). */
ad_node ad__fill(ad_tape *t, ad_shape s, double v);

/* The public descriptor's mode fields of a built-in: its rules are the
 * ad__op's own (jvp, order2, so). */
#define AD__NO_MODE_RULES 0, NULL, NULL, 0, NULL, NULL

/* How an op's second-order term is obtained (ad__op.order2). */
enum {
    AD__LINEAR = 0,   /* none: the vjp does not depend on the values     */
    AD__BILINEAR = 1, /* the vjp itself, run at the tangents (matvec...) */
    AD__SO_FN = 2     /* the op's so function                            */
};

/* Scratch doubles a jvp may use: the output and its largest operand. */
#define AD__JVP_SCRATCH_MAX(outsize, maxin) ((outsize) + (maxin))

#define AD__FRESH(fresh, k) ((((fresh) >> (k)) & 1u) != 0)

/* Zeroes in[k].grad for the fresh operands k in mask, so the op can add. */
static inline void ad__zero_fresh(const ad_call *k, unsigned fresh)
{
    for (int i = 0; i < k->nin; i++)
        if (AD__FRESH(fresh, i) && k->in[i].grad)
            memset(k->in[i].grad, 0, ad_shape_size(k->in[i].shape) * sizeof(double));
}

/* Whether the n doubles at a and the m doubles at b share memory: two
 * ad_param gradient buffers may be views of one block. */
static inline bool ad__overlap(const double *a, size_t n, const double *b, size_t m)
{
    const uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + m * sizeof(double) && y < x + n * sizeof(double);
}

/* Defines NAME_vjp (the public, adding form) from NAME_vjp_to. */
#define AD__VJP_ADDING(NAME)                                                                  \
    static void NAME##_vjp(const ad_call *k) { NAME##_vjp_to(k, 0); }

/* One descriptor per built-in op, indexed by op code (op_table.c). */
extern const ad__op *const ad__ops[AD_OP_COUNT];

/* The op code of a descriptor: a built-in's code, or AD_OP_CUSTOM. */
unsigned ad__opcode_of(const ad_opdef *def);

/* Records op with inputs in[0..n) and constant c: checks handles and
 * shapes, chooses the inline or EXT form, computes the value. */
ad_node ad__record(ad_tape *t, unsigned op, const ad_opdef *def,
                   const ad_node *in, int n, double c);

/* Leaf descriptor, shared by all leaves. */
#define ad__leaf_def (ad__op_leaf.def)

/* The descriptors, each defined beside its kernels. */
extern const ad__op ad__op_leaf, ad__op_add, ad__op_sub, ad__op_mul, ad__op_div, ad__op_neg,
    ad__op_scale, ad__op_addc, ad__op_square, ad__op_sqrt, ad__op_exp, ad__op_log, ad__op_tanh,
    ad__op_sigmoid, ad__op_relu, ad__op_abs, ad__op_powc, ad__op_step, ad__op_sign, ad__op_sum, ad__op_mean, ad__op_dot,
    ad__op_matvec, ad__op_matvec_t, ad__op_matmul, ad__op_matmul_nt, ad__op_outer,
    ad__op_transpose, ad__op_softmax_xent, ad__op_affine, ad__op_logsumexp;
extern const ad__op ad__op_sin, ad__op_cos, ad__op_tan, ad__op_asin, ad__op_acos, ad__op_atan,
    ad__op_sinh, ad__op_cosh, ad__op_asinh, ad__op_acosh, ad__op_atanh, ad__op_log1p,
    ad__op_expm1, ad__op_log2, ad__op_log10, ad__op_erf, ad__op_erfc, ad__op_softplus,
    ad__op_gelu, ad__op_elu, ad__op_leaky_relu, ad__op_floor, ad__op_ceil, ad__op_round,
    ad__op_clamp_min, ad__op_clamp_max, ad__op_pow, ad__op_atan2, ad__op_hypot, ad__op_min,
    ad__op_max;
extern const ad__op ad__op_lt, ad__op_le, ad__op_gt, ad__op_ge, ad__op_eq, ad__op_ne,
    ad__op_select;
/* The comparison ops (lt le gt ge eq ne): recorded without GRAD (derivative
 * 0, no adjoint flows through them), each one a replay guard. */
static inline bool ad__is_compare(unsigned op) { return op >= AD_OP_LT && op <= AD_OP_NE; }
/* Replay guards (guards.c). At recording (ad__record): room for one more
 * comparison of n elements (AD_OK, or AD_ENOMEM reported as a recording
 * error naming op), then, once the node is made, its recorded outcomes
 * (v: its value, n elements). */
int ad__guard_reserve(ad_tape *t, const char *op, size_t n);
void ad__guard_push(ad_tape *t, uint32_t id, const double *v, size_t n);
/* At reset (keeps the memory) and free. */
void ad__guards_reset(ad_tape *t);
void ad__guards_free(ad_tape *t);
/* After an evaluation of the tape's values (replay, the modes' forward
 * sweep): AD_OK when every recorded comparison has its recorded outcome,
 * else AD_EBRANCH with the first changed one in tape order named in the
 * call's message (ad__fail_call: not sticky), who naming the call. */
int ad__guards_check(ad_tape *t, const char *who);
/* A workspace's private copy (names included): *out NULL when the tape has
 * no comparison. AD_OK or AD_ENOMEM. */
int ad__guards_copy(const ad_tape *t, ad__mem *m, struct ad__guards **out);
void ad__guards_free_copy(struct ad__guards *g, ad__mem *m);
/* The recorded comparisons, in tape order (code generation): how many,
 * and the i-th one's node and recorded outcomes (one byte, 0 or 1, per
 * element). */
size_t ad__guards_count(const ad_tape *t);
void ad__guard_at(const ad_tape *t, size_t i, uint32_t *node, const unsigned char **rec);
/* The check on a workspace's nodes: AD_OK, or AD_EBRANCH with the message
 * in msg. */
int ad__guards_check_nodes(const struct ad__guards *g, void *const *nodes, void *const *exts,
                           const char *who, char *msg, size_t cap);
/* structure */
extern const ad__op ad__op_reshape, ad__op_slice, ad__op_slice_add, ad__op_take,
    ad__op_index_add, ad__op_concat;
/* reductions along an axis */
extern const ad__op ad__op_sum_axis, ad__op_mean_axis, ad__op_max_axis, ad__op_min_axis,
    ad__op_max_mask, ad__op_softmax, ad__op_log_softmax, ad__op_norm;
extern const ad__op ad__op_solve, ad__op_solve_spd, ad__op_logdet, ad__op_trace;
extern const ad__opstate ad__opstate_solve, ad__opstate_solve_spd, ad__opstate_logdet;

/* Shape-rule helpers shared by the op files: write a reason into msg. */
int ad__shape_fail(char *msg, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- sparsity rules (op_table.c; used by sparse/sparse.c) ----
 * How each built-in's output elements depend on its operands' elements
 * (the Jacobian pattern) and which pairs of operand elements its second
 * derivative couples (the Hessian pattern). Indexed by op code; a code
 * without a rule (AD__SP_MISSING) is reported by the pattern functions,
 * naming the op, and a test walks every built-in. */
enum {
    AD__SP_MISSING = 0,
    AD__SP_LEAF,     /* a leaf: an input's own index, else nothing        */
    AD__SP_ELEMWISE, /* output element e from element e of each operand
                        (broadcast); which operands and which second
                        derivatives are nonzero: the formula line's own
                        strings (d1, d2), "0.0" meaning identically 0     */
    AD__SP_SELECT,   /* select(cond, a, b): elementwise in a and b, linear */
    AD__SP_IDENTITY, /* element e from element e of operand 0 (reshape)   */
    AD__SP_CONCAT,   /* element e from the one element of a or b it copies
                        (concat, and so ad_stack's tree of them)          */
    AD__SP_TRANSPOSE, /* element (i, j) from element (j, i)               */
    AD__SP_LINEAR,   /* every output element from every operand element;
                        no second derivative                              */
    AD__SP_BILINEAR, /* every from every; second derivative couples only
                        operand 0 with operand 1 (products: dot, matvec,
                        matmul, outer, affine)                            */
    AD__SP_DENSE     /* every from every; every pair coupled (softmax,
                        solve, norm, ... and custom ops)                  */
};
typedef struct ad__sprule {
    unsigned char kind;
    const char *d1[2];          /* AD__SP_ELEMWISE: dz/da, dz/db          */
    const char *d2[3];          /* d2z/da2, d2z/dadb, d2z/db2             */
} ad__sprule;
extern const ad__sprule ad__sprules[AD_OP_COUNT];

/* ---- the modes' storage, for the sparse drivers (modes.c) ---- */
/* Lays out K tangents per node for the current recording (no allocation
 * when the storage has room); AD_OK or AD_ENOMEM reported naming who. */
int ad__modes_layout(ad_tape *t, size_t K, const char *who);
/* The same for a caller that seeds every tangent it leaves nonzero and
 * names itself owner: when owner seeded last on this layout, nothing is
 * cleared (*cleared false: the leaves it marked seeded still are).
 * *stamp receives the layout's stamp: pointers into the storage stay
 * valid while it is unchanged. release: owner is gone. */
int ad__modes_claim(ad_tape *t, size_t K, const void *owner, const char *who, size_t *stamp,
                    bool *cleared);
void ad__modes_release(ad_tape *t, const void *owner);
/* AD_OK, or AD_EMISUSE naming the first custom op without the rule a
 * forward (second: and a second-order) sweep needs. */
int ad__modes_rules(ad_tape *t, bool second, const char *who);
/* Node id's K tangents / adjoint tangents, direction-major (direction d
 * of element e at [d * size + e]). */
double *ad__modes_tan(ad_tape *t, uint32_t id);
double *ad__modes_gtan(ad_tape *t, uint32_t id);
/* After writing a leaf's tangents: they may be nonzero. */
void ad__modes_seeded(ad_tape *t, uint32_t id);
/* The forward sweep (values and tangents) and the reverse sweep of
 * forward over reverse seeded on several outputs (seeds[k] NULL: ones). */
int ad__modes_forward(ad_tape *t, const char *who);
void ad__modes_reverse(ad_tape *t, size_t nout, const uint32_t *outs, const double *const *seeds);

#endif /* AD_INTERNAL_H */
