/* mpi_nn_parallel.c -- data-parallel training over MPI, run by CTest as
 * `mpirun -np P` for P = 1, 2, 3 (a plain program, not Criterion: its
 * runner forks, MPI processes must not). Each rank takes rows
 * [r b, (r+1) b) of every global batch of GB = P b rows; checks:
 *   1. after K steps the ranks hold the same parameters bit for bit, and
 *      they equal one process's at batch GB to 1e-12 relative, for the
 *      per-tensor (MPI_Iallreduce from the ready hooks) and the block
 *      (one MPI_Allreduce) reductions;
 *   2. stopped after k steps, rank 0 saves a checkpoint, every rank
 *      resumes from it: the end is bit for bit the uninterrupted run's;
 *   3. a checkpoint written by one process (ranks 1) resumes at P ranks
 *      (re-sharded) to 1e-12 of the P-rank run.
 * Rank 0 prints; exit status 0 when everything holds. */
#include <nn/nn_mpi.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define ROWS 60
#define GB 12 /* 1, 2, 3 (and 4, 6) divide it */
#define N_IN 8
#define HID 16
#define N_OUT 5
#define K 30
#define KSTOP 11
#define MAXP 4096

static double X[ROWS * N_IN], Y[ROWS * N_OUT];
static int rank, P, failures;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "rank %d: FAIL line %d: ", rank, __LINE__);                          \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

static void make_data(void)
{
    nn_rng r;
    nn_rng_seed(&r, 21);
    for (int i = 0; i < ROWS; i++) {
        double s = 0;
        for (int j = 0; j < N_IN; j++)
            s += (X[i * N_IN + j] = nn_rng_normal(&r)) * (j % 4 - 1.5);
        for (int c = 0; c < N_OUT; c++)
            Y[i * N_OUT + c] = c == (int)fmod(fabs(2 * s), N_OUT);
    }
}

typedef struct run {
    nn_model *m;
    nn_trainer *tr;
    nn_mpi *c;
} run;

/* A model and Adam trainer; with_mpi: the reduction over MPI_COMM_WORLD. */
static int open_run(run *r, int with_mpi, int per_tensor)
{
    nn_model_opts mo = {NULL, NULL, 3};
    r->m = nn_model_new(&mo);
    const uint32_t sizes[] = {N_IN, HID, N_OUT};
    if (!r->m || nn_model_add_mlp(r->m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY) != NN_OK)
        return -1;
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 0};
    to.optim.lr = 0.01;
    r->tr = nn_trainer_new(r->m, &to);
    r->c = NULL;
    if (!r->tr)
        return -1;
    if (with_mpi) {
        r->c = nn_mpi_new(MPI_COMM_WORLD, nn_params_count(nn_model_params(r->m)), NULL, NULL);
        if (!r->c)
            return -1;
        nn_reduce red = nn_mpi_reduce(r->c, per_tensor);
        if (nn_trainer_set_reduce(r->tr, &red) != NN_OK)
            return -1;
    }
    return 0;
}

static void close_run(run *r)
{
    nn_mpi_free(r->c); /* before the store its reductions write into */
    nn_trainer_free(r->tr);
    nn_model_free(r->m);
}

/* Global steps first .. last-1 with ranks ranks (this process is rank r). */
static int steps(run *ru, int first, int last, int ranks, int r)
{
    const uint32_t b = GB / (uint32_t)ranks;
    for (int s = first; s < last; s++) {
        const size_t row = (size_t)s * GB % ROWS + (size_t)r * b;
        if (nn_trainer_step(ru->tr, X + row * N_IN, Y + row * N_OUT, b, NULL) != NN_OK) {
            fprintf(stderr, "rank %d: step %d: %s (%s)\n", rank, s, nn_trainer_errmsg(ru->tr),
                    ru->c ? nn_mpi_errmsg(ru->c) : "");
            return -1;
        }
    }
    return 0;
}

static const double *values(run *r) { return nn_params_values(nn_model_params(r->m)); }

