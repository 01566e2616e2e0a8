/* verify_hand_gradient.c -- check a dense layer's hand-derived gradients
 * against the tape, watch a wrong formula get caught, and let the check
 * say WHICH factor of the chain rule each planted mistake dropped.
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
 * The wrong formulas, each diagnosed by ad_handcheck_ex:
 *   - relu' forgotten (dz = dy);
 *   - dW transposed (x dz^T, a 4x3 matrix);
 *   - the seed neuron J = 1/2 (relu(W.x + b) - y)^2 without its 1/2;
 *   - a 2-layer network (tanh hidden layer, softmax cross-entropy) with
 *     tanh' forgotten in the hidden layer's gradients.
 * The program exits 0 when the right formula passes and every wrong one
 * is caught with the expected diagnosis.
 *
 *   verify_hand_gradient          the checks and their reports
 *   verify_hand_gradient --trace  the seed neuron's chain-rule trace
 *   verify_hand_gradient --dot    the seed neuron as a Graphviz graph */
#include <autodiff/autodiff.h>
#include <autodiff/check.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define K 3
#define N 4

/* The function, recorded by the checks: inputs W, b, x, t. AD_LET names
 * each node after its C variable, so reports say "y", not "n7". */
static ad_node dense_loss(ad_tape *tp, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(tp, z, ad_add(tp, ad_matvec(tp, in[0], in[2]), in[1])); /* z = W x + b */
    AD_LET(tp, y, ad_relu(tp, z));                                 /* y = relu(z) */
    AD_LET(tp, e, ad_sub(tp, y, in[3]));
    return ad_scale(tp, ad_sum(tp, ad_square(tp, e)), 0.5);        /* J = 1/2 ||y - t||^2 */
}

enum { RIGHT, FORGET_RELU, TRANSPOSE_DW };

/* Your gradient at a point; mistake: one of the classic ones. */
static void dense_grad(const double *const *p, double *const *g, int mistake)
{
    const int forget_relu = mistake == FORGET_RELU;
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
            g[0][mistake == TRANSPOSE_DW ? j * K + i : i * N + j] = dz[i] * x[j]; /* dW = dz x^T */
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
    dense_grad(p, g, RIGHT);
    return 0;
}

static int wrong_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    dense_grad(p, g, ud ? *(const int *)ud : FORGET_RELU);
    return 0;
}

/* The seed neuron as a checked function: inputs W, x, b, y. */
static ad_node neuron_loss(ad_tape *tp, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(tp, z, ad_add(tp, ad_dot(tp, in[0], in[1]), in[2]));
    AD_LET(tp, yhat, ad_relu(tp, z));
    AD_LET(tp, sq, ad_square(tp, ad_sub(tp, yhat, in[3])));
    AD_LET(tp, J, ad_scale(tp, sq, 0.5));
    return J;
}

/* dJ/dyhat = 2 (yhat - y): the derivative of (yhat - y)^2, the 1/2 forgotten. */
static int neuron_grad_no_half(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n, (void)ud;
    const double *W = p[0], *x = p[1];
    const double z = W[0] * x[0] + W[1] * x[1] + W[2] * x[2] + p[2][0];
    const double dz = 2 * ((z > 0 ? z : 0) - p[3][0]) * (z > 0);
    for (int i = 0; i < 3; i++) {
        g[0][i] = dz * x[i];
        g[1][i] = dz * W[i];
    }
    g[2][0] = dz;
    return 0;
}

/* 2 layers: a = W1 x + b1, h = tanh(a), o = W2 h + b2, J = xent(softmax(o), t);
 * inputs W1 (3x4), b1, W2 (3x3), b2, x (4), t (one-hot). */
static ad_node two_layer_loss(ad_tape *tp, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(tp, a, ad_add(tp, ad_matvec(tp, in[0], in[4]), in[1]));
    AD_LET(tp, h, ad_tanh(tp, a));
    AD_LET(tp, o, ad_add(tp, ad_matvec(tp, in[2], h), in[3]));
    return ad_softmax_xent(tp, o, in[5]);
}

/* do = softmax(o) - t, dW2 = do h^T, db2 = do, dh = W2^T do, and then the
 * mistake: da = dh (tanh' forgotten; right: dh ⊙ (1 - h^2)), dW1 = da x^T,
 * db1 = da, dx = W1^T da. */
