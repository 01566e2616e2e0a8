/* test_threads.c -- several tapes in several threads at once.
 *
 * Each job computes the gradient of a small two-layer network summed over
 * its own samples, by recording once and replaying.
 * The weights are shared and read-only (ad_param value views), the
 * gradient buffers are private, and a custom op is found by name in one
 * registry shared by every tape. The jobs run first one after the other,
 * then all at once; the results must be identical bit for bit, and every
 * job's allocator must balance. Run it under ThreadSanitizer (AD_TSAN=ON)
 * to check that the library shares no mutable state between tapes. When
 * nn is built, models with their trainers are trained concurrently too.
 *
 * Criterion cannot start under ThreadSanitizer (its runner fails with
 * "Could not initialize inheritable arena", Snaipe/Criterion#274), so a
 * ThreadSanitizer build makes this file a plain program with its own main
 * that runs the same tests in-process; the checks are the same. */
#include "support.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(__has_include)
#  if __has_include(<nn/nn.h>)
#    include <nn/nn.h>
#    define HAVE_NN 1
#  endif
#endif

#if defined(__SANITIZE_THREAD__)
#  define STANDALONE 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define STANDALONE 1
#  endif
#endif

#ifdef STANDALONE
#  include <stdlib.h>
/* CHECK(cond, fmt, ...): report and stop the program on failure. */
#  define CHECK(cond, ...)                                                 \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            exit(1);                                                       \
        }                                                                  \
    } while (0)
#  define TEST(suite, name) static void suite##_##name(void)
#else
#  include <criterion/criterion.h>
#  define CHECK(cond, ...) cr_assert(cond, __VA_ARGS__)
#  define TEST(suite, name) Test(suite, name)
#endif

#define NJOBS 4
#define NIN 8
#define NHID 6
#define NOUT 3
#define NSAMPLES 64
#define NRECORD 4 /* re-record after a reset this many times per job */

/* ---- a custom op in a shared registry: y = x^3; dx += 3 x^2 dy ---- */

static void cube_forward(const ad_call *c)
{
    size_t n = ad_shape_size(c->out.shape);
    for (size_t i = 0; i < n; i++) {
        double x = c->in[0].val[i];
        c->out.val[i] = x * x * x;
    }
}

static void cube_vjp(const ad_call *c)
{
    size_t n = ad_shape_size(c->out.shape);
    if (!c->in[0].grad)
        return;
    for (size_t i = 0; i < n; i++) {
        double x = c->in[0].val[i];
        c->in[0].grad[i] += 3 * x * x * c->out.grad[i];
    }
}

static const ad_opdef cube_def = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_forward, .vjp = cube_vjp, .ud = NULL};

/* ---- shared read-only weights ---- */

typedef struct weights {
    double W1[NHID * NIN]; /* (NHID, NIN)  */
    double b1[NHID];       /* (NHID)       */
    double W2[NOUT * NHID];/* (NOUT, NHID) */
} weights;

static void weights_fill(weights *w)
{
    for (int i = 0; i < NHID * NIN; i++)
        w->W1[i] = 0.3 * sin(0.7 * i + 0.1);
    for (int i = 0; i < NHID; i++)
        w->b1[i] = 0.05 * (i - 2);
    for (int i = 0; i < NOUT * NHID; i++)
        w->W2[i] = 0.4 * cos(1.3 * i);
}

/* ---- one job ---- */

typedef struct job {
    int id;
    const weights *w;
    const ad_registry *reg;
    test_alloc alloc;      /* even ids: counting allocator; odd: default */
    double gW1[NHID * NIN];
    double gb1[NHID];
    double gW2[NOUT * NHID];
    double loss;           /* sum over samples                          */
    int status;            /* first failure, AD_OK if none              */
    char msg[256];         /* its message                               */
    char shape_msg[256];   /* the deliberate shape error's message       */
    size_t live_at_end;    /* ad_tape_memory before the free             */
} job;

