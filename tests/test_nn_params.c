/* test_nn_params.c -- the parameter store: names through the hash, the two
 * flat blocks, initialisers, the generator, zeroing and clipping, CRC32. */
#include <criterion/criterion.h>
#include <nn/nn.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

Test(nn_params, add_find_and_flat_blocks)
{
    nn_params *p = nn_params_new(NULL, NULL);
    size_t i0, i1, i2, f;
    cr_assert_eq(nn_params_add(p, "a.W", ad_shape_mat(2, 3), &i0), NN_OK);
    cr_assert_eq(nn_params_add(p, "a.b", ad_shape_vec(2), &i1), NN_OK);
    cr_assert_eq(nn_params_add(p, "s", ad_shape_scalar(), &i2), NN_OK);
    cr_assert(i0 == 0 && i1 == 1 && i2 == 2);
    cr_assert_eq(nn_params_count(p), 3);
    cr_assert_eq(nn_params_size(p), 9);
    cr_assert_eq(nn_params_offset(p, 1), 6);
    cr_assert_eq(nn_params_offset(p, 2), 8);
    cr_assert_eq(nn_params_value(p, 1), nn_params_values(p) + 6, "views into one block");
    cr_assert_eq(nn_params_grad(p, 2), nn_params_grads(p) + 8);
    for (size_t k = 0; k < 9; k++)
        cr_assert(nn_params_values(p)[k] == 0 && nn_params_grads(p)[k] == 0);
    cr_assert_eq(nn_params_find(p, "a.b", &f), NN_OK);
    cr_assert_eq(f, 1);
    cr_assert_eq(nn_params_find(p, "s", &f), NN_OK);
    cr_assert_eq(f, 2);
    cr_assert_eq(nn_params_find(p, "a.c", &f), NN_ENOTFOUND);
    cr_assert_str_eq(nn_params_errmsg(p), "params: no tensor named a.c");
    cr_assert_str_eq(nn_params_name(p, 0), "a.W");
    cr_assert_null(nn_params_name(p, 3));
    cr_assert_null(nn_params_value(p, 3));
    cr_assert_eq(nn_params_shape(p, 3).ndim, -1);

    /* many tensors: the table and the blocks grow, names still found */
    char name[32];
    for (int k = 0; k < 300; k++) {
        snprintf(name, sizeof name, "layer%d.W", k);
        cr_assert_eq(nn_params_add(p, name, ad_shape_vec((uint32_t)k + 1), NULL), NN_OK);
    }
    for (int k = 0; k < 300; k += 37) {
        snprintf(name, sizeof name, "layer%d.W", k);
        cr_assert_eq(nn_params_find(p, name, &f), NN_OK);
        cr_assert_eq(f, (size_t)k + 3);
        cr_assert_eq(nn_params_shape(p, f).rows, (uint32_t)k + 1);
    }
    nn_params_free(p);
}

