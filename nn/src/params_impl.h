/* params_impl.h -- the parameter store's layout, shared by params.c and
 * params_io.c. */
#ifndef NN_PARAMS_IMPL_H
#define NN_PARAMS_IMPL_H

#include "uthash_config.h"

typedef struct nn__entry {
    char name[NN_NAME_MAX];
    ad_shape shape;
    size_t offset;              /* first double in the blocks */
    size_t size;                /* doubles                    */
    size_t index;               /* position in the list       */
    UT_hash_handle hh;          /* by name                    */
} nn__entry;

struct nn_params {
    nn__mem mem;
    nn__entry **list;           /* in the order added         */
    size_t count, cap_list;
    nn__entry *by_name;         /* uthash head                */
    double *val, *grad;         /* the two flat blocks        */
    size_t size;                /* doubles in use             */
    size_t cap_val, cap_grad;   /* doubles allocated          */
    uint64_t version;
    char msg[NN__MSG_CAP];
};

/* Largest store, in doubles: keeps every byte count far from overflow. */
#define NN__MAX_DOUBLES (((size_t)-1) / sizeof(double) / 4)

#endif
