/* test_nn_reduce.c -- data parallelism without MPI: P simulated ranks, one
 * thread each, every rank a model and trainer of its own taking rows
 * [r b, (r+1) b) of each global batch of B = P b rows, their gradients
 * summed by an in-process reduction (a barrier, then each rank adds the
 * ranks' blocks in rank order). After k steps every rank holds the same
 * parameters bit for bit, and they equal one process's at batch B to
 * 1e-12 relative; at P = 1 the step is the plain trainer's bit for bit.
 * Checkpoints: resumed at the same P, bit for bit; written at P = 2 and
 * resumed at P = 3 (re-sharded). Errors: a failed start or wait, misuse. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <nn/nn.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAXR 4
#define MAXPEND 16
#define ROWS 48
#define GB 12 /* global batch: P = 1, 2, 3, 4 divide it */
#define N_IN 7
#define HID 9
#define N_OUT 4

typedef struct world {
    uint32_t P;
    pthread_barrier_t bar;
    struct pend {
        size_t off, n;
        double *g;
    } pend[MAXR][MAXPEND];
    int npend[MAXR];
    double tmp[MAXR][512];
    long calls;
} world;

typedef struct rank_ctx {
    world *w;
    uint32_t r;
    nn_model *m;
    nn_trainer *tr;
    const double *X, *Y;
    int steps, first;
    int status;
} rank_ctx;

static int fake_start(void *ud, size_t off, double *g, size_t n)
{
    rank_ctx *c = ud;
    int *k = &c->w->npend[c->r];
    if (*k == MAXPEND || off + n > 512)
        return -1;
    c->w->pend[c->r][(*k)++] = (struct pend){off, n, g};
    return 0;
}

/* Everyone's sweep is done at the first barrier; each rank sums every
 * rank's blocks in rank order (0 + 1 + ... + P-1) into its scratch; after
 * the second barrier nobody reads another rank's block any more, and
 * each copies its sum back. */
static int fake_wait(void *ud)
{
    rank_ctx *c = ud;
    world *w = c->w;
    pthread_barrier_wait(&w->bar);
    for (int k = 0; k < w->npend[c->r]; k++) {
        const struct pend *p = &w->pend[c->r][k];
        for (uint32_t q = 0; q < w->P; q++) /* every rank started the same pieces */
            if (w->npend[q] != w->npend[c->r] || w->pend[q][k].off != p->off ||
                w->pend[q][k].n != p->n)
                return -2;
        for (size_t j = 0; j < p->n; j++) {
            double s = w->pend[0][k].g[j];
            for (uint32_t q = 1; q < w->P; q++)
                s += w->pend[q][k].g[j];
            w->tmp[c->r][p->off + j] = s;
        }
    }
    pthread_barrier_wait(&w->bar);
    for (int k = 0; k < w->npend[c->r]; k++) {
        const struct pend *p = &w->pend[c->r][k];
        memcpy(p->g, w->tmp[c->r] + p->off, p->n * sizeof(double));
    }
    if (c->r == 0)
        w->calls++;
    w->npend[c->r] = 0;
    return 0;
}

static void make_data(double *X, double *Y)
{
    nn_rng r;
    nn_rng_seed(&r, 5);
    for (int i = 0; i < ROWS; i++) {
        double s = 0;
        for (int j = 0; j < N_IN; j++)
            s += (X[i * N_IN + j] = nn_rng_normal(&r)) * (j % 3 - 1);
        for (int c = 0; c < N_OUT; c++)
            Y[i * N_OUT + c] = c == (int)fmod(fabs(3 * s), N_OUT);
    }
}

static nn_model *make_model(void)
{
    nn_model_opts mo = {NULL, NULL, 11};
    nn_model *m = nn_model_new(&mo);
    const uint32_t sizes[] = {N_IN, HID, N_OUT};
    cr_assert_eq(nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK);
    cr_assert(nn_params_size(nn_model_params(m)) <= 512);
    return m;
}

