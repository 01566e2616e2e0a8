/* test_nn_checkpoint.c -- checkpoints: a run stopped after k steps and
 * resumed from its checkpoint ends bit for bit where the uninterrupted run
 * ends (SGD, momentum, Adam; fused and unfused steps; mid-epoch and at an
 * epoch's end; a learning-rate schedule driven by the step count); the
 * byte layout; a truncated, corrupted, malformed file or one of another
 * model or optimizer is rejected with its message and changes nothing;
 * the previous checkpoint survives a failed save; allocation failures. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <nn/nn.h>

#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_ROWS 44 /* 5 batches of 8 and one of 4 per epoch */
#define BATCH 8
#define N_IN 6
#define N_OUT 3

typedef struct data {
    double X[N_ROWS * N_IN], Y[N_ROWS * N_OUT];
} data;

static void make_data(data *d)
{
    nn_rng r;
    nn_rng_seed(&r, 99);
    for (int i = 0; i < N_ROWS; i++) {
        double s = 0;
        for (int j = 0; j < N_IN; j++)
            s += (d->X[i * N_IN + j] = nn_rng_normal(&r)) * (j + 1);
        for (int c = 0; c < N_OUT; c++)
            d->Y[i * N_OUT + c] = c == (int)fmod(fabs(s), 3.0); /* one-hot */
    }
}

static nn_model *make_model(uint64_t seed, uint32_t hidden, test_alloc *a)
{
    nn_model_opts mo = {a ? test_alloc_fn : NULL, a, seed};
    nn_model *m = nn_model_new(&mo);
    const uint32_t sizes[] = {N_IN, hidden, N_OUT};
    cr_assert_eq(nn_model_add_mlp(m, sizes, 3, NN_ACT_TANH, NN_ACT_IDENTITY), NN_OK);
    return m;
}

static nn_trainer *make_trainer(nn_model *m, nn_optim_kind kind, int fused)
{
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(kind), 0};
    to.optim.lr = kind == NN_OPTIM_ADAM ? 0.01 : 0.1;
    nn_trainer *tr = nn_trainer_new(m, &to);
    cr_assert_not_null(tr, "%s", nn_model_errmsg(m));
    nn_trainer_set_fused(tr, fused);
    return tr;
}

/* A training loop in the shape of the examples: each epoch shuffles the
 * rows from ck->rng (kept at the epoch's start, so a resumed run can
 * shuffle the same way again), takes them BATCH at a time, and sets a
 * cosine learning rate from the step count. Runs `steps` steps. */
static void run(nn_trainer *tr, const data *d, nn_checkpoint *ck, int steps, double lr0)
{
    uint32_t order[N_ROWS];
    double X[BATCH * N_IN], Y[BATCH * N_OUT];
    for (int s = 0; s < steps; s++) {
        nn_rng r = ck->rng;
        for (uint32_t i = 0; i < N_ROWS; i++)
            order[i] = i;
        nn_rng_shuffle(&r, order, N_ROWS);
        const uint64_t p = ck->position, b = N_ROWS - p < BATCH ? N_ROWS - p : BATCH;
        for (uint64_t i = 0; i < b; i++) {
            memcpy(X + i * N_IN, d->X + order[p + i] * N_IN, sizeof(double) * N_IN);
            memcpy(Y + i * N_OUT, d->Y + order[p + i] * N_OUT, sizeof(double) * N_OUT);
        }
        const double t = (double)nn_optim_steps(nn_trainer_optim(tr));
        cr_assert_eq(nn_optim_set_lr(nn_trainer_optim(tr), lr0 * (0.6 + 0.4 * cos(t / 7))), NN_OK);
        cr_assert_eq(nn_trainer_step(tr, X, Y, (uint32_t)b, NULL), NN_OK, "%s",
                     nn_trainer_errmsg(tr));
        ck->position += b;
        if (ck->position == N_ROWS) {
            ck->epoch++;
            ck->position = 0;
            ck->rng = r; /* the next epoch shuffles from here */
        }
    }
}

