/*
 * sparse.h -- sparse Jacobians and Hessians from a recorded tape, in the
 * formats a nonlinear solver (IPOPT) wants.
 *
 *   ad_sparse_jacobian_new  the Jacobian of some outputs with respect to
 *                           some inputs: its sparsity pattern, found on the
 *                           tape, and a column colouring (distance 2)
 *   ad_sparse_hessian_new   the Hessian of a weighted sum of outputs
 *                           (sigma f + sum_i lambda_i g_i, IPOPT's Hessian
 *                           of the Lagrangian): its pattern (lower
 *                           triangle) and a star colouring
 *   ad_sparse_eval          the nonzeros at a point: one replay carrying
 *                           one tangent per colour (and, for a Hessian, one
 *                           reverse sweep of forward over reverse); no
 *                           allocation
 *   ad_sparse_pattern, ad_sparse_csr
 *                           the nonzeros' positions as triplets or CSR
 *
 * The pattern and the colouring depend only on the recording; they are
 * computed once, into an ad_sparse object the caller owns, and every
 * evaluation at a new point reuses them. The nonzeros are in one fixed
 * order, row by row and, in a row, by increasing column: the order of
 * ad_sparse_pattern's triplets and of ad_sparse_csr's columns, so the same
 * values array serves both. How patterns are found and what each op
 * contributes: docs/sparse.md.
 *
 * Conventions (as in autodiff.h): nothing aborts, exits or prints; every
 * call returns AD_OK or a status, with a message naming the call and the
 * problem left in the tape (ad_tape_errmsg; as for a sweep, not sticky:
 * the recording stays usable). All memory goes through the tape's
 * allocator. An ad_sparse uses its tape's tangent storage (the same as
 * ad_jacobian and ad_hessian), so it is used by one thread at a time, as
 * its tape is.
 */
#ifndef AUTODIFF_SPARSE_H
#define AUTODIFF_SPARSE_H

#include "autodiff/autodiff.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A sparse Jacobian or Hessian: pattern, colouring and the recovery of
 * each nonzero from the compressed sweeps. Opaque. */
typedef struct ad_sparse ad_sparse;

/* Flags of ad_sparse_hessian_new. */
enum {
    AD_SPARSE_DEFAULT = 0,
    /* Colour the Hessian's columns as a Jacobian's (distance 2: no two
     * columns of one colour share a row) instead of a star colouring.
     * Never fewer colours; there for comparison. */
    AD_SPARSE_DISTANCE2 = 1u << 0
};

/* The sparse Jacobian of the outputs out[0..nout) -- scalars, vectors or
 * matrices; their elements, in order, are the rows -- with respect to the
 * inputs in[0..nin) -- variable leaves (ad_variable, ad_scalar_var, an
 * ad_param with a gradient buffer), each named once; their elements, in
 * order, are the columns. Finds the pattern on the recording (index sets
 * carried forward through every op, each op by its rule: docs/sparse.md)
 * and colours the columns so that no two columns of one colour share a
 * row. The nodes are copied; the arrays are not kept.
 *
 * On success *sp receives a new object, freed with ad_sparse_free before
 * the tape is freed. It describes this recording: after ad_tape_reset or
 * further recording, ad_sparse_eval refuses it (AD_EMISUSE). flags: 0.
 * Errors: AD_EMISUSE (t, sp, out or in NULL; nout or nin < 1; a handle
 * not of this tape; an input that is not a variable leaf, or named twice;
 * unknown flags; a custom op on the tape without a jvp -- for a Hessian,
 * also without a second-order rule -- named in the message), AD_ENOMEM;
 * on a recording that failed, its status (its message kept). *sp is NULL
 * on error. Custom ops count as dense: every output element depends on
 * every input element, and every pair is coupled. */
AD_API int ad_sparse_jacobian_new(ad_tape *t, int nout, const ad_node *out, int nin,
                                  const ad_node *in, unsigned flags, ad_sparse **sp);