static nn_trainer *make_trainer(nn_model *m, nn_loss loss, nn_optim_kind kind)
{
    nn_trainer_opts to = {loss, nn_optim_defaults(kind), 0};
    to.optim.lr = kind == NN_OPTIM_ADAM ? 0.01 : 0.05;
    nn_trainer *tr = nn_trainer_new(m, &to);
    cr_assert_not_null(tr);
    return tr;
}

/* Steps first .. first+steps-1: global batch s takes rows (s*GB .. +GB) mod ROWS. */
static int rank_steps(rank_ctx *c)
{
    const uint32_t P = c->w ? c->w->P : 1, b = GB / P;
    for (int s = c->first; s < c->first + c->steps; s++) {
        const size_t row = (size_t)s * GB % ROWS + (size_t)c->r * b;
        const int st = nn_trainer_step(c->tr, c->X + row * N_IN, c->Y + row * N_OUT, b, NULL);
        if (st != NN_OK)
            return st;
    }
    return NN_OK;
}

static void *rank_main(void *ud)
{
    rank_ctx *c = ud;
    c->status = rank_steps(c);
    return NULL;
}

static void run_ranks(rank_ctx *c, uint32_t P)
{
    pthread_t th[MAXR];
    for (uint32_t r = 0; r < P; r++)
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &c[r]), 0);
    for (uint32_t r = 0; r < P; r++)
        pthread_join(th[r], NULL);
    for (uint32_t r = 0; r < P; r++)
        cr_assert_eq(c[r].status, NN_OK, "rank %u: %s", r, nn_trainer_errmsg(c[r].tr));
}

static void setup_ranks(world *w, rank_ctx *c, uint32_t P, int per_tensor, nn_loss loss,
                        nn_optim_kind kind, const double *X, const double *Y)
{
    memset(w, 0, sizeof *w);
    w->P = P;
    pthread_barrier_init(&w->bar, NULL, P);
    for (uint32_t r = 0; r < P; r++) {
        c[r] = (rank_ctx){w, r, make_model(), NULL, X, Y, 0, 0, 0};
        c[r].tr = make_trainer(c[r].m, loss, kind);
        nn_reduce red = {sizeof red, P, per_tensor, fake_start, fake_wait, &c[r]};
        cr_assert_eq(nn_trainer_set_reduce(c[r].tr, &red), NN_OK);
        cr_assert_eq(nn_trainer_ranks(c[r].tr), P);
        cr_assert_eq(nn_trainer_fused(c[r].tr), 0);
    }
}

static void free_ranks(world *w, rank_ctx *c, uint32_t P)
{
    for (uint32_t r = 0; r < P; r++) {
        nn_trainer_free(c[r].tr);
        nn_model_free(c[r].m);
    }
    pthread_barrier_destroy(&w->bar);
}

/* Largest |a - b| over max |b|, and the largest elementwise relative
 * difference among elements with |b| > 1e-3. */
static void compare(const double *a, const double *b, size_t n, double *normwise, double *elem)
{
    double num = 0, den = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
        if (fabs(b[i]) > 1e-3)
            e = fmax(e, fabs(a[i] - b[i]) / fabs(b[i]));
    }
    *normwise = num / den;
    *elem = e;
}

