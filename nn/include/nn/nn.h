/*
 * nn.h -- neural-network layers, losses and optimizers written on the
 * autodiff tape.
 *
 * nn holds no derivative code: a layer's forward is a few tape ops
 * (ad_affine, then an activation) and every gradient
 * comes from the generic reverse sweep ad_backward. What nn adds is
 * bookkeeping: a store of named parameters in one flat block, layers that
 * know their shapes and names, losses, optimizers that are one loop over
 * the flat block, a trainer that records a step once and replays it, and a
 * binary parameter file (see docs/nn.md for the byte layout).
 *
 * Conventions that hold for every declaration below:
 *  - Functions that can fail return an nn_status (NN_OK is 0) and keep a
 *    message naming the layer or tensor and the shapes in the object they
 *    were called on (nn_params_errmsg, nn_model_errmsg, ...). The message
 *    is that of the most recent failure; a later success does not clear
 *    it. Messages never need memory to be written.
 *  - The library never aborts, exits or prints. All memory goes through the
 *    allocator given at creation (an ad_alloc_fn; NULL: realloc/free).
 *    Parameter files and checkpoints are read and written with stdio
 *    (and, on POSIX systems, stat/fstat to refuse loading what is not a
 *    regular file; fsync, and open/close of the directory, to make a
 *    checkpoint durable before and after its rename).
 *  - There is no global mutable state. An object may be used by one thread
 *    at a time; different objects by different threads at once.
 *  - Passing NULL where an object is expected is harmless: status functions
 *    return NN_EMISUSE, destructors do nothing, accessors return 0/NULL.
 */
#ifndef NN_NN_H
#define NN_NN_H

#include <autodiff/autodiff.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Symbol visibility: the shared library exports only what is marked NN_API. */
#if defined(NN_STATIC_DEFINE)
#  define NN_API
#elif defined(_WIN32)
#  ifdef NN_BUILDING
#    define NN_API __declspec(dllexport)
#  else
#    define NN_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define NN_API __attribute__((visibility("default")))
#else
#  define NN_API
#endif

/* ------------------------------------------------------------------ */
/* Status codes                                                        */
/* ------------------------------------------------------------------ */

typedef enum nn_status {
    NN_OK = 0,
    NN_ENOMEM,    /* the allocator returned NULL                          */
    NN_ESHAPE,    /* shapes do not fit (layer sizes, data, file vs model) */
    NN_EMISUSE,   /* caller bug: NULL, bad argument, bad option           */
    NN_ENOTFOUND, /* no parameter of that name                            */
    NN_EEXIST,    /* a parameter of that name already exists              */
    NN_ELIMIT,    /* a size limit was hit                                 */
    NN_EIO,       /* a file could not be opened, read or written          */
    NN_EFORMAT,   /* not a valid parameter file: bad magic, other version,
                     truncated, bad CRC, malformed                        */
    NN_STATUS_COUNT
} nn_status;

/* A static, never-NULL description of a status code. Unknown codes give
 * "unknown status". */
NN_API const char *nn_strstatus(int status);

/* ------------------------------------------------------------------ */
/* Random numbers                                                      */
/* ------------------------------------------------------------------ */

/* A seeded generator (xoshiro256** seeded through splitmix64): the same
 * seed gives the same stream on every run and machine, so initialisation
 * and shuffling are reproducible bit for bit. A plain value type owned by
 * the caller; the field is private. */
typedef struct nn_rng {
    uint64_t s_[4];
} nn_rng;

/* Seeds r. Any seed is fine, 0 included. r NULL: no-op. */
NN_API void nn_rng_seed(nn_rng *r, uint64_t seed);
/* The next 64 random bits. r NULL: 0. */
NN_API uint64_t nn_rng_next(nn_rng *r);
/* Uniform in [0, 1), 53 random bits. r NULL: 0. */
NN_API double nn_rng_uniform(nn_rng *r);
/* Standard normal (Box-Muller; uses two uniforms per call). r NULL: 0. */
NN_API double nn_rng_normal(nn_rng *r);
/* Uniform integer in [0, n), unbiased. n 0 or r NULL: 0. */
NN_API uint64_t nn_rng_below(nn_rng *r, uint64_t n);

/* ------------------------------------------------------------------ */
/* CRC32                                                               */
/* ------------------------------------------------------------------ */

