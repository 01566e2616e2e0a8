/* test_workspace.c -- evaluating one recorded tape in workspaces.
 *
 * A workspace must give exactly what the tape gives at the same inputs
 * (bit for bit: the same loops and kernels run), must not touch the tape,
 * must keep working after the tape is reset or freed, and must refuse
 * misuse with messages. Threads are in test_threads.c. */
#include <criterion/criterion.h>

#include <autodiff/autodiff.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "support.h"

/* A graph with inline scalar chains, tensor ops, a param and a copied
 * leaf:  J = sum(tanh(affine(W, x, b))^2) * s + (s * s - 3 s) + dot(v, v) */
typedef struct net {
    ad_node W, x, b, s, v, J;
} net;

static double Wv[12], bv[3], xv[4], gW[12], gb[3];

static net record(ad_tape *t)
{
    net n;
    for (int i = 0; i < 12; i++)
        Wv[i] = 0.1 * sin(i + 1.0);
    for (int i = 0; i < 3; i++)
        bv[i] = 0.2 * i - 0.1;
    for (int i = 0; i < 4; i++)
        xv[i] = cos(0.5 * i);
    const double v0[5] = {1, -2, 0.5, 3, -1};
    n.W = ad_param(t, ad_shape_mat(3, 4), Wv, gW);
    n.x = ad_param(t, ad_shape_vec(4), xv, NULL);
    n.b = ad_param(t, ad_shape_vec(3), bv, gb);
    n.s = ad_scalar_var(t, 1.5);
    n.v = ad_variable(t, ad_shape_vec(5), v0);
    ad_node h = ad_tanh(t, ad_affine(t, n.W, n.x, n.b));
    ad_node a = ad_mul(t, ad_sum(t, ad_square(t, h)), n.s);
    ad_node q = ad_sub(t, ad_mul(t, n.s, n.s), ad_scale(t, n.s, 3));
    n.J = ad_add(t, ad_add(t, a, q), ad_dot(t, n.v, n.v));
    return n;
}

static void same(const double *a, const double *b, size_t n, const char *what)
{
    cr_assert_not_null(a, "%s: NULL", what);
    cr_assert_not_null(b, "%s: NULL", what);
    cr_assert(memcmp(a, b, n * sizeof *a) == 0, "%s differs: %.17g vs %.17g", what, a[0], b[0]);
}