static void parallel_case(uint32_t P, int per_tensor, nn_loss loss, nn_optim_kind kind, int K)
{
    static double X[ROWS * N_IN], Y[ROWS * N_OUT];
    make_data(X, Y);
    /* one process at batch GB */
    rank_ctx one = {NULL, 0, make_model(), NULL, X, Y, K, 0, 0};
    one.tr = make_trainer(one.m, loss, kind);
    cr_assert_eq(rank_steps(&one), NN_OK, "%s", nn_trainer_errmsg(one.tr));
    world w;
    rank_ctx c[MAXR];
    setup_ranks(&w, c, P, per_tensor, loss, kind, X, Y);
    for (uint32_t r = 0; r < P; r++)
        c[r].steps = K;
    run_ranks(c, P);
    cr_assert_eq(w.calls, K);
    nn_params *p0 = nn_model_params(c[0].m);
    const size_t n = nn_params_size(p0);
    for (uint32_t r = 1; r < P; r++)
        cr_assert_eq(memcmp(nn_params_values(p0), nn_params_values(nn_model_params(c[r].m)),
                            n * sizeof(double)), 0, "rank %u differs from rank 0", r);
    const double *ref = nn_params_values(nn_model_params(one.m)), *got = nn_params_values(p0);
    double nw, el;
    compare(got, ref, n, &nw, &el);
    cr_assert(nw <= 1e-12 && el <= 1e-12,
              "P=%u %s %s per_tensor %d: after %d steps normwise %.3g, elementwise %.3g", P,
              nn_loss_name(loss), nn_optim_name(kind), per_tensor, K, nw, el);
    if (P == 1) /* the same ops: bit for bit */
        cr_assert_eq(memcmp(got, ref, n * sizeof(double)), 0);
    else { /* and the test can fail: the parameters did move */
        nn_model *init = make_model();
        cr_assert_neq(memcmp(got, nn_params_values(nn_model_params(init)), n * sizeof(double)), 0);
        nn_model_free(init);
    }
    cr_log_info("P=%u %s %s per_tensor %d: %d steps, normwise %.3g, elementwise %.3g\n", P,
                nn_loss_name(loss), nn_optim_name(kind), per_tensor, K, nw, el);
    free_ranks(&w, c, P);
    nn_trainer_free(one.tr);
    nn_model_free(one.m);
}

Test(nn_reduce, one_rank_is_the_plain_trainer) { parallel_case(1, 1, NN_LOSS_XENT, NN_OPTIM_ADAM, 10); }
Test(nn_reduce, two_ranks_adam_per_tensor) { parallel_case(2, 1, NN_LOSS_XENT, NN_OPTIM_ADAM, 20); }
Test(nn_reduce, two_ranks_sgd_block) { parallel_case(2, 0, NN_LOSS_XENT, NN_OPTIM_SGD, 20); }
Test(nn_reduce, three_ranks_adam_block) { parallel_case(3, 0, NN_LOSS_XENT, NN_OPTIM_ADAM, 20); }
Test(nn_reduce, three_ranks_momentum_mse) { parallel_case(3, 1, NN_LOSS_MSE, NN_OPTIM_MOMENTUM, 20); }
Test(nn_reduce, four_ranks_half_sse) { parallel_case(4, 1, NN_LOSS_HALF_SSE, NN_OPTIM_ADAM, 20); }

/* Without the scaling of the loss (every rank's loss averaged over its
 * own rows), the summed gradient is P times too large: the comparison
 * would catch it. */
Test(nn_reduce, unscaled_gradients_are_caught)
{
    static double X[ROWS * N_IN], Y[ROWS * N_OUT];
    make_data(X, Y);
    rank_ctx one = {NULL, 0, make_model(), NULL, X, Y, 5, 0, 0};
    one.tr = make_trainer(one.m, NN_LOSS_XENT, NN_OPTIM_SGD);
    rank_steps(&one);
    world w;
    rank_ctx c[2];
    setup_ranks(&w, c, 2, 1, NN_LOSS_XENT, NN_OPTIM_SGD, X, Y);
    for (uint32_t r = 0; r < 2; r++) { /* claims 1 rank: no share, but still sums 2 */
        nn_reduce red = {sizeof red, 1, 1, fake_start, fake_wait, &c[r]};
        nn_trainer_set_reduce(c[r].tr, &red);
        c[r].steps = 5;
    }
    w.P = 2;
    run_ranks(c, 2);
    double nw, el;
    compare(nn_params_values(nn_model_params(c[0].m)), nn_params_values(nn_model_params(one.m)),
            nn_params_size(nn_model_params(one.m)), &nw, &el);
    cr_assert(nw > 1e-6, "normwise %g", nw);
    free_ranks(&w, c, 2);
    nn_trainer_free(one.tr);
    nn_model_free(one.m);
}