/* The sample s of job id: deterministic, different for every job. */
static void sample(int id, int s, double x[NIN], double y[NOUT])
{
    for (int i = 0; i < NIN; i++)
        x[i] = sin(0.37 * (id + 1) * (i + 1) + 0.11 * s);
    for (int k = 0; k < NOUT; k++)
        y[k] = (k == (id + s) % NOUT) ? 1.0 : 0.0;
}

static int fail(job *j, int status, const char *what, const ad_tape *t)
{
    if (j->status == AD_OK) {
        j->status = status;
        snprintf(j->msg, sizeof j->msg, "job %d: %s: %s", j->id, what,
                 t ? ad_tape_errmsg(t) : "no tape");
    }
    return status;
}

/* Records L = xent(W2 cube(tanh(W1 x + b1)), y) on t, viewing x, y and
 * the weights; returns the loss node (nil on error). */
static ad_node record(job *j, ad_tape *t, double *x, double *y)
{
    const weights *w = j->w;
    ad_node W1 = ad_param(t, ad_shape_mat(NHID, NIN), w->W1, j->gW1);
    ad_node b1 = ad_param(t, ad_shape_vec(NHID), w->b1, j->gb1);
    ad_node W2 = ad_param(t, ad_shape_mat(NOUT, NHID), w->W2, j->gW2);
    ad_node xn = ad_param(t, ad_shape_vec(NIN), x, NULL);
    ad_node yn = ad_param(t, ad_shape_vec(NOUT), y, NULL);
    ad_node h = ad_tanh(t, ad_add(t, ad_matvec(t, W1, xn), b1)); /* h = tanh(W1 x + b1) */
    ad_node c = ad_apply_named(t, "cube", &h, 1, 0);             /* c = h^3 */
    ad_node z = ad_matvec(t, W2, c);                             /* z = W2 c */
    ad_set_name(t, z, "logits");
    return ad_softmax_xent(t, z, yn);
}

static void *job_run(void *arg)
{
    job *j = arg;
    ad_tape_opts opts = {NULL, NULL, j->reg};
    if (j->id % 2 == 0) {
        opts.alloc = test_alloc_fn;
        opts.alloc_ud = &j->alloc;
    }
    ad_tape *t = ad_tape_new(&opts);
    if (!t) {
        fail(j, AD_ENOMEM, "ad_tape_new", NULL);
        return NULL;
    }
    double x[NIN], y[NOUT];
    int per = NSAMPLES / NRECORD;
    for (int r = 0; r < NRECORD && j->status == AD_OK; r++) {
        ad_tape_reset(t);
        sample(j->id, r * per, x, y);
        ad_node L = record(j, t, x, y);
        if (ad_node_is_nil(L)) {
            fail(j, ad_tape_status(t), "record", t);
            break;
        }
        for (int s = r * per; s < (r + 1) * per; s++) {
            sample(j->id, s, x, y); /* refill the viewed buffers */
            if (s > r * per && ad_replay(t) != AD_OK) {
                fail(j, ad_tape_status(t), "replay", t);
                break;
            }
            if (ad_backward(t, L) != AD_OK) {
                fail(j, ad_tape_status(t), "backward", t);
                break;
            }
            j->loss += ad_scalar_value(t, L);
        }
    }
    /* A deliberate error whose message names this job's own shapes: W1 is
     * NHID x NIN, the vector has length id + 1. */
    ad_tape_reset(t);
    ad_node W1 = ad_param(t, ad_shape_mat(NHID, NIN), j->w->W1, NULL);
    ad_node v = ad_constant(t, ad_shape_vec((uint32_t)j->id + 1), NULL);
    ad_matvec(t, W1, v);
    snprintf(j->shape_msg, sizeof j->shape_msg, "%s", ad_tape_errmsg(t));
    j->live_at_end = ad_tape_memory(t);
    ad_tape_free(t);
    return NULL;
}

