/*
 * criterion.h -- gradient assertions for your own Criterion test suites.
 *
 *   #include <criterion/criterion.h>
 *   #include <autodiff/criterion.h>
 *
 *   Test(layer, dW) {
 *       ...record, ad_backward(t, J)...
 *       const double dW[] = {...};                 // your hand derivation
 *       ad_assert_grad_eq(t, W, dW, 1e-12);
 *   }
 *   Test(layer, gradcheck) {
 *       ad_assert_gradcheck(my_loss, NULL, inputs, 3, NULL);
 *   }
 *
 * On failure the test fails with the check's report as its message, so
 * the log names each wrong element, e.g.
 *   gradient of W: FAILED -- 1 of 3 elements differ (atol 1e-12, rtol 0)
 *   dW[2]: expected -7, tape -8
 * The report is freed before the test stops, so a failing assertion leaks
 * nothing.
 *
 * Header-only: macros over the checks of autodiff/check.h. The library
 * itself never includes this file. It uses Criterion's classic assertion
 * API (cr_expect_fail), which <criterion/criterion.h> provides.
 *
 * Hooks (define before including, e.g. to run the macros outside a test):
 *   AD_CR_REPORT(msg)  records a failure with message msg (a string);
 *                      default cr_expect_fail("%s", msg)
 *   AD_CR_ABORT()      stops the test after a failed ad_assert_*;
 *                      default criterion_abort_test()
 */
#ifndef AUTODIFF_CRITERION_H
#define AUTODIFF_CRITERION_H

#include "autodiff/autodiff.h"
#include "autodiff/check.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#ifndef AD_CR_REPORT
#define AD_CR_REPORT(msg) cr_expect_fail("%s", (msg))
#endif
#ifndef AD_CR_ABORT
#define AD_CR_ABORT() criterion_abort_test()
#endif

/* Runs one check call (which fills ad_cr_rep_), reports a failure with the
 * report text (or the error message), frees the report, and stops the
 * test when stop is nonzero. what names the assertion in the message. */
#define AD__CR_CHECK(call, what, stop)                                                        \
    do {                                                                                      \
        ad_check_report ad_cr_rep_;                                                           \
        int ad_cr_st_ = (call);                                                               \
        int ad_cr_ok_ = ad_cr_st_ == AD_OK && ad_cr_rep_.passed;                              \
        if (!ad_cr_ok_) {                                                                     \
            if (ad_cr_st_ == AD_OK) {                                                         \
                AD_CR_REPORT(ad_cr_rep_.text);                                                \
            } else {                                                                          \
                char ad_cr_msg_[AD_CHECK_MSG_CAP + 64];                                       \
                snprintf(ad_cr_msg_, sizeof ad_cr_msg_, "%s could not run: %s (%s)", (what),  \
                         ad_cr_rep_.errmsg, ad_strstatus(ad_cr_st_));                         \
                AD_CR_REPORT(ad_cr_msg_);                                                     \
            }                                                                                 \
        }                                                                                     \
        ad_check_report_free(&ad_cr_rep_);                                                    \
        if (!ad_cr_ok_ && (stop))                                                             \
            AD_CR_ABORT();                                                                    \
    } while (0)

/* ad_grad(tape, node) equals expected[] (the node's size) within
 * |tape - expected| <= tol, element by element. Call ad_backward first. */
#define ad_assert_grad_eq(tape, node, expected, tol)                                          \
    AD__CR_CHECK(ad__cr_grad_eq((tape), (node), (expected), (tol), &ad_cr_rep_),              \
                 "ad_assert_grad_eq", 1)
#define ad_expect_grad_eq(tape, node, expected, tol)                                          \
    AD__CR_CHECK(ad__cr_grad_eq((tape), (node), (expected), (tol), &ad_cr_rep_),              \
                 "ad_expect_grad_eq", 0)

/* The function passes ad_gradcheck (finite differences); opts may be NULL.
 * Arguments as ad_gradcheck without the report. */
#define ad_assert_gradcheck(fn, ud, inputs, n, opts)                                          \
    AD__CR_CHECK(ad_gradcheck((fn), (ud), (inputs), (n), (opts), &ad_cr_rep_),                \
                 "ad_assert_gradcheck", 1)
#define ad_expect_gradcheck(fn, ud, inputs, n, opts)                                          \
    AD__CR_CHECK(ad_gradcheck((fn), (ud), (inputs), (n), (opts), &ad_cr_rep_),                \
                 "ad_expect_gradcheck", 0)

/* Your gradient (inputs[i].grad, or the callback yours) matches the tape;
 * arguments as ad_handcheck without the report. */
#define ad_assert_handcheck(fn, ud, inputs, n, yours, yours_ud, opts)                         \
    AD__CR_CHECK(ad_handcheck((fn), (ud), (inputs), (n), (yours), (yours_ud), (opts),         \
                              &ad_cr_rep_),                                                   \
                 "ad_assert_handcheck", 1)
