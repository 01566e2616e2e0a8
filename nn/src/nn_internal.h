/* nn_internal.h -- structures and helpers shared by the nn sources. */
#ifndef NN_INTERNAL_H
#define NN_INTERNAL_H

#include "nn/nn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- memory: every byte goes through the caller's hook ---- */

typedef struct nn__mem {
    ad_alloc_fn fn;
    void *ud;
} nn__mem;

void nn__mem_init(nn__mem *m, ad_alloc_fn fn, void *ud);
void *nn__alloc(nn__mem *m, size_t n);
void *nn__realloc(nn__mem *m, void *p, size_t osize, size_t nsize);
void nn__free(nn__mem *m, void *p, size_t n);

/* ---- errors ---- */

#define NN__MSG_CAP 256

/* Writes a printf-style message into msg (NN__MSG_CAP bytes) and returns
 * status. Never allocates. */
int nn__fail(char *msg, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Copies a message (truncating) and returns status. */
int nn__copy_msg(char *msg, int status, const char *from);
/* The nn status for an autodiff status. */
int nn__from_ad(int ad_status);
/* "a scalar", "a vector of length 5" or "3x4". */
const char *nn__shape_str(ad_shape s, char *buf, size_t cap);
/* A shape the store accepts: ndim 0..2, fields consistent, size >= 1. */
bool nn__shape_ok(ad_shape s);

/* ---- parameter store internals used by the model ---- */

/* Removes the most recently added tensor (undo of a failed multi-step
 * add). Its memory in the blocks is kept as capacity. */
void nn__params_pop(nn_params *p);

/* ---- layers ---- */

typedef struct nn__layer {
    char name[NN_NAME_MAX / 2];
    uint32_t n_in, n_out;
    nn_act act;
    size_t W, b;                /* tensor indices in the store */
} nn__layer;

/* A recorded tape with owned input/target buffers, replayed while the
 * batch size and the store stay the same. */
typedef struct nn__slot {
    ad_tape *tape;
    uint32_t batch;             /* 0: nothing recorded        */
    uint64_t version;           /* store version at recording */
    double *X, *Y;              /* batch x n_in, batch x n_out */
    size_t capX, capY;          /* doubles allocated          */
    ad_node out;                /* model output, or the loss  */
} nn__slot;

struct nn_model {
    nn__mem mem;
    nn_params *params;
    nn_rng rng;
    nn__layer *layers;
    size_t nlayers, cap_layers;
    nn__slot predict;
    char msg[NN__MSG_CAP];
};

/* Records the forward pass (see nn_model_forward) into *out; returns the
 * status, the reason in m->msg. */
int nn__forward(nn_model *m, ad_tape *t, ad_node x, int grad, ad_node *out);
/* The same, also giving each layer tensor's node at its store index in
 * params[] (nn_params_count entries; others untouched). */
int nn__forward_params(nn_model *m, ad_tape *t, ad_node x, int grad, ad_node *out,
                       ad_node *params);
/* Records a loss (see nn_model_loss) the same way. */
int nn__loss(nn_model *m, ad_tape *t, nn_loss loss, ad_node yhat, ad_node y, ad_node *out);

/* Makes sure slot s has buffers for batch rows and a tape; records
 * nothing. NN_OK or NN_ENOMEM (message in msg). */
int nn__slot_reserve(nn__mem *mem, nn__slot *s, uint32_t batch, uint32_t n_in, uint32_t n_out,
                     char *msg);
void nn__slot_free(nn__mem *mem, nn__slot *s);

#endif /* NN_INTERNAL_H */