static void job_init(job *j, int id, const weights *w, const ad_registry *reg)
{
    memset(j, 0, sizeof *j);
    j->id = id;
    j->w = w;
    j->reg = reg;
}

static void check_same(const job *a, const job *b)
{
    CHECK(b->status == AD_OK, "%s", b->msg);
    CHECK(memcmp(a->gW1, b->gW1, sizeof a->gW1) == 0, "job %d: dW1 differs", a->id);
    CHECK(memcmp(a->gb1, b->gb1, sizeof a->gb1) == 0, "job %d: db1 differs", a->id);
    CHECK(memcmp(a->gW2, b->gW2, sizeof a->gW2) == 0, "job %d: dW2 differs", a->id);
    CHECK(memcmp(&a->loss, &b->loss, sizeof a->loss) == 0, "job %d: loss %.17g vs %.17g",
              a->id, a->loss, b->loss);
    CHECK(strcmp(a->shape_msg, b->shape_msg) == 0, "job %d: \"%s\" vs \"%s\"", a->id,
          a->shape_msg, b->shape_msg);
    if (b->id % 2 == 0) {
        CHECK(b->alloc.allocs > 0, "job %d used its allocator", b->id);
        CHECK(b->alloc.allocs == b->alloc.frees, "job %d: %ld allocs, %ld frees", b->id,
              b->alloc.allocs, b->alloc.frees);
        CHECK(b->alloc.bytes == 0, "job %d: %zu bytes left", b->id, b->alloc.bytes);
        CHECK(b->live_at_end == a->live_at_end, "job %d: tape memory %zu vs %zu", b->id,
              b->live_at_end, a->live_at_end);
    }
}

static ad_registry *shared_registry(void)
{
    ad_registry *reg = ad_registry_new(NULL, NULL);
    CHECK(reg != NULL, "ad_registry_new");
    CHECK(ad_registry_add(reg, &cube_def) == AD_OK, "%s", ad_registry_errmsg(reg));
    return reg;
}

TEST(threads, concurrent_tapes_match_sequential_run)
{
    weights w;
    weights_fill(&w);
    ad_registry *reg = shared_registry();

    /* Reference: the jobs one after the other on this thread. */
    static job ref[NJOBS], par[NJOBS];
    for (int i = 0; i < NJOBS; i++) {
        job_init(&ref[i], i, &w, reg);
        job_run(&ref[i]);
        CHECK(ref[i].status == AD_OK, "%s", ref[i].msg);
    }
    /* The jobs are distinct computations, so mixing them up would show. */
    for (int i = 1; i < NJOBS; i++)
        CHECK(ref[i].loss != ref[0].loss, "jobs %d and 0 have the same loss", i);
    for (int i = 0; i < NJOBS; i++) {
        char want[128];
        snprintf(want, sizeof want, "matvec: W is %dx%d but x has length %d", NHID, NIN, i + 1);
        CHECK(strcmp(ref[i].shape_msg, want) == 0, "got \"%s\"", ref[i].shape_msg);
    }
    double g = 0;
    for (int k = 0; k < NHID * NIN; k++)
        g += fabs(ref[0].gW1[k]);
    CHECK(g > 0 && isfinite(g), "dW1 is a real gradient (|dW1|_1 = %g)", g);

    /* The same jobs at once, a few rounds to vary the interleaving. */
    for (int round = 0; round < 3; round++) {
        pthread_t th[NJOBS];
        for (int i = 0; i < NJOBS; i++) {
            job_init(&par[i], i, &w, reg);
            CHECK(pthread_create(&th[i], NULL, job_run, &par[i]) == 0, "pthread_create");
        }
        for (int i = 0; i < NJOBS; i++)
            CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
        for (int i = 0; i < NJOBS; i++)
            check_same(&ref[i], &par[i]);
    }
    ad_registry_free(reg);
}

