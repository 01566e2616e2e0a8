/*
 * codegen.h -- emit self-contained, allocation-free C for a recorded
 * function and its derivatives (docs/codegen.md).
 *
 * From a recorded tape, an output node and a list of input leaves,
 * ad_codegen writes a C99 source file (and a header for it) that computes
 * the output and its derivatives with no tape: straight-line code for
 * scalar nodes, loops for tensor ops, cut into functions of bounded size
 * so that tapes of a million nodes still compile; a block of scalar
 * statements repeated with indices advancing by a fixed step (one term of
 * a sum, W1's eight ops per term) is written once, as a loop.
 *
 * The generated code depends only on <math.h>, never allocates (the
 * caller passes a work array of PREFIX_work_size() reals), keeps no
 * static mutable state (so several threads may call it at once, each with
 * its own work array), and computes in double or in float as chosen at
 * generation. Every other leaf the output depends on -- constants,
 * variables and ad_params not listed as inputs -- is baked into the
 * generated file with its value at generation time.
 *
 * Functions generated, for the prefix P and P_real the chosen type (each
 * returns 0, or a combination of two flags: 1 when a recorded comparison
 * -- a replay guard, see ad_replay -- came out otherwise at these inputs,
 * everything being computed anyway, on the recorded branch; 2 when the
 * matrix of a solve, solve_spd or logdet is singular (not positive
 * definite) to working precision: that op's results, and everything
 * computed from them, are NaN, as the tape's are when it reports
 * AD_ESINGULAR. A matrix with a NaN or infinite entry gives NaN without
 * a flag, as on the tape):
 *   size_t P_work_size(void);  reals the work array needs (every function)
 *   int P_forward(in, out, work);
 *   int P_vjp(in, seed, out, grad, work);          seed^T J, into grad[]
 *   int P_gradient(in, out, grad, work);           scalar output only
 *   int P_jvp(in, v, out, jv, work);               J v
 *   int P_hvp(in, v, out, grad, hv, work);         H v, scalar output only
 *   int P_jacobian(in, out, J, work);              M x N, row-major
 * where in[i] points to input i's elements, grad[i] / v[i] / hv[i] have
 * input i's size (a NULL grad[i] or hv[i] is skipped), out (NULL: not
 * written) and seed have the output's size M, N is the total size of the
 * inputs. Results are written (=), never added to.
 */
#ifndef AUTODIFF_CODEGEN_H
#define AUTODIFF_CODEGEN_H

#include "autodiff.h"
#include "sparse.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What to generate (ad_codegen_opts.what; 0: everything the output's
 * shape allows -- P_gradient and P_hvp only for a scalar output). */
#define AD_CODEGEN_FORWARD 1u  /* P_forward                          */
#define AD_CODEGEN_VJP 2u      /* P_vjp, and P_gradient if scalar    */
#define AD_CODEGEN_JVP 4u      /* P_jvp                              */
#define AD_CODEGEN_HVP 8u      /* P_hvp (a scalar output)            */
#define AD_CODEGEN_JACOBIAN 16u /* P_jacobian (M reverse sweeps)     */
#define AD_CODEGEN_ALL 31u

/* Options. Zero-initialize and set what you need; prefix is required. */
typedef struct ad_codegen_opts {
    /* Names every generated symbol (P_forward, P_real, ...): a C
     * identifier of at most 64 characters that does not start with an
     * underscore. Copied into the output; not kept. */
    const char *prefix;
    unsigned what;           /* AD_CODEGEN_* bits; 0: all that apply   */
    int use_float;           /* nonzero: P_real is float, else double  */
    /* Statements per generated function (a scalar node is one, a tensor
     * op one, a rerolled block its body); 0: 50, and a tape of up to 200
     * forward + reverse statements gets its forward and vjp as one
     * function each. Bounds the size of each function the C compiler
     * sees: GCC's time per statement grows with the function's size (a
     * non-repeating 18k-node tape, gcc -O2: 32 s at 50, 53 s at 200 in
     * one run), so compile time stays linear in the tape. */
    size_t max_stmts;
    /* When not NULL, the source starts with #include "header_name" (the
     * header written to hdr), so the compiler checks one against the
     * other; NULL: the source stands alone. */
    const char *header_name;
} ad_codegen_opts;

/* A custom op in generated code (ad_opdef.codegen; the descriptor's size
 * must cover the field: size = sizeof(ad_opdef)): the names of two C
 * functions of yours, declared by the generated source and linked with it.
 * With R the generated real type (double, or float under use_float), n
 * the op's arity, sizes[0..n) the operands' element counts and sizes[n]
 * the output's, c the node's constant:
 *   void forward(const R *const *in, R *out, const unsigned long *sizes, double c);
 *       out = the op of in (written);
 *   void vjp(const R *const *in, const R *out, const R *g, R *const *gin,
 *            const unsigned long *sizes, double c);
 *       ADD the vector-Jacobian product with g into gin[k] (NULL: operand
 *       k needs none).
 * They must be reentrant and must not allocate if the generated code is to
 * keep those promises. vjp NULL: the op is refused for the reverse modes.
 * There is no JVP or HVP rule for a custom op in generated code. */
