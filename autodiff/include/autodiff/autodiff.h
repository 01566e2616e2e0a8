/*
 * autodiff.h -- reverse-mode automatic differentiation on a tape.
 *
 * A tape (ad_tape) records every op a program applies to scalars, vectors
 * and matrices, in the order executed. One generic reverse sweep
 * (ad_backward) walks the tape backward and calls each node's
 * vector-Jacobian product, so every gradient is derived by the engine.
 *
 * Conventions that hold for every declaration below:
 *  - Values are doubles. A shape is a scalar, a vector (n) or a matrix
 *    (rows x cols, row-major).
 *  - Op functions return an ad_node handle. On any error they return the
 *    nil handle (ad_node_is_nil() is true), record nothing, and store the
 *    error in the tape. The first error is kept ("sticky", like ferror):
 *    every later op on that tape returns nil and does nothing, so a chain
 *    of calls can be checked once with ad_tape_status(). Nodes recorded
 *    before the error stay intact.
 *  - Calls that record nothing -- ad_set_value, ad_replay, the sweeps,
 *    and the drivers and checks built on them -- return a status and, on
 *    failure, leave the reason in ad_tape_errmsg() until the next such
 *    call, but do NOT set the sticky status: a misused sweep (say, on a
 *    vector output) leaves a good recording good. On a tape whose
 *    recording has failed they do nothing and return its status.
 *  - The library never aborts, exits or prints. All memory goes through
 *    the allocator given at creation (default: realloc/free).
 *  - There is no global mutable state. A tape may be used by one thread at
 *    a time; different tapes may be used by different threads at once. A
 *    registry may be shared by several tapes and threads once it is no
 *    longer modified.
 *  - Passing NULL where a tape is expected is harmless: ops return nil,
 *    functions returning a status return AD_EMISUSE.
 */
#ifndef AUTODIFF_AUTODIFF_H
#define AUTODIFF_AUTODIFF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AD_VERSION_MAJOR 1
#define AD_VERSION_MINOR 0
#define AD_VERSION_PATCH 0
#define AD_VERSION_STRING "1.0.0"

/* Symbol visibility: the shared library exports only what is marked AD_API. */
#if defined(AD_STATIC_DEFINE)
#  define AD_API
#elif defined(_WIN32)
#  ifdef AD_BUILDING
#    define AD_API __declspec(dllexport)
#  else
#    define AD_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define AD_API __attribute__((visibility("default")))
#else
#  define AD_API
#endif

/* Runtime version, "MAJOR.MINOR.PATCH"; compare with AD_VERSION_STRING to
 * detect a header/library mismatch. Static string. */
AD_API const char *ad_version(void);

/* ------------------------------------------------------------------ */
/* Status codes                                                        */
/* ------------------------------------------------------------------ */

typedef enum ad_status {
    AD_OK = 0,
    AD_ENOMEM,    /* the allocator returned NULL                          */
    AD_ESHAPE,    /* operand shapes do not fit the op                     */
    AD_EMISUSE,   /* caller bug: NULL, foreign or stale node, bad argument */
    AD_ENOTFOUND, /* no op of that name in the registry                   */
    AD_ELIMIT,    /* a size limit was hit (nodes per tape, tensor size)   */
    AD_EEXIST,    /* a registry already holds an op of that name          */
    AD_ESINGULAR, /* a matrix is singular, or not positive definite, where
                     an op needs it invertible (solve, logdet): the message
                     names the op and the pivot                          */
    AD_EBRANCH,   /* a recorded comparison came out otherwise at this
                     evaluation (replay guards, see ad_replay): every value
                     was computed on the recorded branch; record again  */
    AD_EUNSUPPORTED, /* this CPU or this build lacks what was asked (a
                     kernel variant, see ad_tape_set_kernels)           */
    AD_EIO,       /* writing to a caller's stream failed (ad_codegen)     */
    AD_STATUS_COUNT
} ad_status;

/* A static, never-NULL description of a status code ("out of memory").
 * Unknown codes give "unknown status". */
AD_API const char *ad_strstatus(int status);

/* ------------------------------------------------------------------ */
/* Allocator                                                           */
/* ------------------------------------------------------------------ */

/* One realloc-style hook through which all library memory goes (the same
 * contract as Lua's lua_Alloc):
 *   nsize == 0: free ptr (which may be NULL), return NULL;
 *   otherwise:  resize ptr (NULL: allocate) from osize to nsize bytes and
 *               return the new block, or NULL on failure with ptr intact.
 * osize is the size the library asked for when ptr was allocated (0 when
 * ptr is NULL). Blocks must be aligned for double. ud is passed through. */
