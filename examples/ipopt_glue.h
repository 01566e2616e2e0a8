/* ipopt_glue.h -- IPOPT's C callbacks with every derivative from the
 * engine (docs/sparse.md, "IPOPT wiring"). Shared by the IPOPT examples.
 *
 * The problem is recorded once: n scalar variables, the objective f and
 * the m constraints g_i, each a scalar node. Then:
 *   eval_f, eval_g     a replay at x (once per new x), the nodes' values
 *   eval_grad_f        a reverse sweep of f
 *   eval_jac_g         ad_sparse_eval of the constraints' sparse Jacobian
 *   eval_h             ad_sparse_eval of the Hessian of
 *                      sigma f + sum lambda_i g_i (weights sigma, lambda)
 * and with values NULL, the patterns as triplets (ad_sparse_pattern). */
#ifndef IPOPT_GLUE_H
#define IPOPT_GLUE_H

#include <IpStdCInterface.h>
#include <autodiff/autodiff.h>
#include <autodiff/sparse.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ad_nlp {
    ad_tape *t;
    int n, m;
    ad_node *x;        /* n variables                         */
    ad_node *out;      /* f, then g_0 .. g_{m-1}              */
    ad_sparse *jac;    /* d g / d x                           */
    ad_sparse *hess;   /* sigma f + sum lambda_i g_i          */
    double *w;         /* m + 1 weights                       */
    double *grad;      /* n: the gradient of f                */
    int iterations;    /* the last iteration IPOPT reported   */
    int replays;       /* evaluations of the point            */
} ad_nlp;

/* Makes the sparse objects of a recorded problem (x, out already set).
 * Returns 0, or -1 with the tape's message printed. */
static int ad_nlp_init(ad_nlp *p)
{
    p->w = malloc((size_t)(p->m + 1) * sizeof *p->w);
    p->grad = malloc((size_t)p->n * sizeof *p->grad);
    if (!p->w || !p->grad)
        return -1;
    if (ad_tape_status(p->t) != AD_OK
        || ad_sparse_jacobian_new(p->t, p->m, p->out + 1, p->n, p->x, 0, &p->jac) != AD_OK
        || ad_sparse_hessian_new(p->t, p->m + 1, p->out, p->n, p->x, 0, &p->hess) != AD_OK) {
        fprintf(stderr, "ad_nlp_init: %s\n", ad_tape_errmsg(p->t));
        return -1;
    }
    return 0;
}

static void ad_nlp_free(ad_nlp *p)
{
    ad_sparse_free(p->jac);
    ad_sparse_free(p->hess);
    free(p->w);
    free(p->grad);
}

/* Moves the tape to x when IPOPT says it is new. */
static Bool ad_nlp_point(ad_nlp *p, const Number *x, Bool new_x)
{
    if (!new_x)
        return TRUE;
    for (int i = 0; i < p->n; i++)
        ad_set_value(p->t, p->x[i], &x[i]);
    p->replays++;
    const int st = ad_replay(p->t);
    if (st != AD_OK)
        fprintf(stderr, "replay: %s\n", ad_tape_errmsg(p->t));
    return st == AD_OK;
}

static Bool ad_nlp_f(Index n, Number *x, Bool new_x, Number *obj, UserDataPtr ud)
{
    ad_nlp *p = ud;
    (void)n;
    if (!ad_nlp_point(p, x, new_x))
        return FALSE;
    *obj = ad_value(p->t, p->out[0])[0];
    return TRUE;
}

static Bool ad_nlp_grad_f(Index n, Number *x, Bool new_x, Number *grad, UserDataPtr ud)
{
    ad_nlp *p = ud;
    if (!ad_nlp_point(p, x, new_x) || ad_backward(p->t, p->out[0]) != AD_OK)
        return FALSE;
    for (Index i = 0; i < n; i++)
        grad[i] = ad_grad(p->t, p->x[i])[0];
    return TRUE;
}

static Bool ad_nlp_g(Index n, Number *x, Bool new_x, Index m, Number *g, UserDataPtr ud)
{
    ad_nlp *p = ud;
    (void)n;
    if (!ad_nlp_point(p, x, new_x))
        return FALSE;
    for (Index i = 0; i < m; i++)
        g[i] = ad_value(p->t, p->out[1 + i])[0];
    return TRUE;
}

static Bool ad_nlp_jac_g(Index n, Number *x, Bool new_x, Index m, Index nele, Index *iRow,
                         Index *jCol, Number *values, UserDataPtr ud)
{
    ad_nlp *p = ud;
    (void)m, (void)new_x;
    if ((size_t)nele != ad_sparse_nnz(p->jac))
        return FALSE;
    if (!values) {
        ad_sparse_pattern(p->jac, iRow, jCol);
        return TRUE;
    }
    /* writes x into the leaves and replays them: the point is x after */
    if (ad_sparse_eval(p->jac, x, (size_t)n, NULL, 0, values) != AD_OK) {
        fprintf(stderr, "eval_jac_g: %s\n", ad_tape_errmsg(p->t));
        return FALSE;
    }
    return TRUE;
}

static Bool ad_nlp_h(Index n, Number *x, Bool new_x, Number sigma, Index m, Number *lambda,
                     Bool new_lambda, Index nele, Index *iRow, Index *jCol, Number *values,
                     UserDataPtr ud)
{
    ad_nlp *p = ud;
    (void)new_x, (void)new_lambda;
    if ((size_t)nele != ad_sparse_nnz(p->hess))
        return FALSE;
    if (!values) {
        ad_sparse_pattern(p->hess, iRow, jCol);
        return TRUE;
    }
    p->w[0] = sigma;
    for (Index i = 0; i < m; i++)
        p->w[1 + i] = lambda[i];
    if (ad_sparse_eval(p->hess, x, (size_t)n, p->w, (size_t)m + 1, values) != AD_OK) {
        fprintf(stderr, "eval_h: %s\n", ad_tape_errmsg(p->t));
        return FALSE;
    }
    return TRUE;
}

/* Counts iterations (the last one IPOPT reports). */
static Bool ad_nlp_iter(Index alg_mod, Index iter, Number obj, Number inf_pr, Number inf_du,
                        Number mu, Number d_norm, Number reg, Number alpha_du, Number alpha_pr,
                        Index ls, UserDataPtr ud)
{
    (void)alg_mod, (void)obj, (void)inf_pr, (void)inf_du, (void)mu, (void)d_norm, (void)reg;
    (void)alpha_du, (void)alpha_pr, (void)ls;
    ((ad_nlp *)ud)->iterations = iter;
    return TRUE;
}

#endif