static void fresh(nn_checkpoint *ck)
{
    memset(ck, 0, sizeof *ck);
    nn_rng_seed(&ck->rng, 7);
}

static void tmpname(char *buf, size_t cap, const char *what)
{
    snprintf(buf, cap, "/tmp/nn_ckpt_%ld_%s", (long)getpid(), what);
}

/* The state a resumed run must reproduce: every value bit for bit. */
static void expect_same_bits(nn_model *a, nn_model *b)
{
    nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
    cr_assert_eq(nn_params_size(pa), nn_params_size(pb));
    cr_assert_eq(memcmp(nn_params_values(pa), nn_params_values(pb),
                        nn_params_size(pa) * sizeof(double)),
                 0, "parameters differ after resuming");
}

static void resume_case(nn_optim_kind kind, int fused, int k, int total)
{
    data d;
    make_data(&d);
    const double lr0 = kind == NN_OPTIM_ADAM ? 0.01 : 0.1;
    /* uninterrupted */
    nn_model *m1 = make_model(1, 5, NULL);
    nn_trainer *t1 = make_trainer(m1, kind, fused);
    nn_checkpoint c1;
    fresh(&c1);
    run(t1, &d, &c1, total, lr0);
    /* k steps, save, a new process (other seed: everything must come from the file) */
    char path[128];
    tmpname(path, sizeof path, "resume");
    nn_model *m2 = make_model(1, 5, NULL);
    nn_trainer *t2 = make_trainer(m2, kind, fused);
    nn_checkpoint c2;
    fresh(&c2);
    run(t2, &d, &c2, k, lr0);
    cr_assert_eq(nn_trainer_save(t2, path, &c2), NN_OK, "%s", nn_trainer_errmsg(t2));
    nn_trainer_free(t2);
    nn_model_free(m2);
    nn_model *m3 = make_model(12345, 5, NULL);
    nn_trainer *t3 = make_trainer(m3, kind, fused);
    nn_checkpoint c3;
    memset(&c3, 0xAB, sizeof c3);
    cr_assert_eq(nn_trainer_resume(t3, path, &c3), NN_OK, "%s", nn_trainer_errmsg(t3));
    cr_assert_eq(c3.ranks, 1);
    cr_assert_eq(nn_optim_steps(nn_trainer_optim(t3)), (uint64_t)k);
    cr_assert_eq(c3.epoch, c2.epoch);
    cr_assert_eq(c3.position, c2.position);
    cr_assert_eq(memcmp(&c3.rng, &c2.rng, sizeof c3.rng), 0);
    cr_assert_eq(memcmp(nn_model_rng(m3), nn_model_rng(m1), sizeof(nn_rng)), 0);
    run(t3, &d, &c3, total - k, lr0);
    expect_same_bits(m3, m1);
    cr_assert_eq(c3.epoch, c1.epoch);
    cr_assert_eq(c3.position, c1.position);
    /* and the model still predicts the same */
    double o1[N_OUT], o3[N_OUT];
    cr_assert_eq(nn_model_predict(m1, d.X, 1, o1), NN_OK);
    cr_assert_eq(nn_model_predict(m3, d.X, 1, o3), NN_OK);
    cr_assert_eq(memcmp(o1, o3, sizeof o1), 0);
    remove(path);
    nn_trainer_free(t1);
    nn_trainer_free(t3);
    nn_model_free(m1);
    nn_model_free(m3);
}

Test(nn_checkpoint, resume_sgd_mid_epoch) { resume_case(NN_OPTIM_SGD, 1, 3, 20); }
Test(nn_checkpoint, resume_momentum_mid_epoch) { resume_case(NN_OPTIM_MOMENTUM, 1, 8, 20); }
Test(nn_checkpoint, resume_adam_mid_epoch) { resume_case(NN_OPTIM_ADAM, 1, 9, 25); }
Test(nn_checkpoint, resume_adam_at_epoch_end) { resume_case(NN_OPTIM_ADAM, 1, 12, 25); }
Test(nn_checkpoint, resume_adam_unfused) { resume_case(NN_OPTIM_ADAM, 0, 7, 19); }
Test(nn_checkpoint, resume_momentum_unfused) { resume_case(NN_OPTIM_MOMENTUM, 0, 1, 13); }