typedef void *(*ad_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/* ------------------------------------------------------------------ */
/* Shapes                                                              */
/* ------------------------------------------------------------------ */

/* ndim 0: scalar (rows = cols = 1); ndim 1: vector of length rows
 * (cols = 1); ndim 2: matrix rows x cols, row-major. A plain value type:
 * build it with the helpers below. */
typedef struct ad_shape {
    uint32_t rows;
    uint32_t cols;
    int ndim;
} ad_shape;

static inline ad_shape ad_shape_scalar(void) { ad_shape s = {1, 1, 0}; return s; }
static inline ad_shape ad_shape_vec(uint32_t n) { ad_shape s = {n, 1, 1}; return s; }
static inline ad_shape ad_shape_mat(uint32_t rows, uint32_t cols)
{ ad_shape s = {rows, cols, 2}; return s; }
/* Number of elements. */
static inline size_t ad_shape_size(ad_shape s) { return (size_t)s.rows * s.cols; }

/* ------------------------------------------------------------------ */
/* Nodes                                                               */
/* ------------------------------------------------------------------ */

/* A handle to one node of one tape: a small value, cheap to copy. It stays
 * valid while the tape grows and across ad_replay(), and becomes stale at
 * ad_tape_reset() or ad_tape_free(). Using a stale node, or a node of
 * another tape, is detected and reported as AD_EMISUSE. The fields are
 * private to the library. */
/* A tape: the recording, its values and adjoints (opaque, see Tapes). */
typedef struct ad_tape ad_tape;

typedef struct ad_node {
    uint32_t id_;
    uint32_t tag_;
} ad_node;

/* The handle returned by a failed op. */
static inline ad_node ad_nil(void) { ad_node n = {0, 0}; return n; }
static inline int ad_node_is_nil(ad_node n) { return n.id_ == 0; }

/* ------------------------------------------------------------------ */
/* Ops as descriptors (built-in and custom)                            */
/* ------------------------------------------------------------------ */

#define AD_MAX_ARITY 4

/* One operand or result as an op sees it. grad is NULL when no gradient
 * flows to this operand (a constant, or nothing downstream needs it). */
typedef struct ad_tensor {
    double *val;
    double *grad;
    ad_shape shape;
} ad_tensor;

/* What an op's forward and vjp receive. forward writes out.val from
 * in[i].val. vjp reads out.grad (and any value) and ADDS into each
 * in[i].grad that is not NULL; it must never assign. */
typedef struct ad_call {
    ad_tensor out;
    const ad_tensor *in;
    int nin;
    double c;       /* the node's constant (scale factor, exponent, ...) */
    void *ud;       /* the descriptor's user data */
} ad_call;

/* An op: name, arity, shape rule, forward, vjp, and optional rules for
 * the derivative modes. Built-in ops are const descriptors of this type;
 * a custom op is one more.
 *   shape:   given the input shapes and the constant, set *out and return
 *            AD_OK, or return AD_ESHAPE after writing a reason naming the
 *            shapes into msg (at most msgcap bytes, NUL-terminated; the
 *            engine prefixes "name: "). NULL: the output has the shape of
 *            in[0].
 *   forward: compute out.val; must not fail.
 *   vjp:     add the vector-Jacobian product into the inputs' grads.
 * The fields after ud are read only when size covers them: set size to
 * sizeof(ad_opdef) when you set any of them. An initializer that stops at
 * ud leaves size 0 and the op simply has no mode rules; later releases add
 * fields after these, read only when size covers them too.
 *   jvp:     forward mode, one direction: write into tout (size of the
 *            output) the Jacobian applied to the operands' tangents tin[i]
 *            (each the size of operand i; zeros when nothing flows, never
 *            NULL). Needed by ad_forward and every driver but reverse-mode
 *            Jacobians. Values are in call->in[i].val and call->out.val.
 *   hvp:     the second-order term of a Hessian-vector product (forward
 *            over reverse): ADD into tg[i] (NULL: skip operand i) the
 *            derivative of your vjp, with seed call->out.grad, along the
 *            tangents tin: sum_j d(J^T g)/d(in_j) . tin[j]. Not needed when
 *            flags says AD_OPDEF_LINEAR (the vjp does not depend on the
 *            values: the term is 0) or AD_OPDEF_BILINEAR (each operand's
 *            vjp is linear in the other operands and independent of its
 *            own, as in a product: the engine runs your vjp at the
 *            tangents).
 *   vjp_ops: the vjp written in tape ops, for ad_gradient_nodes: given the
 *            operand nodes in[], the output node out, the constant c and
 *            the adjoint node g (out's shape), record each operand's
 *            contribution with ad_ functions on t and store it in dx[i]
 *            (dx[i] starts as ad_nil(): leave it for no contribution).
 * The descriptor is referenced, not copied: it must outlive every tape
 * and registry that uses it. */
typedef struct ad_opdef {
    const char *name;
    int arity;   /* 1 .. AD_MAX_ARITY */
    int (*shape)(const ad_shape *in, int nin, double c, ad_shape *out,
                 char *msg, size_t msgcap);
    void (*forward)(const ad_call *call);
    void (*vjp)(const ad_call *call);
    void *ud;
    /* ---- read only when size >= sizeof(ad_opdef) of the header that set them ---- */
    size_t size;
    void (*jvp)(const ad_call *call, const double *const *tin, double *tout);
    void (*hvp)(const ad_call *call, const double *const *tin, double *const *tg);
    unsigned flags; /* AD_OPDEF_LINEAR or AD_OPDEF_BILINEAR, or 0 */
    void (*vjp_ops)(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                    ad_node *dx);
    /* Code generation (autodiff/codegen.h): the external C functions that
     * generated code calls for this op; NULL: ad_codegen refuses the op.
     * Referenced, not copied. */
    const struct ad_codegen_rule *codegen;
} ad_opdef;

#define AD_OPDEF_LINEAR 1u   /* the op is linear: no second-order term   */
#define AD_OPDEF_BILINEAR 2u /* the op is a product: the vjp at the tangents is the term */

/* ------------------------------------------------------------------ */
/* Registry: find ops by name                                          */
/* ------------------------------------------------------------------ */

typedef struct ad_registry ad_registry;

/* A new registry holding every built-in op. alloc NULL: realloc/free.
 * Returns NULL when out of memory. Free with ad_registry_free. */
AD_API ad_registry *ad_registry_new(ad_alloc_fn alloc, void *alloc_ud);
/* Frees the registry (not the descriptors it references). NULL: no-op.
 * No tape created with this registry may be used afterwards. */
AD_API void ad_registry_free(ad_registry *reg);
/* Adds a custom op. def is referenced, not copied (see ad_opdef).
 * Returns AD_OK, AD_EMISUSE (NULL, empty name, arity outside
 * 1..AD_MAX_ARITY, missing forward or vjp), AD_EEXIST (name taken) or
 * AD_ENOMEM; the reason is in ad_registry_errmsg. */
AD_API int ad_registry_add(ad_registry *reg, const ad_opdef *def);
/* The op called name, or NULL. reg NULL: built-in ops only. */
AD_API const ad_opdef *ad_registry_find(const ad_registry *reg, const char *name);
/* Message of the last failed ad_registry_add ("" if none). Owned by reg. */
AD_API const char *ad_registry_errmsg(const ad_registry *reg);

/* The built-in descriptors, for iteration: index 0 .. ad_builtin_count()-1;
 * NULL beyond. Static, never freed. */
AD_API const ad_opdef *ad_builtin_op(size_t index);
AD_API size_t ad_builtin_count(void);

/* ------------------------------------------------------------------ */
/* Tapes                                                               */
/* ------------------------------------------------------------------ */

typedef struct ad_tape_opts {
    ad_alloc_fn alloc;              /* NULL: realloc/free              */
    void *alloc_ud;
    const ad_registry *registry;    /* for ad_apply_named; NULL: built-ins */
} ad_tape_opts;

/* A new, empty tape. opts NULL: defaults. Returns NULL when out of memory.
 * The tape owns all node values and adjoints. */
AD_API ad_tape *ad_tape_new(const ad_tape_opts *opts);
/* Frees the tape and everything it owns. NULL: no-op. */
AD_API void ad_tape_free(ad_tape *t);
/* Drops every node and clears the sticky error, keeping the memory for the
 * next recording (a steady-state loop that records the same computation
 * allocates nothing after its first reset). All handles become stale.
 * Caller-owned parameter buffers are untouched. NULL: no-op. */
AD_API void ad_tape_reset(ad_tape *t);

/* The recording's sticky status: AD_OK, or the first error of a
 * recording call since creation or reset. Errors of calls that record
 * nothing (sweeps, replay, set_value) are returned by those calls and
 * never change it. */
AD_API int ad_tape_status(const ad_tape *t);
/* The reason for the most recent failure, naming the op and the shapes,
 * e.g. "matvec: W is 3x4 but x has length 5": the recording's error when
 * it has one, else that of the last non-recording call if that call
 * failed. "" when neither. Owned by the tape, valid until the next call
 * on it, reset or free. Never NULL. */
AD_API const char *ad_tape_errmsg(const ad_tape *t);

/* Number of nodes recorded (including one reserved internal node). */
AD_API size_t ad_tape_len(const ad_tape *t);
/* Bytes of memory the tape holds (nodes, values, adjoints, tables). */
AD_API size_t ad_tape_memory(const ad_tape *t);

/* Dense kernel variants: the instruction sets the loops of matvec,
 * matmul_nt and affine (W x, X W^T and their backward passes) are written
 * for. They give the same results up to rounding (FMA and the order of
 * partial sums; each agrees with the portable one to about 1e-13 times
 * the sum of the terms' magnitudes). The AD_BLAS backend, when built,
 * takes precedence over all of them. */
enum {
    AD_KERNELS_AUTO = 0,     /* the best this CPU supports (the default) */
    AD_KERNELS_PORTABLE = 1, /* plain C: every target                    */
    AD_KERNELS_SSE2 = 2,     /* SSE2 intrinsics: x86-64                  */
    AD_KERNELS_AVX2 = 3      /* AVX2 + FMA: x86-64 CPUs that have both,
                                checked at run time                      */
};
/* Chooses the dense kernels of the ops recorded on t from now on (ops
 * already recorded keep theirs until ad_tape_reset and re-recording).
 * ad_tape_new chooses AD_KERNELS_AUTO, or the variant the environment
 * variable AD_KERNELS names ("portable", "sse2", "avx2", "auto") when it
 * is set to one this CPU supports; anything else there is ignored. Returns
 * AD_OK; AD_EUNSUPPORTED when this build (AD_PORTABLE_KERNELS, or a
 * target that is not x86-64) or this CPU lacks the variant, the tape's
 * choice unchanged; AD_EMISUSE for t NULL or an unknown number. The reason
 * is in ad_tape_errmsg; the recording's status is not changed. */
AD_API int ad_tape_set_kernels(ad_tape *t, int variant);
/* The variant in use on t (AD_KERNELS_PORTABLE, _SSE2 or _AVX2, never
 * AUTO); t NULL: the variant AD_KERNELS_AUTO picks on this CPU. */
AD_API int ad_tape_kernels(const ad_tape *t);

/* ------------------------------------------------------------------ */
/* Leaves                                                              */
/* ------------------------------------------------------------------ */

/* Constants (no gradient) and variables (gradient wanted), with values
 * copied into the tape. data holds ad_shape_size(shape) doubles, row-major;
 * data NULL: zeros. */
AD_API ad_node ad_constant(ad_tape *t, ad_shape shape, const double *data);
AD_API ad_node ad_variable(ad_tape *t, ad_shape shape, const double *data);
/* Scalar shorthands. */
AD_API ad_node ad_scalar(ad_tape *t, double x);
AD_API ad_node ad_scalar_var(ad_tape *t, double x);

/* A leaf that views caller memory instead of copying it: the tape reads
 * value[] whenever it evaluates (at recording and at every ad_replay), and
 * each ad_backward ADDS the gradient into grad[] -- caller gradients
 * accumulate across sweeps until the caller zeroes them (or sweeps with
 * ad_sweep(..., AD_SWEEP_ASSIGN), which overwrites them). grad NULL: an
 * input that needs no gradient (e.g. a data sample the caller refills
 * before each replay). Both buffers stay owned by the caller and must
 * outlive the tape's use of the node. */
AD_API ad_node ad_param(ad_tape *t, ad_shape shape, const double *value, double *grad);

/* Overwrite a copied leaf's value (ad_constant/ad_variable/ad_scalar*),
 * typically before ad_replay. data holds ad_shape_size(shape) doubles.
 * Returns AD_OK, or AD_EMISUSE (not a copied leaf, an ad_param, a stale or
 * foreign node, NULL data) with the reason in ad_tape_errmsg; records
 * nothing, so a refused write leaves ad_tape_status unchanged. */
AD_API int ad_set_value(ad_tape *t, ad_node leaf, const double *data);

/* ------------------------------------------------------------------ */
/* Built-in ops                                                        */
/* ------------------------------------------------------------------ */

/* Elementwise, two operands. Every binary elementwise op broadcasts by
 * one rule (numpy's, in two dimensions): seen as rows x cols -- a scalar
 * 1 x 1, a vector (n) a row 1 x n, a matrix as it is -- each dimension
 * must be equal in both operands or 1 in one of them, which is repeated.
 * So on either side: a scalar against anything, a vector (n) against an
 * m x n matrix (every row: a bias), an m x 1 column against an m x n
 * matrix (every column), a row (n) against a column (m x 1) giving m x n.
 * The result is a matrix if an operand is one, else a vector if one is.
 * A broadcast operand's gradient is summed over the repeats. */
AD_API ad_node ad_add(ad_tape *t, ad_node a, ad_node b);     /* a + b */
AD_API ad_node ad_sub(ad_tape *t, ad_node a, ad_node b);     /* a - b */
AD_API ad_node ad_mul(ad_tape *t, ad_node a, ad_node b);     /* a * b */
AD_API ad_node ad_div(ad_tape *t, ad_node a, ad_node b);     /* a / b */
/* Elementwise, one operand. */
AD_API ad_node ad_neg(ad_tape *t, ad_node x);                /* -x */
AD_API ad_node ad_scale(ad_tape *t, ad_node x, double c);    /* c * x */
AD_API ad_node ad_add_const(ad_tape *t, ad_node x, double c);/* x + c */
AD_API ad_node ad_square(ad_tape *t, ad_node x);             /* x^2 */
AD_API ad_node ad_sqrt(ad_tape *t, ad_node x);
AD_API ad_node ad_exp(ad_tape *t, ad_node x);
AD_API ad_node ad_log(ad_tape *t, ad_node x);                /* natural log */
AD_API ad_node ad_tanh(ad_tape *t, ad_node x);
AD_API ad_node ad_sigmoid(ad_tape *t, ad_node x);            /* 1/(1+e^-x) */
/* max(0, x). Its derivative at exactly 0 is taken as 0. */
AD_API ad_node ad_relu(ad_tape *t, ad_node x);
/* |x|. Its derivative at exactly 0 is taken as 0. */
AD_API ad_node ad_abs(ad_tape *t, ad_node x);
/* x^p with C's pow, derivative p * x^(p-1) -- except p = 0, whose
 * derivative is 0 everywhere (x^0 is the constant 1; not 0 * 0^-1 = NaN at
 * x = 0). Elsewhere IEEE decides at the edges: p = 1 at 0 gives 1; p > 1 at
 * 0 gives 0; 0 < p < 1 at +0 gives +inf; a negative p at 0 gives a value of
 * +-inf and a derivative of +-inf (1/x: -inf at both +0 and -0; x^-2: -inf
 * at +0, +inf at -0); a non-integer p at x < 0 gives NaN and a NaN
 * derivative. Table: docs/math.md, "Edge cases of pow_const". */
AD_API ad_node ad_pow_const(ad_tape *t, ad_node x, double p);
/* Heaviside step, 1 where x > 0 and 0 elsewhere (step(0) = 0), and sign
 * (-1, 0, 1). Both have derivative 0 everywhere (the jump at 0 has none
 * the engine propagates); NaN gives NaN. They are relu' and abs' as the
 * gradient-as-ops sweep records them -- so at a NaN input a recorded
 * gradient is NaN where ad_backward's relu'(NaN) = abs'(NaN) = 0 (as
 * PyTorch's) gives 0. */
AD_API ad_node ad_step(ad_tape *t, ad_node x);
AD_API ad_node ad_sign(ad_tape *t, ad_node x);
/* Elementwise math (docs/math.md, "Elementwise math: kinks and domains",
 * has every kink's convention and every domain edge). Outside an op's
 * domain the value is NaN (asin(2), acosh(0.5), log1p(-2), log2(-1)) and
 * so is its derivative -- never the formula's finite number there, where
 * PyTorch gives one; at a domain edge value and derivative are what IEEE
 * gives (log1p(-1) = -inf with derivative +inf, asin'(1) = +inf). */
AD_API ad_node ad_sin(ad_tape *t, ad_node x);
AD_API ad_node ad_cos(ad_tape *t, ad_node x);
AD_API ad_node ad_tan(ad_tape *t, ad_node x);
AD_API ad_node ad_asin(ad_tape *t, ad_node x);     /* domain [-1, 1] */
AD_API ad_node ad_acos(ad_tape *t, ad_node x);     /* domain [-1, 1] */
AD_API ad_node ad_atan(ad_tape *t, ad_node x);
AD_API ad_node ad_sinh(ad_tape *t, ad_node x);
AD_API ad_node ad_cosh(ad_tape *t, ad_node x);
AD_API ad_node ad_asinh(ad_tape *t, ad_node x);
AD_API ad_node ad_acosh(ad_tape *t, ad_node x);    /* domain [1, inf) */
AD_API ad_node ad_atanh(ad_tape *t, ad_node x);    /* domain [-1, 1] */
AD_API ad_node ad_log1p(ad_tape *t, ad_node x);    /* log(1 + x), exact near 0 */
AD_API ad_node ad_expm1(ad_tape *t, ad_node x);    /* e^x - 1, exact near 0 */
AD_API ad_node ad_log2(ad_tape *t, ad_node x);
AD_API ad_node ad_log10(ad_tape *t, ad_node x);
AD_API ad_node ad_erf(ad_tape *t, ad_node x);
AD_API ad_node ad_erfc(ad_tape *t, ad_node x);     /* 1 - erf(x), exact in the tail */
/* log(1 + e^x), computed without overflow; derivative sigmoid(x). */
AD_API ad_node ad_softplus(ad_tape *t, ad_node x);
/* x Phi(x), Phi the standard normal CDF: the exact (erf) GELU, PyTorch's
 * default (not the tanh approximation). */
AD_API ad_node ad_gelu(ad_tape *t, ad_node x);
/* x for x > 0, alpha (e^x - 1) otherwise (alpha = 1 is the usual ELU);
 * the derivative at 0 is alpha (PyTorch's), so it is continuous only for
 * alpha = 1. */
AD_API ad_node ad_elu(ad_tape *t, ad_node x, double alpha);
/* x for x > 0, slope x otherwise; the derivative at 0 is slope
 * (PyTorch's). */
AD_API ad_node ad_leaky_relu(ad_tape *t, ad_node x, double slope);
/* Derivative 0 everywhere (the jumps have none the engine propagates).
 * round rounds half to even (0.5 -> 0, 1.5 -> 2, -2.5 -> -2), as
 * torch.round and IEEE's default, whatever the rounding mode. */
AD_API ad_node ad_floor(ad_tape *t, ad_node x);
AD_API ad_node ad_ceil(ad_tape *t, ad_node x);
AD_API ad_node ad_round(ad_tape *t, ad_node x);
/* Elementwise, two operands of the same shape or a scalar and anything
 * (broadcast), as ad_mul. */
/* x^y, both operands active. d/dx = y x^(y-1), taken as 0 where y = 0;
 * d/dy = x^y log x, taken as 0 where x = 0 and y >= 0 (PyTorch's rules);
 * x < 0 gives d/dy = NaN (and NaN value and d/dx unless y is an integer). */
AD_API ad_node ad_pow(ad_tape *t, ad_node x, ad_node y);
/* The angle of the point (x, y): atan2(y, x), in (-pi, pi]; NOTE the
 * order, y first, as C's atan2. Both derivatives are NaN at the origin. */
AD_API ad_node ad_atan2(ad_tape *t, ad_node y, ad_node x);
/* sqrt(x^2 + y^2) without overflow; both derivatives are NaN at the
 * origin (0/0, as PyTorch). */
AD_API ad_node ad_hypot(ad_tape *t, ad_node x, ad_node y);
/* The smaller and the larger of a and b. At a tie each operand gets half
 * the adjoint (as torch.minimum and torch.maximum); a NaN operand gives
 * NaN. */
AD_API ad_node ad_min(ad_tape *t, ad_node a, ad_node b);
AD_API ad_node ad_max(ad_tape *t, ad_node a, ad_node b);
/* max(x, lo), min(x, hi), and both: clamp(x, lo, hi) =
 * clamp_max(clamp_min(x, lo), hi) (two nodes), hi where lo > hi. The
 * derivative is 1 on the closed interval, bounds included, and 0 outside
 * (torch.clamp's); a NaN x or bound gives NaN with derivative 0. */
AD_API ad_node ad_clamp_min(ad_tape *t, ad_node x, double lo);
AD_API ad_node ad_clamp_max(ad_tape *t, ad_node x, double hi);
AD_API ad_node ad_clamp(ad_tape *t, ad_node x, double lo, double hi);
/* Comparisons, elementwise with scalar broadcast (as ad_mul): 1.0 where
 * a < b (<=, >, >=, ==, !=) holds and 0.0 elsewhere, as C compares (a NaN
 * operand: false, except ne: true; 0.0 == -0.0). The derivative is 0 and
 * no adjoint flows through a comparison: it never needs a gradient
 * (ad_grad is NULL) even when its operands do.
 *
 * Every comparison node is a replay guard: its outcomes at recording are
 * kept, and each later evaluation of the tape (ad_replay, ad_forward and
 * the drivers, ad_workspace_replay) checks them again; when one differs it
 * still computes everything, on the recorded structure, and returns
 * AD_EBRANCH naming the first changed comparison in tape order (node,
 * ad_set_name name, element, operands now). To branch in C on a value
 * the tape depends on, branch on a comparison node, never on a raw value:
 *     ad_node pos = ad_gt(t, x, zero);
 *     ad_node y = ad_scalar_value(t, pos) != 0.0 ? ad_square(t, x) : ad_neg(t, x);
 * Then a replay where x <= 0 returns AD_EBRANCH (y is still x^2 there: the
 * recorded branch), and the program records again. Outcomes are kept
 * until ad_tape_reset, never updated: every evaluation on the other side
 * reports, one back on the recorded side is silent. */
AD_API ad_node ad_lt(ad_tape *t, ad_node a, ad_node b);
AD_API ad_node ad_le(ad_tape *t, ad_node a, ad_node b);
AD_API ad_node ad_gt(ad_tape *t, ad_node a, ad_node b);
AD_API ad_node ad_ge(ad_tape *t, ad_node a, ad_node b);
AD_API ad_node ad_eq(ad_tape *t, ad_node a, ad_node b);
AD_API ad_node ad_ne(ad_tape *t, ad_node a, ad_node b);
/* cond != 0 ? a : b, elementwise (a.k.a. where): cond, a and b each the
 * output's shape or a scalar (broadcast); cond a comparison, or any node
 * used as a mask (a NaN in cond counts as true). Both branches are
 * recorded and evaluated; replay re-decides each element from cond's value
 * now (a select needs no re-recording; its comparison still reports
 * AD_EBRANCH, since the program may also have branched on it). Gradient:
 * a gets the adjoint where cond != 0 and b where cond == 0; the untaken
 * branch gets exactly 0, also where its value or its own derivative is
 * infinite or NaN (log(x) at 0, 1/x at 0, sqrt(x) at x < 0), and passes 0
 * on (a zero adjoint contributes 0 through every elementwise op, never
 * 0 * inf). cond gets none (0 if it is a variable). A shape mismatch names
 * all three: "select: cond is a vector of length 3, a is 2x2 and b is a
 * scalar (...)". */
AD_API ad_node ad_select(ad_tape *t, ad_node cond, ad_node a, ad_node b);
/* structure */
/* Structure (docs/math.md, "Structure and reductions"). The integer
 * arguments are checked at recording (an error names the op and the
 * shapes: "slice: rows 3..7 of a 5x2 matrix") and copied into the tape:
 * slice starts and take indices become a small constant node, an operand
 * of the op, that the op reads at every evaluation (clamped into range, so
 * an index node changed later with ad_set_value never reads outside x).
 *
 * reshape: the same elements, row-major, in another shape of the same
 * size: ad_shape_scalar(), ad_shape_vec(n) or ad_shape_mat(r, c). (Through
 * ad_apply, c is -1 for a scalar, 0 for a vector, k >= 1 for k columns.) */
AD_API ad_node ad_reshape(ad_tape *t, ad_node x, ad_shape shape);
/* Along the first axis: elements start .. start+len-1 of a vector (a
 * vector of len), or those rows of a matrix (len x cols). */
AD_API ad_node ad_slice(ad_tape *t, ad_node x, uint32_t start, uint32_t len);
/* The block of a matrix at rows r0 .. r0+nr-1 and columns c0 .. c0+nc-1
 * (nr x nc, a matrix even when nr or nc is 1). Its gradient is the
 * adjoint padded with zeros (slice_add into zeros). */
AD_API ad_node ad_slice_block(ad_tape *t, ad_node x, uint32_t r0, uint32_t nr, uint32_t c0,
                              uint32_t nc);
/* x with v added into the block of v's shape at (r0, c0): v a vector
 * within a vector x (c0 = 0), or a matrix within a matrix x. */
AD_API ad_node ad_slice_add(ad_tape *t, ad_node x, uint32_t r0, uint32_t c0, ad_node v);
/* Gather along the first axis: out[k] = x[idx[k]], elements of a vector
 * (a vector of n) or rows of a matrix (n x cols); indices may repeat.
 * The gradient is a scatter-add: repeated indices add their adjoints. */
AD_API ad_node ad_take(ad_tape *t, ad_node x, size_t n, const uint32_t *idx);
/* One element of a vector (a scalar) or one row of a matrix (a vector):
 * take with a single index. */
AD_API ad_node ad_at(ad_tape *t, ad_node x, uint32_t i);
/* Scatter-add: x with v[k] added at x[idx[k]] (elements of a vector, rows
 * of a matrix; v has the shape ad_take(x, idx) would have, or for n = 1
 * that of ad_at(x, idx[0])); repeated indices add. Linear in x and v. */
AD_API ad_node ad_index_add(ad_tape *t, ad_node x, size_t n, const uint32_t *idx, ad_node v);
/* Joins n >= 1 parts. axis 0: one after the other -- scalars and vectors
 * give a vector; matrices with one column count give a matrix, where a
 * vector of that length is one row; axis 1: matrices with one row count
 * side by side. Recorded as a balanced tree of n - 1 binary concat nodes
 * (an op has at most AD_MAX_ARITY operands; with matrices along axis 0, a
 * vector part is first reshaped to one row); n = 1 returns the part
 * itself. */
AD_API ad_node ad_concat(ad_tape *t, int axis, int n, const ad_node *parts);
/* n >= 1 parts of one shape, scalars (a vector of n) or vectors of m (an
 * n x m matrix, part k as row k): concat along axis 0 of the parts as
 * rows. */
AD_API ad_node ad_stack(ad_tape *t, int n, const ad_node *parts);
/* reductions along an axis */
/* Reductions along an axis: a matrix (m x n) reduced along axis 0 (down
 * each column, over the rows) gives a vector of n, along axis 1 (along
 * each row) a vector of m; a vector (or scalar) along axis 0 gives a
 * scalar. Other axes are shape errors. To broadcast an axis-1 result over
 * the matrix again, reshape it to m x 1 (a column). */
AD_API ad_node ad_sum_axis(ad_tape *t, ad_node x, int axis);
AD_API ad_node ad_mean_axis(ad_tape *t, ad_node x, int axis);
/* The largest (smallest) element of each column/row. Ties: the FIRST
 * extreme element gets the whole adjoint (as PyTorch's torch.max(x, dim)
 * and torch.min(x, dim)); a NaN is the extreme, so NaN propagates. */
AD_API ad_node ad_max_axis(ad_tape *t, ad_node x, int axis);
AD_API ad_node ad_min_axis(ad_tape *t, ad_node x, int axis);
/* x's shape, 1 at the element ad_max_axis takes from each column/row and
 * 0 elsewhere; derivative 0 (the gradient of max_axis as a tape op). The
 * mask of the minimum is ad_max_mask of ad_neg(x). */
AD_API ad_node ad_max_mask(ad_tape *t, ad_node x, int axis);
/* Softmax and log-softmax of a vector, or of each row of a matrix (one
 * sample per row, as ad_softmax_xent), stable for any finite input (the
 * row's maximum is subtracted first). */
AD_API ad_node ad_softmax(ad_tape *t, ad_node x);
AD_API ad_node ad_log_softmax(ad_tape *t, ad_node x);
/* The L2 (Frobenius) norm sqrt(sum x^2) of all elements, a scalar, free of
 * overflow and underflow. Gradient x / norm; at x = 0 it is 0 (PyTorch's
 * choice), and so are the tangent and the second-order term there. */
AD_API ad_node ad_norm(ad_tape *t, ad_node x);
/* Linear solves, log-determinant and trace of a square matrix A (n x n).
 * B is a vector (n) or a matrix of right-hand sides (n x k); X has B's
 * shape. A matrix that is singular -- a pivot that is 0, or at most
 * n * DBL_EPSILON * max|A_ij| in magnitude (rounding noise) -- or, for
 * the SPD forms, not positive definite, is AD_ESINGULAR with a message
 * naming the op and the pivot ("solve: A is singular (pivot 3 of 4 is
 * 0)"): sticky at recording (nil is returned); at ad_replay, a workspace's
 * replay or a forward sweep the call returns it and the node's value is
 * NaN (see docs/math.md, "Linear algebra"). A with a NaN or infinite entry
 * is not checked: the values are NaN, as any op's would be.
 *   solve:     X = A^{-1} B by LU with partial pivoting; the gradient
 *              reuses the factorization: dB = A^{-T} dX, dA = -dB X^T.
 *   solve_spd: X = S^{-1} B by Cholesky, S = (A + A^T) / 2 (A itself when
 *              symmetric): A must be symmetric positive definite. The
 *              gradient is symmetric: dA = -(dB X^T + X dB^T) / 2.
 *   logdet:    log|det A| (a scalar; PyTorch's slogdet logabsdet) by LU;
 *              gradient A^{-T}, for either sign of det A.
 *   matrix_trace (op "trace"): sum_i A_ii; gradient the identity (ad_trace
 *              is the chain-rule trace of check.h). */
AD_API ad_node ad_solve(ad_tape *t, ad_node A, ad_node B);
AD_API ad_node ad_solve_spd(ad_tape *t, ad_node A, ad_node B);
AD_API ad_node ad_logdet(ad_tape *t, ad_node A);
AD_API ad_node ad_matrix_trace(ad_tape *t, ad_node A); /* op "trace" */

/* Reductions to a scalar. */
AD_API ad_node ad_sum(ad_tape *t, ad_node x);
AD_API ad_node ad_mean(ad_tape *t, ad_node x);
AD_API ad_node ad_dot(ad_tape *t, ad_node u, ad_node v);     /* sum u_i v_i, same shape */

/* Linear algebra. */
AD_API ad_node ad_matvec(ad_tape *t, ad_node W, ad_node x);  /* W (k x n), x (n) -> (k)   */
AD_API ad_node ad_matvec_t(ad_tape *t, ad_node W, ad_node x);/* W (k x n), x (k) -> W^T x (n) */
AD_API ad_node ad_matmul(ad_tape *t, ad_node A, ad_node B);  /* (m x k)(k x n) -> (m x n)  */
AD_API ad_node ad_matmul_nt(ad_tape *t, ad_node A, ad_node B);/* A (m x k), B (n x k) -> A B^T (m x n) */
AD_API ad_node ad_outer(ad_tape *t, ad_node u, ad_node v);   /* u (m), v (n) -> u v^T (m x n) */
AD_API ad_node ad_transpose(ad_tape *t, ad_node A);          /* (m x n) -> (n x m) */

/* A dense layer's affine map in one node: W (k x n) and b (k) with
 *   x (n)                       -> W x + b      (k)
 *   X (B x n), a sample per row -> X W^T + b    (B x k), b added to every row.
 * The value equals ad_add(t, ad_matvec(t, W, x), b) (or ad_matmul_nt for
 * X) bit for bit; it costs one node instead of two, which matters for
 * small layers. Gradients: dW = dy x^T (dY^T X), dx = W^T dy (dY W),
 * db = dy (dY summed over rows). Shape errors name W, x (X) and b. */
AD_API ad_node ad_affine(ad_tape *t, ad_node W, ad_node x, ad_node b);

/* Log-sum-exp, stable for any logits: a vector (n) gives the scalar
 * log sum_j exp(z_j); a matrix (B x n) gives the vector of its rows'.
 * Gradient: softmax of each row times the row's adjoint. */
AD_API ad_node ad_logsumexp(ad_tape *t, ad_node z);

/* Softmax cross-entropy, fused and numerically stable (log-sum-exp):
 * logits and target of the same shape, a vector (n) or a matrix (B x n),
 * one sample per row; target rows are probability vectors (e.g. one-hot).
 * Returns the scalar sum over rows of -sum_j target_j log softmax(z)_j.
 * Gradients: d/dz_j = softmax(z)_j sum(target) - target_j, and, when the
 * target needs one, d/dtarget_j = logsumexp(z) - z_j. */
AD_API ad_node ad_softmax_xent(ad_tape *t, ad_node logits, ad_node target);

/* Record any op by descriptor: built-in (from ad_registry_find) or custom.
 * n must equal def->arity; c is the node's constant (0 if unused). A
 * built-in recorded this way behaves exactly as through its function. */
AD_API ad_node ad_apply(ad_tape *t, const ad_opdef *def, const ad_node *in, int n, double c);
/* The same, finding the op by name in the tape's registry (opts.registry;
 * built-ins when none). Unknown name: AD_ENOTFOUND. */
AD_API ad_node ad_apply_named(ad_tape *t, const char *name, const ad_node *in, int n, double c);

/* ------------------------------------------------------------------ */
/* Reverse sweep and replay                                            */
/* ------------------------------------------------------------------ */

/* Reverse sweep from a scalar output: seeds d(output) = 1 and visits, in
 * reverse recording order, only the nodes that depend on a variable and
 * lie before the output, calling each one's vjp. Every sweep starts the
 * tape's adjoints afresh, so two sweeps give the same ad_grad() for tape
 * nodes (0 for a node the output does not depend on); gradients of
 * ad_param leaves go into caller buffers and accumulate. Iterative: tapes
 * of any length. Returns AD_OK, the recording's status if it failed, or
 * AD_EMISUSE (non-scalar output: use ad_backward_seed; stale or foreign
 * node) -- the reason in ad_tape_errmsg, the recording left usable. */
AD_API int ad_backward(ad_tape *t, ad_node output);
/* The same for an output of any shape, seeded with seed[] (its size
 * elements): computes the vector-Jacobian product seed^T J. */
AD_API int ad_backward_seed(ad_tape *t, ad_node output, const double *seed);

/* Flags for ad_sweep. */
#define AD_SWEEP_ASSIGN 1u /* overwrite ad_param gradient buffers, see ad_sweep */

/* The general sweep: ad_backward(t, o) is ad_sweep(t, o, NULL, 0) and
 * ad_backward_seed(t, o, s) is ad_sweep(t, o, s, 0). seed: NULL for a
 * scalar output (seed 1), else one value per element of the output.
 * flags 0, or AD_SWEEP_ASSIGN: every ad_param gradient buffer receives
 * this sweep's gradient instead of having it added -- overwritten, and
 * zeroed when the output does not depend on the leaf -- so a training
 * loop needs no zeroing pass, and the engine writes a weight gradient
 * without reading it (less memory traffic than zeroing, then adding).
 * Gradient buffers shared by several ad_param nodes (a tied weight
 * recorded twice, overlapping slices of one block) are found by the first
 * assigning sweep after recording (it sorts the buffers once: AD_ENOMEM if
 * it cannot get the scratch memory); such a tape's assigning sweeps zero
 * every ad_param buffer and then add, so each element still receives its
 * whole gradient. Unknown flags: AD_EMISUSE. */
AD_API int ad_sweep(ad_tape *t, ad_node output, const double *seed, unsigned flags);

/* ---- Gradient-ready hooks ----
 * A hook asks a sweep of the tape to call back when an ad_param's gradient
 * is complete: all of its contributions added, which is as soon as the sweep
 * has passed the last node that uses the parameter, usually long before the
 * sweep ends (the last layer's weights are ready first). Two kinds:
 *
 *   ready:  ready(ud, param, &view) with the parameter's value and its
 *           complete gradient (view.val, view.grad, view.shape). The
 *           gradient is in the caller's buffer as without a hook (added to
 *           it, or written under AD_SWEEP_ASSIGN). Use: start reducing it
 *           across processes while the sweep goes on with earlier layers.
 *   update: an optimizer step fused into the sweep. update(ud, off, w, g,
 *           n) receives this sweep's gradient g of the elements [off,
 *           off + n) of the parameter (its values w point at element off)
 *           and updates w in place. Over one sweep the calls cover every
 *           element exactly once, in contiguous segments (rows, or strips
 *           of rows), each segment after its gradient is complete; g is zero for elements the
 *           output does not depend on. When the parameter's only use is
 *           the W of ad_matvec or the W or b of ad_affine, the op's backward
 *           calls update row block by row block as it computes them, and
 *           the gradient is never written in full -- the update runs while
 *           the rows are still in cache. Otherwise the sweep computes the
 *           gradient and calls update once over all of it. Either way the
 *           sweep treats this sweep's gradient as assigned: g never holds
 *           an earlier sweep's, and what the gradient buffer holds after
 *           the sweep is unspecified (it is scratch).
 *
 * The values a hook changes are the parameter's own; the sweep uses the old
 * values for every product that needs them before the hook sees a row.
 * Hooks run on the thread calling the sweep, inside it: a hook must not
 * call the tape (any ad_ function on t) and must not fail. They apply to
 * ad_backward, ad_backward_seed and ad_sweep of this tape only (not to
 * workspaces, derivative modes or checks, which leave values alone). */
typedef struct ad_grad_hook {
    size_t size;    /* sizeof(ad_grad_hook): fields past size are not read */
    void (*ready)(void *ud, ad_node param, const ad_tensor *view);
    void (*update)(void *ud, size_t offset, double *value, const double *grad, size_t n);
    void *ud;       /* passed to the callbacks */
    /* Optional, beside update: the same update for a segment whose
     * gradient is a x[0..n) -- grad[i] is exactly the product a * x[i] --
     * so that no gradient row is stored at all. The fused ops use it for
     * the rows of one sample's dW = dy x^T. It must do what update does
     * with grad[i] = a * x[i]. NULL: update gets a stored row. */
    void (*update_scaled)(void *ud, size_t offset, double *value, double a, const double *x,
                          size_t n);
} ad_grad_hook;

/* Sets (or, hook NULL, removes) the hook of param, an ad_param node of t
 * with a gradient buffer. Exactly one of ready and update is set. The hook
 * is copied; update_scaled only beside update. A parameter whose value
 * memory is shared with another node
 * (a second ad_param over the same block, a reshape that views it) gets
 * its hook at the end of the sweep, when no node needs the old values;
 * the same goes for several uses. Hooks stay until removed or
 * ad_tape_reset. Returns AD_OK; AD_EMISUSE naming the problem: NULL or
 * stale node, a node that is not an ad_param with a gradient buffer, both
 * or neither callback, size too small; AD_ENOMEM. Not sticky. A sweep of a
 * tape with hooks whose ad_param gradient buffers overlap fails with
 * AD_EMISUSE (a hooked gradient would not be the parameter's own). */
AD_API int ad_set_grad_hook(ad_tape *t, ad_node param, const ad_grad_hook *hook);

/* Re-evaluate every recorded node forward from the current leaf values
 * (ad_set_value, and the caller buffers behind ad_param) without
 * recording again and without allocating. Structure is fixed at recording:
 * a branch the program took on a value is not re-decided. Returns AD_OK or
 * the recording's status if it failed. A matrix that became singular (or
 * not positive definite) for ad_solve, ad_solve_spd or ad_logdet: the
 * replay still runs to the end, that node's value is NaN (and whatever
 * uses it), and it returns AD_ESINGULAR naming the first such node: "solve:
 * A is singular (pivot 2 of 2 is 0) at node 3; its value is NaN". Not
 * sticky; a replay at a regular matrix is exact again.
 * Replay guards: when a recorded comparison (ad_lt ... ad_ne) has another
 * outcome now, the replay still runs to the end on the recorded structure
 * and returns AD_EBRANCH, the message naming the first changed one in tape
 * order: "replay: comparison gt (node 7, 'x > 0') was true when recorded,
 * false now (operands -0.5 and 0)" (with the element of a tensor one, and
 * how many changed). Not sticky: the recording stays usable. Record again
 * to follow the new branch. A tape without comparisons pays nothing.
 * Outcomes are kept as recorded (until ad_tape_reset): every replay on the
 * other side reports, one back on the recorded side is silent. When both
 * happen, AD_EBRANCH is returned rather than AD_ESINGULAR: the structure
 * no longer follows the program. */
AD_API int ad_replay(ad_tape *t);

/* ------------------------------------------------------------------ */
/* Derivative modes: forward (tangents), second order, drivers         */
/* ------------------------------------------------------------------ */

/* Forward mode on a recorded tape. Every node gets K tangents (K
 * directions at once: "vector mode"); seed them on leaves, and one
 * forward sweep -- which also recomputes every value, like ad_replay --
 * carries them to every node. Costs: a tangent sweep is one replay plus,
 * per direction, about one more pass of the same arithmetic; nothing is
 * allocated after ad_tangents.
 *
 * ad_tangents: chooses K (1 .. 4096) for the current recording and sets
 * every tangent to 0. Allocates the storage the first time, and when the
 * recording or K outgrows it; a later recording of the same size (after
 * ad_tape_reset) reuses it. Must be called again after recording more
 * nodes. Returns AD_OK, AD_EMISUSE (K out of range) or AD_ENOMEM. */
AD_API int ad_tangents(ad_tape *t, int k);
/* Seeds a leaf's tangents: tangent holds K x size doubles, direction d's
 * at tangent[d * size ...]. Leaves not seeded keep tangent 0. AD_EMISUSE:
 * not a leaf, NULL, no ad_tangents for this recording. */
AD_API int ad_set_tangent(ad_tape *t, ad_node leaf, const double *tangent);
/* The forward sweep: values and tangents of every node; AD_EBRANCH (all
 * computed) when a recorded comparison changed, AD_ESINGULAR (all computed,
 * NaN from that node on) for a singular matrix, as ad_replay. AD_EMISUSE when
 * ad_tangents was not called for this recording, or a custom op on the
 * tape has no jvp rule (the message names it). */
AD_API int ad_forward(ad_tape *t);
/* The node's K x size tangents (direction-major) after ad_forward; NULL
 * before one, or for a stale/foreign node. Owned by the tape; valid until
 * the next ad_tangents, ad_forward, reset or free. */
AD_API const double *ad_tangent(const ad_tape *t, ad_node n);

/* Forward over reverse: after ad_forward, one reverse sweep that carries
 * each adjoint and its K tangents, so that every variable receives the
 * derivative of its gradient along the tangents -- for a scalar output
 * and tangents v, the Hessian-vector products H v. seed: NULL for a
 * scalar output, else one value per output element (then the result is
 * the derivative of the vector-Jacobian product seed^T J along v). Costs
 * about one reverse sweep plus, per direction, two more; nothing is
 * allocated. The adjoints used here are the engine's own: ad_param
 * gradient buffers are not touched. */
AD_API int ad_backward_tangent(ad_tape *t, ad_node output, const double *seed);
/* A variable's K x size adjoint tangents after ad_backward_tangent (H v
 * per direction); NULL before one, or for a node that needs no gradient. */
AD_API const double *ad_grad_tangent(const ad_tape *t, ad_node n);

/* Drivers. Each evaluates at the leaves' current values (it runs the
 * forward sweep itself, so it returns AD_EBRANCH, its results computed,
 * when a recorded comparison changed, and AD_ESINGULAR, with NaN results,
 * for a singular matrix, as ad_forward), takes its inputs as n leaves
 * in[] -- their elements flattened in order form the input vector of length N -- and
 * uses the tape's tangent storage (it replaces what ad_tangents set up).
 * After the first call on a recording, repeated calls allocate nothing. */

/* J v for one direction v (v[i]: the size of in[i]); jv receives the
 * output's size. Cost: one forward sweep. */
AD_API int ad_jvp(ad_tape *t, ad_node out, int n, const ad_node *in, const double *const *v,
                  double *jv);
/* H v of a scalar output for one direction v, into hv[i] (the size of
 * in[i]); grad (NULL, or NULL entries, to skip) receives the gradient.
 * Inputs must be variables. Cost: one forward sweep and one reverse sweep
 * carrying tangents -- about 2-3 gradients. */
AD_API int ad_hvp(ad_tape *t, ad_node out, int n, const ad_node *in, const double *const *v,
                  double *const *hv, double *const *grad);

#define AD_JAC_AUTO 0u    /* forward when N <= M, else reverse */
#define AD_JAC_FORWARD 1u /* ceil(N / 32) forward sweeps of up to 32 directions */
#define AD_JAC_REVERSE 2u /* M reverse sweeps, one per output element */
/* The dense M x N Jacobian of out (M elements) with respect to the inputs
 * (variables), row-major into J (M * N doubles): J[r * N + c] = d out_r /
 * d x_c. mode chooses forward or reverse as above. */
AD_API int ad_jacobian(ad_tape *t, ad_node out, int n, const ad_node *in, double *J,
                       unsigned mode);
/* The dense N x N Hessian of a scalar out with respect to the inputs
 * (variables), row-major into H, exactly symmetric. Cost: ceil(N / 8)
 * forward-over-reverse passes of 8 directions (one HVP per column). */
AD_API int ad_hessian(ad_tape *t, ad_node out, int n, const ad_node *in, double *H);

/* The gradient as a tape (reverse over reverse, any order): records on t
 * the reverse sweep from output as ordinary nodes -- every op's vjp written
 * in tape ops -- and stores in grads[i] the node holding d output / d
 * in[i] (in[i] any node; one that output does not depend on, or that
 * needs no gradient -- a constant, as ad_grad gives none for it -- gets a
 * constant 0 of its shape). seed: ad_nil() for a scalar output, else a
 * node of the output's shape (the result is then seed^T J). The gradient
 * nodes can be differentiated again (ad_backward, ad_hvp, or this call
 * on them: third derivatives and beyond), replayed at new inputs, traced
 * and exported like any node. Cost: records a few nodes per node swept.
 * This is a recording call: errors are sticky, like an op's. Custom ops
 * on the way need vjp_ops. Returns AD_OK or the tape's status. */
AD_API int ad_gradient_nodes(ad_tape *t, ad_node output, ad_node seed, int n,
                             const ad_node *in, ad_node *grads);

/* ------------------------------------------------------------------ */
/* Workspaces: one recorded tape, evaluated by several threads         */
/* ------------------------------------------------------------------ */

/* A workspace holds everything an evaluation of a recording writes --
 * inline scalar values and adjoints (with their 8-byte node headers, so
 * the replay and sweep loops are the tape's own), tensor values and
 * adjoints, the op constants -- copied from the tape once. Each thread
 * makes its own workspace from one shared tape and replays and sweeps it
 * without locks; the tape is only read, and only by ad_workspace_new.
 *
 * Threading contract: while any thread runs ad_workspace_new on a tape,
 * no thread may modify that tape (record, reset, set_value, replay,
 * sweep, free). Afterwards a workspace refers to nothing of its tape:
 * the tape may be reset, re-recorded or freed. It still reads the op
 * descriptors (built-in, or your registry: keep it alive and unmodified)
 * and the ad_param value buffers you have not rebound. Custom ops' forward
 * and vjp are then called from several threads at once: they must not
 * write shared state. One workspace is used by one thread at a time.
 *
 * ad_param nodes: each keeps reading the value buffer given at recording
 * until ad_workspace_bind gives it another; its gradient goes into a
 * buffer the workspace owns (written afresh by each sweep, like a tape
 * variable's; read it with ad_workspace_grad) until bound to one of yours,
 * which then behaves exactly as on the tape (accumulates, or is
 * overwritten under AD_SWEEP_ASSIGN).
 *
 * Handles: the handles of the tape at creation name the same nodes in the
 * workspace; handles of a later recording are refused (AD_EMISUSE).
 * Errors: each call returns a status and leaves the reason in
 * ad_workspace_errmsg until the next call on that workspace. */
typedef struct ad_workspace ad_workspace;

/* Makes a workspace from a successfully recorded tape. opts: the
 * allocator for the workspace (NULL, or opts->alloc NULL: the tape's, which
 * must then be callable from the threads that make and free workspaces);
 * the registry field is ignored. Returns NULL on failure with *status
 * (if status is not NULL) AD_EMISUSE (t NULL, or its recording failed) or
 * AD_ENOMEM; AD_OK otherwise. Free with ad_workspace_free. */
AD_API ad_workspace *ad_workspace_new(const ad_tape *t, const ad_tape_opts *opts, int *status);
/* Frees the workspace and its memory. NULL: no-op. */
AD_API void ad_workspace_free(ad_workspace *ws);

/* ad_replay in the workspace: every node recomputed from the workspace's
 * leaf values and bound ad_param buffers. AD_OK, AD_EMISUSE (ws NULL), or
 * AD_EBRANCH when a recorded comparison changed (all computed; the
 * message names it as ad_replay's does, with the node's name as it was
 * when the workspace was made), or AD_ESINGULAR for a singular matrix (the
 * node's value NaN, as ad_replay). */
AD_API int ad_workspace_replay(ad_workspace *ws);
/* ad_sweep in the workspace, with the same seed and flags rules. Returns
 * AD_OK, AD_EMISUSE (nil, foreign or later node; non-scalar output
 * without a seed; unknown flags) or AD_ENOMEM (the overlap check of bound
 * gradient buffers under AD_SWEEP_ASSIGN). */
AD_API int ad_workspace_sweep(ad_workspace *ws, ad_node output, const double *seed,
                              unsigned flags);
/* ad_set_value in the workspace: a copied leaf's value (the tape's is
 * untouched). AD_EMISUSE for anything but a copied leaf, or NULL data. */
AD_API int ad_workspace_set_value(ad_workspace *ws, ad_node leaf, const double *data);
/* Points an ad_param of the workspace at buffers of yours: value (NULL:
 * keep the current one) is read at each replay; grad (NULL: keep the
 * current one) receives this workspace's gradient as ad_param's buffer
 * does on a tape. Both must outlive their use by the workspace.
 * AD_EMISUSE: not an ad_param, or grad given for a param recorded without
 * one. */
AD_API int ad_workspace_bind(ad_workspace *ws, ad_node param, const double *value, double *grad);

/* The node's value / gradient in the workspace (as ad_value / ad_grad),
 * or NULL for a foreign, later or nil node (and, for the gradient, a node
 * that needs none). Valid until the workspace is freed; changed by its
 * replays and sweeps (and by ad_workspace_bind for an ad_param). */
AD_API const double *ad_workspace_value(const ad_workspace *ws, ad_node n);
AD_API const double *ad_workspace_grad(const ad_workspace *ws, ad_node n);
/* The reason the last call on ws failed; "" if it succeeded. Owned by ws.
 * Never NULL. */
AD_API const char *ad_workspace_errmsg(const ad_workspace *ws);
/* Bytes the workspace holds. */
AD_API size_t ad_workspace_memory(const ad_workspace *ws);

/* ------------------------------------------------------------------ */
/* Reading nodes                                                       */
/* ------------------------------------------------------------------ */

/* Pointer to the node's value (size of its shape, row-major), or NULL on a
 * stale/foreign/nil node. Owned by the tape (or the caller, for
 * ad_param); valid until reset or free; changed by ad_replay. */
AD_API const double *ad_value(const ad_tape *t, ad_node n);
/* The first element of the value; NaN on a bad node. */
AD_API double ad_scalar_value(const ad_tape *t, ad_node n);
/* The node's adjoint d(output)/d(node) after ad_backward, or NULL when the
 * node needs no gradient (it does not depend on any variable) or is bad.
 * For ad_param leaves: the caller's grad buffer. */
AD_API const double *ad_grad(const ad_tape *t, ad_node n);
/* Shape of the node; a zero shape (ndim -1) on a bad node. */
AD_API ad_shape ad_node_shape(const ad_tape *t, ad_node n);

/* Introspection, for traces and graph export. */
/* Handle of the index-th node in recording order (1 <= index < len);
 * nil if out of range. */
AD_API ad_node ad_tape_node(const ad_tape *t, size_t index);
/* Recording index of n (0 for a bad node). */
AD_API size_t ad_node_index(const ad_tape *t, ad_node n);
/* The node's op descriptor ("leaf" for leaves); NULL on a bad node. */
AD_API const ad_opdef *ad_node_op(const ad_tape *t, ad_node n);
/* Copies the node's inputs into in[] (room for AD_MAX_ARITY) and returns
 * their count; -1 on a bad node. */
AD_API int ad_node_inputs(const ad_tape *t, ad_node n, ad_node in[AD_MAX_ARITY]);
/* The node's constant (scale factor, exponent); 0 if the op has none. */
AD_API double ad_node_const(const ad_tape *t, ad_node n);
/* 1 if a gradient flows to this node (it depends on a variable), else 0. */
AD_API int ad_node_requires_grad(const ad_tape *t, ad_node n);
/* 1 for a leaf made by ad_variable/ad_scalar_var/ad_param with grad. */
AD_API int ad_node_is_variable(const ad_tape *t, ad_node n);

/* Names for traces and reports. The name is copied. Returns AD_OK,
 * AD_EMISUSE (stale/foreign/nil node, NULL name) or AD_ENOMEM. Names are
 * decoration: a failure here is not recorded in the tape's sticky status,
 * so it never stops a computation. */
AD_API int ad_set_name(ad_tape *t, ad_node n, const char *name);
/* The name given with ad_set_name, or NULL. Owned by the tape. */
AD_API const char *ad_node_name(const ad_tape *t, ad_node n);
/* Names a node and returns it: ad_set_name(t, n, name), then n, so a
 * name can be given where the node is made. A nil or bad node is returned
 * as it is (the recording's sticky status already says why); a failure to
 * store the name is ignored, as names are decoration. */
AD_API ad_node ad_named(ad_tape *t, ad_node n, const char *name);
/* Names without effort: the C variable's own name becomes the node's.
 *   AD_LET(t, z, ad_add(t, Wx, b));   declares ad_node z, named "z"
 *   AD_NAME(t, z, ad_relu(t, z));     assigns an existing variable z (an
 *                                     expression: it yields the node)
 * Traces, DOT graphs and the diagnoses of ad_handcheck_ex then say "z"
 * instead of "n7". Each evaluates t and the expression once. */
#define AD_LET(t, var, expr) ad_node var = ad_named((t), (expr), #var)
#define AD_NAME(t, var, expr) ((var) = ad_named((t), (expr), #var))

#ifdef __cplusplus
}
#endif
#endif /* AUTODIFF_AUTODIFF_H */