/* ---- one tape, many threads: each with its own workspace ----
 * The network is recorded once, on this thread, viewing buffers that no
 * thread uses afterwards. Each thread makes a workspace from the shared
 * tape, binds the data params to its own x and y and the weight gradients
 * to its own buffers, then replays and sweeps its samples. Its results
 * must equal, bit for bit, those of a job that records its own tape. */
typedef struct ws_job {
    const ad_tape *t;
    ad_node L, W1, b1, W2, xn, yn;
    job j;
} ws_job;

static void *ws_job_run(void *arg)
{
    ws_job *wj = arg;
    job *j = &wj->j;
    ad_tape_opts opts = {NULL, NULL, NULL};
    if (j->id % 2 == 0) { /* even jobs: an allocator of their own */
        opts.alloc = test_alloc_fn;
        opts.alloc_ud = &j->alloc;
    }
    int st = AD_ENOMEM;
    ad_workspace *ws = ad_workspace_new(wj->t, &opts, &st);
    if (!ws) {
        fail(j, st, "ad_workspace_new", NULL);
        return NULL;
    }
    double x[NIN], y[NOUT];
    if (ad_workspace_bind(ws, wj->xn, x, NULL) != AD_OK
        || ad_workspace_bind(ws, wj->yn, y, NULL) != AD_OK
        || ad_workspace_bind(ws, wj->W1, NULL, j->gW1) != AD_OK
        || ad_workspace_bind(ws, wj->b1, NULL, j->gb1) != AD_OK
        || ad_workspace_bind(ws, wj->W2, NULL, j->gW2) != AD_OK) {
        fail(j, AD_EMISUSE, ad_workspace_errmsg(ws), NULL);
        ad_workspace_free(ws);
        return NULL;
    }
    for (int s = 0; s < NSAMPLES && j->status == AD_OK; s++) {
        sample(j->id, s, x, y);
        if (ad_workspace_replay(ws) != AD_OK || ad_workspace_sweep(ws, wj->L, NULL, 0) != AD_OK)
            fail(j, AD_EMISUSE, ad_workspace_errmsg(ws), NULL);
        j->loss += ad_workspace_value(ws, wj->L)[0];
    }
    ad_workspace_free(ws);
    return NULL;
}

TEST(threads, one_tape_many_workspaces)
{
    weights w;
    weights_fill(&w);
    ad_registry *reg = shared_registry();
    static job ref[NJOBS];
    for (int i = 0; i < NJOBS; i++) {
        job_init(&ref[i], i, &w, reg);
        job_run(&ref[i]);
        CHECK(ref[i].status == AD_OK, "%s", ref[i].msg);
    }

    ad_tape_opts topts = {NULL, NULL, reg};
    ad_tape *t = ad_tape_new(&topts);
    CHECK(t != NULL, "ad_tape_new");
    static job rec; /* the recording's own buffers: never used by the threads */
    job_init(&rec, 99, &w, reg);
    double x0[NIN] = {0}, y0[NOUT] = {0};
    ad_node L = record(&rec, t, x0, y0);
    CHECK(!ad_node_is_nil(L), "%s", ad_tape_errmsg(t));
    /* the params, in recording order: W1 b1 W2 x y (nodes 1..5) */
    static ws_job wj[NJOBS];
    for (int round = 0; round < 3; round++) {
        pthread_t th[NJOBS];
        for (int i = 0; i < NJOBS; i++) {
            wj[i].t = t;
            wj[i].L = L;
            wj[i].W1 = ad_tape_node(t, 1), wj[i].b1 = ad_tape_node(t, 2);
            wj[i].W2 = ad_tape_node(t, 3), wj[i].xn = ad_tape_node(t, 4);
            wj[i].yn = ad_tape_node(t, 5);
            job_init(&wj[i].j, i, &w, reg);
            CHECK(pthread_create(&th[i], NULL, ws_job_run, &wj[i]) == 0, "pthread_create");
        }
        for (int i = 0; i < NJOBS; i++)
            CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
        for (int i = 0; i < NJOBS; i++) {
            job *b = &wj[i].j;
            CHECK(b->status == AD_OK, "%s", b->msg);
            CHECK(memcmp(ref[i].gW1, b->gW1, sizeof b->gW1) == 0, "job %d: dW1 differs", i);
            CHECK(memcmp(ref[i].gb1, b->gb1, sizeof b->gb1) == 0, "job %d: db1 differs", i);
            CHECK(memcmp(ref[i].gW2, b->gW2, sizeof b->gW2) == 0, "job %d: dW2 differs", i);
            CHECK(ref[i].loss == b->loss, "job %d: loss %.17g vs %.17g", i, b->loss,
                  ref[i].loss);
            if (i % 2 == 0)
                CHECK(b->alloc.allocs > 0 && b->alloc.bytes == 0
                          && b->alloc.allocs == b->alloc.frees,
                      "job %d: the workspace's allocator does not balance", i);
        }
    }
    /* the shared tape is untouched: its recording buffers got nothing */
    for (int k = 0; k < NHID * NIN; k++)
        CHECK(rec.gW1[k] == 0, "the tape's own gradient buffer was written");
    ad_tape_free(t);
    ad_registry_free(reg);
}