/* The test can fail: a resume that drops the optimizer state does not
 * reproduce the run (Adam's moments matter). */
Test(nn_checkpoint, losing_the_moments_changes_the_result)
{
    data d;
    make_data(&d);
    nn_model *m1 = make_model(1, 5, NULL), *m2 = make_model(1, 5, NULL);
    nn_trainer *t1 = make_trainer(m1, NN_OPTIM_ADAM, 1), *t2 = make_trainer(m2, NN_OPTIM_ADAM, 1);
    nn_checkpoint c1, c2;
    fresh(&c1);
    fresh(&c2);
    run(t1, &d, &c1, 10, 0.01);
    run(t2, &d, &c2, 5, 0.01);
    char path[128];
    tmpname(path, sizeof path, "params_only");
    cr_assert_eq(nn_model_save(m2, path), NN_OK);
    nn_trainer_free(t2);
    t2 = make_trainer(m2, NN_OPTIM_ADAM, 1);
    cr_assert_eq(nn_model_load(m2, path), NN_OK);
    run(t2, &d, &c2, 5, 0.01);
    cr_assert_neq(memcmp(nn_params_values(nn_model_params(m1)),
                         nn_params_values(nn_model_params(m2)),
                         nn_params_size(nn_model_params(m1)) * sizeof(double)),
                  0);
    remove(path);
    nn_trainer_free(t1);
    nn_trainer_free(t2);
    nn_model_free(m1);
    nn_model_free(m2);
}

