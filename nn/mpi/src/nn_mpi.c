/* nn_mpi.c -- an nn_reduce over MPI: MPI_Iallreduce per tensor from the
 * sweep's ready hooks (or one MPI_Allreduce on the block), MPI_Waitall
 * before the update. */
#include <nn/nn_mpi.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NN_MPI_MSG_CAP 256

struct nn_mpi {
    ad_alloc_fn fn;
    void *ud;
    MPI_Comm comm;              /* our duplicate                    */
    int rank, size;
    MPI_Request *req;           /* max_pending                      */
    size_t max_pending, pending;
    char msg[NN_MPI_MSG_CAP];
};

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud, (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

/* Writes "nn_mpi: <what> failed: <MPI's text>" and returns 1. */
static int mpi_fail(nn_mpi *c, const char *what, size_t n, int err)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", err);
    snprintf(c->msg, sizeof c->msg, "nn_mpi: %s of %zu doubles failed: %.160s", what, n, text);
    return 1;
}

nn_mpi *nn_mpi_new(MPI_Comm comm, size_t max_pending, ad_alloc_fn alloc, void *alloc_ud)
{
    if (max_pending == 0 || max_pending > ((size_t)-1) / sizeof(MPI_Request))
        return NULL;
    if (!alloc) {
        alloc = default_alloc;
        alloc_ud = NULL;
    }
    nn_mpi *c = alloc(alloc_ud, NULL, 0, sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->fn = alloc;
    c->ud = alloc_ud;
    c->max_pending = max_pending;
    c->req = alloc(alloc_ud, NULL, 0, max_pending * sizeof *c->req);
    /* Collective: every rank duplicates, even one whose allocation failed
     * (it frees the duplicate again and returns NULL). */
    const int err = MPI_Comm_dup(comm, &c->comm);
    if (err != MPI_SUCCESS || !c->req) {
        if (err == MPI_SUCCESS)
            MPI_Comm_free(&c->comm);
        if (c->req)
            alloc(alloc_ud, c->req, max_pending * sizeof *c->req, 0);
        alloc(alloc_ud, c, sizeof *c, 0);
        return NULL;
    }
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    return c;
}

void nn_mpi_free(nn_mpi *c)
{
    if (!c)
        return;
    if (c->pending) /* never leave requests behind */
        MPI_Waitall((int)c->pending, c->req, MPI_STATUSES_IGNORE);
    MPI_Comm_free(&c->comm);
    c->fn(c->ud, c->req, c->max_pending * sizeof *c->req, 0);
    c->fn(c->ud, c, sizeof *c, 0);
}

int nn_mpi_rank(const nn_mpi *c) { return c ? c->rank : 0; }
int nn_mpi_size(const nn_mpi *c) { return c ? c->size : 0; }
const char *nn_mpi_errmsg(const nn_mpi *c) { return c ? c->msg : "no nn_mpi"; }

/* start, per tensor: sum g over the ranks in place, without blocking. */
static int start_async(void *ud, size_t off, double *g, size_t n)
{
    (void)off;
    nn_mpi *c = ud;
    if (c->pending == c->max_pending) {
        snprintf(c->msg, sizeof c->msg,
                 "nn_mpi: more than %zu reductions started in one step (nn_mpi_new's max_pending)",
                 c->max_pending);
        return 2;
    }
    if (n > INT_MAX) {
        snprintf(c->msg, sizeof c->msg, "nn_mpi: a tensor of %zu doubles is over MPI's int count", n);
        return 3;
    }
    const int err = MPI_Iallreduce(MPI_IN_PLACE, g, (int)n, MPI_DOUBLE, MPI_SUM, c->comm,
                                   &c->req[c->pending]);
    if (err != MPI_SUCCESS)
        return mpi_fail(c, "MPI_Iallreduce", n, err);
    c->pending++;
    return 0;
}

static int wait_async(void *ud)
{
    nn_mpi *c = ud;
    const size_t n = c->pending;
    c->pending = 0;
    const int err = n ? MPI_Waitall((int)n, c->req, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    return err == MPI_SUCCESS ? 0 : mpi_fail(c, "MPI_Waitall", n, err);
}

/* start, whole block: one blocking MPI_Allreduce. */
static int start_block(void *ud, size_t off, double *g, size_t n)
{
    (void)off;
    nn_mpi *c = ud;
    if (n > INT_MAX) {
        snprintf(c->msg, sizeof c->msg, "nn_mpi: %zu doubles are over MPI's int count", n);
        return 3;
    }
    const int err = MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_DOUBLE, MPI_SUM, c->comm);
    return err == MPI_SUCCESS ? 0 : mpi_fail(c, "MPI_Allreduce", n, err);
}

static int wait_none(void *ud) { return (void)ud, 0; }

nn_reduce nn_mpi_reduce(nn_mpi *c, int per_tensor)
{
    nn_reduce r = {sizeof r, 1, per_tensor != 0, NULL, NULL, NULL};
    if (c) { /* c NULL: no callbacks, which nn_trainer_set_reduce refuses */
        r.ranks = (uint32_t)c->size;
        r.start = per_tensor ? start_async : start_block;
        r.wait = per_tensor ? wait_async : wait_none;
        r.ud = c;
    }
    return r;
}