#define ad_expect_handcheck(fn, ud, inputs, n, yours, yours_ud, opts)                         \
    AD__CR_CHECK(ad_handcheck((fn), (ud), (inputs), (n), (yours), (yours_ud), (opts),         \
                              &ad_cr_rep_),                                                   \
                 "ad_expect_handcheck", 0)

/* A hand-derived gradient that is wrong ON PURPOSE (teaching material):
 * the check must run and FAIL, and when kind is not AD_DIAG_NONE some
 * failing block must be diagnosed with that kind (ad_handcheck_ex with
 * hopts.diagnose = "*"; a diagnosis needs the callback yours). Criterion
 * 2.4 has no .should_fail; this is the assertion instead. When the
 * gradient unexpectedly passes, or fails for another reason than the one
 * taught, the test fails with the report -- its diagnosis lines say what
 * the gradient does instead:
 *   ad_assert_handcheck_fails: expected the hand-derived gradient to FAIL
 *   with a diagnosis AD_DIAG_MISSING_FACTOR, but it passed: <report>
 * Arguments as ad_handcheck without the report, plus kind. */
#define ad_assert_handcheck_fails(fn, ud, inputs, n, yours, yours_ud, opts, kind)            \
    AD__CR_FAILS(fn, ud, inputs, n, yours, yours_ud, opts, kind, "ad_assert_handcheck_fails", 1)
#define ad_expect_handcheck_fails(fn, ud, inputs, n, yours, yours_ud, opts, kind)            \
    AD__CR_FAILS(fn, ud, inputs, n, yours, yours_ud, opts, kind, "ad_expect_handcheck_fails", 0)

#define AD__CR_FAILS(fn, ud, inputs, n, yours, yours_ud, opts, kind, what, stop)              \
    do {                                                                                      \
        char ad_cr_msg_[8192];                                                                \
        int ad_cr_ok_ = ad__cr_fails((fn), (ud), (inputs), (n), (yours), (yours_ud), (opts), \
                                     (kind), (what), ad_cr_msg_, sizeof ad_cr_msg_);          \
        if (!ad_cr_ok_)                                                                       \
            AD_CR_REPORT(ad_cr_msg_);                                                         \
        if (!ad_cr_ok_ && (stop))                                                             \
            AD_CR_ABORT();                                                                    \
    } while (0)

static inline const char *ad__cr_kind_name(int kind)
{
    static const char *const names[] = {
        "AD_DIAG_NONE",           "AD_DIAG_FACTOR",       "AD_DIAG_TRANSPOSE",
        "AD_DIAG_WRONG_INPUT",    "AD_DIAG_MISSING_FACTOR", "AD_DIAG_EXTRA_FACTOR",
        "AD_DIAG_W_NOT_WT",       "AD_DIAG_MISSING_PATH"};
    return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "?";
}

/* 1 when the check ran, failed and (kind != AD_DIAG_NONE) a block has a
 * fit of that kind; else 0 with the reason and the report in msg. */
static inline int ad__cr_fails(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                               ad_hand_fn yours, void *yours_ud, const ad_check_opts *opts,
                               int kind, const char *what, char *msg, size_t cap)
{
    ad_handcheck_opts ho;
    ad_check_report rep;
    memset(&ho, 0, sizeof ho);
    ho.size = sizeof ho;
    ho.diagnose = yours || kind != AD_DIAG_NONE ? "*" : NULL;
    int st = ad_handcheck_ex(fn, ud, in, n, yours, yours_ud, opts, &ho, &rep);
    int ok = st == AD_OK && !rep.passed, has = kind == AD_DIAG_NONE;
    for (size_t i = 0; ok && i < rep.ndiagnoses; i++)
        for (int k = 0; k < rep.diagnoses[i].nfits && k < AD_DIAG_MAX_FITS; k++)
            has |= rep.diagnoses[i].fit[k].kind == kind;
    if (st != AD_OK)
        snprintf(msg, cap, "%s could not run: %s (%s)", what, rep.errmsg, ad_strstatus(st));
    else if (!ok || !has)
        snprintf(msg, cap, "%s: expected the hand-derived gradient to FAIL%s%s, but %s:\n%s",
                 what, kind != AD_DIAG_NONE ? " with a diagnosis " : "",
                 kind != AD_DIAG_NONE ? ad__cr_kind_name(kind) : "",
                 rep.passed ? "it passed" : "it failed otherwise", rep.text);
    ad_check_report_free(&rep);
    return ok && has;
}

/* ad_check_grad with an absolute tolerance only. */
static inline int ad__cr_grad_eq(const ad_tape *t, ad_node node, const double *expected,
                                 double tol, ad_check_report *rep)
{
    ad_check_opts o;
    memset(&o, 0, sizeof o);
    o.atol = tol > 0 ? tol : 1e-300; /* 0 would mean "the default" */
    return ad_check_grad(t, node, expected, &o, rep);
}

#endif /* AUTODIFF_CRITERION_H */