/* ---- files ---- */

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len ? *len : 1);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void write_all(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

static uint64_t get_u64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static uint32_t get_u32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static double get_f64(const unsigned char *b)
{
    const uint64_t v = get_u64(b);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static void fix_crc(unsigned char *b, size_t len) { put_u32(b + len - 4, nn_crc32(0, b, len - 4)); }

/* A trainer after a few Adam steps, its checkpoint at path. */
typedef struct fixture {
    data d;
    nn_model *m;
    nn_trainer *tr;
    nn_checkpoint ck;
    char path[128];
} fixture;

static void setup(fixture *f, const char *name)
{
    make_data(&f->d);
    f->m = make_model(1, 5, NULL);
    f->tr = make_trainer(f->m, NN_OPTIM_ADAM, 1);
    fresh(&f->ck);
    run(f->tr, &f->d, &f->ck, 9, 0.01);
    tmpname(f->path, sizeof f->path, name);
    cr_assert_eq(nn_trainer_save(f->tr, f->path, &f->ck), NN_OK, "%s", nn_trainer_errmsg(f->tr));
}

static void teardown(fixture *f)
{
    remove(f->path);
    nn_trainer_free(f->tr);
    nn_model_free(f->m);
}

/* The whole observable state of a trainer, to check that a failed resume
 * changed nothing: parameters, step count, learning rate, and the next
 * step's result. */
typedef struct snapshot {
    double w[64];
    uint64_t steps;
    nn_rng rng;
} snapshot;

static void snap(fixture *f, snapshot *s)
{
    nn_params *p = nn_model_params(f->m);
    cr_assert(nn_params_size(p) <= 64);
    memcpy(s->w, nn_params_values(p), nn_params_size(p) * sizeof(double));
    s->steps = nn_optim_steps(nn_trainer_optim(f->tr));
    s->rng = *nn_model_rng(f->m);
}

static void expect_unchanged(fixture *f, const snapshot *s)
{
    snapshot now;
    snap(f, &now);
    cr_assert_eq(memcmp(s->w, now.w, nn_params_size(nn_model_params(f->m)) * sizeof(double)), 0,
                 "a failed resume changed the parameters");
    cr_assert_eq(s->steps, now.steps);
    cr_assert_eq(memcmp(&s->rng, &now.rng, sizeof s->rng), 0);
}

Test(nn_checkpoint, byte_layout)
{
    fixture f;
    setup(&f, "layout");
    size_t len;
    unsigned char *b = read_all(f.path, &len);
    /* 176 header + table (2+8+9 per tensor name "denseN.W"/"denseN.b") + 3 x 53 doubles + CRC */
    const size_t table = 4 * (2 + 8 + 9), n = 6 * 5 + 5 + 5 * 3 + 3;
    cr_assert_eq(len, 176 + table + 3 * 8 * n + 4);
    cr_assert_eq(memcmp(b, "NNCHKPT1", 8), 0);
    cr_assert_eq(get_u32(b + 8), 1);                  /* version */
    cr_assert_eq(get_u32(b + 12), 1);                 /* ranks */
    cr_assert_eq(get_u32(b + 16), NN_OPTIM_ADAM);
    cr_assert_eq(get_u32(b + 20), 4);                 /* tensors */
    cr_assert_eq(get_u64(b + 24), n);
    cr_assert_eq(get_u64(b + 32), 9);                 /* steps */
    cr_assert_eq(get_f64(b + 56), 0.9);               /* beta1 */
    double b1t = 1;
    for (int i = 0; i < 9; i++)
        b1t *= 0.9; /* beta1^t, as the optimizer keeps it: a product */
    cr_assert_eq(get_f64(b + 80), b1t);
    cr_assert_eq(get_u64(b + 96), f.ck.epoch);
    cr_assert_eq(get_u64(b + 104), f.ck.position);
    cr_assert_eq(get_u64(b + 112), f.ck.rng.s_[0]);
    cr_assert_eq(b[176], 8);                          /* name length of dense1.W */
    cr_assert_eq(memcmp(b + 178, "dense1.W", 8), 0);
    cr_assert_eq(b[186], 2);                          /* ndim */
    cr_assert_eq(get_u32(b + 187), 5);                /* rows */
    cr_assert_eq(get_u32(b + 191), 6);                /* cols */
    const size_t vals = 176 + table;
    cr_assert_eq(get_f64(b + vals), nn_params_values(nn_model_params(f.m))[0]);
    cr_assert_eq(get_u32(b + len - 4), nn_crc32(0, b, len - 4));
    free(b);
    teardown(&f);
}

Test(nn_checkpoint, truncated_at_every_length)
{
    fixture f;
    setup(&f, "trunc");
    size_t len;
    unsigned char *b = read_all(f.path, &len);
    char bad[160];
    snprintf(bad, sizeof bad, "%s.bad", f.path);
    run(f.tr, &f.d, &f.ck, 2, 0.01); /* the trainer moves on: a resume would show */
    snapshot s;
    snap(&f, &s);
    for (size_t n = 0; n < len; n++) {
        write_all(bad, b, n);
        const int st = nn_trainer_resume(f.tr, bad, NULL);
        cr_assert_eq(st, NN_EFORMAT, "length %zu: %d %s", n, st, nn_trainer_errmsg(f.tr));
        const char *msg = nn_trainer_errmsg(f.tr);
        cr_assert(strstr(msg, "truncated") || (n < 8 && strstr(msg, "bad magic")),
                  "length %zu: %s", n, msg);
        expect_unchanged(&f, &s);
    }
    write_all(bad, b, 300);
    nn_trainer_resume(f.tr, bad, NULL);
    cr_assert(strstr(nn_trainer_errmsg(f.tr), "is truncated: 300 bytes where its header and "
                     "tensor table call for"), "%s", nn_trainer_errmsg(f.tr));
    /* the previous checkpoint is still usable */
    cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_OK, "%s", nn_trainer_errmsg(f.tr));
    cr_assert_eq(nn_optim_steps(nn_trainer_optim(f.tr)), 9);
    remove(bad);
    free(b);
    teardown(&f);
}

Test(nn_checkpoint, corrupted_byte_by_byte)
{
    fixture f;
    setup(&f, "flip");
    size_t len;
    unsigned char *b = read_all(f.path, &len);
    char bad[160];
    snprintf(bad, sizeof bad, "%s.bad", f.path);
    run(f.tr, &f.d, &f.ck, 2, 0.01);
    snapshot s;
    snap(&f, &s);
    int crc_msgs = 0;
    for (size_t i = 0; i < len; i++) {
        b[i] ^= 0x10;
        write_all(bad, b, len);
        const int st = nn_trainer_resume(f.tr, bad, NULL);
        cr_assert_eq(st, NN_EFORMAT, "byte %zu: %d %s", i, st, nn_trainer_errmsg(f.tr));
        crc_msgs += strstr(nn_trainer_errmsg(f.tr), "is corrupted: stored CRC32") != NULL;
        expect_unchanged(&f, &s);
        b[i] ^= 0x10;
    }
    cr_assert(crc_msgs > (int)len / 2, "%d of %zu flips reported as CRC errors", crc_msgs, len);
    b[len - 1] ^= 1;
    write_all(bad, b, len);
    nn_trainer_resume(f.tr, bad, NULL);
    cr_assert(strstr(nn_trainer_errmsg(f.tr), "checkpoint: '/tmp/nn_ckpt_") &&
              strstr(nn_trainer_errmsg(f.tr), "is corrupted: stored CRC32"),
              "%s", nn_trainer_errmsg(f.tr));
    b[len - 1] ^= 1;
    cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_OK);
    remove(bad);
    free(b);
    teardown(&f);
}