/* Registry lookups from several threads while tapes use it. */
typedef struct finder {
    const ad_registry *reg;
    int found; /* lookups that returned the right descriptor */
    int n;
} finder;

static void *find_run(void *arg)
{
    finder *f = arg;
    for (int i = 0; i < f->n; i++) {
        const char *name = (i % 3 == 0) ? "cube" : (i % 3 == 1) ? "matvec" : "tanh";
        const ad_opdef *d = ad_registry_find(f->reg, name);
        f->found += d && strcmp(d->name, name) == 0;
    }
    return NULL;
}

TEST(threads, shared_registry_lookups)
{
    ad_registry *reg = shared_registry();
    finder f[NJOBS];
    pthread_t th[NJOBS];
    for (int i = 0; i < NJOBS; i++) {
        f[i] = (finder){reg, 0, 3000};
        CHECK(pthread_create(&th[i], NULL, find_run, &f[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < NJOBS; i++) {
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
        CHECK(f[i].found == f[i].n, "thread %d found %d of %d", i, f[i].found, f[i].n);
    }
    CHECK(ad_registry_find(reg, "cube") == &cube_def, "cube is the registered descriptor");
    ad_registry_free(reg);
}

/* One tape's sticky error does not leak into another tape, even while
 * both are in use on different threads. */
typedef struct pair {
    ad_tape *t;
    int bad;       /* 1: record a shape error */
    int status;
    char msg[128];
} pair;

static void *pair_run(void *arg)
{
    pair *p = arg;
    for (int i = 0; i < 200; i++) {
        ad_tape_reset(p->t);
        ad_node a = ad_variable(p->t, ad_shape_vec(3), NULL);
        ad_node b = ad_variable(p->t, ad_shape_vec(p->bad ? 4 : 3), NULL);
        ad_node d = ad_dot(p->t, a, b);
        if (!p->bad)
            ad_backward(p->t, d);
    }
    p->status = ad_tape_status(p->t);
    snprintf(p->msg, sizeof p->msg, "%s", ad_tape_errmsg(p->t));
    return NULL;
}

TEST(threads, errors_stay_on_their_tape)
{
    pair p[2] = {{ad_tape_new(NULL), 0, -1, ""}, {ad_tape_new(NULL), 1, -1, ""}};
    CHECK(p[0].t && p[1].t, "ad_tape_new");
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, pair_run, &p[i]) == 0, "pthread_create");
    for (int i = 0; i < 2; i++)
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
    CHECK(p[0].status == AD_OK, "%s", p[0].msg);
    CHECK(p[0].msg[0] == '\0', "\"%s\"", p[0].msg);
    CHECK(p[1].status == AD_ESHAPE, "status %d", p[1].status);
    CHECK(strcmp(p[1].msg, "dot: u is a vector of length 3 but v is a vector of length 4") == 0,
          "\"%s\"", p[1].msg);
    ad_tape_free(p[0].t);
    ad_tape_free(p[1].t);
}

#ifdef HAVE_NN
/* nn: one model and trainer per thread, each learning XOR from its own
 * seed; the concurrent runs must equal the sequential ones bit for bit. */
typedef struct nn_job {
    uint64_t seed;
    int status;
    char msg[256];
    double loss;
    double out[8];
} nn_job;

static void *nn_run(void *arg)
{
    nn_job *j = arg;
    static const double X[8] = {0, 0, 0, 1, 1, 0, 1, 1};
    static const double Y[8] = {1, 0, 0, 1, 0, 1, 1, 0};
    static const uint32_t sizes[3] = {2, 8, 2};
    nn_model_opts mo = {NULL, NULL, j->seed};
    nn_model *m = nn_model_new(&mo);
    nn_trainer *tr = NULL;
    j->status = m ? nn_model_add_mlp(m, sizes, 3, NN_ACT_TANH, NN_ACT_IDENTITY) : NN_ENOMEM;
    if (j->status == NN_OK) {
        nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 1.0};
        to.optim.lr = 0.05;
        tr = nn_trainer_new(m, &to);
        if (!tr)
            j->status = NN_ENOMEM;
    }
    for (int step = 0; step < 200 && j->status == NN_OK; step++)
        j->status = nn_trainer_step(tr, X, Y, step % 2 ? 4 : 2, &j->loss);
    if (j->status == NN_OK)
        j->status = nn_model_predict(m, X, 4, j->out);
    snprintf(j->msg, sizeof j->msg, "%s / %s", nn_model_errmsg(m), nn_trainer_errmsg(tr));
    nn_trainer_free(tr);
    nn_model_free(m);
    return NULL;
}

