/* test_alloc.c -- fault injection: a representative program run with the
 * allocator failing its N-th allocation, for every N until the program
 * runs clean. Every run must either succeed with the right numbers or
 * report AD_ENOMEM (a NULL from *_new, a status, a message naming the op),
 * never crash, and leave no byte behind. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- a custom op for the registry: y = x^3 ---- */

static void cube_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++) /* dx += 3 x^2 dy */
            k->in[0].grad[i] += 3.0 * k->in[0].val[i] * k->in[0].val[i] * k->out.grad[i];
}
static const ad_opdef cube = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};

/* ---- the program ---- */

enum { NCHAIN = 9000, NVEC = 64, NEXT = 1100, NNAMES = 24 };

typedef struct result {
    double loss, dx, dW0, dv0, loss2, dx2;
} result;

typedef struct prog {
    ad_tape *t;
    const char *failed_op; /* the first op whose call set AD_ENOMEM */
} prog;

/* Checks one recording call: the first one that leaves an error on the
 * tape must have run out of memory and must say which op it was. */
static ad_node chk(prog *p, const char *op, ad_node n)
{
    int st = ad_tape_status(p->t);
    if (st == AD_OK) {
        cr_assert(!ad_node_is_nil(n), "%s: nil without an error", op);
        return n;
    }
    cr_assert(ad_node_is_nil(n), "%s: a node despite the error", op);
    if (!p->failed_op) {
        p->failed_op = op;
        const char *msg = ad_tape_errmsg(p->t);
        size_t len = strlen(op);
        cr_assert_eq(st, AD_ENOMEM, "%s: status %d (%s)", op, st, msg);
        cr_assert(strncmp(msg, op, len) == 0 && msg[len] == ':',
                  "the message does not name the op '%s': \"%s\"", op, msg);
        cr_assert(strstr(msg, "out of memory"), "%s: \"%s\"", op, msg);
    }
    return n;
}

typedef struct nodes {
    ad_node x, W, loss, chain_end;
} nodes;

static double Wdata[NVEC * NVEC], vdata[NVEC], vgrad[NVEC];

/* Scalar chain (several node chunks, many op constants), a 64x64 matrix
 * (one arena block per value), a param, over a thousand tensor nodes
 * (several ext chunks and arena blocks), a custom op by name, names. */
static nodes record(prog *p)
{
    ad_tape *t = p->t;
    nodes n;
    n.x = chk(p, "variable", ad_scalar_var(t, 0.3));
    ad_node s = n.x;
    for (int i = 0; i < NCHAIN; i++) {
        switch (i % 3) {
        case 0: s = chk(p, "scale", ad_scale(t, s, 0.999)); break;
        case 1: s = chk(p, "tanh", ad_tanh(t, s)); break;
        default: s = chk(p, "addc", ad_add_const(t, s, 0.2389)); break; /* s -> ~1 */
        }
    }
    n.chain_end = s;
    n.W = chk(p, "variable", ad_variable(t, ad_shape_mat(NVEC, NVEC), Wdata));
    ad_node v = chk(p, "param", ad_param(t, ad_shape_vec(NVEC), vdata, vgrad));
    ad_node h = chk(p, "matvec", ad_matvec(t, n.W, v));
    for (int i = 0; i < NEXT; i++) {
        h = (i % 2) ? chk(p, "mul", ad_mul(t, h, s)) : chk(p, "tanh", ad_tanh(t, h));
    }
    ad_node c = chk(p, "cube", ad_apply_named(t, "cube", &h, 1, 0));
    ad_node y = chk(p, "constant", ad_constant(t, ad_shape_vec(NVEC), vdata));
    ad_node e = chk(p, "softmax_xent", ad_softmax_xent(t, c, ad_sigmoid(t, y)));
    n.loss = chk(p, "add", ad_add(t, e, chk(p, "mul", ad_mul(t, s, n.x))));
    return n;
}

/* Names: a failed ad_set_name reports AD_ENOMEM and changes nothing. */
static int name_nodes(ad_tape *t, int *failed)
{
    char buf[32];
    for (int i = 1; i <= NNAMES; i++) {
        ad_node n = ad_tape_node(t, (size_t)i * 7);
        const char *before = ad_node_name(t, n);
        char old[32] = "";
        if (before)
            snprintf(old, sizeof old, "%s", before);
        snprintf(buf, sizeof buf, "node-%d", i);
        int st = ad_set_name(t, n, buf);
        if (st == AD_ENOMEM) {
            *failed = 1;
            const char *now = ad_node_name(t, n);
            if (before)
                cr_assert_str_eq(now, old, "a failed rename lost the old name");
            else
                cr_assert_null(now, "a failed ad_set_name left a name");
            continue;
        }
        cr_assert_eq(st, AD_OK, "ad_set_name: %d", st);
        cr_assert_str_eq(ad_node_name(t, n), buf);
    }
    /* Renaming allocates the new text before dropping the old. */
    int st = ad_set_name(t, ad_tape_node(t, 7), "renamed");
    if (st == AD_ENOMEM)
        *failed = 1;
    else
        cr_assert_str_eq(ad_node_name(t, ad_tape_node(t, 7)), "renamed");
    return AD_OK;
}