/* CRC-32 (IEEE 802.3, as in zlib and PNG) of n bytes, continuing from crc:
 * start with crc = 0; nn_crc32(nn_crc32(0, a, na), b, nb) equals the CRC
 * of a followed by b. data NULL with n 0: returns crc. */
NN_API uint32_t nn_crc32(uint32_t crc, const void *data, size_t n);

/* ------------------------------------------------------------------ */
/* Parameter store                                                     */
/* ------------------------------------------------------------------ */

/* Named tensors ("dense1.W") whose values live in one flat block of
 * doubles and whose gradients live in a second block of the same layout,
 * so an optimizer is one loop. Tensors are found by name (a hash table). */
typedef struct nn_params nn_params;

/* Longest name, in bytes, including the terminating NUL. */
#define NN_NAME_MAX 64

/* A new, empty store. alloc NULL: realloc/free. NULL when out of memory.
 * Free with nn_params_free. */
NN_API nn_params *nn_params_new(ad_alloc_fn alloc, void *alloc_ud);
/* Frees the store and its blocks. NULL: no-op. */
NN_API void nn_params_free(nn_params *p);

/* Adds a tensor named name (1 .. NN_NAME_MAX-1 bytes, copied) of the given
 * shape, values and gradients zero. *index (if index is not NULL) receives
 * its index (tensors are numbered 0, 1, ... in the order added). Adding
 * may move both blocks: pointers from nn_params_value/grad/values/grads
 * and tapes that view them become invalid, and nn_params_version changes.
 * Returns NN_OK, NN_EMISUSE (NULL, bad name, bad shape), NN_EEXIST,
 * NN_ELIMIT or NN_ENOMEM (the store is then unchanged). */
NN_API int nn_params_add(nn_params *p, const char *name, ad_shape shape, size_t *index);

/* Number of tensors. */
NN_API size_t nn_params_count(const nn_params *p);
/* Number of doubles in the value block (= in the gradient block). */
NN_API size_t nn_params_size(const nn_params *p);
/* Changes every time a tensor is added (see nn_params_add). */
NN_API uint64_t nn_params_version(const nn_params *p);

/* Finds a tensor by name: NN_OK and *index set, or NN_ENOTFOUND (or
 * NN_EMISUSE for NULL arguments), with the reason in nn_params_errmsg. */
NN_API int nn_params_find(nn_params *p, const char *name, size_t *index);
/* Name of tensor i (owned by the store, valid until it is freed), or NULL
 * when i is out of range. */
NN_API const char *nn_params_name(const nn_params *p, size_t i);
/* Shape of tensor i; a zero shape (ndim -1) when i is out of range. */
NN_API ad_shape nn_params_shape(const nn_params *p, size_t i);
/* Offset of tensor i in the flat blocks (in doubles); 0 when out of range. */
NN_API size_t nn_params_offset(const nn_params *p, size_t i);
/* Values / gradients of tensor i (row-major, nn_params_shape(i) doubles),
 * or NULL when i is out of range. Owned by the store; valid until the next
 * nn_params_add or nn_params_free. */
NN_API double *nn_params_value(nn_params *p, size_t i);
NN_API double *nn_params_grad(nn_params *p, size_t i);
/* The whole value / gradient block (nn_params_size doubles), NULL when the
 * store is empty. Same ownership and lifetime as above. */
NN_API double *nn_params_values(nn_params *p);
NN_API double *nn_params_grads(nn_params *p);

/* Initialisers. fan_in is the number of columns of a matrix, the length of
 * a vector, 1 for a scalar. */
typedef enum nn_init {
    NN_INIT_ZEROS,    /* 0                                       */
    NN_INIT_UNIFORM,  /* uniform in +-sqrt(6 / fan_in)           */
    NN_INIT_NORMAL,   /* normal with mean 0 and the given std    */
    NN_INIT_COUNT
} nn_init;

/* Fills tensor i with init, drawing from rng (not used by NN_INIT_ZEROS,
 * may then be NULL). std is used by NN_INIT_NORMAL only. Returns NN_OK or
 * NN_EMISUSE (bad index, kind, std, or rng NULL when needed). */
NN_API int nn_params_init(nn_params *p, size_t i, nn_init init, double std, nn_rng *rng);

