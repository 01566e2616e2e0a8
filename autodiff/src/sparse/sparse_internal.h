/* sparse_internal.h -- the ad_sparse object, for the library's own use:
 * sparse.c builds and evaluates it, codegen.c (ad_codegen_sparse) writes
 * its evaluation out as C. Not installed. */
#ifndef AD_SPARSE_INTERNAL_H
#define AD_SPARSE_INTERNAL_H

#include "autodiff/sparse.h"
#include "internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where an evaluation reads or writes a node element: node id, element,
 * node size (the stride between directions). */
typedef struct loc {
    uint32_t id;
    uint32_t e;
    size_t size;
} loc;

struct ad_sparse {
    ad_tape *t;
    uint32_t generation;
    size_t len, next_ext;
    bool hessian;
    size_t nrows, ncols, nnz, ncolors;
    size_t nout_elems;          /* output elements (the weights' count)  */
    size_t *rowptr;             /* nrows + 1                             */
    int *col;                   /* nnz                                   */
    uint32_t *color;            /* per column                            */
    uint32_t *src;              /* per nonzero: the row read (an output
                                   element, or a Hessian's input column) */
    uint32_t *dir;              /* per nonzero: the colour read          */
    loc *in_loc;                /* per column: the input leaf element    */
    loc *row_loc;               /* Jacobian: per row, the output element */
    double **rbase;             /* per source row: its direction-0 value */
    double **sbase;             /* per column: its seed, direction 0     */
    double **vptr;              /* per nonzero: where it is read, when one
                                   pass carries every colour             */
    size_t stamp;               /* the modes' layout the pointers are for
                                   (0: none yet)                         */
    int nin, nout;
    uint32_t *in_id;            /* the inputs' node ids                  */
    uint32_t *out_id;           /* the outputs' node ids                 */
    const double **seeds;       /* per output: its weights               */
    double *ones;               /* nout_elems ones                       */
    bool in_view;               /* an input is an ad_param               */
};

#endif /* AD_SPARSE_INTERNAL_H */
