/*
 * nn_mpi.h -- the MPI side of nn's data-parallel training: an nn_reduce
 * (see nn/nn.h) that sums the ranks' gradients over an MPI communicator.
 *
 * An optional component: built when CMake finds MPI (find_package(MPI);
 * Debian: libopenmpi-dev openmpi-bin), as the library nn_mpi. nn itself
 * holds no MPI code. Conventions as in nn.h: status codes, a message
 * owned by the object, every byte through the allocator given, nothing
 * aborts or prints (the duplicated communicator's error handler is
 * MPI_ERRORS_RETURN, so a failed call is reported, not fatal), no global
 * state. MPI_Init must have been called, and MPI_Finalize must come after
 * nn_mpi_free.
 *
 *   nn_mpi *c = nn_mpi_new(MPI_COMM_WORLD, nn_params_count(p), NULL, NULL);
 *   nn_reduce r = nn_mpi_reduce(c, 1);
 *   nn_trainer_set_reduce(tr, &r);
 *   ... every rank: nn_trainer_step(tr, its B / P rows, ...) ...
 *   nn_mpi_free(c);
 */
#ifndef NN_NN_MPI_H
#define NN_NN_MPI_H

#include <mpi.h>
#include <nn/nn.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_mpi nn_mpi;

/* A reducer over a duplicate of comm (MPI_Comm_dup: its messages never
 * mix with the caller's), with room for max_pending reductions started in
 * one step (the store's tensor count for per-tensor reduction; 1 for the
 * whole block). alloc NULL: realloc/free. NULL when out of memory,
 * max_pending is 0 or the duplication fails. A collective call: every rank
 * of comm must make it. Free with nn_mpi_free. */
nn_mpi *nn_mpi_new(MPI_Comm comm, size_t max_pending, ad_alloc_fn alloc, void *alloc_ud);
/* Frees the duplicate communicator (collective) and the object. NULL: no-op. */
void nn_mpi_free(nn_mpi *c);
/* This process's rank and the communicator's size. NULL: 0 and 0. */
int nn_mpi_rank(const nn_mpi *c);
int nn_mpi_size(const nn_mpi *c);

/* The reduction to give nn_trainer_set_reduce: ranks = the communicator's
 * size; per_tensor 1: each tensor's gradient is summed by an
 * MPI_Iallreduce started from the sweep's gradient-ready hook (the last
 * layer's while the earlier layers are still being swept) and completed
 * by MPI_Waitall before the update; per_tensor 0: one MPI_Allreduce over
 * the whole gradient block after the sweep. Summation order: MPI's (every
 * rank gets the same sum; docs/distributed.md). c must outlive the
 * trainer's use of it. c NULL: start and wait NULL, which
 * nn_trainer_set_reduce refuses ("start is NULL"). */
nn_reduce nn_mpi_reduce(nn_mpi *c, int per_tensor);

/* Message of the most recent failure ("" if none), e.g. "nn_mpi:
 * MPI_Iallreduce of 1280 doubles failed: MPI_ERR_COMM: invalid
 * communicator". Never NULL. */
const char *nn_mpi_errmsg(const nn_mpi *c);

#ifdef __cplusplus
}
#endif
#endif /* NN_NN_MPI_H */
