/*
 * check.h -- verify gradients: finite differences, your hand-derived
 * formulas, a printed chain-rule trace and a Graphviz export of the tape.
 *
 *   ad_gradcheck    the tape's gradient against central differences
 *   ad_handcheck    your own gradient formula against the tape, at a given
 *                   point and at seeded random points
 *   ad_check_grad   one node's gradient against an expected array
 *   ad_trace        the reverse sweep step by step, like lecture notes
 *   ad_export_dot   the tape as a DOT graph
 *
 * Conventions (as in autodiff.h): nothing here aborts, exits or prints on
 * its own. Checks fill a caller-owned ad_check_report (status, message,
 * one entry per compared element, and a ready-to-print text table);
 * traces and graphs go to a write callback or to a FILE the caller gives.
 * Errors -- misuse included -- are returned and explained in the report
 * (or in ad_print_opts.errbuf), never in a tape: ad_gradcheck and
 * ad_handcheck record on a tape of their own, freed before they return,
 * and the functions that take your tape take it const, so a refused or
 * failed check leaves its ad_tape_status and ad_tape_errmsg as they were
 * and its recording usable.
 * All memory goes through the allocator hook in the options (NULL:
 * realloc/free). No global state: every call is independent.
 *
 * Only the public API of autodiff.h is used, so the checks see exactly
 * what a user of the tape sees.
 */
#ifndef AUTODIFF_CHECK_H
#define AUTODIFF_CHECK_H

#include "autodiff/autodiff.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* What is checked                                                     */
/* ------------------------------------------------------------------ */

/* Records the function under test on t from its inputs and returns its
 * output, a scalar node. inputs[i] is a leaf holding input i (a variable,
 * or a constant for AD_INPUT_CONSTANT); n is the number of inputs; ud is
 * passed through. It may call any op and ad_set_name; it must not reset
 * or free t. Errors are noticed through ad_tape_status(t) afterwards, so
 * the callback need not check each op. The checks record it ONCE and
 * re-evaluate with ad_replay, so a branch taken on a value stays as it was
 * at the recording (see ad_replay). */
typedef ad_node (*ad_check_fn)(ad_tape *t, const ad_node *inputs, int n, void *ud);

/* The role of an input. */
enum {
    AD_INPUT_COMPARE = 0,  /* differentiated, moved and compared (default) */
    AD_INPUT_SKIP = 1,     /* differentiated and moved, not compared       */
    AD_INPUT_CONSTANT = 2  /* data: a constant leaf, never moved           */
};

/* One input of the function. A plain value type; zero-initialise it and
 * set what you need. The checks copy nothing from it beyond the call. */
typedef struct ad_check_input {
    const char *name;     /* "W": report rows name "dW[0][2]". NULL: "in<i>" */
    ad_shape shape;       /* built with ad_shape_scalar/vec/mat            */
    const double *value;  /* the point: ad_shape_size(shape) doubles, row-major; never NULL */
    const double *grad;   /* ad_handcheck without a callback: your gradient
                             at value (same size); NULL: not compared.
                             Ignored by ad_gradcheck.                      */
    int role;             /* AD_INPUT_COMPARE, _SKIP or _CONSTANT          */
} ad_check_input;

/* Your gradient at a point, for ad_handcheck: point[i] holds input i's
 * values; write d(output)/d(input i) into grad[i] (ad_shape_size doubles,
 * zeroed before the call) for every input whose grad[i] is not NULL (the
 * AD_INPUT_COMPARE ones). Return 0, or nonzero to stop the check (it then
 * fails with AD_EMISUSE and a message quoting the value). */
typedef int (*ad_hand_fn)(const double *const *point, double *const *grad, int n, void *ud);

/* Flags for ad_check_opts.flags. */
#define AD_CHECK_ALL_ROWS 1u  /* list every element in the text, not only
                                 failures (ad_gradcheck lists all of a
                                 check of at most 24 elements anyway) */

/* Options shared by the checks. Zero-initialise (or pass NULL) for the
 * defaults; each field says what 0 means and which values are valid.
 * Each check validates the fields it reads before doing anything else: a
 * NaN, an infinity or a negative value where the field says otherwise is
 * AD_EMISUSE with a message naming the check, the field and the value,
 * e.g. "gradcheck: opts.step is nan; it must be finite and > 0, or 0 for
 * the default" (nothing is recorded then). */
