/* test_sweep.c -- the reverse sweep: adjoints fresh per sweep, parameter
 * gradients accumulated (or overwritten with AD_SWEEP_ASSIGN), only the nodes between variables and the output
 * visited, seeded VJPs, a 10^7-node tape, stale handles after reset, and
 * the introspection API. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- a probe op: identity whose vjp counts its calls ---- */

static void probe_fwd(const ad_call *k)
{
    memcpy(k->out.val, k->in[0].val, ad_shape_size(k->out.shape) * sizeof(double));
}
static void probe_vjp(const ad_call *k)
{
    (*(int *)k->ud)++;
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += k->out.grad[i]; /* dx += dy */
}

static ad_opdef probe_def(int *counter)
{
    ad_opdef d = {.name = "probe", .arity = 1, .shape = NULL, .forward = probe_fwd, .vjp = probe_vjp, .ud = counter};
    return d;
}

/* ---- zeroing and accumulation ---- */

Test(sweep, two_sweeps_same_adjoints_params_accumulate)
{
    const double v0[4] = {0.3, -1.2, 2.0, 0.7};
    double P[4] = {0.5, -0.25, 1.5, 2.0}, PG[4] = {0};
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node v = ad_variable(t, ad_shape_vec(4), v0);
    ad_node p = ad_param(t, ad_shape_vec(4), P, PG);
    ad_node s = ad_scalar_var(t, 1.7);
    ad_node u = ad_tanh(t, ad_mul(t, ad_add(t, v, p), s));
    ad_node s2 = ad_mul(t, ad_exp(t, s), s); /* inline chain */
    ad_node J = ad_mul(t, ad_dot(t, u, u), s2);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));

    double gv[4], gu[4], gs = ad_grad(t, s)[0], gs2 = ad_grad(t, s2)[0], pg1[4];
    memcpy(gv, ad_grad(t, v), sizeof gv);
    memcpy(gu, ad_grad(t, u), sizeof gu);
    memcpy(pg1, PG, sizeof pg1);
    for (int i = 0; i < 4; i++)
        cr_assert_neq(pg1[i], 0.0);

    cr_assert_eq(ad_backward(t, J), AD_OK);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(ad_grad(t, v)[i], gv[i], "dv[%d] changed on the second sweep", i);
        cr_assert_eq(ad_grad(t, u)[i], gu[i], "du[%d] changed on the second sweep", i);
        cr_assert_eq(PG[i], 2.0 * pg1[i], "param grad [%d] %.17g, want twice %.17g", i, PG[i],
                     pg1[i]);
    }
    cr_assert_eq(ad_grad(t, s)[0], gs, "inline scalar adjoint changed on the second sweep");
    cr_assert_eq(ad_grad(t, s2)[0], gs2);
    cr_assert_eq(ad_grad(t, J)[0], 1.0);
    ad_tape_free(t);
}

/* Sweeping from an earlier node after a sweep from a later one: the later
 * nodes' adjoints are zeroed, not left from the first sweep. */
Test(sweep, sweep_from_earlier_output_zeroes_later_adjoints)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double v0[3] = {1, 2, 3};
    ad_node a = ad_scalar_var(t, 0.5);
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node z = ad_mul(t, a, a);                 /* z = a^2 (inline) */
    ad_node w = ad_scale(t, v, 2.0);             /* w = 2 v (tensor) */
    ad_node zw = ad_mul(t, ad_sum(t, w), z);     /* after z */
    ad_node later = ad_add(t, ad_square(t, z), zw);
    cr_assert_eq(ad_backward(t, later), AD_OK);
    cr_assert_neq(ad_grad(t, zw)[0], 0.0);
    cr_assert_neq(ad_grad(t, w)[0], 0.0);

    cr_assert_eq(ad_backward(t, z), AD_OK);
    cr_assert_eq(ad_grad(t, z)[0], 1.0);
    cr_assert_eq(ad_grad(t, a)[0], 1.0, "dz/da = 2a = 1");
    cr_assert_eq(ad_grad(t, zw)[0], 0.0, "a node after the output keeps a zero adjoint");
    cr_assert_eq(ad_grad(t, later)[0], 0.0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ad_grad(t, w)[i], 0.0, "a node off the path keeps a zero adjoint");
        cr_assert_eq(ad_grad(t, v)[i], 0.0, "a variable off the path gets no gradient");
    }
    ad_tape_free(t);
}

/* The output itself may be an ad_param: its seed is ADDED to the caller's
 * buffer like any other gradient (autodiff.h, ad_param), not assigned. */