/* Every rank holds the same bits as rank 0. */
static void same_on_all_ranks(const double *w, int n, const char *what)
{
    static double w0[MAXP];
    memcpy(w0, w, (size_t)n * sizeof *w);
    MPI_Bcast(w0, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    CHECK(memcmp(w0, w, (size_t)n * sizeof *w) == 0, "%s: parameters differ from rank 0's", what);
}

static double rel_diff(const double *a, const double *b, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / den;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    make_data();
    if (GB % P != 0) {
        if (rank == 0)
            fprintf(stderr, "the global batch %d is not a multiple of %d ranks\n", GB, P);
        MPI_Finalize();
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, "mpi_nn_parallel_%d.ckpt", P);

    /* the reference: one process at batch GB (every rank computes it) */
    run one;
    CHECK(open_run(&one, 0, 0) == 0, "setup");
    CHECK(steps(&one, 0, K, 1, 0) == 0, "single-process run");
    const int n = (int)nn_params_size(nn_model_params(one.m));

    /* 1. P ranks, both reductions */
    static double full[MAXP];
    for (int per_tensor = 1; per_tensor >= 0; per_tensor--) {
        run r;
        CHECK(open_run(&r, 1, per_tensor) == 0, "setup");
        CHECK(steps(&r, 0, K, P, rank) == 0, "P-rank run");
        same_on_all_ranks(values(&r), n, per_tensor ? "per tensor" : "block");
        const double d = rel_diff(values(&r), values(&one), n);
        CHECK(d <= 1e-12, "%s: %.3g relative to one process", per_tensor ? "per tensor" : "block", d);
        if (rank == 0)
            printf("P=%d %s reduction: %d steps, max |w - w1| / max |w1| = %.3g\n", P,
                   per_tensor ? "per-tensor" : "block", K, d);
        if (per_tensor)
            memcpy(full, values(&r), (size_t)n * sizeof(double));
        close_run(&r);
    }

    /* 2. stop at KSTOP, rank 0 saves, everyone resumes: bit for bit */
    {
        run r;
        CHECK(open_run(&r, 1, 1) == 0, "setup");
        CHECK(steps(&r, 0, KSTOP, P, rank) == 0, "first part");
        nn_checkpoint ck = {KSTOP, 0, {{0}}, 0};
        int st = NN_OK;
        if (rank == 0)
            st = nn_trainer_save(r.tr, path, &ck);
        CHECK(st == NN_OK, "save: %s", nn_trainer_errmsg(r.tr));
        close_run(&r);
        MPI_Barrier(MPI_COMM_WORLD); /* the file is there for everyone */
        CHECK(open_run(&r, 1, 1) == 0, "setup");
        nn_checkpoint got;
        CHECK(nn_trainer_resume(r.tr, path, &got) == NN_OK, "resume: %s", nn_trainer_errmsg(r.tr));
        CHECK(got.ranks == (uint32_t)P && got.epoch == KSTOP, "ranks %u step %llu",
              (unsigned)got.ranks, (unsigned long long)got.epoch);
        CHECK(steps(&r, (int)got.epoch, K, P, rank) == 0, "second part");
        CHECK(memcmp(values(&r), full, (size_t)n * sizeof(double)) == 0,
              "resumed run differs from the uninterrupted one");
        same_on_all_ranks(values(&r), n, "resumed");
        if (rank == 0)
            printf("P=%d checkpoint at step %d, resumed: bit for bit the uninterrupted run\n", P,
                   KSTOP);
        close_run(&r);
    }

    /* 3. a checkpoint of one process resumed at P ranks */
    {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            run s;
            CHECK(open_run(&s, 0, 0) == 0, "setup");
            CHECK(steps(&s, 0, KSTOP, 1, 0) == 0, "single-process part");
            nn_checkpoint ck = {KSTOP, 0, {{0}}, 0};
            CHECK(nn_trainer_save(s.tr, path, &ck) == NN_OK, "save");
            close_run(&s);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        run r;
        CHECK(open_run(&r, 1, 1) == 0, "setup");
        nn_checkpoint got;
        CHECK(nn_trainer_resume(r.tr, path, &got) == NN_OK, "resume: %s", nn_trainer_errmsg(r.tr));
        CHECK(got.ranks == 1, "written by %u ranks", (unsigned)got.ranks);
        CHECK(steps(&r, (int)got.epoch, K, P, rank) == 0, "second part");
        const double d = rel_diff(values(&r), full, n);
        CHECK(d <= 1e-12, "re-sharded: %.3g relative to the P-rank run", d);
        same_on_all_ranks(values(&r), n, "re-sharded");
        if (rank == 0)
            printf("P=%d checkpoint of 1 process resumed at %d ranks: %.3g relative\n", P, P, d);
        close_run(&r);
    }
    /* 4. errors: room for one pending reduction but four tensors started;
     * every rank fails the same way, parameters untouched */
    {
        CHECK(nn_mpi_new(MPI_COMM_WORLD, 0, NULL, NULL) == NULL, "max_pending 0 accepted");
        CHECK(nn_mpi_rank(NULL) == 0 && nn_mpi_size(NULL) == 0 && nn_mpi_errmsg(NULL)[0], "NULL");
        nn_mpi_free(NULL);
        {
            run q;
            CHECK(open_run(&q, 0, 0) == 0, "setup");
            nn_reduce none = nn_mpi_reduce(NULL, 1);
            CHECK(nn_trainer_set_reduce(q.tr, &none) == NN_EMISUSE &&
                  strcmp(nn_trainer_errmsg(q.tr), "trainer: set_reduce: start is NULL") == 0,
                  "nn_mpi_reduce(NULL): %s", nn_trainer_errmsg(q.tr));
            close_run(&q);
        }
        run r;
        CHECK(open_run(&r, 0, 0) == 0, "setup");
        r.c = nn_mpi_new(MPI_COMM_WORLD, 1, NULL, NULL);
        nn_reduce red = nn_mpi_reduce(r.c, 1);
        CHECK(nn_trainer_set_reduce(r.tr, &red) == NN_OK, "set_reduce");
        static double before[MAXP];
        memcpy(before, values(&r), (size_t)n * sizeof(double));
        const int st = nn_trainer_step(r.tr, X, Y, GB / (uint32_t)P, NULL);
        CHECK(st == NN_EIO, "status %d", st);
        CHECK(strcmp(nn_trainer_errmsg(r.tr), "trainer: reduce: start failed with 2 on dense2.b; "
                     "parameters not updated") == 0, "%s", nn_trainer_errmsg(r.tr));
        CHECK(strcmp(nn_mpi_errmsg(r.c), "nn_mpi: more than 1 reductions started in one step "
                     "(nn_mpi_new's max_pending)") == 0, "%s", nn_mpi_errmsg(r.c));
        CHECK(memcmp(before, values(&r), (size_t)n * sizeof(double)) == 0, "parameters changed");
        if (rank == 0)
            printf("P=%d errors: %s\n", P, nn_mpi_errmsg(r.c));
        close_run(&r); /* the trainer waited for the one reduction that was started */
    }
    close_run(&one);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        remove(path);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s\n", total ? "FAILED" : "ok");
    MPI_Finalize();
    return total ? 1 : 0;
}
