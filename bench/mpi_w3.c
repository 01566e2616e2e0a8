/* mpi_w3.c -- W3 over MPI: the 784-128-10 MLP, global batch 64, SGD lr
 * 0.01, half squared error, one epoch of the first 9 984 training images
 * (156 steps), each of the P ranks taking 64/P rows of every batch and
 * nn_mpi summing the gradients (per tensor, from the sweep). Reports
 * steps/s at this P and the time of one all-reduce of the whole gradient
 * (101 770 doubles, 0.81 MB): blocking MPI_Allreduce, and the four
 * per-tensor MPI_Iallreduce + MPI_Waitall the trainer uses. At P = 1 the
 * plain trainer (fused update, no reduction) runs too, in the same run.
 *
 *   mpirun -np 1 ./build/bench/bench_mpi_w3;  mpirun -np 2 ./build/bench/bench_mpi_w3
 * (bench/run runs both; docs/scaling.md has the figures and a cost model.) */
#include "fmnist.h"

#include <nn/nn_mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GB 64
#define STEPS 156
#define REPS 3
#define AR_REPS 50

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

/* Seconds for one epoch; the best of REPS from the same start. */
static double epoch(const fmnist *d, double *Y, int P, int rank, int with_mpi, double *loss)
{
    double best = 1e30;
    for (int rep = 0; rep < REPS; rep++) {
        nn_model_opts mo = {NULL, NULL, 1};
        nn_model *m = nn_model_new(&mo);
        const uint32_t sizes[] = {784, 128, 10};
        nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY);
        nn_trainer_opts to = {NN_LOSS_HALF_SSE, nn_optim_defaults(NN_OPTIM_SGD), 0};
        nn_trainer *tr = nn_trainer_new(m, &to);
        nn_mpi *c = NULL;
        if (with_mpi) {
            c = nn_mpi_new(MPI_COMM_WORLD, 4, NULL, NULL);
            nn_reduce r = nn_mpi_reduce(c, 1);
            nn_trainer_set_reduce(tr, &r);
        }
        const uint32_t b = GB / (uint32_t)P;
        double sum = 0;
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        for (int s = 0; s < STEPS; s++) {
            const size_t row = (size_t)s * GB + (size_t)rank * b;
            double l = 0;
            if (nn_trainer_step(tr, d->x + row * 784, Y + row * 10, b, &l) != NN_OK) {
                fprintf(stderr, "rank %d: %s\n", rank, nn_trainer_errmsg(tr));
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            sum += l;
        }
        MPI_Barrier(MPI_COMM_WORLD);
        const double t = MPI_Wtime() - t0;
        best = t < best ? t : best;
        double all = sum;
        if (with_mpi)
            MPI_Allreduce(&sum, &all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        *loss = all / STEPS;
        nn_mpi_free(c);
        nn_trainer_free(tr);
        nn_model_free(m);
    }
    return best;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    if (GB % P) {
        if (rank == 0)
            fprintf(stderr, "bench_mpi_w3: %d ranks do not divide the batch of %d\n", P, GB);
        MPI_Finalize();
        return 1;
    }
    fmnist d;
    char why[256];
    if (fmnist_load(&d, "train", (size_t)GB * STEPS, why, sizeof why) != 0) {
        if (rank == 0)
            fprintf(stderr, "bench_mpi_w3: %s\n", why);
        MPI_Finalize();
        return 2;
    }
    double *Y = calloc(d.n * 10, sizeof *Y);
    for (size_t i = 0; i < d.n; i++)
        Y[i * 10 + d.y[i]] = 1;
    double loss;
    if (P == 1) {
        const double t = epoch(&d, Y, 1, 0, 0, &loss);
        printf("W3 P=1 plain trainer (fused): %.0f steps/s, %.0f samples/s, mean loss %.6f\n",
               STEPS / t, STEPS * GB / t, loss);
    }
    const double t = epoch(&d, Y, P, rank, 1, &loss);
    if (rank == 0)
        printf("W3 P=%d nn_mpi per tensor, %d rows per rank: %.0f steps/s, %.0f samples/s, mean "
               "loss %.6f\n", P, GB / P, STEPS / t, STEPS * GB / t, loss);

    /* the all-reduce of one gradient: 784x128 + 128 + 128x10 + 10 doubles */
    const int sizes[4] = {128 * 10, 10, 784 * 128, 128}; /* the sweep's order: last layer first */
    const int n = sizes[0] + sizes[1] + sizes[2] + sizes[3];
    double *g = calloc((size_t)n, sizeof *g), tb[AR_REPS], tt[AR_REPS];
    for (int r = 0; r < AR_REPS; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, g, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        tb[r] = MPI_Wtime() - t0;
        MPI_Barrier(MPI_COMM_WORLD);
        MPI_Request req[4];
        t0 = MPI_Wtime();
        for (int k = 0, off = 0; k < 4; off += sizes[k], k++)
            MPI_Iallreduce(MPI_IN_PLACE, g + off, sizes[k], MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD,
                           &req[k]);
        MPI_Waitall(4, req, MPI_STATUSES_IGNORE);
        tt[r] = MPI_Wtime() - t0;
    }
    if (rank == 0)
        printf("all-reduce of %d doubles (%.2f MB) at P=%d: MPI_Allreduce %.3f ms, 4 x "
               "MPI_Iallreduce + Waitall %.3f ms (median of %d)\n", n, n * 8e-6, P,
               1e3 * median(tb, AR_REPS), 1e3 * median(tt, AR_REPS), AR_REPS);
    free(g);
    free(Y);
    fmnist_free(&d);
    MPI_Finalize();
    return 0;
}