static void expect_rejected(fixture *f, const unsigned char *b, size_t len, int status,
                            const char *msg)
{
    char bad[160];
    snprintf(bad, sizeof bad, "%s.bad", f->path);
    write_all(bad, b, len);
    snapshot s;
    snap(f, &s);
    const int st = nn_trainer_resume(f->tr, bad, NULL);
    cr_assert_eq(st, status, "%d: %s", st, nn_trainer_errmsg(f->tr));
    cr_assert(strstr(nn_trainer_errmsg(f->tr), msg), "message '%s' lacks '%s'",
              nn_trainer_errmsg(f->tr), msg);
    expect_unchanged(f, &s);
    remove(bad);
}

Test(nn_checkpoint, malformed)
{
    fixture f;
    setup(&f, "malformed");
    size_t len;
    unsigned char *b = read_all(f.path, &len);
    unsigned char *c = malloc(len + 8);
    memcpy(c, b, len);
    memcpy(c, "NNPARAMS", 8);
    expect_rejected(&f, c, len, NN_EFORMAT, "is not an nn checkpoint (bad magic)");
    memcpy(c, b, len);
    put_u32(c + 8, 2);
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "has format version 2; this library reads version 1");
    memcpy(c, b, len);
    put_u32(c + 16, 7);
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "is malformed: optimizer kind 7");
    memcpy(c, b, len);
    c[24] ^= 1; /* size 53 -> 52 */
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "the tensors hold 53 values but the header says 52");
    memcpy(c, b, len);
    c[176] = 0; /* a name of 0 bytes */
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "tensor 0 has a name of 0 bytes (1..63)");
    memcpy(c, b, len);
    c[186] = 3; /* ndim 3 */
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "tensor 0 has no valid shape");
    memcpy(c, b, len);
    memset(c + 40, 0, 8);
    c[47] = 0xBF;
    c[46] = 0xF0; /* lr -1 */
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "is malformed: optimizer: learning rate -1 is out of range");
    memcpy(c, b, len);
    memset(c + len, 0, 8); /* 8 bytes too many */
    fix_crc(c, len + 8);
    expect_rejected(&f, c, len + 8, NN_EFORMAT, "is malformed:");
    memcpy(c, b, len);
    put_u32(c + 20, 1000000); /* 10^6 tensors: runs out of file */
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_EFORMAT, "ends inside the table entry of tensor");
    /* a valid file with a renamed tensor */
    memcpy(c, b, len);
    c[178 + 5] = '7'; /* dense1.W -> dense7.W */
    fix_crc(c, len);
    expect_rejected(&f, c, len, NN_ESHAPE, "is of another model: tensor 0 is dense7.W there but "
                    "dense1.W in the model");
    cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_OK);
    free(c);
    free(b);
    teardown(&f);
}