Test(sweep, param_output_seed_accumulates)
{
    double p = 2.0, g = 10.0, vv[2] = {1, 2}, vg[2] = {5, 5};
    const double seed[2] = {1, -3};
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node P = ad_param(t, ad_shape_scalar(), &p, &g);
    ad_node y = ad_mul(t, P, P);
    int st1 = ad_backward(t, y);
    double g1 = g;
    int st2 = ad_backward(t, P);
    double g2 = g;
    ad_node V = ad_param(t, ad_shape_vec(2), vv, vg);
    int st3 = ad_backward_seed(t, V, seed);
    ad_tape_free(t); /* before asserting: a failure here must not leak */
    cr_assert(st1 == AD_OK && st2 == AD_OK && st3 == AD_OK);
    cr_assert_eq(g1, 14.0, "10 + d(p^2)/dp = 14, got %g", g1);
    cr_assert_eq(g2, 15.0, "sweeping from the param itself must add 1 (14 + 1), got %g", g2);
    cr_assert(vg[0] == 6.0 && vg[1] == 2.0, "5 + seed: want (6, 2), got (%g, %g)", vg[0], vg[1]);
}

/* ---- AD_SWEEP_ASSIGN: parameter gradients overwritten ---- */

/* A small net with a parameter used twice, a custom op (whose vjp adds, so
 * the engine zeroes its fresh inputs first), a parameter the output does not
 * depend on, and one used only after the output. Its gradients with
 * AD_SWEEP_ASSIGN into buffers full of NaN must equal those added into
 * zeroed buffers, and the unused parameters must come out zero. */
typedef struct net {
    double W[6], b[2], x[3], u[2], late[2];
    double gW[6], gb[2], gx[3], gu[2], glate[2];
    ad_node J;
} net;

static void fill(double *a, size_t n, double v)
{
    for (size_t i = 0; i < n; i++)
        a[i] = v;
}
static void fill_grads(net *m, double v)
{
    fill(m->gW, 6, v), fill(m->gb, 2, v), fill(m->gx, 3, v), fill(m->gu, 2, v);
    fill(m->glate, 2, v);
}

static void record_net(ad_tape *t, net *m, const ad_opdef *probe)
{
    static const double W[6] = {0.5, -1, 2, 1.5, 0.25, -0.75}, b[2] = {0.1, -0.2},
                        x[3] = {1, -2, 0.5};
    memcpy(m->W, W, sizeof W), memcpy(m->b, b, sizeof b), memcpy(m->x, x, sizeof x);
    m->u[0] = m->u[1] = 3, m->late[0] = m->late[1] = 4;
    ad_node Wn = ad_param(t, ad_shape_mat(2, 3), m->W, m->gW);
    ad_node bn = ad_param(t, ad_shape_vec(2), m->b, m->gb);
    ad_node xn = ad_param(t, ad_shape_vec(3), m->x, m->gx);
    ad_node un = ad_param(t, ad_shape_vec(2), m->u, m->gu); /* not used by J */
    ad_node z = ad_add(t, ad_matvec(t, Wn, xn), bn);
    ad_node y = ad_tanh(t, ad_apply(t, probe, &z, 1, 0.0));
    ad_node yb = ad_mul(t, y, bn); /* b twice */
    m->J = ad_add(t, ad_dot(t, yb, yb), ad_sum(t, ad_matvec_t(t, Wn, yb)));
    ad_node ln = ad_param(t, ad_shape_vec(2), m->late, m->glate);
    (void)ad_sum(t, ad_mul(t, ln, un)); /* recorded after J */
}

Test(sweep, assign_overwrites_param_gradients)
{
    int calls = 0;
    const ad_opdef probe = probe_def(&calls);
    net m, ref;
    ad_tape *t = ad_tape_new(NULL), *t2 = ad_tape_new(NULL);
    cr_assert(t && t2);
    record_net(t, &ref, &probe);
    fill_grads(&ref, 0.0);
    cr_assert_eq(ad_backward(t, ref.J), AD_OK, "%s", ad_tape_errmsg(t));

    record_net(t2, &m, &probe);
    for (int round = 0; round < 3; round++) { /* as recorded, then after replays */
        if (round > 0)
            cr_assert_eq(ad_replay(t2), AD_OK);
        fill_grads(&m, NAN);
        cr_assert_eq(ad_sweep(t2, m.J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t2));
        for (int i = 0; i < 6; i++)
            cr_assert_eq(m.gW[i], ref.gW[i], "round %d: dW[%d] = %.17g, want %.17g", round, i,
                         m.gW[i], ref.gW[i]);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(m.gb[i], ref.gb[i], "round %d: db[%d] = %.17g, want %.17g", round, i,
                         m.gb[i], ref.gb[i]);
            cr_assert_eq(m.gu[i], 0.0, "round %d: a param J does not use must get 0", round);
            cr_assert_eq(m.glate[i], 0.0, "round %d: a param after J must get 0", round);
        }
        for (int i = 0; i < 3; i++)
            cr_assert_eq(m.gx[i], ref.gx[i], "round %d: dx[%d] = %.17g, want %.17g", round, i,
                         m.gx[i], ref.gx[i]);
    }
    for (int i = 0; i < 6; i++)
        cr_assert_neq(ref.gW[i], 0.0);

    /* Without the flag, gradients add to what the buffers hold. */
    fill_grads(&m, 1.0);
    cr_assert_eq(ad_backward(t2, m.J), AD_OK);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(m.gW[i], 1.0 + ref.gW[i], "dW[%d]: adding mode must add", i);
    cr_assert_eq(m.gu[0], 1.0, "adding mode leaves an unused param's buffer alone");
    ad_tape_free(t2);
    ad_tape_free(t);
}