typedef struct ad_codegen_rule {
    const char *forward;
    const char *vjp;
} ad_codegen_rule;

/* Writes C source for out (any shape) as a function of the leaves
 * in[0..n) (each a leaf of t: ad_constant, ad_variable, ad_scalar*,
 * ad_param; no leaf twice) to src, and its header to hdr (NULL: none).
 * The tape is only read (its current values are baked for the leaves not
 * listed); the streams are the caller's, written and flushed, not closed.
 *
 * Returns AD_OK, or with the reason in ad_tape_errmsg (not sticky; the
 * recording stays usable; nothing useful is left in the streams):
 *   AD_EMISUSE  t, in, src or opts NULL, n < 1, a bad handle, an input that
 *               is not a leaf or is listed twice, a prefix that is not a C
 *               identifier, an unknown bit in what, HVP or P_gradient asked
 *               of a non-scalar output ("codegen: ..."), the output not
 *               depending on any input ("codegen: the output (node 9) does
 *               not depend on any input"), an op with no code generation
 *               rule on the way -- a custom op without ad_opdef.codegen
 *               (or its vjp for the reverse modes; every built-in op has
 *               its rules in every mode) -- or with none for a mode asked
 *               for ("codegen: custom op 'wsum' (node 12) has no JVP rule
 *               for generated code": custom ops have no JVP or HVP rule),
 *               an index operand (slice, take) that depends on an input;
 *   AD_ENOMEM   the tape's allocator failed (the scratch is one array of
 *               about 72 bytes per node);
 *   AD_ELIMIT   the work array would exceed 2^32 reals;
 *   AD_EIO      writing src or hdr failed ("codegen: write error on the
 *               source stream", or header).
 * On a tape whose recording failed: its status, nothing written. */
AD_API int ad_codegen(ad_tape *t, ad_node out, int n, const ad_node *in,
                      const ad_codegen_opts *opts, FILE *src, FILE *hdr);

/* Writes C source (and its header, hdr NULL: none) that computes the
 * nonzeros of sp -- a sparse Jacobian or Hessian of the Lagrangian
 * (sparse.h) -- at a point, in exactly sp's order (ad_sparse_pattern's,
 * ad_sparse_eval's): row by row, by increasing column; a Hessian's lower
 * triangle. With P the prefix, N the columns (the inputs' elements, in
 * order, joined: ad_sparse_eval's x), M the outputs' elements:
 *   size_t P_work_size(void);
 *   int P_sparse(const P_real *x, const P_real *wt, P_real *vals, P_real *work);
 *       vals[0..P_NNZ) at x[0..N). A Jacobian: one forward sweep carrying
 *       one tangent per colour, each nonzero then read from the tangent of
 *       its row at its column's colour; wt unused (NULL). A Hessian: that
 *       sweep, then one reverse sweep of forward over reverse with the
 *       outputs' adjoints seeded with wt[0..M) (sigma and the multipliers;
 *       NULL: 1 each), each nonzero read from an adjoint tangent.
 *   void P_sparse_pattern(int *rows, int *cols);   as ad_sparse_pattern
 *   int P_forward(const P_real *x, P_real *out, P_real *work);
 *       out[0..M) = the outputs' elements (what 0 or AD_CODEGEN_FORWARD)
 * and the macros P_ROWS, P_COLS, P_NNZ, P_COLORS, P_N_OUT, P_WORK_SIZE.
 * Returns and guards as ad_codegen's functions; same promises (<math.h>
 * only, no allocation, reentrant, double or float, bounded functions,
 * repeated blocks as loops). The tape is only read; every leaf that is not
 * an input of sp is baked with its current value.
 * opts: prefix, use_float, max_stmts and header_name as for ad_codegen;
 * what 0 or AD_CODEGEN_FORWARD (P_forward), nothing else (the functions
 * of one output come from ad_codegen).
 * Returns AD_OK, or with the reason in ad_tape_errmsg of sp's tape
 * ("codegen_sparse: ..."): AD_EMISUSE (opts or src NULL, a bad prefix,
 * other bits in what, a tape reset or recorded on since sp was made, an op
 * with no JVP -- a Hessian: HVP -- rule for generated code on the way:
 * "codegen: op ..."), AD_ENOMEM, AD_ELIMIT (the work array would exceed
 * 2^32 reals), AD_EIO (a write failed). sp NULL: AD_EMISUSE, no message
 * (there is no tape to hold it). */
AD_API int ad_codegen_sparse(const ad_sparse *sp, const ad_codegen_opts *opts, FILE *src,
                             FILE *hdr);

#ifdef __cplusplus
}
#endif
#endif /* AUTODIFF_CODEGEN_H */