/* The sparse Hessian, lower triangle (row >= column, IPOPT's convention),
 * of sum_k w_k out_k with respect to the inputs (as above), where the
 * weights w (one per output element, given at each ad_sparse_eval) are
 * sigma and the multipliers lambda of a Lagrangian. The pattern is that of
 * every weight nonzero: the union of the outputs' Hessian patterns, found
 * by carrying index sets forward and marking, from the outputs backward,
 * the nonlinear ops they depend on (docs/sparse.md). Colours: a star
 * colouring (flags AD_SPARSE_DISTANCE2: distance 2), each nonzero read
 * directly from one compressed column.
 * Outputs may be vectors or matrices: their elements are weighted one by
 * one, and then weights must be given (ad_sparse_eval).
 * Ownership, lifetime and errors as ad_sparse_jacobian_new; flags 0 or
 * AD_SPARSE_DISTANCE2. */
AD_API int ad_sparse_hessian_new(ad_tape *t, int nout, const ad_node *out, int nin,
                                 const ad_node *in, unsigned flags, ad_sparse **sp);

/* Frees sp (NULL: no-op). Must be called before its tape is freed. */
AD_API void ad_sparse_free(ad_sparse *sp);

/* Rows (output elements; for a Hessian, input elements), columns (input
 * elements), nonzeros and colours (the tangents one evaluation carries).
 * sp NULL: 0. */
AD_API size_t ad_sparse_rows(const ad_sparse *sp);
AD_API size_t ad_sparse_cols(const ad_sparse *sp);
AD_API size_t ad_sparse_nnz(const ad_sparse *sp);
AD_API size_t ad_sparse_colors(const ad_sparse *sp);

/* The nonzeros' positions as triplets, in the fixed order: rows[k],
 * cols[k] for k < nnz (0-based; a Hessian's have rows[k] >= cols[k]).
 * Either array may be NULL (not written). IPOPT's eval_jac_g and eval_h
 * ask for exactly this when values is NULL. */
AD_API void ad_sparse_pattern(const ad_sparse *sp, int *rows, int *cols);

/* The same as CSR: rowptr (rows + 1 entries) and cols (nnz), the nonzeros
 * of row r being rowptr[r] .. rowptr[r+1]-1. Either may be NULL. */
AD_API void ad_sparse_csr(const ad_sparse *sp, size_t *rowptr, int *cols);

/* Evaluates the nonzeros into values[0..nnz), in the fixed order.
 * x: the inputs' values, all their elements in order (nx of them, which
 * must be the column count); they are written into the input leaves
 * first, as ad_set_value would (an ad_param input: its buffer is read
 * as it is, so pass x NULL and write the buffer). x NULL (nx 0): the
 * leaves' current values.
 * w: the weights, one per output element (nw of them), for a Hessian;
 * NULL (nw 0) means 1 each, and is refused when an output is not a scalar
 * (the Hessian of a vector is not one matrix: weight its elements). A
 * Jacobian takes no weights (w NULL, nw 0).
 * Costs one forward sweep carrying ncolours tangents (in blocks of at
 * most 64), and for a Hessian one reverse sweep of their adjoint
 * tangents; allocates nothing once the tape's tangent storage has room
 * (after the first evaluation, unless ad_jacobian, ad_hessian or
 * ad_tangents asked for more since). The outputs' values are the tape's
 * (ad_value) afterwards.
 * Errors: AD_EMISUSE (sp or values NULL, nx or nw not the size, no
 * weights for a Hessian of a non-scalar output, a tape
 * reset or recorded on since sp was made), AD_EBRANCH or AD_ESINGULAR as
 * ad_replay (values still written), AD_ENOMEM. */
AD_API int ad_sparse_eval(ad_sparse *sp, const double *x, size_t nx, const double *w,
                          size_t nw, double *values);

#ifdef __cplusplus
}
#endif

#endif /* AUTODIFF_SPARSE_H */
