#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A hidden header before each block holds its size; 16 bytes keep the
 * block aligned as malloc aligns it. */
#define TEST_HDR 16u

void *test_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    test_alloc *a = ud;
    char *base = ptr ? (char *)ptr - TEST_HDR : NULL;
    if (base) {
        size_t held;
        memcpy(&held, base, sizeof held);
        if (held != osize)
            a->bad_osize++;
    }
    if (nsize == 0) {
        if (ptr) {
            a->frees++;
            a->bytes -= osize;
        }
        free(base);
        return NULL;
    }
    a->count++;
    if (a->fail_at && a->count == a->fail_at)
        return NULL;
    char *p = realloc(base, nsize + TEST_HDR);
    if (!p)
        return NULL;
    memcpy(p, &nsize, sizeof nsize);
    if (!ptr)
        a->allocs++;
    a->bytes += nsize - osize;
    return p + TEST_HDR;
}

ad_tape_opts test_alloc_opts(test_alloc *a)
{
    ad_tape_opts o;
    memset(&o, 0, sizeof o);
    o.alloc = test_alloc_fn;
    o.alloc_ud = a;
    return o;
}

uint64_t test_rng_next(test_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

double test_uniform(test_rng *r, double lo, double hi)
{
    double u = (double)(test_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); /* [0,1) */
    return lo + (hi - lo) * u;
}

double test_signed(test_rng *r, double lo, double hi)
{
    double v = test_uniform(r, lo, hi);
    return (test_rng_next(r) & 1) ? v : -v;
}

double test_err(double a, double b)
{
    double d = fabs(a - b);
    double m = fabs(b) > 1.0 ? fabs(b) : 1.0;
    return d / m;
}

double test_fd(double (*f)(void *ctx, const double *x), void *ctx, double *x, size_t i, double h)
{
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(ctx, x);
    x[i] = x0 - h;
    const double fm = f(ctx, x);
    x[i] = x0;
    return (fp - fm) / (2.0 * h); /* f'(x) + O(h^2) */
}

/* Records f at x on t (after a reset); returns the scalar loss node. */
static ad_node grad_record(ad_tape *t, test_graph_fn f, void *ud, const ad_shape *shapes, int n,
                           const double *x, ad_node *in)
{
    ad_tape_reset(t);
    const double *p = x;
    for (int i = 0; i < n; i++) {
        in[i] = ad_variable(t, shapes[i], p);
        p += ad_shape_size(shapes[i]);
    }
    ad_node out = f(t, in, ud);
    ad_shape so = ad_node_shape(t, out);
    if (ad_tape_status(t) != AD_OK || so.ndim == 0)
        return out;
    size_t m = ad_shape_size(so);
    double *w = malloc(m * sizeof *w);
    if (!w)
        return ad_nil();
    test_rng g = {0xC0FFEEu};
    for (size_t i = 0; i < m; i++)
        w[i] = test_uniform(&g, -1.5, 1.5);
    ad_node loss = ad_dot(t, out, ad_constant(t, so, w)); /* L = out . w */
    free(w);
    return loss;
}

typedef struct grad_ctx {
    ad_tape *t;
    test_graph_fn f;
    void *ud;
    const ad_shape *shapes;
    int n;
    ad_node *in;
} grad_ctx;

static double grad_loss(void *vc, const double *x)
{
    grad_ctx *c = vc;
    ad_node L = grad_record(c->t, c->f, c->ud, c->shapes, c->n, x, c->in);
    return ad_tape_status(c->t) == AD_OK ? ad_scalar_value(c->t, L) : NAN;
}

double test_grad_check(test_graph_fn f, void *ud, const ad_shape *shapes, int n, const double *x,
                       double h, const ad_tape_opts *opts, char *msg, size_t msgcap)
{
    char dummy[8];
    if (!msg) {
        msg = dummy;
        msgcap = sizeof dummy;
    }
    msg[0] = '\0';
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += ad_shape_size(shapes[i]);
    ad_tape *t = ad_tape_new(opts);
    ad_node *in = malloc((size_t)(n > 0 ? n : 1) * sizeof *in);
    double *xs = malloc((total ? total : 1) * sizeof *xs);
    double *g = malloc((total ? total : 1) * sizeof *g);
    double worst = INFINITY;
    if (!t || !in || !xs || !g) {
        snprintf(msg, msgcap, "out of memory");
        goto out;
    }
    memcpy(xs, x, total * sizeof *xs);
    ad_node L = grad_record(t, f, ud, shapes, n, xs, in);
    if (ad_tape_status(t) != AD_OK || ad_backward(t, L) != AD_OK) {
        snprintf(msg, msgcap, "%s", ad_tape_errmsg(t));
        goto out;
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const double *gi = ad_grad(t, in[i]);
        for (size_t j = 0; j < ad_shape_size(shapes[i]); j++)
            g[k++] = gi ? gi[j] : NAN;
    }
    worst = 0;
    grad_ctx c = {t, f, ud, shapes, n, in};
    k = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < ad_shape_size(shapes[i]); j++, k++) {
            double fd = test_fd(grad_loss, &c, xs, k, h);
            double e = test_err(g[k], fd);
            if (!(e <= worst)) { /* also catches NaN */
                worst = isnan(e) ? INFINITY : e;
                snprintf(msg, msgcap, "d/d(operand %d)[%zu]: tape %.12g, finite difference %.12g",
                         i + 1, j, g[k], fd);
            }
        }
out:
    free(g);
    free(xs);
    free(in);
    ad_tape_free(t);
    return worst;
}