/* Sets every gradient to 0. NULL: no-op. */
NN_API void nn_params_zero_grad(nn_params *p);
/* Euclidean norm of the whole gradient block. NULL: 0. */
NN_API double nn_params_grad_norm(const nn_params *p);
/* Clip by global norm: if the gradient norm exceeds max_norm, scales every
 * gradient by max_norm / norm. *norm (if not NULL) receives the norm before
 * clipping. Returns NN_OK or NN_EMISUSE (max_norm not positive and finite). */
NN_API int nn_params_clip_grad_norm(nn_params *p, double max_norm, double *norm);

/* Enters tensor i into tape t as an ad_param leaf viewing the store's
 * value and gradient (grad nonzero) or the value only (grad 0: no gradient
 * flows). Every ad_replay reads the current values; every ad_backward adds
 * into the gradients. The view is valid until the next nn_params_add.
 * Returns the node, or nil: a bad index is reported in nn_params_errmsg,
 * a tape failure in ad_tape_errmsg. */
NN_API ad_node nn_params_node(nn_params *p, ad_tape *t, size_t i, int grad);

/* Writes every tensor to path in the format of docs/nn.md (magic,
 * version, count, per tensor name, shape and little-endian doubles, CRC32).
 * Returns NN_OK, NN_EIO or NN_EMISUSE. */
NN_API int nn_params_save(nn_params *p, const char *path);
/* Reads path into the store. The file must hold exactly the store's
 * tensors (by name, any order) with the same shapes. Everything is checked
 * before anything is copied: on any error the store is untouched. path
 * must be a regular file (not a directory, FIFO or device; checked before
 * opening); it is read to its end whatever size the system reports (a
 * /proc file reports 0). Returns NN_OK, NN_EIO (not a regular file,
 * cannot open/read), NN_ELIMIT (over SIZE_MAX / 32 bytes), NN_EFORMAT (bad
 * magic, other version, truncated, trailing bytes, bad CRC, malformed),
 * NN_ESHAPE (a shape differs), NN_ENOTFOUND (a tensor of the file is not
 * in the store, or the counts differ), NN_ENOMEM or NN_EMISUSE. */
NN_API int nn_params_load(nn_params *p, const char *path);

/* Message of the most recent failure ("" if none). Owned by the store,
 * valid until it is freed. Never NULL (NULL store: a static text). */
NN_API const char *nn_params_errmsg(const nn_params *p);

/* ------------------------------------------------------------------ */
/* Activations and losses                                              */
/* ------------------------------------------------------------------ */

typedef enum nn_act {
    NN_ACT_IDENTITY,
    NN_ACT_RELU,      /* ad_relu    */
    NN_ACT_TANH,      /* ad_tanh    */
    NN_ACT_SIGMOID,   /* ad_sigmoid */
    NN_ACT_COUNT
} nn_act;

/* "identity", "relu", "tanh", "sigmoid"; "unknown" otherwise. Static. */
NN_API const char *nn_act_name(nn_act act);

/* Losses of a prediction yhat against a target y of the same shape: a
 * vector (one sample) or a B x n matrix (B samples, one per row). */
typedef enum nn_loss {
    NN_LOSS_HALF_SSE, /* 1/2 sum (yhat - y)^2 per sample, averaged over B */
    NN_LOSS_MSE,      /* mean of (yhat - y)^2 over all B*n elements       */
    NN_LOSS_XENT,     /* softmax cross-entropy of logits yhat against
                         probability rows y (e.g. one-hot), averaged over B */
    NN_LOSS_COUNT
} nn_loss;

/* "half_sse", "mse", "xent"; "unknown" otherwise. Static. */
NN_API const char *nn_loss_name(nn_loss loss);

/* ------------------------------------------------------------------ */
/* Models                                                              */
/* ------------------------------------------------------------------ */

/* A sequential stack of layers with its parameter store. Layers are named
 * by kind and position: "dense1", "dense2", "neuron3"...; their tensors
 * are "<layer>.W" (k x n) and "<layer>.b" (k). */
typedef struct nn_model nn_model;

typedef struct nn_model_opts {
    ad_alloc_fn alloc;   /* NULL: realloc/free                  */
    void *alloc_ud;
    uint64_t seed;       /* seeds the initialisation generator  */
} nn_model_opts;

/* A new model with no layers. opts NULL: defaults (seed 0). NULL when out
 * of memory. Free with nn_model_free. */
