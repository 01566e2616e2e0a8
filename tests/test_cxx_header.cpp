// test_cxx_header.cpp -- the public headers used from C++: they compile
// with -Wall -Wextra -Wpedantic as C++11 and later, declare C linkage (the
// program links against the C library), and work with the usual C++
// ownership idiom. Not a Criterion test: a plain program that returns 0
// on success, so it builds with nothing but a C++ compiler and the library.
#include <autodiff/autodiff.h>
#if defined(__has_include)
#  if __has_include(<nn/nn.h>)
#    include <nn/nn.h>
#    define HAVE_NN 1
#  endif
#endif

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

namespace {

struct tape_deleter {
    void operator()(ad_tape *t) const { ad_tape_free(t); }
};
using tape_ptr = std::unique_ptr<ad_tape, tape_deleter>;

int failures = 0;

void check(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

// Op callbacks written in C++: the library only calls through the pointers.
void twice_forward(const ad_call *c)
{
    for (std::size_t i = 0; i < ad_shape_size(c->out.shape); i++)
        c->out.val[i] = 2 * c->in[0].val[i];
}
void twice_vjp(const ad_call *c)
{
    if (c->in[0].grad)
        for (std::size_t i = 0; i < ad_shape_size(c->out.shape); i++)
            c->in[0].grad[i] += 2 * c->out.grad[i];
}

} // namespace

int main()
{
    check(std::strcmp(ad_version(), AD_VERSION_STRING) == 0, "ad_version matches the header");

    tape_ptr t(ad_tape_new(nullptr));
    check(t != nullptr, "ad_tape_new");
    if (!t)
        return 1;

    // f(x, y) = x*y + tanh(x); df/dx = y + 1 - tanh(x)^2, df/dy = x
    ad_node x = ad_scalar_var(t.get(), 0.5);
    ad_node y = ad_scalar_var(t.get(), -2.0);
    ad_node f = ad_add(t.get(), ad_mul(t.get(), x, y), ad_tanh(t.get(), x));
    check(ad_backward(t.get(), f) == AD_OK, ad_tape_errmsg(t.get()));
    double th = std::tanh(0.5);
    check(std::fabs(*ad_grad(t.get(), x) - (-2.0 + 1 - th * th)) < 1e-12, "df/dx");
    check(std::fabs(*ad_grad(t.get(), y) - 0.5) < 1e-12, "df/dy");

    // A custom op defined in C++.
    static const ad_opdef twice = {"twice", 1, nullptr, twice_forward, twice_vjp, nullptr,
                                   0, nullptr, nullptr, 0, nullptr, nullptr};
    ad_node v = ad_variable(t.get(), ad_shape_vec(3), nullptr);
    ad_node s = ad_sum(t.get(), ad_apply(t.get(), &twice, &v, 1, 0));
    check(ad_backward(t.get(), s) == AD_OK, ad_tape_errmsg(t.get()));
    const double *gv = ad_grad(t.get(), v);
    check(gv && gv[0] == 2 && gv[1] == 2 && gv[2] == 2, "custom op gradient");

    // Errors from C++ look the same as from C.
    ad_node bad = ad_dot(t.get(), x, v);
    check(ad_node_is_nil(bad), "shape error gives nil");
    check(ad_tape_status(t.get()) == AD_ESHAPE, "AD_ESHAPE");

#ifdef HAVE_NN
    nn_rng r;
    nn_rng_seed(&r, 7);
    double u = nn_rng_uniform(&r);
    check(u >= 0 && u < 1, "nn_rng_uniform from C++");
    check(std::strcmp(nn_strstatus(NN_OK), "") != 0, "nn_strstatus");
#endif

    if (failures == 0)
        std::puts("ok");
    return failures ? 1 : 0;
}