/* The output may be the param; an output that depends on no variable
 * gives zero gradients, written as such under AD_SWEEP_ASSIGN. */
Test(sweep, assign_param_output_and_constant_output)
{
    double v[2] = {1, 2}, g[2] = {NAN, NAN};
    const double seed[2] = {0.5, -3};
    const double c0[2] = {1, 1};
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node V = ad_param(t, ad_shape_vec(2), v, g);
    int st = ad_sweep(t, V, seed, AD_SWEEP_ASSIGN);
    double g0 = g[0], g1 = g[1];
    ad_node c = ad_sum(t, ad_constant(t, ad_shape_vec(2), c0)); /* depends on no variable */
    g[0] = g[1] = NAN;
    int st2 = ad_sweep(t, c, NULL, AD_SWEEP_ASSIGN);
    double z0 = g[0], z1 = g[1];
    g[0] = g[1] = 7;
    int st3 = ad_sweep(t, c, NULL, 0);
    ad_tape_free(t);
    cr_assert(st == AD_OK && st2 == AD_OK && st3 == AD_OK);
    cr_assert(g0 == 0.5 && g1 == -3, "the seed is written: got (%g, %g)", g0, g1);
    cr_assert(z0 == 0 && z1 == 0, "no dependence: zeros, got (%g, %g)", z0, z1);
    cr_assert(g[0] == 7 && g[1] == 7, "adding mode leaves the buffer alone");
}

/* Tied weights: two ad_params on one gradient buffer, and two whose
 * buffers overlap. Assigning would let the second write erase the first;
 * the sweep sees the overlap and gives each element its total. */
Test(sweep, assign_with_shared_gradient_buffers)
{
    const double w[3] = {1, 2, 3}, a[3] = {0.5, -1, 2}, b[3] = {4, 0.25, -3};
    double g[5];
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node P1 = ad_param(t, ad_shape_vec(3), w, g);
    ad_node P2 = ad_param(t, ad_shape_vec(3), w, g); /* the same buffer */
    ad_node J = ad_add(t, ad_dot(t, P1, ad_constant(t, ad_shape_vec(3), a)),
                       ad_dot(t, P2, ad_constant(t, ad_shape_vec(3), b)));
    for (int pass = 0; pass < 3; pass++) { /* recorded, replayed, swept again */
        for (int i = 0; i < 5; i++)
            g[i] = NAN;
        if (pass == 1)
            cr_assert_eq(ad_replay(t), AD_OK);
        cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
        for (int i = 0; i < 3; i++)
            cr_assert(g[i] == a[i] + b[i], "pass %d: dJ/dw[%d] = %g, want %g", pass, i, g[i],
                      a[i] + b[i]);
        cr_assert(isnan(g[3]) && isnan(g[4]), "memory past the buffers was written");
    }

    /* overlapping slices of one block: P1 owns g[0..3), P2 owns g[2..5) */
    ad_tape_reset(t);
    P1 = ad_param(t, ad_shape_vec(3), w, g);
    P2 = ad_param(t, ad_shape_vec(3), w, g + 2);
    J = ad_add(t, ad_dot(t, P1, ad_constant(t, ad_shape_vec(3), a)),
               ad_dot(t, P2, ad_constant(t, ad_shape_vec(3), b)));
    for (int i = 0; i < 5; i++)
        g[i] = NAN;
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
    const double want[5] = {a[0], a[1], a[2] + b[0], b[1], b[2]};
    for (int i = 0; i < 5; i++)
        cr_assert(g[i] == want[i], "overlap: g[%d] = %g, want %g", i, g[i], want[i]);

    /* buffers side by side do not overlap: written as usual */
    ad_tape_reset(t);
    P1 = ad_param(t, ad_shape_vec(2), w, g);
    P2 = ad_param(t, ad_shape_vec(3), w, g + 2);
    J = ad_add(t, ad_sum(t, P1), ad_dot(t, P2, ad_constant(t, ad_shape_vec(3), b)));
    for (int i = 0; i < 5; i++)
        g[i] = NAN;
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
    const double adj[5] = {1, 1, b[0], b[1], b[2]};
    for (int i = 0; i < 5; i++)
        cr_assert(g[i] == adj[i], "adjacent: g[%d] = %g, want %g", i, g[i], adj[i]);
    ad_tape_free(t);
}