NN_API nn_model *nn_model_new(const nn_model_opts *opts);
/* Frees the model, its store and its internal tapes. NULL: no-op. */
NN_API void nn_model_free(nn_model *m);

/* Appends a dense layer of k = n_out units on n = n_in inputs:
 *   z = W x + b (one sample), Z = X W^T + b (a batch), output act(z).
 * W is initialised uniform in +-sqrt(6/n_in) from the model's generator,
 * b to 0. n_in must equal the previous layer's n_out; otherwise NN_ESHAPE
 * with e.g. "dense2: input has 64 features but the layer expects 128".
 * Returns NN_OK, NN_ESHAPE, NN_EMISUSE (a size 0, bad act), NN_ELIMIT or
 * NN_ENOMEM; on failure the model is unchanged. */
NN_API int nn_model_add_dense(nn_model *m, uint32_t n_in, uint32_t n_out, nn_act act);
/* Appends a single neuron, yhat = act(w . x + b): a dense layer with one
 * unit (W is 1 x n_in, output length 1), named "neuronN". */
NN_API int nn_model_add_neuron(nn_model *m, uint32_t n_in, nn_act act);
/* Appends an MLP: dense layers sizes[0] -> sizes[1] -> ... ->
 * sizes[nsizes-1], act hidden on every layer but the last, which gets
 * output. nsizes >= 2. On failure the layers added by this call are
 * removed again. Same returns as nn_model_add_dense. */
NN_API int nn_model_add_mlp(nn_model *m, const uint32_t *sizes, size_t nsizes, nn_act hidden,
                            nn_act output);

/* Number of layers. */
NN_API size_t nn_model_layers(const nn_model *m);
/* Name of layer i ("dense1"), owned by the model; NULL if out of range. */
NN_API const char *nn_model_layer_name(const nn_model *m, size_t i);
/* Inputs of the first layer / outputs of the last; 0 without layers. */
NN_API uint32_t nn_model_input_size(const nn_model *m);
NN_API uint32_t nn_model_output_size(const nn_model *m);
/* The model's parameter store and generator: owned by the model, valid
 * until it is freed. Adding tensors to the store directly is allowed but
 * they take no part in the forward pass. */
NN_API nn_params *nn_model_params(nn_model *m);
NN_API nn_rng *nn_model_rng(nn_model *m);

/* Records the forward pass on tape t: x is a vector (n_in: one sample,
 * W x + b) or a B x n_in matrix (B samples, X W^T + b). Every parameter
 * enters as an ad_param viewing the store, with gradients (grad nonzero)
 * or without. Returns the output node (length n_out, or B x n_out), or nil
 * with the reason, naming the layer, in nn_model_errmsg (the tape may hold
 * the underlying error too). */
NN_API ad_node nn_model_forward(nn_model *m, ad_tape *t, ad_node x, int grad);
/* Records loss(yhat, y) on t (see nn_loss). Returns the scalar node, or
 * nil with the reason in nn_model_errmsg ("loss xent: prediction is 64x10
 * but target is 64x5"). */
NN_API ad_node nn_model_loss(nn_model *m, ad_tape *t, nn_loss loss, ad_node yhat, ad_node y);

/* Inference without gradients: X holds batch rows of n_in doubles, out
 * receives batch rows of n_out. Uses a tape inside the model, recorded for
 * a batch size and replayed while the size and the store stay the same
 * (no allocation then). batch 1 uses the one-sample (vector) form.
 * Returns NN_OK, NN_EMISUSE (NULL, batch 0, no layers), NN_ENOMEM or a
 * tape error, with the reason in nn_model_errmsg. */
NN_API int nn_model_predict(nn_model *m, const double *X, uint32_t batch, double *out);

/* nn_params_save / nn_params_load on the model's store; the reason of a
 * failure goes to nn_model_errmsg. A failed load leaves the model
 * untouched. */
NN_API int nn_model_save(nn_model *m, const char *path);
NN_API int nn_model_load(nn_model *m, const char *path);

/* Message of the most recent failure ("" if none). Owned by the model,
 * valid until it is freed. Never NULL. */
NN_API const char *nn_model_errmsg(const nn_model *m);

/* ------------------------------------------------------------------ */
/* Optimizers                                                          */
/* ------------------------------------------------------------------ */