Test(nn_checkpoint, another_architecture_or_optimizer)
{
    fixture f;
    setup(&f, "arch");
    char msg[512];
    /* 6-4-3 instead of 6-5-3 */
    nn_model *m = make_model(1, 4, NULL);
    nn_trainer *tr = make_trainer(m, NN_OPTIM_ADAM, 1);
    cr_assert_eq(nn_trainer_resume(tr, f.path, NULL), NN_ESHAPE);
    snprintf(msg, sizeof msg, "checkpoint: '%s' is of another model: dense1.W is 5x6 there but 4x6 "
             "in the model", f.path);
    cr_assert_str_eq(nn_trainer_errmsg(tr), msg);
    nn_trainer_free(tr);
    nn_model_free(m);
    /* one layer more */
    nn_model_opts mo = {NULL, NULL, 1};
    m = nn_model_new(&mo);
    const uint32_t sizes[] = {N_IN, 5, 3, N_OUT};
    cr_assert_eq(nn_model_add_mlp(m, sizes, 4, NN_ACT_TANH, NN_ACT_IDENTITY), NN_OK);
    tr = make_trainer(m, NN_OPTIM_ADAM, 1);
    cr_assert_eq(nn_trainer_resume(tr, f.path, NULL), NN_ESHAPE);
    snprintf(msg, sizeof msg, "checkpoint: '%s' is of another model: 4 tensors, the model has 6",
             f.path);
    cr_assert_str_eq(nn_trainer_errmsg(tr), msg);
    nn_trainer_free(tr);
    nn_model_free(m);
    /* the same model with momentum */
    m = make_model(1, 5, NULL);
    tr = make_trainer(m, NN_OPTIM_MOMENTUM, 1);
    cr_assert_eq(nn_trainer_resume(tr, f.path, NULL), NN_ESHAPE);
    snprintf(msg, sizeof msg, "checkpoint: '%s' holds adam state but the trainer uses momentum",
             f.path);
    cr_assert_str_eq(nn_trainer_errmsg(tr), msg);
    /* a parameter file is not a checkpoint */
    cr_assert_eq(nn_model_save(m, f.path), NN_OK);
    cr_assert_eq(nn_trainer_resume(tr, f.path, NULL), NN_EFORMAT);
    cr_assert(strstr(nn_trainer_errmsg(tr), "(bad magic)"));
    nn_trainer_free(tr);
    nn_model_free(m);
    teardown(&f);
}