Test(nn_params, add_errors)
{
    nn_params *p = nn_params_new(NULL, NULL);
    cr_assert_eq(nn_params_add(p, "w", ad_shape_vec(3), NULL), NN_OK);
    const uint64_t v = nn_params_version(p);
    cr_assert_eq(nn_params_add(p, "w", ad_shape_vec(3), NULL), NN_EEXIST);
    cr_assert_str_eq(nn_params_errmsg(p), "params: a tensor named w already exists");
    cr_assert_eq(nn_params_add(p, "", ad_shape_vec(3), NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: a tensor needs a non-empty name");
    cr_assert_eq(nn_params_add(p, NULL, ad_shape_vec(3), NULL), NN_EMISUSE);
    char longname[100];
    memset(longname, 'x', 99);
    longname[99] = 0;
    cr_assert_eq(nn_params_add(p, longname, ad_shape_vec(3), NULL), NN_EMISUSE);
    cr_assert(strstr(nn_params_errmsg(p), "is 99 bytes; at most 63"), "%s", nn_params_errmsg(p));
    ad_shape bad = {0, 1, 1};
    cr_assert_eq(nn_params_add(p, "z", bad, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: z: shape a vector of length 0 (ndim 1, 0x1) is not valid");
    ad_shape bad2 = {2, 2, 3};
    cr_assert_eq(nn_params_add(p, "z", bad2, NULL), NN_EMISUSE);
    cr_assert_eq(nn_params_count(p), 1);
    cr_assert_eq(nn_params_version(p), v, "failed adds change nothing");
    cr_assert_eq(nn_params_add(NULL, "q", bad, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(NULL), "no parameter store");
    nn_params_free(p);
    nn_params_free(NULL);
}

Test(nn_params, generator_is_reproducible_and_well_spread)
{
    nn_rng a, b, c;
    nn_rng_seed(&a, 42);
    nn_rng_seed(&b, 42);
    nn_rng_seed(&c, 43);
    int diff = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = nn_rng_next(&a);
        cr_assert_eq(x, nn_rng_next(&b));
        diff += x != nn_rng_next(&c);
    }
    cr_assert_eq(diff, 1000, "another seed, another stream");
    /* uniform: in [0,1), mean 1/2; normal: mean 0, variance 1; below: all values */
    double s = 0, s1 = 0, s2 = 0;
    int hits[7] = {0};
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double u = nn_rng_uniform(&a);
        cr_assert(u >= 0 && u < 1);
        s += u;
        double z = nn_rng_normal(&a);
        s1 += z;
        s2 += z * z;
        uint64_t k = nn_rng_below(&a, 7);
        cr_assert(k < 7);
        hits[k]++;
    }
    cr_assert(fabs(s / n - 0.5) < 0.005, "uniform mean %g", s / n);
    cr_assert(fabs(s1 / n) < 0.01, "normal mean %g", s1 / n);
    cr_assert(fabs(s2 / n - 1) < 0.02, "normal variance %g", s2 / n);
    for (int k = 0; k < 7; k++)
        cr_assert(fabs(hits[k] / (double)n - 1.0 / 7) < 0.005, "below(7) hits %d", hits[k]);
    cr_assert_eq(nn_rng_below(&a, 0), 0);
    cr_assert_eq(nn_rng_next(NULL), 0);
    nn_rng_seed(NULL, 1);
}

Test(nn_params, initialisers)
{
    nn_params *p = nn_params_new(NULL, NULL);
    size_t w, b, g;
    nn_params_add(p, "W", ad_shape_mat(50, 24), &w);
    nn_params_add(p, "b", ad_shape_vec(50), &b);
    nn_params_add(p, "G", ad_shape_mat(100, 100), &g);
    nn_rng r;
    nn_rng_seed(&r, 7);
    cr_assert_eq(nn_params_init(p, w, NN_INIT_UNIFORM, 0, &r), NN_OK);
    const double a = sqrt(6.0 / 24); /* fan_in = columns */
    double mx = 0;
    for (int k = 0; k < 50 * 24; k++)
        mx = fmax(mx, fabs(nn_params_value(p, w)[k]));
    cr_assert(mx <= a && mx > 0.95 * a, "uniform within +-sqrt(6/fan_in): max %g of %g", mx, a);
    cr_assert_eq(nn_params_init(p, g, NN_INIT_NORMAL, 0.1, &r), NN_OK);
    double s2 = 0;
    for (int k = 0; k < 10000; k++)
        s2 += nn_params_value(p, g)[k] * nn_params_value(p, g)[k];
    cr_assert(fabs(sqrt(s2 / 10000) - 0.1) < 0.005, "normal std %g", sqrt(s2 / 10000));
    nn_params_value(p, b)[3] = 5;
    cr_assert_eq(nn_params_init(p, b, NN_INIT_ZEROS, 0, NULL), NN_OK);
    cr_assert_eq(nn_params_value(p, b)[3], 0.0);

    /* bit-for-bit reproducible from the seed */
    nn_params *q = nn_params_new(NULL, NULL);
    nn_params_add(q, "W", ad_shape_mat(50, 24), NULL);
    nn_rng r2;
    nn_rng_seed(&r2, 7);
    nn_params_init(q, 0, NN_INIT_UNIFORM, 0, &r2);
    cr_assert_eq(memcmp(nn_params_value(p, w), nn_params_value(q, 0), 50 * 24 * sizeof(double)), 0);

    cr_assert_eq(nn_params_init(p, 9, NN_INIT_ZEROS, 0, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: init: no tensor 9 (the store has 3)");
    cr_assert_eq(nn_params_init(p, w, NN_INIT_UNIFORM, 0, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: init W: the generator is NULL");
    cr_assert_eq(nn_params_init(p, w, NN_INIT_NORMAL, -1, &r), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: init W: std -1 is not a finite value >= 0");
    cr_assert_eq(nn_params_init(p, w, (nn_init)17, 0, &r), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: init W: unknown initialiser 17");
    nn_params_free(q);
    nn_params_free(p);
}

Test(nn_params, models_with_the_same_seed_are_identical)
{
    const uint32_t sizes[] = {20, 30, 5};
    nn_model_opts o = {NULL, NULL, 123};
    nn_model *a = nn_model_new(&o), *b = nn_model_new(&o);
    o.seed = 124;
    nn_model *c = nn_model_new(&o);
    nn_model_add_mlp(a, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY);
    /* a failed mlp call restores the generator: b ends up like a */
    const uint32_t bad[] = {20, 30, 0};
    cr_assert_eq(nn_model_add_mlp(b, bad, 3, NN_ACT_RELU, NN_ACT_IDENTITY), NN_EMISUSE);
    nn_model_add_mlp(b, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY);
    nn_model_add_mlp(c, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY);
    const size_t n = nn_params_size(nn_model_params(a));
    cr_assert_eq(memcmp(nn_params_values(nn_model_params(a)), nn_params_values(nn_model_params(b)),
                        n * sizeof(double)), 0);
    cr_assert_neq(memcmp(nn_params_values(nn_model_params(a)), nn_params_values(nn_model_params(c)),
                         n * sizeof(double)), 0);
    nn_model_free(a);
    nn_model_free(b);
    nn_model_free(c);
}

Test(nn_params, zero_and_clip_by_global_norm)
{
    nn_params *p = nn_params_new(NULL, NULL);
    nn_params_add(p, "u", ad_shape_vec(2), NULL);
    nn_params_add(p, "v", ad_shape_mat(1, 2), NULL);
    double *g = nn_params_grads(p);
    g[0] = 3, g[1] = 0, g[2] = 0, g[3] = 4; /* norm 5 across both tensors */
    cr_assert_eq(nn_params_grad_norm(p), 5.0);
    double norm;
    cr_assert_eq(nn_params_clip_grad_norm(p, 10, &norm), NN_OK);
    cr_assert_eq(norm, 5.0);
    cr_assert(g[0] == 3 && g[3] == 4, "under the limit: unchanged");
    cr_assert_eq(nn_params_clip_grad_norm(p, 1, &norm), NN_OK);
    cr_assert_eq(norm, 5.0);
    cr_assert(fabs(g[0] - 0.6) < 1e-15 && fabs(g[3] - 0.8) < 1e-15, "scaled by 1/5: %g %g", g[0], g[3]);
    cr_assert(fabs(nn_params_grad_norm(p) - 1) < 1e-15);
    cr_assert_eq(nn_params_clip_grad_norm(p, 0, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_params_errmsg(p), "params: clip: max_norm 0 is not positive and finite");
    cr_assert_eq(nn_params_clip_grad_norm(p, INFINITY, NULL), NN_EMISUSE);
    nn_params_zero_grad(p);
    for (int k = 0; k < 4; k++)
        cr_assert_eq(g[k], 0.0);
    nn_params_free(p);
}

Test(nn_params, nodes_view_the_store)
{
    nn_params *p = nn_params_new(NULL, NULL);
    nn_params_add(p, "w", ad_shape_vec(3), NULL);
    double *v = nn_params_value(p, 0);
    v[0] = 1, v[1] = 2, v[2] = 3;
    ad_tape *t = ad_tape_new(NULL);
    ad_node w = nn_params_node(p, t, 0, 1);
    ad_node J = ad_sum(t, ad_square(t, w));
    cr_assert_eq(ad_backward(t, J), AD_OK);
    cr_assert_eq(ad_scalar_value(t, J), 14.0);
    cr_assert(nn_params_grad(p, 0)[2] == 6, "grad goes into the store");
    ad_backward(t, J);
    cr_assert(nn_params_grad(p, 0)[2] == 12, "and accumulates until zeroed");
    v[2] = 0;
    ad_replay(t);
    cr_assert_eq(ad_scalar_value(t, J), 5.0, "replay reads the store");
    ad_node c = nn_params_node(p, t, 0, 0);
    cr_assert(!ad_node_is_nil(c) && !ad_node_requires_grad(t, c), "grad 0: a constant view");
    cr_assert(ad_node_is_nil(nn_params_node(p, t, 5, 1)));
    cr_assert_str_eq(nn_params_errmsg(p), "params: node: no tensor 5 (the store has 1)");
    ad_tape_free(t);
    nn_params_free(p);
}

Test(nn_params, crc32_check_values)
{
    cr_assert_eq(nn_crc32(0, "123456789", 9), 0xCBF43926u, "the standard check value");
    cr_assert_eq(nn_crc32(0, "", 0), 0u);
    cr_assert_eq(nn_crc32(0, "The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
    uint32_t c = nn_crc32(0, "12345", 5);
    cr_assert_eq(nn_crc32(c, "6789", 4), 0xCBF43926u, "chainable");
    cr_assert_eq(nn_crc32(7, NULL, 0), 7u);
}