typedef enum nn_optim_kind {
    NN_OPTIM_SGD,      /* w -= lr g                                      */
    NN_OPTIM_MOMENTUM, /* v = mu v + g;  w -= lr v                       */
    NN_OPTIM_ADAM,     /* m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
                          w -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) */
    NN_OPTIM_COUNT
} nn_optim_kind;

typedef struct nn_optim_opts {
    nn_optim_kind kind;
    double lr;        /* learning rate, > 0                    */
    double momentum;  /* mu for NN_OPTIM_MOMENTUM, in [0, 1)   */
    double beta1;     /* Adam, in [0, 1)                       */
    double beta2;     /* Adam, in [0, 1)                       */
    double eps;       /* Adam, > 0                             */
} nn_optim_opts;

/* Sensible defaults for a kind: lr 0.01 (SGD, momentum) or 0.001 (Adam),
 * momentum 0.9, beta1 0.9, beta2 0.999, eps 1e-8. */
NN_API nn_optim_opts nn_optim_defaults(nn_optim_kind kind);
/* "sgd", "momentum", "adam"; "unknown" otherwise. Static. */
NN_API const char *nn_optim_name(nn_optim_kind kind);
/* Checks options: NN_OK, or NN_EMISUSE with a reason written into msg
 * (cap bytes, NUL-terminated; msg may be NULL). */
NN_API int nn_optim_check(const nn_optim_opts *opts, char *msg, size_t cap);

/* Optimizer state (velocity, moments) for a store of size doubles. */
typedef struct nn_optim nn_optim;

/* A new optimizer with zero state for size values. NULL when out of
 * memory, opts is NULL or fails nn_optim_check, or size is 0. alloc NULL:
 * realloc/free. Free with nn_optim_free. */
NN_API nn_optim *nn_optim_new(const nn_optim_opts *opts, size_t size, ad_alloc_fn alloc,
                              void *alloc_ud);
/* NULL: no-op. */
NN_API void nn_optim_free(nn_optim *o);
/* One update of p's values from p's gradients (one loop over the flat
 * blocks). Returns NN_OK, or NN_ESHAPE when p does not have the size the
 * optimizer was made for (reason in nn_optim_errmsg), NN_EMISUSE for NULL. */
NN_API int nn_optim_step(nn_optim *o, nn_params *p);
/* nn_optim_step in pieces, for an update fused into a sweep
 * (ad_set_grad_hook's update): nn_optim_begin once per step, before any
 * piece (it counts the step and advances Adam's bias correction), then
 * nn_optim_apply for pieces [off, off + n) of the flat store -- w and g
 * point at element off of the values and of this step's gradient -- each
 * element once per step, in any order. The step is then exactly
 * nn_optim_step's, element for element. A piece beyond the size the
 * optimizer was made for is ignored; NULL: no-op. */
NN_API void nn_optim_begin(nn_optim *o);
NN_API void nn_optim_apply(nn_optim *o, size_t off, double *w, const double *g, size_t n);
/* Zeroes the state and the step count. NULL: no-op. */
NN_API void nn_optim_reset(nn_optim *o);
/* Changes the learning rate (e.g. for a schedule). NN_OK or NN_EMISUSE. */
NN_API int nn_optim_set_lr(nn_optim *o, double lr);
/* Steps taken since creation or reset. */
NN_API uint64_t nn_optim_steps(const nn_optim *o);
/* Message of the most recent failure ("" if none). Never NULL. */
NN_API const char *nn_optim_errmsg(const nn_optim *o);

/* ------------------------------------------------------------------ */
/* Trainer: record once, replay every step                             */
/* ------------------------------------------------------------------ */

/* Owns the tapes of a training loop. The forward pass and the loss are
 * recorded once per batch size, with the batch as ad_param views of
 * buffers the trainer owns; each step copies the batch into those
 * buffers, replays, sweeps back, clips and updates (the update inside
 * the sweep when it can: see nn_trainer_fused). The sweep writes the
 * gradients (AD_SWEEP_ASSIGN) rather than adding to zeroed ones; a tensor
 * added to the store outside the model's layers gets a zero gradient.
 * Two batch sizes are kept recorded at once (e.g. the full batch and the
 * last partial one); a third size re-records the second slot. In steady
 * state a step allocates nothing. */
typedef struct nn_trainer nn_trainer;