TEST(threads, nn_models_train_concurrently)
{
    static nn_job ref[NJOBS], par[NJOBS];
    for (int i = 0; i < NJOBS; i++) {
        ref[i].seed = par[i].seed = 100 + (uint64_t)i;
        nn_run(&ref[i]);
        CHECK(ref[i].status == NN_OK, "seed %d: %s", 100 + i, ref[i].msg);
    }
    CHECK(ref[1].loss != ref[0].loss, "different seeds train differently");
    pthread_t th[NJOBS];
    for (int i = 0; i < NJOBS; i++)
        CHECK(pthread_create(&th[i], NULL, nn_run, &par[i]) == 0, "pthread_create");
    for (int i = 0; i < NJOBS; i++)
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
    for (int i = 0; i < NJOBS; i++) {
        CHECK(par[i].status == NN_OK, "seed %d: %s", 100 + i, par[i].msg);
        CHECK(memcmp(&par[i].loss, &ref[i].loss, sizeof ref[i].loss) == 0,
              "seed %d: loss %.17g vs %.17g", 100 + i, par[i].loss, ref[i].loss);
        CHECK(memcmp(par[i].out, ref[i].out, sizeof ref[i].out) == 0, "seed %d: predictions differ",
              100 + i);
    }
}
#endif

#ifdef STANDALONE
int main(void)
{
    threads_concurrent_tapes_match_sequential_run();
    threads_shared_registry_lookups();
    threads_errors_stay_on_their_tape();
    threads_one_tape_many_workspaces();
#ifdef HAVE_NN
    threads_nn_models_train_concurrently();
    puts("test_threads: 5 tests passed");
#else
    puts("test_threads: 4 tests passed");
#endif
    return 0;
}
#endif