Test(workspace, equals_the_tape_at_new_inputs)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    net n = record(t);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    int st = -1;
    ad_workspace *ws = ad_workspace_new(t, NULL, &st);
    cr_assert_not_null(ws);
    cr_assert_eq(st, AD_OK);
    cr_assert(ad_workspace_memory(ws) > 0);

    /* the recording's values come along */
    same(ad_workspace_value(ws, n.J), ad_value(t, n.J), 1, "J before any replay");

    /* new inputs: the workspace's own x, s and v; the tape's later */
    double x2[4] = {0.3, -0.7, 1.1, 0.2}, g2W[12] = {0}, g2b[3] = {0};
    const double s2 = -0.25, v2[5] = {2, 1, 0, -1, -2};
    cr_assert_eq(ad_workspace_bind(ws, n.x, x2, NULL), AD_OK, "%s", ad_workspace_errmsg(ws));
    cr_assert_eq(ad_workspace_set_value(ws, n.s, &s2), AD_OK);
    cr_assert_eq(ad_workspace_set_value(ws, n.v, v2), AD_OK);
    cr_assert_eq(ad_workspace_replay(ws), AD_OK);
    cr_assert_eq(ad_workspace_sweep(ws, n.J, NULL, 0), AD_OK, "%s", ad_workspace_errmsg(ws));
    const double Jws = ad_workspace_value(ws, n.J)[0];
    double wsW[12], wsb[3], wss, wsv[5];
    memcpy(wsW, ad_workspace_grad(ws, n.W), sizeof wsW);
    memcpy(wsb, ad_workspace_grad(ws, n.b), sizeof wsb);
    wss = ad_workspace_grad(ws, n.s)[0];
    memcpy(wsv, ad_workspace_grad(ws, n.v), sizeof wsv);

    /* the tape was not touched: its value is the recording's, its caller
     * gradient buffers are still zero */
    for (int i = 0; i < 12; i++)
        cr_assert(gW[i] == 0, "the tape's dW buffer was written");
    cr_assert(ad_scalar_value(t, n.s) == 1.5);

    /* the tape at the same inputs */
    memcpy(xv, x2, sizeof xv);
    cr_assert_eq(ad_set_value(t, n.s, &s2), AD_OK);
    cr_assert_eq(ad_set_value(t, n.v, v2), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    memset(gW, 0, sizeof gW), memset(gb, 0, sizeof gb);
    cr_assert_eq(ad_backward(t, n.J), AD_OK);
    cr_assert(Jws == ad_scalar_value(t, n.J), "J %.17g vs %.17g", Jws, ad_scalar_value(t, n.J));
    same(wsW, gW, 12, "dW");
    same(wsb, gb, 3, "db");
    same(&wss, ad_grad(t, n.s), 1, "ds");
    same(wsv, ad_grad(t, n.v), 5, "dv");

    /* a second sweep in the workspace gives the same (written afresh) */
    cr_assert_eq(ad_workspace_sweep(ws, n.J, NULL, 0), AD_OK);
    same(wsW, ad_workspace_grad(ws, n.W), 12, "dW, second sweep");
    cr_assert(ad_workspace_grad(ws, n.s)[0] == wss);

    /* bound gradient buffers accumulate, or are overwritten when assigning */
    cr_assert_eq(ad_workspace_bind(ws, n.W, NULL, g2W), AD_OK);
    cr_assert_eq(ad_workspace_bind(ws, n.b, NULL, g2b), AD_OK);
    cr_assert(ad_workspace_grad(ws, n.W) == g2W, "the bound buffer is the gradient");
    cr_assert_eq(ad_workspace_sweep(ws, n.J, NULL, 0), AD_OK);
    cr_assert_eq(ad_workspace_sweep(ws, n.J, NULL, 0), AD_OK);
    for (int i = 0; i < 12; i++)
        cr_assert(g2W[i] == 2 * wsW[i], "adding: dW[%d] = %g, want %g", i, g2W[i], 2 * wsW[i]);
    cr_assert_eq(ad_workspace_sweep(ws, n.J, NULL, AD_SWEEP_ASSIGN), AD_OK);
    same(g2W, wsW, 12, "dW assigned");
    same(g2b, wsb, 3, "db assigned");

    /* the tape can be reset, re-recorded and freed: the workspace lives on */
    ad_tape_reset(t);
    record(t);
    ad_tape_free(t);
    cr_assert_eq(ad_workspace_replay(ws), AD_OK);
    cr_assert_eq(ad_workspace_sweep(ws, n.J, NULL, AD_SWEEP_ASSIGN), AD_OK);
    cr_assert(ad_workspace_value(ws, n.J)[0] == Jws);
    same(g2W, wsW, 12, "dW after the tape was freed");
    ad_workspace_free(ws);
}

/* A vector output with a seed, and an output no variable reaches. */
Test(workspace, seeds_and_unreached_outputs)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double a0[3] = {1, 2, 3}, c0[3] = {4, 5, 6};
    ad_node a = ad_variable(t, ad_shape_vec(3), a0);
    ad_node c = ad_constant(t, ad_shape_vec(3), c0);
    ad_node y = ad_mul(t, a, a);  /* dy/da = 2a */
    ad_node k = ad_sum(t, c);     /* no variable */
    ad_workspace *ws = ad_workspace_new(t, NULL, NULL);
    cr_assert_not_null(ws);
    const double seed[3] = {1, 10, 100};
    cr_assert_eq(ad_workspace_sweep(ws, y, seed, 0), AD_OK, "%s", ad_workspace_errmsg(ws));
    const double *g = ad_workspace_grad(ws, a);
    for (int i = 0; i < 3; i++)
        cr_assert(g[i] == 2 * a0[i] * seed[i]);
    cr_assert_eq(ad_workspace_sweep(ws, k, NULL, 0), AD_OK);
    g = ad_workspace_grad(ws, a);
    for (int i = 0; i < 3; i++)
        cr_assert(g[i] == 0, "a does not reach k: gradient 0, got %g", g[i]);
    cr_assert_null(ad_workspace_grad(ws, c), "a constant has no gradient");
    ad_workspace_free(ws);
    ad_tape_free(t);
}