/* Runs the program. Returns AD_OK when nothing failed, AD_ENOMEM when a
 * failure was reported (and handled), and fills r on success. */
static int run(test_alloc *a, result *r)
{
    int failed = 0;
    memset(r, 0, sizeof *r);
    ad_registry *reg = ad_registry_new(test_alloc_fn, a);
    if (!reg)
        return AD_ENOMEM;
    int st = ad_registry_add(reg, &cube);
    if (st == AD_ENOMEM) {
        failed = 1;
        cr_assert_str_eq(ad_registry_errmsg(reg), "registry_add: out of memory adding 'cube'");
        cr_assert_null(ad_registry_find(reg, "cube"), "a failed add left the op");
        st = ad_registry_add(reg, &cube); /* the hook fails only once */
    }
    cr_assert_eq(st, AD_OK, "registry_add: %s", ad_registry_errmsg(reg));

    ad_tape_opts o = test_alloc_opts(a);
    o.registry = reg;
    ad_tape *t = ad_tape_new(&o);
    if (!t) {
        ad_registry_free(reg);
        return AD_ENOMEM;
    }

    prog p = {t, NULL};
    nodes n = record(&p);
    if (ad_tape_status(t) != AD_OK) {
        /* Every later call was a no-op; the sweep reports the error. */
        failed = 1;
        cr_assert_eq(ad_backward(t, n.loss), AD_ENOMEM);
        cr_assert_eq(ad_replay(t), AD_ENOMEM);
        /* The tape recovers after a reset. */
        ad_tape_reset(t);
        p.failed_op = NULL;
        n = record(&p);
    }
    cr_assert_eq(ad_tape_status(t), AD_OK, "re-recording after reset: %s", ad_tape_errmsg(t));
    name_nodes(t, &failed);

    memset(vgrad, 0, sizeof vgrad);
    cr_assert_eq(ad_backward(t, n.loss), AD_OK, "%s", ad_tape_errmsg(t));
    r->loss = ad_scalar_value(t, n.loss);
    r->dx = ad_grad(t, n.x)[0];
    r->dW0 = ad_grad(t, n.W)[0];
    r->dv0 = vgrad[0];

    /* Replay at a new point, then a steady-state reset and re-record. */
    const double x2 = 0.6;
    cr_assert_eq(ad_set_value(t, n.x, &x2), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(ad_backward(t, n.loss), AD_OK);
    r->loss2 = ad_scalar_value(t, n.loss);
    r->dx2 = ad_grad(t, n.x)[0];
    ad_tape_reset(t); /* may try to merge arena blocks; failure is not an error */
    p.failed_op = NULL;
    n = record(&p);
    if (ad_tape_status(t) != AD_OK)
        failed = 1;
    else
        cr_assert_eq(ad_scalar_value(t, n.loss), r->loss, "re-recording after reset differs");

    ad_tape_free(t);
    ad_registry_free(reg);
    return failed ? AD_ENOMEM : AD_OK;
}

static void no_leak(const test_alloc *a, long n)
{
    cr_assert_eq(a->bytes, 0, "fail_at %ld: %zu bytes leaked", n, a->bytes);
    cr_assert_eq(a->allocs, a->frees, "fail_at %ld: %ld allocations, %ld frees", n, a->allocs,
                 a->frees);
    cr_assert_eq(a->bad_osize, 0, "fail_at %ld: %ld frees/resizes with a wrong osize", n,
                 a->bad_osize);
}

static void init_data(void)
{
    test_rng g = {31};
    for (int i = 0; i < NVEC * NVEC; i++)
        Wdata[i] = test_uniform(&g, -0.2, 0.2);
    for (int i = 0; i < NVEC; i++)
        vdata[i] = test_uniform(&g, -1, 1);
}

Test(alloc, fail_every_allocation_in_turn, .timeout = 120)
{
    init_data();
    test_alloc a;
    memset(&a, 0, sizeof a);
    result ref;
    cr_assert_eq(run(&a, &ref), AD_OK, "the program fails without injected failures");
    no_leak(&a, 0);
    cr_assert(isfinite(ref.loss) && ref.dx != 0 && ref.dW0 != 0 && ref.dv0 != 0);
    cr_assert_neq(ref.loss2, ref.loss);
    const long total = a.count;
    cr_assert_gt(total, 30, "the program allocates only %ld times", total);

    long reported = 0, absorbed = 0;
    for (long n = 1;; n++) {
        memset(&a, 0, sizeof a);
        a.fail_at = n;
        result r;
        int st = run(&a, &r);
        no_leak(&a, n);
        if (a.count < n) { /* nothing failed: the program ran clean */
            cr_assert_eq(st, AD_OK);
            cr_assert_gt(n, total, "stopped early at %ld of %ld", n, total);
            break;
        }
        cr_assert(st == AD_OK || st == AD_ENOMEM, "fail_at %ld: status %d", n, st);
        if (st == AD_OK) {
            /* The failure was absorbed (e.g. the arena merge at reset):
             * the numbers must be untouched. */
            absorbed++;
            cr_assert_eq(r.loss, ref.loss, "fail_at %ld: loss %.17g", n, r.loss);
            cr_assert_eq(r.dx, ref.dx, "fail_at %ld", n);
            cr_assert_eq(r.dW0, ref.dW0, "fail_at %ld", n);
            cr_assert_eq(r.dv0, ref.dv0, "fail_at %ld", n);
            cr_assert_eq(r.loss2, ref.loss2, "fail_at %ld", n);
            cr_assert_eq(r.dx2, ref.dx2, "fail_at %ld", n);
        } else {
            reported++;
        }
    }
    cr_assert_gt(reported, 0);
    cr_log_info("alloc: %ld allocations; %ld failures reported, %ld absorbed", total, reported,
                absorbed);
}

/* Names and a large registry: their hash tables grow, so table expansion
 * fails too. */
Test(alloc, names_and_registry_under_failure, .timeout = 120)
{
    enum { NOPS = 200, NN = 400 };
    static char names[NOPS][16];
    static ad_opdef defs[NOPS];
    for (int i = 0; i < NOPS; i++) {
        snprintf(names[i], sizeof names[i], "op%d", i);
        defs[i] = cube;
        defs[i].name = names[i];
    }
    for (long n = 1;; n++) {
        test_alloc a;
        memset(&a, 0, sizeof a);
        a.fail_at = n;
        int failed = 0;
        ad_registry *reg = ad_registry_new(test_alloc_fn, &a);
        if (reg) {
            for (int i = 0; i < NOPS; i++) {
                int st = ad_registry_add(reg, &defs[i]);
                if (st == AD_ENOMEM) {
                    failed = 1;
                    char want[64];
                    snprintf(want, sizeof want, "registry_add: out of memory adding '%.15s'",
                             names[i]);
                    cr_assert_str_eq(ad_registry_errmsg(reg), want);
                    cr_assert_null(ad_registry_find(reg, names[i]));
                    continue;
                }
                cr_assert_eq(st, AD_OK);
            }
            /* Whatever was added is findable; built-ins are all there. */
            for (int i = 0; i < NOPS; i++) {
                const ad_opdef *d = ad_registry_find(reg, names[i]);
                cr_assert(d == NULL || d == &defs[i]);
            }
            for (size_t i = 0; i < ad_builtin_count(); i++)
                cr_assert_eq(ad_registry_find(reg, ad_builtin_op(i)->name), ad_builtin_op(i));
        } else {
            failed = 1;
        }

        ad_tape_opts o = test_alloc_opts(&a);
        ad_tape *t = ad_tape_new(&o);
        if (t) {
            ad_node s = ad_scalar_var(t, 1.0);
            for (int i = 0; i < NN; i++)
                s = ad_add_const(t, s, 1.0);
            if (ad_tape_status(t) != AD_OK) {
                failed = 1;
                cr_assert_eq(ad_tape_status(t), AD_ENOMEM);
            } else {
                char buf[32];
                int ok = 0;
                for (int i = 1; i <= NN; i++) {
                    snprintf(buf, sizeof buf, "n%d", i);
                    int st = ad_set_name(t, ad_tape_node(t, (size_t)i), buf);
                    if (st == AD_ENOMEM) {
                        failed = 1;
                        cr_assert_null(ad_node_name(t, ad_tape_node(t, (size_t)i)));
                    } else {
                        cr_assert_eq(st, AD_OK);
                        ok++;
                    }
                }
                int found = 0;
                for (int i = 1; i <= NN; i++) {
                    const char *nm = ad_node_name(t, ad_tape_node(t, (size_t)i));
                    if (nm) {
                        snprintf(buf, sizeof buf, "n%d", i);
                        cr_assert_str_eq(nm, buf);
                        found++;
                    }
                }
                cr_assert_eq(found, ok, "names set and names found differ");
            }
            ad_tape_free(t);
        } else {
            failed = 1;
        }
        ad_registry_free(reg);
        no_leak(&a, n);
        if (a.count < n) {
            cr_assert_eq(failed, 0);
            break;
        }
        cr_assert_eq(failed, 1, "fail_at %ld: an allocation failed but nothing reported it", n);
    }
}

/* Every byte goes through the hook: the tape's own count equals the
 * hook's, and freeing returns all of it. */
Test(alloc, every_byte_goes_through_the_hook)
{
    init_data();
    test_alloc ar, at;
    memset(&ar, 0, sizeof ar);
    memset(&at, 0, sizeof at);
    ad_registry *reg = ad_registry_new(test_alloc_fn, &ar);
    cr_assert_not_null(reg);
    cr_assert_eq(ad_registry_add(reg, &cube), AD_OK);
    cr_assert_gt(ar.allocs, 0, "the registry did not use its hook");
    ad_tape_opts o = test_alloc_opts(&at);
    o.registry = reg;
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    cr_assert_eq(ad_tape_memory(t), at.bytes);
    prog p = {t, NULL};
    nodes n = record(&p);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    int failed = 0;
    name_nodes(t, &failed);
    cr_assert_eq(failed, 0);
    cr_assert_eq(ad_backward(t, n.loss), AD_OK);
    cr_assert_eq(ad_tape_memory(t), at.bytes, "tape says %zu bytes, the hook %zu",
                 ad_tape_memory(t), at.bytes);
    cr_assert_gt(at.bytes, (size_t)NCHAIN * 24, "the nodes alone take more");
    ad_tape_reset(t);
    cr_assert_eq(ad_tape_memory(t), at.bytes);
    ad_tape_free(t);
    no_leak(&at, 0);
    const long reg_allocs = ar.allocs;
    ad_registry_free(reg);
    no_leak(&ar, 0);
    cr_assert_gt(reg_allocs, (long)ad_builtin_count(), "one entry per op at least");
}

/* An allocation that fails while the tape grows keeps the recorded part
 * intact and readable. */
Test(alloc, failure_keeps_earlier_nodes)
{
    test_alloc a;
    memset(&a, 0, sizeof a);
    ad_tape_opts o = test_alloc_opts(&a);
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    ad_node x = ad_scalar_var(t, 2.0);
    ad_node y = ad_square(t, x);
    ad_node w = ad_variable(t, ad_shape_vec(3), NULL); /* the first arena block */
    a.fail_at = a.count + 1; /* the next allocation (a new block) fails */
    ad_node v = ad_variable(t, ad_shape_vec(100000), NULL);
    cr_assert(ad_node_is_nil(v));
    cr_assert_eq(ad_tape_status(t), AD_ENOMEM);
    cr_assert_str_eq(ad_tape_errmsg(t), "variable: out of memory for a value of a vector of length 100000");
    cr_assert_eq(ad_scalar_value(t, y), 4.0);
    cr_assert_eq(ad_value(t, w)[2], 0.0);
    cr_assert_eq(ad_backward(t, y), AD_ENOMEM, "the sweep reports the sticky error");
    ad_tape_reset(t);
    y = ad_square(t, ad_scalar_var(t, 3.0));
    cr_assert_eq(ad_backward(t, y), AD_OK);
    ad_tape_free(t);
    no_leak(&a, 0);
}

/* ad_tape_new and ad_registry_new report failure as NULL at every step. */
Test(alloc, constructors_return_null)
{
    for (long n = 1;; n++) {
        test_alloc a;
        memset(&a, 0, sizeof a);
        a.fail_at = n;
        ad_tape_opts o = test_alloc_opts(&a);
        ad_tape *t = ad_tape_new(&o);
        cr_assert(t != NULL || a.count >= n);
        ad_tape_free(t);
        no_leak(&a, n);
        if (t)
            break;
    }
    for (long n = 1;; n++) {
        test_alloc a;
        memset(&a, 0, sizeof a);
        a.fail_at = n;
        ad_registry *r = ad_registry_new(test_alloc_fn, &a);
        cr_assert(r != NULL || a.count >= n);
        ad_registry_free(r);
        no_leak(&a, n);
        if (r && a.count < n)
            break;
    }
}
