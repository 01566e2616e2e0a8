/* test_nn_alloc.c -- allocation-failure injection: fail the N-th
 * allocation for every N through model creation, training, prediction,
 * saving and loading. Every failure must come back as NN_ENOMEM (or NULL
 * from a constructor) with an "out of memory" message, leave the objects
 * usable, and leak nothing. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <nn/nn.h>

#include "support.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const uint32_t SIZES[] = {6, 40, 30, 3};

static void expect_oom(int st, const char *msg)
{
    cr_assert_eq(st, NN_ENOMEM, "status %d: %s", st, msg);
    cr_assert(strstr(msg, "out of memory"), "message: %s", msg);
}

Test(nn_alloc, model_creation)
{
    long n;
    for (n = 1;; n++) {
        test_alloc a = {0};
        a.fail_at = n;
        nn_model_opts o = {test_alloc_fn, &a, 1};
        nn_model *m = nn_model_new(&o);
        if (m) {
            int st = nn_model_add_mlp(m, SIZES, 4, NN_ACT_RELU, NN_ACT_IDENTITY);
            if (st != NN_OK) {
                expect_oom(st, nn_model_errmsg(m));
                cr_assert_eq(nn_model_layers(m), 0, "N=%ld: a failed mlp leaves no layers", n);
                cr_assert_eq(nn_params_count(nn_model_params(m)), 0, "N=%ld", n);
                /* the model still works once memory is back */
                a.fail_at = 0;
                cr_assert_eq(nn_model_add_mlp(m, SIZES, 4, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK,
                             "N=%ld: %s", n, nn_model_errmsg(m));
            }
            cr_assert_eq(nn_params_count(nn_model_params(m)), 6);
            cr_assert_eq(nn_params_find(nn_model_params(m), "dense3.b", NULL), NN_OK);
            nn_model_free(m);
        }
        cr_assert_eq(a.bytes, 0, "N=%ld: %zu bytes leaked", n, a.bytes);
        cr_assert_eq(a.allocs, a.frees, "N=%ld", n);
        cr_assert_eq(a.bad_osize, 0, "N=%ld: osize passed to the allocator was wrong", n);
        if (a.count < n)
            break; /* the whole run passed without reaching the N-th allocation */
    }
    cr_assert(n > 8, "the run allocates (%ld)", n);
}

/* Model, trainer, steps of two batch sizes, prediction, save and load. */
Test(nn_alloc, training_pipeline)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/test_nn_alloc_%ld.nnp", (long)getpid());
    double X[5 * 6], Y[5 * 3] = {0}, out[5 * 3];
    for (int i = 0; i < 30; i++)
        X[i] = (i % 7) * 0.1 - 0.3;
    for (int r = 0; r < 5; r++)
        Y[r * 3 + r % 3] = 1;
    long n;
    int failures = 0;
    for (n = 1;; n++) {
        test_alloc a = {0};
        a.fail_at = n;
        nn_model_opts o = {test_alloc_fn, &a, 1};
        nn_model *m = nn_model_new(&o);
        nn_trainer *tr = NULL;
        int st = m ? nn_model_add_mlp(m, SIZES, 4, NN_ACT_TANH, NN_ACT_IDENTITY) : NN_ENOMEM;
        if (st != NN_OK)
            goto done;
        nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 1.0};
        tr = nn_trainer_new(m, &to);
        if (!tr) {
            expect_oom(NN_ENOMEM, nn_model_errmsg(m));
            goto done;
        }
        const uint32_t batches[] = {5, 2, 5, 1, 2, 3};
        for (int s = 0; s < 6; s++) {
            st = nn_trainer_step(tr, X, Y, batches[s], NULL);
            if (st != NN_OK) {
                expect_oom(st, nn_trainer_errmsg(tr));
                failures++;
                a.fail_at = 0; /* recovers on retry */
                cr_assert_eq(nn_trainer_step(tr, X, Y, batches[s], NULL), NN_OK, "N=%ld: %s", n,
                             nn_trainer_errmsg(tr));
            }
        }
        for (uint32_t b = 1; b <= 5; b += 4) {
            st = nn_model_predict(m, X, b, out);
            if (st != NN_OK) {
                expect_oom(st, nn_model_errmsg(m));
                a.fail_at = 0;
                cr_assert_eq(nn_model_predict(m, X, b, out), NN_OK, "N=%ld: %s", n,
                             nn_model_errmsg(m));
            }
        }
        cr_assert_eq(nn_model_save(m, path), NN_OK, "saving needs no allocation");
        st = nn_model_load(m, path);
        if (st != NN_OK)
            expect_oom(st, nn_model_errmsg(m));
    done:
        nn_trainer_free(tr);
        nn_model_free(m);
        cr_assert_eq(a.bytes, 0, "N=%ld: %zu bytes leaked", n, a.bytes);
        cr_assert_eq(a.allocs, a.frees, "N=%ld", n);
        cr_assert_eq(a.bad_osize, 0, "N=%ld: osize passed to the allocator was wrong", n);
        if (a.count < n)
            break;
    }
    remove(path);
    cr_assert(failures > 5, "failures were injected into training steps (%d)", failures);
}

Test(nn_alloc, store_and_optimizer)
{
    for (long n = 1;; n++) {
        test_alloc a = {0};
        a.fail_at = n;
        nn_params *p = nn_params_new(test_alloc_fn, &a);
        nn_optim *o = NULL;
        if (p) {
            char name[16];
            for (int k = 0; k < 40; k++) {
                snprintf(name, sizeof name, "t%d", k);
                int st = nn_params_add(p, name, ad_shape_vec((uint32_t)k + 1), NULL);
                if (st != NN_OK) {
                    expect_oom(st, nn_params_errmsg(p));
                    cr_assert_eq(nn_params_count(p), (size_t)k, "N=%ld: unchanged", n);
                    cr_assert_eq(nn_params_find(p, name, NULL), NN_ENOTFOUND);
                    break;
                }
            }
            if (nn_params_size(p)) {
                nn_optim_opts oo = nn_optim_defaults(NN_OPTIM_ADAM);
                o = nn_optim_new(&oo, nn_params_size(p), test_alloc_fn, &a);
                if (o)
                    cr_assert_eq(nn_optim_step(o, p), NN_OK);
            }
        }
        nn_optim_free(o);
        nn_params_free(p);
        cr_assert_eq(a.bytes, 0, "N=%ld: %zu bytes leaked", n, a.bytes);
        cr_assert_eq(a.allocs, a.frees, "N=%ld", n);
        cr_assert_eq(a.bad_osize, 0, "N=%ld: osize passed to the allocator was wrong", n);
        if (a.count < n)
            break;
    }
}