/* The overlap check sorts the buffers in arena scratch; when that memory
 * cannot be had, the sweep fails with AD_ENOMEM and says why. */
Test(sweep, assign_overlap_check_out_of_memory)
{
    enum { K = 6000 }; /* 6000 spans of 16 bytes: more than an arena block holds */
    static double w[K], g[K];
    test_alloc al = {0};
    ad_tape_opts o = test_alloc_opts(&al);
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    ad_node p0 = ad_nil(), p1 = ad_nil();
    for (int i = 0; i < K; i++) {
        ad_node p = ad_param(t, ad_shape_scalar(), w + i, g + i);
        if (i == 0)
            p0 = p;
        if (i == 1)
            p1 = p;
    }
    ad_node J = ad_mul(t, p0, p1);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    al.fail_at = al.count + 1; /* every allocation from here on fails */
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_ENOMEM);
    cr_assert_str_eq(ad_tape_errmsg(t), "sweep: out of memory checking 6000 gradient buffers");
    ad_tape_free(t);
}

Test(sweep, unknown_sweep_flags_are_emisuse)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node x = ad_scalar_var(t, 2.0);
    ad_node y = ad_square(t, x);
    int st = ad_sweep(t, y, NULL, 6u);
    cr_assert_eq(st, AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "sweep: unknown flags 0x6 (known: AD_SWEEP_ASSIGN)");
    ad_tape_free(t);

    /* A vector output needs a seed, through ad_sweep as through ad_backward. */
    const double v0[2] = {1, 2};
    t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node v = ad_scale(t, ad_variable(t, ad_shape_vec(2), v0), 3.0);
    cr_assert_eq(ad_sweep(t, v, NULL, AD_SWEEP_ASSIGN), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "sweep: the output is a vector of length 2, not a scalar; "
                                        "pass a seed of the same size with ad_backward_seed");
    ad_tape_free(t);
    cr_assert_eq(ad_sweep(NULL, y, NULL, 0), AD_EMISUSE);
}

/* ---- what the sweep visits ---- */

Test(sweep, visits_only_nodes_between_variables_and_output)
{
    int on = 0, dead = 0, after = 0, constant = 0;
    const ad_opdef d_on = probe_def(&on), d_dead = probe_def(&dead), d_after = probe_def(&after),
                   d_const = probe_def(&constant);
    const double v0[3] = {1, -2, 0.5}, c0[3] = {3, 3, 3};
    double P[3] = {1, 2, 3}, PG[3] = {-7, -7, -7}; /* sentinels */
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node c = ad_constant(t, ad_shape_vec(3), c0);
    ad_node p = ad_param(t, ad_shape_vec(3), P, PG);
    ad_node unused = ad_variable(t, ad_shape_vec(3), v0);
    ad_node s = ad_scalar_var(t, 2.0);

    ad_node cpath = ad_apply(t, &d_const, &c, 1, 0);         /* constants only */
    ad_node branch = ad_apply(t, &d_dead, &p, 1, 0);         /* feeds nothing */
    ad_node deadsum = ad_sum(t, ad_mul(t, branch, unused));  /* feeds nothing */
    ad_node sdead = ad_exp(t, s);                            /* inline, feeds nothing */
    ad_node mid = ad_apply(t, &d_on, &v, 1, 0);
    ad_node out = ad_dot(t, ad_mul(t, mid, cpath), v);       /* out = sum 3 v^2 */
    ad_node after1 = ad_apply(t, &d_after, &out, 1, 0);      /* recorded after out */
    ad_node after2 = ad_mul(t, s, s);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_backward(t, out), AD_OK);

    cr_assert_eq(on, 1, "the on-path op ran its vjp %d times", on);
    cr_assert_eq(dead, 0, "an op that does not feed the output was visited");
    cr_assert_eq(after, 0, "an op recorded after the output was visited");
    cr_assert_eq(constant, 0, "an op on constants only was visited");

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ad_grad(t, v)[i], 6.0 * v0[i], "d(3 v.v)/dv[%d]", i);
        cr_assert_eq(ad_grad(t, unused)[i], 0.0);
        cr_assert_eq(ad_grad(t, branch)[i], 0.0);
        cr_assert_eq(PG[i], -7.0, "a param off the path had its buffer written");
    }
    cr_assert_eq(ad_grad(t, after1)[0], 0.0);
    cr_assert_eq(ad_grad(t, deadsum)[0], 0.0);
    cr_assert_eq(ad_grad(t, sdead)[0], 0.0);
    cr_assert_eq(ad_grad(t, s)[0], 0.0);
    cr_assert_eq(ad_grad(t, after2)[0], 0.0);
    cr_assert_null(ad_grad(t, cpath), "an op on constants has no adjoint");
    cr_assert_null(ad_grad(t, c));
    ad_tape_free(t);
}