/* k steps at P ranks, rank 0 saves, everything is thrown away, P2 new
 * ranks resume from the file and finish. */
static void resume_case(uint32_t P, uint32_t P2, int k, int K, double *out, size_t n)
{
    static double X[ROWS * N_IN], Y[ROWS * N_OUT];
    make_data(X, Y);
    char path[128];
    snprintf(path, sizeof path, "/tmp/nn_reduce_%ld_%u_%u", (long)getpid(), P, P2);
    world w;
    rank_ctx c[MAXR];
    setup_ranks(&w, c, P, 1, NN_LOSS_XENT, NN_OPTIM_ADAM, X, Y);
    for (uint32_t r = 0; r < P; r++)
        c[r].steps = k;
    run_ranks(c, P);
    nn_checkpoint ck = {(uint64_t)k, 0, {{0}}, 0};
    cr_assert_eq(nn_trainer_save(c[0].tr, path, &ck), NN_OK);
    free_ranks(&w, c, P);
    setup_ranks(&w, c, P2, 1, NN_LOSS_XENT, NN_OPTIM_ADAM, X, Y);
    for (uint32_t r = 0; r < P2; r++) {
        nn_checkpoint got;
        cr_assert_eq(nn_trainer_resume(c[r].tr, path, &got), NN_OK, "%s",
                     nn_trainer_errmsg(c[r].tr));
        cr_assert_eq(got.ranks, P);
        c[r].first = (int)got.epoch; /* the step count, in this loop */
        c[r].steps = K - k;
    }
    run_ranks(c, P2);
    memcpy(out, nn_params_values(nn_model_params(c[0].m)), n * sizeof(double));
    free_ranks(&w, c, P2);
    remove(path);
}

static void uninterrupted(uint32_t P, int K, double *out, size_t n)
{
    static double X[ROWS * N_IN], Y[ROWS * N_OUT];
    make_data(X, Y);
    world w;
    rank_ctx c[MAXR];
    setup_ranks(&w, c, P, 1, NN_LOSS_XENT, NN_OPTIM_ADAM, X, Y);
    for (uint32_t r = 0; r < P; r++)
        c[r].steps = K;
    run_ranks(c, P);
    memcpy(out, nn_params_values(nn_model_params(c[0].m)), n * sizeof(double));
    free_ranks(&w, c, P);
}

Test(nn_reduce, checkpoint_resumes_bitwise_at_the_same_ranks)
{
    double a[512], b[512];
    nn_model *m = make_model();
    const size_t n = nn_params_size(nn_model_params(m));
    nn_model_free(m);
    uninterrupted(2, 17, a, n);
    resume_case(2, 2, 7, 17, b, n);
    cr_assert_eq(memcmp(a, b, n * sizeof(double)), 0);
}

Test(nn_reduce, checkpoint_of_two_ranks_resumes_at_three)
{
    double a[512], b[512];
    nn_model *m = make_model();
    const size_t n = nn_params_size(nn_model_params(m));
    nn_model_free(m);
    uninterrupted(3, 17, a, n);
    resume_case(2, 3, 7, 17, b, n);
    double nw, el;
    compare(b, a, n, &nw, &el);
    cr_assert(nw <= 1e-12 && el <= 1e-12, "normwise %g elementwise %g", nw, el);
}

/* ---- errors ---- */

static int failing_start(void *ud, size_t off, double *g, size_t n)
{
    (void)off, (void)g, (void)n;
    int *calls = ud;
    return ++*calls == 2 ? 7 : 0;
}
/* ud: int[2], the calls to start and to wait */
static int ok_wait(void *ud) { return ((int *)ud)[1]++, 0; }
static int failing_wait(void *ud) { return ((int *)ud)[1]++, 9; }

