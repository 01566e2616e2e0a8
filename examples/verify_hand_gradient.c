/* verify_hand_gradient.c -- check a dense layer's hand-derived gradients
 * against the tape, then watch a wrong formula get caught.
 *
 *   z = W x + b,  y = relu(z),  J = 1/2 ||y - t||^2        W (3x4), x (4)
 *
 * By hand (the lecture-notes derivation):
 *   dy = y - t
 *   dz = dy ⊙ relu'(z)
 *   dW = dz x^T    (3x1)·(1x4)
 *   db = dz
 *   dx = W^T dz    (4x3)·(3x1)
 *
 * The wrong formula forgets relu' (dz = dy). The program exits 0 when the
 * right formula passes and the wrong one is caught.
 *
 *   verify_hand_gradient          the checks and their reports
 *   verify_hand_gradient --trace  the seed neuron's chain-rule trace
 *   verify_hand_gradient --dot    the seed neuron as a Graphviz graph */
#include <autodiff/autodiff.h>
#include <autodiff/check.h>

#include <stdio.h>
#include <string.h>

#define K 3
#define N 4

/* The function, recorded by the checks: inputs W, b, x, t. */
static ad_node dense_loss(ad_tape *tp, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node z = ad_add(tp, ad_matvec(tp, in[0], in[2]), in[1]); /* z = W x + b */
    ad_node y = ad_relu(tp, z);                                 /* y = relu(z) */
    ad_node e = ad_sub(tp, y, in[3]);
    return ad_scale(tp, ad_sum(tp, ad_square(tp, e)), 0.5);     /* J = 1/2 ||y - t||^2 */
}

/* Your gradient at a point; forget_relu: the classic mistake. */
static void dense_grad(const double *const *p, double *const *g, int forget_relu)
{
    const double *W = p[0], *b = p[1], *x = p[2], *t = p[3];
    double dz[K];
    for (int i = 0; i < K; i++) {
        double z = b[i];
        for (int j = 0; j < N; j++)
            z += W[i * N + j] * x[j];                  /* z = W x + b    */
        double y = z > 0 ? z : 0;
        double relu_d = forget_relu ? 1.0 : (z > 0);   /* relu'(z)       */
        dz[i] = (y - t[i]) * relu_d;                   /* dz = dy relu'  */
    }
    for (int i = 0; i < K; i++) {
        for (int j = 0; j < N; j++)
            g[0][i * N + j] = dz[i] * x[j];            /* dW = dz x^T    */
        g[1][i] = dz[i];                               /* db = dz        */
    }
    for (int j = 0; j < N; j++) {
        g[2][j] = 0;
        for (int i = 0; i < K; i++)
            g[2][j] += W[i * N + j] * dz[i];           /* dx = W^T dz    */
    }
}

static int right_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n, (void)ud;
    dense_grad(p, g, 0);
    return 0;
}

static int wrong_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n, (void)ud;
    dense_grad(p, g, 1);
    return 0;
}

/* The seed neuron of the lecture notes, for --trace and --dot. */
static int seed_neuron(int dot)
{
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2};
    ad_tape *t = ad_tape_new(NULL);
    if (!t)
        return 1;
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), x0);
    ad_node b = ad_scalar_var(t, 7);
    ad_node y = ad_scalar(t, 5);
    ad_node Wx = ad_dot(t, W, x);
    ad_node z = ad_add(t, Wx, b);                  /* z = W.x + b          */
    ad_node yhat = ad_relu(t, z);                  /* yhat = relu(z)       */
    ad_node e = ad_sub(t, yhat, y);
    ad_node sq = ad_square(t, e);
    ad_node J = ad_scale(t, sq, 0.5);              /* J = 1/2 (yhat - y)^2 */
    const char *names[] = {"W", "x", "b", "y", "Wx", "z", "yhat", "e", "sq", "J"};
    ad_node nodes[] = {W, x, b, y, Wx, z, yhat, e, sq, J};
    for (int i = 0; i < 10; i++)
        ad_set_name(t, nodes[i], names[i]);
    int st = ad_backward(t, J);
    if (st == AD_OK)
        st = dot ? ad_export_dot_fprint(stdout, t, J, NULL) : ad_trace_fprint(stdout, t, J, NULL);
    if (st != AD_OK)
        fprintf(stderr, "verify_hand_gradient: %s (%s)\n", ad_strstatus(st), ad_tape_errmsg(t));
    ad_tape_free(t);
    return st == AD_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--trace"))
        return seed_neuron(0);
    if (argc > 1 && !strcmp(argv[1], "--dot"))
        return seed_neuron(1);

    const double W[K * N] = {4, 2, -5, 1, 1, -3, 2, 0.5, 0.5, 1, 1, -2};
    const double b[K] = {8, 1, -5}, x[N] = {1, 0, 2, -1}, t[K] = {5, 3, 1};
    ad_check_input in[4] = {
        {"W", ad_shape_mat(K, N), W, NULL, AD_INPUT_COMPARE},
        {"b", ad_shape_vec(K), b, NULL, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(N), x, NULL, AD_INPUT_COMPARE},
        {"t", ad_shape_vec(K), t, NULL, AD_INPUT_CONSTANT},
    };
    ad_check_opts opts = {0};
    opts.seed = 42;
    ad_check_report rep;

    /* 1. The tape against finite differences: the function itself is right. */
    int st = ad_gradcheck(dense_loss, NULL, in, 4, &opts, &rep);
    printf("== finite differences ==\n%s\n", st == AD_OK ? rep.text : rep.errmsg);
    int ok = st == AD_OK && rep.passed;
    ad_check_report_free(&rep);

    /* 2. The right hand formulas: at the point and 3 random points. */
    st = ad_handcheck(dense_loss, NULL, in, 4, right_grad, NULL, &opts, &rep);
    printf("== hand formulas: dz = (y - t) * relu'(z), dW = dz x^T, db = dz, dx = W^T dz ==\n%s\n",
           st == AD_OK ? rep.text : rep.errmsg);
    ok &= st == AD_OK && rep.passed;
    ad_check_report_free(&rep);

    /* 3. The wrong formula (relu' forgotten) must be caught. */
    st = ad_handcheck(dense_loss, NULL, in, 4, wrong_grad, NULL, &opts, &rep);
    printf("== wrong hand formula: dz = (y - t), relu' forgotten ==\n%s\n",
           st == AD_OK ? rep.text : rep.errmsg);
    int caught = st == AD_OK && !rep.passed;
    ad_check_report_free(&rep);

    printf("right formula %s; wrong formula %s\n", ok ? "passed" : "FAILED",
           caught ? "caught" : "NOT caught");
    return ok && caught ? 0 : 1;
}