Test(sweep, constants_have_no_gradient)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double m[6] = {1, 2, 3, 4, 5, 6};
    double pv[2] = {1, 2};
    ad_node c = ad_scalar(t, 3.0);
    ad_node C = ad_constant(t, ad_shape_mat(2, 3), m);
    ad_node Z = ad_constant(t, ad_shape_vec(4), NULL); /* zeros */
    ad_node q = ad_param(t, ad_shape_vec(2), pv, NULL); /* input, no gradient */
    ad_node x = ad_scalar_var(t, 2.0);
    ad_node cc = ad_sum(t, ad_mul(t, C, c));
    ad_node y = ad_mul(t, ad_add(t, cc, ad_sum(t, q)), x);
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_assert_eq(ad_grad(t, x)[0], 3.0 * 21 + 3);
    const ad_node consts[] = {c, C, Z, q, cc};
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
        cr_assert_null(ad_grad(t, consts[i]), "constant node %zu has a gradient", i);
        cr_assert_eq(ad_node_requires_grad(t, consts[i]), 0);
        cr_assert_eq(ad_node_is_variable(t, consts[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ad_value(t, Z)[i], 0.0, "data NULL gives zeros");
    cr_assert_eq(ad_node_requires_grad(t, y), 1);
    cr_assert_eq(ad_node_is_variable(t, x), 1);
    cr_assert_eq(ad_node_is_variable(t, y), 0, "an op result is not a variable");

    /* An output that depends on no variable: the sweep succeeds, nothing
     * has a gradient, the variable's adjoint is zero. */
    cr_assert_eq(ad_backward(t, cc), AD_OK);
    cr_assert_null(ad_grad(t, cc));
    cr_assert_eq(ad_grad(t, x)[0], 0.0);
    ad_tape_free(t);
}

/* ---- seeded sweeps ---- */

Test(sweep, backward_seed_vector_output_is_vjp)
{
    enum { K = 3, N = 5 };
    test_rng g = {17};
    double W[K * N], x[N], seed[K];
    for (int i = 0; i < K * N; i++)
        W[i] = test_uniform(&g, -1, 1);
    for (int j = 0; j < N; j++)
        x[j] = test_uniform(&g, -1, 1);
    for (int i = 0; i < K; i++)
        seed[i] = test_uniform(&g, -2, 2);
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node Wn = ad_variable(t, ad_shape_mat(K, N), W);
    ad_node xn = ad_variable(t, ad_shape_vec(N), x);
    ad_node y = ad_tanh(t, ad_matvec(t, Wn, xn)); /* y = tanh(W x) */
    cr_assert_eq(ad_backward_seed(t, y, seed), AD_OK, "%s", ad_tape_errmsg(t));

    /* seed^T J by hand: d = seed * (1 - y^2), dW = d x^T, dx = W^T d. */
    double d[K], dx[N] = {0};
    for (int i = 0; i < K; i++) {
        double zi = 0;
        for (int j = 0; j < N; j++)
            zi += W[i * N + j] * x[j];
        double yi = tanh(zi);
        d[i] = seed[i] * (1 - yi * yi);
        cr_assert_leq(fabs(ad_value(t, y)[i] - yi), 1e-14);
        cr_assert_eq(ad_grad(t, y)[i], seed[i], "the output adjoint is the seed");
    }
    for (int i = 0; i < K; i++)
        for (int j = 0; j < N; j++) {
            dx[j] += W[i * N + j] * d[i];
            cr_assert_leq(fabs(ad_grad(t, Wn)[i * N + j] - d[i] * x[j]), 1e-14, "dW[%d][%d]", i,
                          j);
        }
    for (int j = 0; j < N; j++)
        cr_assert_leq(fabs(ad_grad(t, xn)[j] - dx[j]), 1e-14, "dx[%d]", j);

    /* A matrix output: C = A^T seeded with S gives dA = S^T. */
    const double A[6] = {1, 2, 3, 4, 5, 6}, S[6] = {0.5, -1, 2, 3, -4, 0.25};
    ad_node An = ad_variable(t, ad_shape_mat(2, 3), A);
    ad_node C = ad_transpose(t, An); /* 3x2 */
    cr_assert_eq(ad_backward_seed(t, C, S), AD_OK);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            cr_assert_eq(ad_grad(t, An)[i * 3 + j], S[j * 2 + i]);

    /* A scalar output seeded with 2 doubles every gradient. */
    ad_node s = ad_scalar_var(t, 3.0);
    ad_node q = ad_mul(t, s, s);
    const double two = 2.0;
    cr_assert_eq(ad_backward_seed(t, q, &two), AD_OK);
    cr_assert_eq(ad_grad(t, s)[0], 12.0);
    ad_tape_free(t);
}

/* ---- a deep tape: no recursion anywhere ---- */

Test(sweep, ten_million_node_chain, .timeout = 60)
{
    /* s <- s a + c, 5 * 10^6 times: 10^7 inline scalar nodes (mul with a
     * constant node, then add_const); ds/dx = a^(5 10^6). */
    const long half = 5000000;
    const double a = 1.0 + 1e-8, c = 1e-7;
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node x = ad_scalar_var(t, 0.25);
    ad_node an = ad_scalar(t, a);
    ad_node s = x;
    for (long i = 0; i < half; i++)
        s = ad_add_const(t, ad_mul(t, s, an), c);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_geq(ad_tape_len(t), (size_t)2 * half + 3);
    cr_assert_eq(ad_backward(t, s), AD_OK, "%s", ad_tape_errmsg(t));
    double want = pow(a, (double)half); /* ~ e^0.05 */
    double got = ad_grad(t, x)[0];
    /* 5e6 roundings of a product: relative error well below 1e-8. */
    cr_assert_leq(fabs(got - want) / want, 1e-8, "d/dx = %.17g, want %.17g", got, want);
    cr_assert_null(ad_grad(t, an));
    /* The value: s = x a^n + c (a^n - 1)/(a - 1). */
    double sv = 0.25 * want + c * (want - 1) / (a - 1);
    cr_assert_leq(fabs(ad_scalar_value(t, s) - sv) / sv, 1e-7, "s = %.17g, want %.17g",
                  ad_scalar_value(t, s), sv);
    ad_tape_free(t);
}

/* ---- handles ---- */

Test(sweep, reset_invalidates_handles)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double v0[2] = {1, 2};
    ad_node s = ad_scalar_var(t, 1.5);
    ad_node v = ad_variable(t, ad_shape_vec(2), v0);
    ad_node y = ad_sum(t, ad_mul(t, v, s));
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_assert_eq(ad_set_name(t, v, "v"), AD_OK);
    ad_tape_reset(t);
    cr_assert_eq(ad_tape_len(t), 1);

    /* Record the same structure: the new nodes get the same indices but
     * the old handles stay stale. */
    ad_node s2 = ad_scalar_var(t, 9.0);
    ad_node v2 = ad_variable(t, ad_shape_vec(2), v0);
    cr_assert_eq(ad_node_index(t, s2), 1);
    cr_assert(s2.id_ == s.id_ && s2.tag_ != s.tag_, "a handle after reset must differ");
    const ad_node old[] = {s, v, y};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
        ad_node n = old[i];
        cr_assert_null(ad_value(t, n), "old handle %zu still reads a value", i);
        cr_assert_null(ad_grad(t, n));
        cr_assert(isnan(ad_scalar_value(t, n)));
        cr_assert_eq(ad_node_shape(t, n).ndim, -1);
        cr_assert_null(ad_node_op(t, n));
        cr_assert_eq(ad_node_index(t, n), 0);
        ad_node in[AD_MAX_ARITY];
        cr_assert_eq(ad_node_inputs(t, n, in), -1);
        cr_assert_null(ad_node_name(t, n));
    }
    cr_assert_null(ad_node_name(t, v2), "names are dropped at reset");
    cr_assert_eq(ad_tape_status(t), AD_OK, "read-only accessors do not set the error");
    cr_assert_eq(ad_scalar_value(t, s2), 9.0);
    /* Writes through a stale handle are refused; set_value says why. */
    cr_assert_eq(ad_set_name(t, v, "x"), AD_EMISUSE);
    cr_assert_eq(ad_tape_status(t), AD_OK, "a refused name does not stop the tape");
    cr_assert_eq(ad_set_value(t, v, v0), AD_EMISUSE);
    cr_assert_eq(ad_tape_status(t), AD_OK, "a refused set_value does not stop the tape");
    cr_assert_str_eq(ad_tape_errmsg(t), "set_value: operand 1 is not a node of this tape (it belongs "
                                        "to another tape, or was recorded before ad_tape_reset)");
    cr_assert_eq(ad_scalar_value(t, s2), 9.0, "a refused write changes nothing");
    ad_tape_free(t);
}