typedef struct nn_trainer_opts {
    nn_loss loss;
    nn_optim_opts optim;
    double clip_norm;   /* clip gradients to this global norm; 0: never */
} nn_trainer_opts;

/* A trainer for m (which must outlive it and have at least one layer),
 * sized for the model's current store. NULL when out of memory or on bad
 * options, with the reason in nn_model_errmsg(m). Uses m's allocator. */
NN_API nn_trainer *nn_trainer_new(nn_model *m, const nn_trainer_opts *opts);
/* NULL: no-op. */
NN_API void nn_trainer_free(nn_trainer *tr);
/* One training step on batch rows: X is batch x n_in, Y is batch x n_out
 * (row-major doubles; for NN_LOSS_XENT, probability rows such as one-hot).
 * *loss (if not NULL) receives the loss before the update. batch 1 uses
 * the one-sample (vector) form. Returns NN_OK, NN_EMISUSE (NULL, batch 0,
 * the model changed since the trainer was made), NN_ENOMEM or a tape
 * error, with the reason in nn_trainer_errmsg. */
NN_API int nn_trainer_step(nn_trainer *tr, const double *X, const double *Y, uint32_t batch,
                           double *loss);
/* The trainer's optimizer (owned by the trainer), e.g. for nn_optim_set_lr. */
NN_API nn_optim *nn_trainer_optim(nn_trainer *tr);
/* How many times a step had to record a tape (the rest were replays). */
NN_API uint64_t nn_trainer_recordings(const nn_trainer *tr);
/* Message of the most recent failure ("" if none). Never NULL. */
NN_API const char *nn_trainer_errmsg(const nn_trainer *tr);
/* Whether steps run the optimizer inside the backward sweep (1) or after
 * it (0). Fused is the default when it can give the same step: no
 * gradient clipping (clip_norm 0, which needs the whole gradient first)
 * and every tensor of the store in a layer. Each tensor is then updated as
 * soon as its gradient is complete (ad_set_grad_hook), a layer's weights
 * row by row inside its backward pass while the rows are in cache, and
 * the parameters after each step equal the unfused step's bit for bit
 * (the same products, summed in the same order; tested; to 1e-12 with
 * the BLAS backend, whose unfused products come from BLAS). The store's
 * gradient block is then scratch: after a fused step it does not hold the
 * gradient. nn_trainer_set_fused(tr, 0) turns it off (the next step
 * records again), e.g. to read the gradients after each step; 1 turns it
 * back on. NULL: 0 / no-op. */
NN_API int nn_trainer_fused(const nn_trainer *tr);
NN_API void nn_trainer_set_fused(nn_trainer *tr, int on);

/* ------------------------------------------------------------------ */
/* Data-parallel training: a caller-supplied gradient reduction        */
/* ------------------------------------------------------------------ */

/* How P processes ("ranks") that each take rows of one global batch sum
 * their gradients. nn holds no communication code: the caller supplies
 * start and wait (nn_mpi in nn/mpi/ supplies them over MPI; see
 * docs/distributed.md). With a reduction set, each rank's loss is its
 * share of the global batch's: the same per-row terms divided by the
 * global row count ranks x rows (xent: (1/(P b)) sum of the rank's b rows),
 * so the sum over the ranks of their gradients is the gradient of the
 * global batch's loss. Each step then runs:
 *   sweep (per_tensor: start(off, g, n) for each tensor from its
 *          gradient-ready hook, while the sweep goes on through the
 *          earlier layers);
 *   start(0, whole gradient block) when not per_tensor;
 *   wait;  clip (clip_norm);  optimizer step.
 * The optimizer never runs inside the sweep then (nn_trainer_fused is 0).
 * start and wait return 0 on success; anything else fails the step with
 * NN_EIO before the parameters change. After a failed start no further
 * start is made in that step, and wait is still called, so that no
 * reduction started before the failure stays in flight (a failed
 * collective may leave the other ranks waiting: treat it as fatal for the
 * run). Every rank must set
 * the same reduction options and step with the same batch size, so that
 * the calls come in the same order on every rank. */