Test(nn_checkpoint, failed_save_keeps_the_previous_file)
{
    fixture f;
    setup(&f, "keep");
    size_t len;
    unsigned char *before = read_all(f.path, &len);
    run(f.tr, &f.d, &f.ck, 3, 0.01);
    /* the temporary cannot be created: a directory is in the way */
    char tmp[200];
    snprintf(tmp, sizeof tmp, "%s.tmp", f.path);
    cr_assert_eq(mkdir(tmp, 0700), 0);
    cr_assert_eq(nn_trainer_save(f.tr, f.path, &f.ck), NN_EIO);
    char msg[400];
    snprintf(msg, sizeof msg, "checkpoint: cannot open '%s' for writing", tmp);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr), msg);
    rmdir(tmp);
    size_t len2;
    unsigned char *after = read_all(f.path, &len2);
    cr_assert_eq(len2, len);
    cr_assert_eq(memcmp(before, after, len), 0);
    cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_OK);
    cr_assert_eq(nn_optim_steps(nn_trainer_optim(f.tr)), 9);
    /* a leftover temporary from a crash does not matter */
    write_all(tmp, (const unsigned char *)"junk", 4);
    cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_OK);
    cr_assert_eq(nn_trainer_save(f.tr, f.path, &f.ck), NN_OK);
    cr_assert_eq(access(tmp, F_OK), -1, "the temporary was left behind");
    /* the rename fails: path is a non-empty directory */
    char dir[160];
    snprintf(dir, sizeof dir, "%s.d", f.path);
    char inner[200];
    snprintf(inner, sizeof inner, "%s/x", dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    write_all(inner, (const unsigned char *)"x", 1);
    cr_assert_eq(nn_trainer_save(f.tr, dir, &f.ck), NN_EIO);
    cr_assert(strstr(nn_trainer_errmsg(f.tr), "checkpoint: cannot rename '"), "%s",
              nn_trainer_errmsg(f.tr));
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    cr_assert_eq(access(tmp, F_OK), -1, "the temporary was left behind");
    remove(inner);
    rmdir(dir);
    /* the disk is full: the temporary is a link to /dev/full. A small
     * file fails at the flush, a large one already while writing; either
     * way the temporary goes and the checkpoint at path stays. */
    if (access("/dev/full", W_OK) == 0) {
        snprintf(tmp, sizeof tmp, "%s.tmp", f.path);
        cr_assert_eq(symlink("/dev/full", tmp), 0);
        cr_assert_eq(nn_trainer_save(f.tr, f.path, &f.ck), NN_EIO);
        snprintf(msg, sizeof msg, "checkpoint: flushing '%s' to disk failed", tmp);
        cr_assert_str_eq(nn_trainer_errmsg(f.tr), msg);
        cr_assert_eq(access(tmp, F_OK), -1, "the temporary was left behind");
        nn_model *big = make_model(1, 100, NULL); /* 6x100: 8 KB of values */
        nn_trainer *bt = make_trainer(big, NN_OPTIM_SGD, 1);
        cr_assert_eq(symlink("/dev/full", tmp), 0);
        cr_assert_eq(nn_trainer_save(bt, f.path, &f.ck), NN_EIO);
        snprintf(msg, sizeof msg, "checkpoint: writing '%s' failed", tmp);
        cr_assert_str_eq(nn_trainer_errmsg(bt), msg);
        cr_assert_eq(access(tmp, F_OK), -1, "the temporary was left behind");
        nn_trainer_free(bt);
        nn_model_free(big);
        cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_OK, "%s", nn_trainer_errmsg(f.tr));
    }
    /* no such directory */
    cr_assert_eq(nn_trainer_save(f.tr, "/nonexistent-dir/ck", &f.ck), NN_EIO);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr),
                     "checkpoint: cannot open '/nonexistent-dir/ck.tmp' for writing");
    /* reading: no file, a directory */
    cr_assert_eq(nn_trainer_resume(f.tr, "/nonexistent-dir/ck", NULL), NN_EIO);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr),
                     "checkpoint: cannot open '/nonexistent-dir/ck' for reading");
    cr_assert_eq(nn_trainer_resume(f.tr, "/tmp", NULL), NN_EIO);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr),
                     "checkpoint: cannot load '/tmp': not a regular file (a directory)");
    free(before);
    free(after);
    teardown(&f);
}