Test(sweep, handles_survive_growth_and_replay)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double v0[3] = {1, 2, 3};
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node s = ad_scalar_var(t, 0.5);
    const double *before = ad_value(t, v);
    ad_node acc = s;
    for (int i = 0; i < 30000; i++) /* several node chunks */
        acc = ad_add_const(t, acc, 1e-3);
    for (int i = 0; i < 3000; i++) /* several arena blocks and ext chunks */
        (void)ad_scale(t, v, 1.0);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    cr_assert_eq(ad_value(t, v), before, "a value moved while the tape grew");
    cr_assert_eq(ad_value(t, v)[2], 3.0);
    cr_assert_eq(ad_scalar_value(t, s), 0.5);
    cr_assert_leq(fabs(ad_scalar_value(t, acc) - 30.5), 1e-9);
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(ad_scalar_value(t, s), 0.5);
    cr_assert_eq(ad_backward(t, acc), AD_OK);
    cr_assert_eq(ad_grad(t, s)[0], 1.0);
    ad_tape_free(t);
}

/* ---- introspection ---- */

Test(sweep, introspection_reports_the_recording)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    cr_assert_eq(ad_tape_len(t), 1, "a new tape holds only the reserved node");
    cr_assert(ad_node_is_nil(ad_tape_node(t, 0)));
    cr_assert(ad_node_is_nil(ad_tape_node(t, 1)));

    const double m0[6] = {1, 2, 3, 4, 5, 6}, v0[3] = {1, 0, -1};
    ad_node a = ad_scalar_var(t, 2.0);                 /* 1 */
    ad_node M = ad_variable(t, ad_shape_mat(2, 3), m0); /* 2 */
    ad_node v = ad_constant(t, ad_shape_vec(3), v0);   /* 3 */
    ad_node b = ad_scale(t, a, 1.25);                  /* 4 inline, constant */
    ad_node c = ad_add(t, a, b);                       /* 5 inline, binary */
    ad_node y = ad_matvec(t, M, v);                    /* 6 tensor */
    ad_node p = ad_pow_const(t, y, 3.0);               /* 7 tensor, constant */
    ad_node out = ad_mul(t, ad_sum(t, p), c);          /* 8, 9 */
    cr_assert_eq(ad_tape_len(t), 10);

    const ad_node all[] = {a, M, v, b, c, y, p};
    const char *ops[] = {"leaf", "leaf", "leaf", "scale", "add", "matvec", "powc"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        ad_node h = ad_tape_node(t, i + 1);
        cr_assert(h.id_ == all[i].id_ && h.tag_ == all[i].tag_, "ad_tape_node(%zu)", i + 1);
        cr_assert_eq(ad_node_index(t, all[i]), i + 1);
        const ad_opdef *d = ad_node_op(t, all[i]);
        cr_assert_not_null(d);
        cr_assert_str_eq(d->name, ops[i], "node %zu is %s, want %s", i + 1, d->name, ops[i]);
    }
    cr_assert(ad_node_is_nil(ad_tape_node(t, ad_tape_len(t))));
    cr_assert_eq(ad_node_op(t, b), ad_registry_find(NULL, "scale"), "the built-in descriptor");
    cr_assert_eq(ad_node_op(t, y), ad_registry_find(NULL, "matvec"));

    ad_node in[AD_MAX_ARITY];
    cr_assert_eq(ad_node_inputs(t, a, in), 0);
    cr_assert_eq(ad_node_inputs(t, M, in), 0);
    cr_assert_eq(ad_node_inputs(t, b, in), 1);
    cr_assert(in[0].id_ == a.id_ && in[0].tag_ == a.tag_);
    cr_assert_eq(ad_node_inputs(t, c, in), 2);
    cr_assert(in[0].id_ == a.id_ && in[1].id_ == b.id_ && in[1].tag_ == b.tag_);
    cr_assert_eq(ad_node_inputs(t, y, in), 2);
    cr_assert(in[0].id_ == M.id_ && in[1].id_ == v.id_);
    cr_assert_eq(ad_node_inputs(t, p, in), 1);
    cr_assert(in[0].id_ == y.id_);
    cr_assert_eq(ad_node_inputs(t, ad_nil(), in), -1);

    cr_assert_eq(ad_node_const(t, b), 1.25);
    cr_assert_eq(ad_node_const(t, p), 3.0);
    cr_assert_eq(ad_node_const(t, c), 0.0);
    cr_assert_eq(ad_node_const(t, y), 0.0);
    cr_assert_eq(ad_node_const(t, a), 0.0);

    ad_shape sy = ad_node_shape(t, y), sM = ad_node_shape(t, M), sa = ad_node_shape(t, a);
    cr_assert(sy.ndim == 1 && sy.rows == 2 && sy.cols == 1);
    cr_assert(sM.ndim == 2 && sM.rows == 2 && sM.cols == 3);
    cr_assert(sa.ndim == 0 && sa.rows == 1 && sa.cols == 1);
    cr_assert_eq(ad_node_requires_grad(t, y), 1);
    cr_assert_eq(ad_node_requires_grad(t, v), 0);
    cr_assert_eq(ad_node_is_variable(t, M), 1);
    cr_assert_eq(ad_node_is_variable(t, v), 0);
    cr_assert_eq(ad_node_is_variable(t, b), 0);

    /* Names are copied, replaceable, per node. */
    char buf[32];
    strcpy(buf, "weights");
    cr_assert_eq(ad_set_name(t, M, buf), AD_OK);
    strcpy(buf, "changed");
    cr_assert_str_eq(ad_node_name(t, M), "weights");
    cr_assert_eq(ad_set_name(t, out, "loss"), AD_OK);
    cr_assert_eq(ad_set_name(t, a, "a"), AD_OK);
    cr_assert_eq(ad_set_name(t, a, "alpha"), AD_OK);
    cr_assert_str_eq(ad_node_name(t, a), "alpha");
    cr_assert_str_eq(ad_node_name(t, out), "loss");
    cr_assert_null(ad_node_name(t, b));
    cr_assert_eq(ad_set_name(t, b, ""), AD_OK);
    cr_assert_str_eq(ad_node_name(t, b), "");
    cr_assert_eq(ad_set_name(t, b, NULL), AD_EMISUSE);
    cr_assert_eq(ad_set_name(t, ad_nil(), "x"), AD_EMISUSE);
    cr_assert_eq(ad_set_name(NULL, b, "x"), AD_EMISUSE);
    cr_assert_null(ad_node_name(t, ad_nil()));
    cr_assert_null(ad_node_name(NULL, b));
    /* Many names: the hash table grows. */
    for (int i = 0; i < 600; i++)
        (void)ad_add_const(t, a, i);
    for (size_t i = 1; i < ad_tape_len(t); i++) {
        snprintf(buf, sizeof buf, "n%zu", i);
        cr_assert_eq(ad_set_name(t, ad_tape_node(t, i), buf), AD_OK);
    }
    for (size_t i = 1; i < ad_tape_len(t); i++) {
        snprintf(buf, sizeof buf, "n%zu", i);
        cr_assert_str_eq(ad_node_name(t, ad_tape_node(t, i)), buf);
    }
    cr_assert_eq(ad_tape_status(t), AD_OK);
    cr_assert_gt(ad_tape_memory(t), 0);
    ad_tape_free(t);
}

/* Introspection on a NULL tape is harmless. */
Test(sweep, introspection_null_tape)
{
    ad_node in[AD_MAX_ARITY];
    cr_assert_eq(ad_tape_len(NULL), 0);
    cr_assert_eq(ad_tape_memory(NULL), 0);
    cr_assert(ad_node_is_nil(ad_tape_node(NULL, 1)));
    cr_assert_null(ad_node_op(NULL, ad_nil()));
    cr_assert_eq(ad_node_inputs(NULL, ad_nil(), in), -1);
    cr_assert_eq(ad_node_const(NULL, ad_nil()), 0.0);
    cr_assert_eq(ad_node_index(NULL, ad_nil()), 0);
    cr_assert_eq(ad_node_requires_grad(NULL, ad_nil()), 0);
    cr_assert_eq(ad_node_is_variable(NULL, ad_nil()), 0);
    cr_assert_null(ad_value(NULL, ad_nil()));
    cr_assert_null(ad_grad(NULL, ad_nil()));
    cr_assert_eq(ad_node_shape(NULL, ad_nil()).ndim, -1);
    cr_assert(isnan(ad_scalar_value(NULL, ad_nil())));
}
