/* arm_generator.c -- the build-time half of the codegen example: records
 * the planar arm's end effector p(q) (examples/robot_arm.c's recording)
 * and writes it out as C with ad_codegen, forward and Jacobian.
 *
 * Run by autodiff_generate_c() (cmake/autodiffCodegen.cmake) as
 *   arm_generator <dir>/arm.c <dir>/arm.h
 * The prefix is the header's base name ("arm"). Exits non-zero, with the
 * tape's message, on any failure. */
#include <autodiff/autodiff.h>
#include <autodiff/codegen.h>

#include <stdio.h>
#include <string.h>

#define NJ 3
static const double len[NJ] = {1.0, 0.8, 0.5};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: arm_generator <out.c> <out.h>\n");
        return 2;
    }
    /* the prefix: the header's file name without directory and ".h" */
    char prefix[65];
    const char *base = strrchr(argv[2], '/') ? strrchr(argv[2], '/') + 1 : argv[2];
    size_t n = strlen(base);
    n = n > 2 && !strcmp(base + n - 2, ".h") ? n - 2 : n;
    if (n == 0 || n >= sizeof prefix) {
        fprintf(stderr, "arm_generator: bad header name %s\n", argv[2]);
        return 2;
    }
    memcpy(prefix, base, n);
    prefix[n] = '\0';

    ad_tape *t = ad_tape_new(NULL);
    const double q0[NJ] = {0, 0, 0}; /* any pose: the structure has no branch */
    ad_node q = ad_variable(t, ad_shape_vec(NJ), q0);
    ad_node th[NJ];
    th[0] = ad_at(t, q, 0);
    for (int i = 1; i < NJ; i++)
        th[i] = ad_add(t, th[i - 1], ad_at(t, q, (uint32_t)i));
    ad_node theta = ad_stack(t, NJ, th);
    ad_node l = ad_constant(t, ad_shape_vec(NJ), len);
    ad_node xy[2] = {ad_dot(t, l, ad_cos(t, theta)), ad_dot(t, l, ad_sin(t, theta))};
    ad_node p = ad_stack(t, 2, xy);

    char hname[80];
    snprintf(hname, sizeof hname, "%s.h", prefix);
    ad_codegen_opts o = {.prefix = prefix,
                         .what = AD_CODEGEN_FORWARD | AD_CODEGEN_JACOBIAN,
                         .header_name = hname};
    FILE *c = fopen(argv[1], "w"), *h = fopen(argv[2], "w");
    int st = c && h ? ad_codegen(t, p, 1, &q, &o, c, h) : AD_EIO;
    if (c && fclose(c) != 0)
        st = AD_EIO;
    if (h && fclose(h) != 0)
        st = AD_EIO;
    if (st != AD_OK)
        fprintf(stderr, "arm_generator: %s: %s\n", ad_strstatus(st), ad_tape_errmsg(t));
    ad_tape_free(t);
    return st == AD_OK ? 0 : 1;
}