#define EXPECT_WS(ws, call, st, msg)                                                          \
    do {                                                                                      \
        cr_assert_eq((call), (st), "%s", #call);                                              \
        cr_assert_str_eq(ad_workspace_errmsg(ws), (msg));                                     \
    } while (0)

Test(workspace, misuse_is_refused_with_a_message)
{
    cr_assert_null(ad_workspace_new(NULL, NULL, NULL));
    int st = AD_OK;
    cr_assert_null(ad_workspace_new(NULL, NULL, &st));
    cr_assert_eq(st, AD_EMISUSE);

    ad_tape *t = ad_tape_new(NULL), *other = ad_tape_new(NULL);
    cr_assert(t && other);
    const double d[4] = {1, 2, 3, 4};
    double g[4];
    ad_node p = ad_param(t, ad_shape_vec(4), d, g);
    ad_node q = ad_param(t, ad_shape_vec(4), d, NULL);
    ad_node v = ad_variable(t, ad_shape_vec(4), d);
    ad_node y = ad_mul(t, p, v);
    ad_node J = ad_sum(t, y);
    ad_node foreign = ad_scalar_var(other, 1);
    ad_workspace *ws = ad_workspace_new(t, NULL, &st);
    cr_assert_not_null(ws);
    ad_node later = ad_sum(t, v); /* recorded after the workspace was made */
    cr_assert(!ad_node_is_nil(later));

    const char *notmine = "the node is not one of the tape this workspace was made from "
                          "(another tape, a later recording, or recorded after the workspace "
                          "was made)";
    char buf[256];
    snprintf(buf, sizeof buf, "workspace_sweep: %s", notmine);
    EXPECT_WS(ws, ad_workspace_sweep(ws, foreign, NULL, 0), AD_EMISUSE, buf);
    EXPECT_WS(ws, ad_workspace_sweep(ws, later, NULL, 0), AD_EMISUSE, buf);
    EXPECT_WS(ws, ad_workspace_sweep(ws, ad_nil(), NULL, 0), AD_EMISUSE,
              "workspace_sweep: the node is nil (the result of a failed call)");
    EXPECT_WS(ws, ad_workspace_sweep(ws, y, NULL, 0), AD_EMISUSE,
              "workspace_sweep: the output is a vector of length 4, not a scalar; pass a seed "
              "of the same size");
    EXPECT_WS(ws, ad_workspace_sweep(ws, J, NULL, 8u), AD_EMISUSE,
              "workspace_sweep: unknown flags 0x8 (known: AD_SWEEP_ASSIGN)");
    EXPECT_WS(ws, ad_workspace_set_value(ws, y, d), AD_EMISUSE,
              "workspace_set_value: node 4 is the result of mul, not a constant or variable");
    EXPECT_WS(ws, ad_workspace_set_value(ws, p, d), AD_EMISUSE,
              "workspace_set_value: node 1 is an ad_param; bind a buffer of your own with "
              "ad_workspace_bind");
    EXPECT_WS(ws, ad_workspace_set_value(ws, v, NULL), AD_EMISUSE,
              "workspace_set_value: data is NULL");
    snprintf(buf, sizeof buf, "workspace_set_value: %s", notmine);
    EXPECT_WS(ws, ad_workspace_set_value(ws, foreign, d), AD_EMISUSE, buf);
    EXPECT_WS(ws, ad_workspace_bind(ws, v, d, NULL), AD_EMISUSE,
              "workspace_bind: node 3 is not an ad_param");
    EXPECT_WS(ws, ad_workspace_bind(ws, q, NULL, g), AD_EMISUSE,
              "workspace_bind: node 2 was recorded without a gradient buffer; it has no "
              "gradient to bind");
    /* a good call clears the message; readers of bad handles give NULL */
    EXPECT_WS(ws, ad_workspace_sweep(ws, J, NULL, 0), AD_OK, "");
    cr_assert_null(ad_workspace_value(ws, foreign));
    cr_assert_null(ad_workspace_value(ws, later));
    cr_assert_null(ad_workspace_grad(ws, q));
    cr_assert_null(ad_workspace_value(NULL, J));

    /* NULL workspaces */
    cr_assert_eq(ad_workspace_replay(NULL), AD_EMISUSE);
    cr_assert_eq(ad_workspace_sweep(NULL, J, NULL, 0), AD_EMISUSE);
    cr_assert_eq(ad_workspace_set_value(NULL, v, d), AD_EMISUSE);
    cr_assert_eq(ad_workspace_bind(NULL, p, d, g), AD_EMISUSE);
    cr_assert_str_eq(ad_workspace_errmsg(NULL), "workspace is NULL");
    cr_assert_eq(ad_workspace_memory(NULL), 0);
    ad_workspace_free(NULL);
    ad_workspace_free(ws);

    /* a tape whose recording failed cannot be evaluated */
    cr_assert(ad_node_is_nil(ad_add(t, p, ad_variable(t, ad_shape_vec(3), d))));
    st = AD_OK;
    cr_assert_null(ad_workspace_new(t, NULL, &st));
    cr_assert_eq(st, AD_EMISUSE);
    ad_tape_free(t);
    ad_tape_free(other);
}

/* Every allocation of ad_workspace_new fails in turn: NULL, AD_ENOMEM, and
 * nothing left allocated. Then it succeeds and balances. */
Test(workspace, allocation_failure_at_every_step)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    net n = record(t);
    /* enough nodes for two node chunks, and tensors */
    ad_node acc = n.s;
    for (int i = 0; i < 9000; i++)
        acc = ad_add_const(t, ad_mul(t, acc, n.s), 0.001);
    ad_node J = ad_add(t, n.J, acc);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    long k = 1;
    for (;; k++) {
        test_alloc al = {0};
        al.fail_at = k;
        ad_tape_opts o = test_alloc_opts(&al);
        int st = -1;
        ad_workspace *ws = ad_workspace_new(t, &o, &st);
        if (ws) {
            cr_assert_eq(st, AD_OK);
            cr_assert_eq(ad_workspace_sweep(ws, J, NULL, 0), AD_OK);
            cr_assert(ad_workspace_grad(ws, n.s)[0] != 0);
            cr_assert_eq(ad_workspace_memory(ws), al.bytes);
            ad_workspace_free(ws);
            cr_assert_eq(al.bytes, 0);
            cr_assert_eq(al.allocs, al.frees);
            cr_assert_eq(al.bad_osize, 0);
            break;
        }
        cr_assert_eq(st, AD_ENOMEM, "allocation %ld", k);
        cr_assert_eq(al.bytes, 0, "allocation %ld failed: %zu bytes leaked", k, al.bytes);
        cr_assert_eq(al.allocs, al.frees);
        cr_assert_eq(al.bad_osize, 0);
    }
    cr_assert(k > 5, "only %ld allocations", k);
    ad_tape_free(t);
}