static int two_layer_grad_no_tanh(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n, (void)ud;
    const double *W1 = p[0], *b1 = p[1], *W2 = p[2], *b2 = p[3], *x = p[4], *t = p[5];
    double h[3], o[3], d_o[3], dh[3] = {0}, mx = -1e300, se = 0;
    for (int i = 0; i < 3; i++) {
        double a = b1[i];
        for (int j = 0; j < 4; j++)
            a += W1[i * 4 + j] * x[j];
        h[i] = tanh(a);
    }
    for (int i = 0; i < 3; i++) {
        o[i] = b2[i];
        for (int j = 0; j < 3; j++)
            o[i] += W2[i * 3 + j] * h[j];
        mx = o[i] > mx ? o[i] : mx;
    }
    for (int i = 0; i < 3; i++)
        se += exp(o[i] - mx);
    for (int i = 0; i < 3; i++) {
        d_o[i] = exp(o[i] - mx) / se - t[i];
        g[3][i] = d_o[i];
        for (int j = 0; j < 3; j++) {
            g[2][i * 3 + j] = d_o[i] * h[j];
            dh[j] += W2[i * 3 + j] * d_o[i];
        }
    }
    for (int i = 0; i < 3; i++) {
        const double da = dh[i]; /* the mistake: dh ⊙ (1 - h^2) */
        g[1][i] = da;
        for (int j = 0; j < 4; j++) {
            g[0][i * 4 + j] = da * x[j];
            g[4][j] += W1[i * 4 + j] * da;
        }
    }
    return 0;
}

/* Runs ad_handcheck_ex with a diagnosis of every failing block, prints the
 * report, and returns 1 when the check failed and block `input` got a
 * diagnosis of the expected kind (named `name` when given). */
static int diagnosed(const char *title, ad_check_fn fn, const ad_check_input *in, int n,
                     ad_hand_fn grad, void *ud, int input, int kind, const char *name)
{
    ad_check_opts opts = {0};
    opts.seed = 42;
    ad_handcheck_opts hopts = {0};
    hopts.size = sizeof hopts;
    hopts.diagnose = "*";
    hopts.max_rows = 4;
    ad_check_report rep;
    int st = ad_handcheck_ex(fn, NULL, in, n, grad, ud, &opts, &hopts, &rep);
    printf("== %s ==\n%s\n", title, st == AD_OK ? rep.text : rep.errmsg);
    int ok = st == AD_OK && !rep.passed;
    for (size_t i = 0; ok && i < rep.ndiagnoses; i++) {
        const ad_diagnosis *d = &rep.diagnoses[i];
        if (d->input == input)
            ok = d->nfits > 0 && d->fit[0].kind == kind && (!name || !strcmp(d->fit[0].name, name));
    }
    ad_check_report_free(&rep);
    return ok;
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

    /* 3. The wrong formulas must be caught, each with its diagnosis. */
    int m = FORGET_RELU, caught = 0;
    caught += diagnosed("wrong hand formula: dz = (y - t), relu' forgotten", dense_loss, in, 4,
                        wrong_grad, &m, 0, AD_DIAG_MISSING_FACTOR, "y");
    m = TRANSPOSE_DW;
    caught += diagnosed("wrong hand formula: dW = x dz^T, transposed", dense_loss, in, 4,
                        wrong_grad, &m, 0, AD_DIAG_TRANSPOSE, NULL);

    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2}, b0 = 7, y0 = 5;
    const ad_check_input nin[4] = {
        {"W", ad_shape_vec(3), W0, NULL, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(3), x0, NULL, AD_INPUT_COMPARE},
        {"b", ad_shape_scalar(), &b0, NULL, AD_INPUT_COMPARE},
        {"y", ad_shape_scalar(), &y0, NULL, AD_INPUT_CONSTANT},
    };
    caught += diagnosed("the seed neuron without the 1/2 of 1/2 (yhat - y)^2", neuron_loss, nin,
                        4, neuron_grad_no_half, NULL, 0, AD_DIAG_FACTOR, NULL);

    const double W1[12] = {0.5, -0.2, 0.1, 0.3, -0.4, 0.2, 0.6, -0.1, 0.3, 0.3, -0.5, 0.2};
    const double b1[3] = {0.1, -0.2, 0.05}, b2[3] = {0, 0.1, -0.1};
    const double W2[9] = {0.7, -0.3, 0.2, -0.5, 0.4, 0.1, 0.2, 0.6, -0.4};
    const double x2[4] = {1, -0.5, 2, 0.3}, t2[3] = {0, 1, 0};
    const ad_check_input tin[6] = {
        {"W1", ad_shape_mat(3, 4), W1, NULL, AD_INPUT_COMPARE},
        {"b1", ad_shape_vec(3), b1, NULL, AD_INPUT_COMPARE},
        {"W2", ad_shape_mat(3, 3), W2, NULL, AD_INPUT_COMPARE},
        {"b2", ad_shape_vec(3), b2, NULL, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(4), x2, NULL, AD_INPUT_COMPARE},
        {"t", ad_shape_vec(3), t2, NULL, AD_INPUT_CONSTANT},
    };
    caught += diagnosed("2 layers, tanh + softmax: tanh' forgotten in da", two_layer_loss, tin, 6,
                        two_layer_grad_no_tanh, NULL, 0, AD_DIAG_MISSING_FACTOR, "h");

    printf("right formula %s; %d of 4 wrong formulas caught and diagnosed\n",
           ok ? "passed" : "FAILED", caught);
    return ok && caught == 4 ? 0 : 1;
}