Test(nn_reduce, failures_leave_the_parameters)
{
    static double X[ROWS * N_IN], Y[ROWS * N_OUT];
    make_data(X, Y);
    nn_model *m = make_model();
    nn_trainer *tr = make_trainer(m, NN_LOSS_XENT, NN_OPTIM_SGD);
    nn_params *p = nn_model_params(m);
    double before[512];
    const size_t n = nn_params_size(p);
    memcpy(before, nn_params_values(p), n * sizeof(double));
    int calls[2] = {0, 0};
    nn_reduce red = {sizeof red, 1, 1, failing_start, ok_wait, calls};
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_OK);
    cr_assert_eq(nn_trainer_step(tr, X, Y, 4, NULL), NN_EIO);
    /* the sweep readies the last layer first: dense2.W, then dense2.b */
    cr_assert_str_eq(nn_trainer_errmsg(tr),
                     "trainer: reduce: start failed with 7 on dense2.b; parameters not updated");
    cr_assert_eq(calls[0], 2, "a start after the failed one");
    cr_assert_eq(calls[1], 1, "the started reductions were not completed");
    cr_assert_eq(memcmp(before, nn_params_values(p), n * sizeof(double)), 0);
    calls[0] = 1;
    red.per_tensor = 0;
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_OK);
    cr_assert_eq(nn_trainer_step(tr, X, Y, 4, NULL), NN_EIO);
    cr_assert_str_eq(nn_trainer_errmsg(tr), "trainer: reduce: start failed with 7 on the "
                     "gradient block; parameters not updated");
    cr_assert_eq(calls[1], 2);
    red.wait = failing_wait;
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_OK);
    cr_assert_eq(nn_trainer_step(tr, X, Y, 4, NULL), NN_EIO);
    cr_assert_str_eq(nn_trainer_errmsg(tr),
                     "trainer: reduce: wait failed with 9; parameters not updated");
    cr_assert_eq(memcmp(before, nn_params_values(p), n * sizeof(double)), 0);
    /* removed: the plain (fused) trainer again */
    cr_assert_eq(nn_trainer_set_reduce(tr, NULL), NN_OK);
    cr_assert_eq(nn_trainer_ranks(tr), 1);
    cr_assert_eq(nn_trainer_fused(tr), 1);
    cr_assert_eq(nn_trainer_step(tr, X, Y, 4, NULL), NN_OK);
    cr_assert_neq(memcmp(before, nn_params_values(p), n * sizeof(double)), 0);
    nn_trainer_free(tr);
    nn_model_free(m);
}

Test(nn_reduce, misuse)
{
    nn_model *m = make_model();
    nn_trainer *tr = make_trainer(m, NN_LOSS_XENT, NN_OPTIM_SGD);
    nn_reduce red = {sizeof red, 2, 1, fake_start, fake_wait, NULL};
    cr_assert_eq(nn_trainer_set_reduce(NULL, &red), NN_EMISUSE);
    cr_assert_eq(nn_trainer_ranks(NULL), 0);
    red.size = 8;
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_EMISUSE);
    char msg[128];
    snprintf(msg, sizeof msg, "trainer: set_reduce: size 8 is smaller than nn_reduce (%zu)",
             sizeof red);
    cr_assert_str_eq(nn_trainer_errmsg(tr), msg);
    red.size = sizeof red;
    red.ranks = 0;
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(tr), "trainer: set_reduce: ranks is 0");
    red.ranks = 2;
    red.start = NULL;
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(tr), "trainer: set_reduce: start is NULL");
    red.start = fake_start;
    red.wait = NULL;
    cr_assert_eq(nn_trainer_set_reduce(tr, &red), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(tr), "trainer: set_reduce: wait is NULL");
    cr_assert_eq(nn_trainer_ranks(tr), 1, "a failed set_reduce changed the trainer");
    cr_assert_eq(nn_trainer_fused(tr), 1);
    nn_trainer_free(tr);
    nn_model_free(m);
}