typedef struct ad_check_opts {
    /* Element (i, j) passes when
     *   |tape - other| <= atol + rtol * max(|tape|, |other|).
     * Both finite and >= 0. atol = rtol = 0: the check's defaults
     * (ad_gradcheck 1e-6 and 1e-5; ad_handcheck and ad_check_grad 1e-9 and
     * 1e-9). If either is nonzero both are used exactly as given, so
     * atol = 0 with rtol > 0 is a purely relative test and vice versa. */
    double atol, rtol;
    /* ad_gradcheck: element x_j is moved by +-h_j with
     * h_j = step * max(1, |x_j|); finite and > 0, or 0: the default
     * step = cbrt(DBL_EPSILON) ~ 6.06e-6, which balances truncation error
     * O(h^2) against rounding O(eps/h). */
    double step;
    /* ad_gradcheck, >= 0: 0 compares every element (2 evaluations each);
     * d > 0 instead compares g^T v with (f(x+hv) - f(x-hv)) / 2h for d
     * seeded random directions v (entries uniform in [-1, 1], h = step *
     * max(1, max|x|)), 2d evaluations whatever the input size. */
    int directions;
    /* ad_handcheck with a callback: random points besides the given one.
     * 0: 3; negative: none; at most 100000 (more is AD_EMISUSE). Each
     * element of a moved input becomes x + spread * u * max(1, |x|), u
     * uniform in [-1, 1]. */
    int points;
    double spread;        /* ad_handcheck: finite and > 0, or 0: 1.0 */
    uint64_t seed;        /* random directions and points; 0: a fixed seed */
    unsigned flags;       /* AD_CHECK_ALL_ROWS */
    /* ad_gradcheck: extra op names whose input has a kink at 0 (custom
     * ops), NULL-terminated; "relu" and "abs" are always included. */
    const char *const *kink_ops;
    ad_alloc_fn alloc;    /* every allocation of the check and its tape; NULL: realloc/free */
    void *alloc_ud;
    const ad_registry *registry; /* for the tape (ad_apply_named); NULL: built-ins */
} ad_check_opts;

/* ------------------------------------------------------------------ */
/* Reports                                                             */
/* ------------------------------------------------------------------ */

/* Verdict of one element. */
enum {
    AD_ELEM_OK = 0,
    AD_ELEM_FAIL = 1,
    AD_ELEM_KINK = 2 /* differs, but a relu/abs input crossed 0 within the
                        step: not a failure */
};

/* One compared element. */
typedef struct ad_check_entry {
    int input;        /* index of the input; -1 for a random direction    */
    size_t elem;      /* row-major element index, or the direction number */
    int point;        /* ad_handcheck: 0 the given point, k the k-th random one; else 0 */
    double tape;      /* the reverse sweep's value (g^T v for a direction) */
    double other;     /* finite difference, your value, or the expected one */
    double abs_err;   /* |tape - other|                                   */
    double rel_err;   /* abs_err / max(|tape|, |other|); 0 when both are 0 */
    int verdict;      /* AD_ELEM_OK, _FAIL or _KINK                       */
} ad_check_entry;

#define AD_CHECK_MSG_CAP 256

/* The outcome of a check. Caller-owned storage (typically on the stack);
 * every check initialises it on entry, so ad_check_report_free is always
 * safe afterwards, whatever the check returned. Read the public fields;
 * do not modify them. */
typedef struct ad_check_report {
    int status;               /* what the check returned                  */
    char errmsg[AD_CHECK_MSG_CAP]; /* why it could not run; "" when status is AD_OK */
    int passed;               /* 1: ran and no element failed (kinks do not fail) */
    size_t checked;           /* elements compared                        */
    size_t failed;            /* of which failed                          */
    size_t kinks;             /* of which differ at a kink                */
    const ad_check_entry *entries; /* nentries entries, in input/element order */
    size_t nentries;
    ad_check_entry worst;     /* the entry furthest outside (or closest to)
                                 its tolerance, kinks excluded; valid when
                                 has_worst */
    int has_worst;
    const char *text;         /* the report as text (see docs/verifying.md):
                                 a summary line, rows, and the worst case.
                                 Never NULL; "" when the check did not run */
    size_t text_len;
    /* private */
    ad_alloc_fn alloc_;
    void *alloc_ud_;
    size_t entries_cap_, text_cap_;
} ad_check_report;

/* Frees what the report holds and leaves it empty (text ""). NULL: no-op.
 * Safe to call twice. */
AD_API void ad_check_report_free(ad_check_report *rep);

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

/* Finite-difference check of fn at the inputs' values: records fn once,
 * sweeps for the tape's gradient, then for each AD_INPUT_COMPARE element
 * re-evaluates f(x+h) and f(x-h) with ad_set_value + ad_replay and
 * compares (f(x+h) - f(x-h)) / 2h with the tape (or, with
 * opts->directions, random directional derivatives). An element that
 * differs while some relu/abs input (or opts->kink_ops) changed side of 0
 * between x-h, x and x+h is AD_ELEM_KINK, not a failure.
 * Returns AD_OK when the check ran (pass/fail in rep->passed), else the
 * error, also in rep->status with a message in rep->errmsg:
 *   AD_EMISUSE  fn/in/rep NULL, n < 1, an invalid option (atol, rtol, step
 *               NaN, infinite or negative; directions negative), a NULL
 *               value, an invalid shape, no input to compare, fn returned
 *               nil or a non-scalar
 *   AD_ENOMEM   the allocator failed (report and tape are cleaned up)
 *   other       fn's recording failed: the tape's status and message.
 * rep NULL: returns AD_EMISUSE and does nothing else. */