typedef struct nn_reduce {
    size_t size;        /* sizeof(nn_reduce): fields past size are not read */
    uint32_t ranks;     /* P >= 1: processes sharing each global batch        */
    int per_tensor;     /* 1: start per tensor from the sweep; 0: once after  */
    /* Begin replacing g[0 .. n) -- elements off .. off+n of the flat
     * gradient block -- by its sum over the ranks, in place. May return
     * before that is done (a non-blocking collective). */
    int (*start)(void *ud, size_t off, double *g, size_t n);
    /* Completes every reduction started since the last wait. */
    int (*wait)(void *ud);
    void *ud;           /* passed to start and wait */
} nn_reduce;

/* Sets (r NULL: removes) tr's reduction; r is copied. The next step
 * records again (the loss and the hooks change). Returns NN_OK or
 * NN_EMISUSE (size too small, ranks 0, start or wait NULL; reason in
 * nn_trainer_errmsg; the trainer is then unchanged). tr NULL: NN_EMISUSE. */
NN_API int nn_trainer_set_reduce(nn_trainer *tr, const nn_reduce *r);
/* Ranks of the reduction set (1 without one). tr NULL: 0. */
NN_API uint32_t nn_trainer_ranks(const nn_trainer *tr);

/* Rows [*begin, *end) of a global batch of batch rows that rank takes
 * when ranks share it: contiguous, in rank order, the first batch % ranks
 * ranks one row more. Returns NN_OK, or NN_EMISUSE when ranks is 0, rank
 * >= ranks or a pointer is NULL. Rows may be empty (batch < ranks): the
 * trainer refuses an empty batch, so keep batch >= ranks (and, for steps
 * equal to one process's, batch a multiple of ranks: see nn_reduce). */
NN_API int nn_shard(uint64_t batch, uint32_t ranks, uint32_t rank, uint64_t *begin,
                    uint64_t *end);

/* Fisher-Yates shuffle of idx[0 .. n) drawing from r (nn_rng_below): the
 * same seed gives the same order on every rank and machine. NULL: no-op. */
NN_API void nn_rng_shuffle(nn_rng *r, uint32_t *idx, size_t n);

/* ------------------------------------------------------------------ */
/* Checkpoints                                                         */
/* ------------------------------------------------------------------ */

/* The caller's side of a training loop's state, stored in a checkpoint
 * beside the trainer's (parameters, optimizer state and options, learning
 * rate, step count) so that a resumed run continues bit for bit. */
typedef struct nn_checkpoint {
    uint64_t epoch;     /* data-order position: the epoch ...                */
    uint64_t position;  /* ... and the global rows of it already consumed   */
    nn_rng rng;         /* the caller's generator (e.g. the shuffling one)   */
    uint32_t ranks;     /* save: ignored (the trainer's ranks are written);
                           resume: the ranks of the run that wrote it       */
} nn_checkpoint;

/* Writes tr's state and *ck to path atomically: into "<path>.tmp", then
 * fflush, fsync, rename over path, and (POSIX) fsync of the directory. A
 * crash leaves either the old file or the new one at path, never a
 * partial one; on failure the temporary is removed and path is untouched.
 * Layout: docs/distributed.md. Under data parallelism every rank holds the
 * same state: one rank (rank 0) saves. Returns NN_OK, NN_EIO (cannot
 * write, sync or rename; the reason names the file), NN_ENOMEM or
 * NN_EMISUSE (NULL). */
NN_API int nn_trainer_save(nn_trainer *tr, const char *path, const nn_checkpoint *ck);
/* Reads a checkpoint written by nn_trainer_save into tr (parameters,
 * optimizer state, learning rate and options, step count; the model's
 * generator) and *ck (ck may be NULL). Everything is checked first; on any
 * error nothing changes. Errors: NN_EIO (not a regular file, cannot read),
 * NN_EFORMAT (bad magic, other version, truncated, trailing bytes, bad
 * CRC, malformed), NN_ESHAPE (another architecture -- a tensor's name,
 * shape or count differs -- or another optimizer kind), NN_ELIMIT,
 * NN_ENOMEM, NN_EMISUSE; the message (nn_trainer_errmsg) names the
 * problem. A checkpoint written with another number of ranks is accepted
 * (re-sharded): the state is the same on every rank and the position
 * counts global rows; *ck->ranks tells the writer's count. */
NN_API int nn_trainer_resume(nn_trainer *tr, const char *path, nn_checkpoint *ck);

#ifdef __cplusplus
}
#endif
#endif /* NN_NN_H */
