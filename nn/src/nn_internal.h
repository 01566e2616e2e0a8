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
/* Records a loss (see nn_model_loss) the same way; ranks > 1: this
 * rank's share of a global batch of ranks x its rows (see nn_reduce). */
int nn__loss(nn_model *m, ad_tape *t, nn_loss loss, ad_node yhat, ad_node y, uint32_t ranks,
             ad_node *out);

/* Makes sure slot s has buffers for batch rows and a tape; records
 * nothing. NN_OK or NN_ENOMEM (message in msg). */
int nn__slot_reserve(nn__mem *mem, nn__slot *s, uint32_t batch, uint32_t n_in, uint32_t n_out,
                     char *msg);
void nn__slot_free(nn__mem *mem, nn__slot *s);

/* ---- optimizer and trainer: shared with checkpoint.c ---- */

struct nn_optim {
    nn__mem mem;
    nn_optim_opts o;
    size_t size;
    double *m1;          /* momentum: velocity; Adam: first moment */
    double *m2;          /* Adam: second moment                    */
    uint64_t t;          /* steps taken                            */
    double b1t, b2t;     /* beta1^t, beta2^t (Adam bias correction) */
    char msg[NN__MSG_CAP];
};

struct nn_trainer {
    nn_model *m;
    nn_loss loss;
    double clip;
    nn_optim *opt;
    nn__slot slot[2];       /* [0]: the first batch size; [1]: any other */
    uint64_t version;       /* store version the trainer was made for   */
    bool assign;            /* the model's layers hold every tensor of the
                               store: the sweep writes all the gradients
                               (AD_SWEEP_ASSIGN), no zeroing pass        */
    uint64_t recordings;
    bool fused_off;         /* nn_trainer_set_fused(tr, 0)          */
    struct piece {          /* one hook's target: a tensor of the store */
        nn_optim *opt;
        size_t off;
        size_t n;           /* doubles                              */
        struct nn_trainer *tr;
    } *pieces;              /* one per store tensor                 */
    nn_reduce red;          /* red.start NULL: no reduction         */
    int red_status;         /* first failed start of this step, or 0 */
    size_t red_piece;       /* the tensor it failed on              */
    ad_node *nodes;         /* the recording's parameter nodes      */
    size_t npieces;
    char msg[NN__MSG_CAP];
};

/* ---- file encoding (params_io.c): little-endian whatever the host ---- */

void nn__put_u16(unsigned char *b, uint32_t v);
void nn__put_u32(unsigned char *b, uint32_t v);
void nn__put_u64(unsigned char *b, uint64_t v);
void nn__put_f64(unsigned char *b, double d);
uint32_t nn__get_u16(const unsigned char *b);
uint32_t nn__get_u32(const unsigned char *b);
uint64_t nn__get_u64(const unsigned char *b);
double nn__get_f64(const unsigned char *b);
/* Reads the regular file path to its end into a block from mem (*cap
 * bytes, *len used; free with nn__free(mem, *out, *cap)). Refuses what is
 * not a regular file before opening it. Messages, prefixed with who, go
 * to msg. NN_OK, NN_EIO, NN_ELIMIT or NN_ENOMEM. */
int nn__slurp(nn__mem *mem, char *msg, const char *who, const char *path, unsigned char **out,
              size_t *len, size_t *cap);

#endif /* NN_INTERNAL_H */