/* Bound caller gradient buffers that overlap, under AD_SWEEP_ASSIGN: the
 * workspace runs the tape's overlap check; its scratch can fail too. */
Test(workspace, assign_with_overlapping_bound_buffers)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double w[3] = {1, 2, 3}, a[3] = {0.5, -1, 2}, b[3] = {4, 0.25, -3};
    double tg[6];
    ad_node P1 = ad_param(t, ad_shape_vec(3), w, tg);
    ad_node P2 = ad_param(t, ad_shape_vec(3), w, tg + 3);
    ad_node J = ad_add(t, ad_dot(t, P1, ad_constant(t, ad_shape_vec(3), a)),
                       ad_dot(t, P2, ad_constant(t, ad_shape_vec(3), b)));
    ad_workspace *ws = ad_workspace_new(t, NULL, NULL);
    cr_assert_not_null(ws);
    double g[5];
    cr_assert_eq(ad_workspace_bind(ws, P1, NULL, g), AD_OK);
    cr_assert_eq(ad_workspace_bind(ws, P2, NULL, g + 2), AD_OK);
    for (int i = 0; i < 5; i++)
        g[i] = NAN;
    cr_assert_eq(ad_workspace_sweep(ws, J, NULL, AD_SWEEP_ASSIGN), AD_OK);
    const double want[5] = {a[0], a[1], a[2] + b[0], b[1], b[2]};
    for (int i = 0; i < 5; i++)
        cr_assert(g[i] == want[i], "g[%d] = %g, want %g", i, g[i], want[i]);
    ad_workspace_free(ws);

    /* the same with an allocator that refuses the overlap check's scratch */
    test_alloc al = {0};
    ad_tape_opts o = test_alloc_opts(&al);
    ws = ad_workspace_new(t, &o, NULL);
    cr_assert_not_null(ws);
    al.fail_at = al.count + 1;
    cr_assert_eq(ad_workspace_bind(ws, P1, NULL, g), AD_OK);
    cr_assert_eq(ad_workspace_bind(ws, P2, NULL, g + 2), AD_OK);
    cr_assert_eq(ad_workspace_sweep(ws, J, NULL, AD_SWEEP_ASSIGN), AD_ENOMEM);
    cr_assert_str_eq(ad_workspace_errmsg(ws),
                     "workspace_sweep: out of memory checking 2 gradient buffers");
    al.fail_at = 0;
    cr_assert_eq(ad_workspace_sweep(ws, J, NULL, AD_SWEEP_ASSIGN), AD_OK);
    for (int i = 0; i < 5; i++)
        cr_assert(g[i] == want[i]);
    ad_workspace_free(ws);
    cr_assert_eq(al.bytes, 0);
    ad_tape_free(t);
}