Test(nn_checkpoint, misuse)
{
    fixture f;
    setup(&f, "misuse");
    cr_assert_eq(nn_trainer_save(NULL, f.path, &f.ck), NN_EMISUSE);
    cr_assert_eq(nn_trainer_resume(NULL, f.path, &f.ck), NN_EMISUSE);
    cr_assert_eq(nn_trainer_save(f.tr, NULL, &f.ck), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr), "checkpoint: save: path is NULL");
    cr_assert_eq(nn_trainer_save(f.tr, f.path, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr), "checkpoint: save: the checkpoint is NULL");
    cr_assert_eq(nn_trainer_resume(f.tr, NULL, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr), "checkpoint: resume: path is NULL");
    size_t idx;
    cr_assert_eq(nn_params_add(nn_model_params(f.m), "extra", ad_shape_vec(2), &idx), NN_OK);
    cr_assert_eq(nn_trainer_save(f.tr, f.path, &f.ck), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr), "checkpoint: save: the model's parameters changed "
                     "after the trainer was made");
    cr_assert_eq(nn_trainer_resume(f.tr, f.path, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(f.tr), "checkpoint: resume: the model's parameters "
                     "changed after the trainer was made");
    teardown(&f);
}

Test(nn_checkpoint, allocation_failures)
{
    data d;
    make_data(&d);
    char path[128];
    tmpname(path, sizeof path, "oom");
    test_alloc a = {0};
    nn_model *m = make_model(1, 5, &a);
    nn_trainer *tr = make_trainer(m, NN_OPTIM_ADAM, 1);
    nn_checkpoint ck;
    fresh(&ck);
    run(tr, &d, &ck, 4, 0.01);
    cr_assert_eq(nn_trainer_save(tr, path, &ck), NN_OK);
    a.count = 0;
    a.fail_at = 1;
    cr_assert_eq(nn_trainer_save(tr, path, &ck), NN_ENOMEM);
    char msg[300];
    snprintf(msg, sizeof msg, "checkpoint: out of memory saving '%s'", path);
    cr_assert_str_eq(nn_trainer_errmsg(tr), msg);
    a.count = 0;
    cr_assert_eq(nn_trainer_resume(tr, path, NULL), NN_ENOMEM);
    cr_assert(strstr(nn_trainer_errmsg(tr), "checkpoint: out of memory reading '"), "%s",
              nn_trainer_errmsg(tr));
    a.fail_at = 0;
    cr_assert_eq(nn_trainer_resume(tr, path, NULL), NN_OK);
    remove(path);
    nn_trainer_free(tr);
    nn_model_free(m);
    cr_assert_eq(a.bytes, 0);
    cr_assert_eq(a.bad_osize, 0);
}

Test(nn_checkpoint, shuffle_and_shard)
{
    uint32_t a[10], b[10];
    nn_rng r1, r2;
    nn_rng_seed(&r1, 3);
    nn_rng_seed(&r2, 3);
    for (uint32_t i = 0; i < 10; i++)
        a[i] = b[i] = i;
    nn_rng_shuffle(&r1, a, 10);
    nn_rng_shuffle(&r2, b, 10);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    unsigned seen = 0, moved = 0;
    for (uint32_t i = 0; i < 10; i++) {
        seen |= 1u << a[i];
        moved += a[i] != i;
    }
    cr_assert_eq(seen, 0x3FF, "not a permutation");
    cr_assert(moved > 0);
    nn_rng_shuffle(NULL, a, 10);
    nn_rng_shuffle(&r1, NULL, 10);
    uint64_t lo, hi, next = 0;
    for (uint32_t r = 0; r < 3; r++) { /* 10 rows over 3 ranks: 4, 3, 3 */
        cr_assert_eq(nn_shard(10, 3, r, &lo, &hi), NN_OK);
        cr_assert_eq(lo, next);
        cr_assert_eq(hi - lo, r == 0 ? 4u : 3u);
        next = hi;
    }
    cr_assert_eq(next, 10);
    cr_assert_eq(nn_shard(10, 0, 0, &lo, &hi), NN_EMISUSE);
    cr_assert_eq(nn_shard(10, 3, 3, &lo, &hi), NN_EMISUSE);
    cr_assert_eq(nn_shard(10, 3, 0, NULL, &hi), NN_EMISUSE);
    cr_assert_eq(nn_shard(10, 3, 0, &lo, NULL), NN_EMISUSE);
}
