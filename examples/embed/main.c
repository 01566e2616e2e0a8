/* main.c -- a complete program that embeds autodiff: the gradient of
 * L(W) = 1/2 |W x - y|^2 for a 2x3 matrix W the program owns, checked
 * against the closed form dL/dW = (W x - y) x^T. */
#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    /* Header and library must come from the same release. */
    if (strcmp(ad_version(), AD_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", AD_VERSION_STRING, ad_version());
        return 1;
    }

    double W[2 * 3] = {1, 2, 3, 4, 5, 6};  /* W: (2,3), owned by the program */
    double dW[2 * 3] = {0};                /* ad_backward adds dL/dW here     */
    const double x[3] = {1, -1, 2}, y[2] = {0.5, -0.5};

    ad_tape *t = ad_tape_new(NULL);        /* NULL: default allocator */
    if (!t) {
        fputs("out of memory\n", stderr);
        return 1;
    }
    ad_node w = ad_param(t, ad_shape_mat(2, 3), W, dW);
    ad_node xn = ad_constant(t, ad_shape_vec(3), x);
    ad_node yn = ad_constant(t, ad_shape_vec(2), y);
    ad_node r = ad_sub(t, ad_matvec(t, w, xn), yn);   /* r = W x - y   */
    ad_node loss = ad_scale(t, ad_dot(t, r, r), 0.5); /* L = 1/2 r.r   */

    /* Errors are sticky: one check covers the whole chain above. */
    if (ad_backward(t, loss) != AD_OK) {
        fprintf(stderr, "autodiff: %s\n", ad_tape_errmsg(t));
        ad_tape_free(t);
        return 1;
    }

    const double *rv = ad_value(t, r); /* owned by the tape */
    int bad = 0;
    printf("autodiff %s: L = %g\n", ad_version(), ad_scalar_value(t, loss));
    for (int i = 0; i < 2; i++) {
        printf("dL/dW[%d] =", i);
        for (int j = 0; j < 3; j++) {
            printf(" %6g", dW[i * 3 + j]);
            bad |= fabs(dW[i * 3 + j] - rv[i] * x[j]) > 1e-12; /* dW = r x^T */
        }
        printf("\n");
    }

    /* A caller mistake is reported, not fatal: W is 2x3, y has length 2. */
    ad_node oops = ad_matvec(t, w, yn);
    if (!ad_node_is_nil(oops) || ad_tape_status(t) != AD_ESHAPE)
        bad = 1;
    printf("expected error: %s (%s)\n", ad_tape_errmsg(t), ad_strstatus(ad_tape_status(t)));

    ad_tape_free(t); /* frees every node; W and dW stay ours */
    puts(bad ? "FAILED" : "ok");
    return bad;
}