AD_API int ad_gradcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                        const ad_check_opts *opts, ad_check_report *rep);

/* Compares your gradient with the tape's. yours NULL: in[i].grad holds
 * your gradient at in[i].value for each input you want compared (only the
 * given point is checked). yours given: it is called at the given point
 * and at opts->points seeded random points (moving every input that is not
 * AD_INPUT_CONSTANT) and every AD_INPUT_COMPARE input is compared there.
 * Each mismatch is named in rep->text like
 *   dW[0][2]: yours -7, tape -8 (at W = ..., x = (1, 0, 2))
 * Returns as ad_gradcheck (AD_OK: ran; pass/fail in rep->passed). Its
 * options are atol, rtol, points, spread, seed and flags (atol, rtol,
 * spread: AD_EMISUSE when NaN, infinite or negative; points: when over
 * 100000). Extra AD_EMISUSE cases: nothing to compare, random points
 * requested without a callback, or the callback returned nonzero. */
AD_API int ad_handcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                        ad_hand_fn yours, void *yours_ud, const ad_check_opts *opts,
                        ad_check_report *rep);

/* Compares ad_grad(t, node) -- after your ad_backward -- with expected[]
 * (ad_shape_size(node's shape) doubles). Rows are named after
 * ad_node_name (or "n<index>"). Only opts->atol, rtol, flags, alloc and
 * alloc_ud are used. Returns AD_OK (pass/fail in rep->passed) or
 * AD_EMISUSE (atol or rtol NaN, infinite or negative, NULL
 * tape/expected/rep, a bad node, a node with no gradient, a tape whose
 * recording failed), AD_ENOMEM. The tape is only read: whatever this
 * returns, t's status and message are unchanged. */
AD_API int ad_check_grad(const ad_tape *t, ad_node node, const double *expected,
                         const ad_check_opts *opts, ad_check_report *rep);

/* ------------------------------------------------------------------ */
/* Trace and graph                                                     */
/* ------------------------------------------------------------------ */

/* Receives text: len bytes at text (not NUL-terminated); ud is passed
 * through. Called many times per trace or graph. */
typedef void (*ad_write_fn)(void *ud, const char *text, size_t len);

/* Options for ad_trace and ad_export_dot; NULL: defaults. */
typedef struct ad_print_opts {
    ad_alloc_fn alloc;    /* scratch memory; NULL: realloc/free */
    void *alloc_ud;
    size_t max_values;    /* print a tensor's values when it has at most
                             this many elements; 0: 12 */
    char *errbuf;         /* receives the reason for a non-AD_OK return,
                             NUL-terminated, at most errcap bytes; NULL: none */
    size_t errcap;
} ad_print_opts;

/* Prints the reverse sweep from output, step by step: for each node the
 * sweep visits (in its order), the node's op and value, its adjoint
 * dJ/dnode, and the local derivative applied to each input, e.g.
 *   dJ/dz = dJ/dyhat · relu'(z) = -4 · 1 = -4
 * or, for matrices, the shape-level rule with the operand shapes
 *   dJ/dW = dJ/dz · x^T   (3x1)·(1x3) = [[...]]
 * ("+=" where a node feeds several others). Every number comes from the
 * tape: adjoints as swept, and each contribution from the op's own vjp.
 * Names come from ad_set_name; unnamed nodes are "n<index>". Call it
 * after ad_backward(t, output) (or ad_backward_seed). Output is UTF-8.
 * Returns AD_OK, AD_EMISUSE (NULL t/write, bad output node, a tape
 * holding an error, output not depending on a variable, or no sweep run:
 * the output's adjoint is 0) or AD_ENOMEM. */
AD_API int ad_trace(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                    const ad_print_opts *opts);
/* The same, written to f (a stream the caller opened; errors writing it
 * are left in ferror(f)). f NULL: AD_EMISUSE. */
AD_API int ad_trace_fprint(FILE *f, const ad_tape *t, ad_node output, const ad_print_opts *opts);

/* Writes the tape as a Graphviz DOT digraph: one node per tape node with
 * its name, op, shape, value and gradient (values when small), edges from
 * inputs to the ops that use them. output nil: the whole tape; otherwise
 * only output and the nodes it depends on (output is drawn doubled).
 * Render with e.g. `dot -Tpng tape.dot -o tape.png`. Returns AD_OK,
 * AD_EMISUSE (NULL t/write, bad node, tape holding an error) or
 * AD_ENOMEM. */
AD_API int ad_export_dot(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                         const ad_print_opts *opts);
/* The same, written to f. f NULL: AD_EMISUSE. */
AD_API int ad_export_dot_fprint(FILE *f, const ad_tape *t, ad_node output,
                                const ad_print_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* AUTODIFF_CHECK_H */
