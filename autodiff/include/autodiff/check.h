/*
 * check.h -- verify gradients: finite differences, your hand-derived
 * formulas, a printed chain-rule trace and a Graphviz export of the tape.
 *
 *   ad_gradcheck    the tape's gradient against central differences
 *   ad_handcheck    your own gradient formula against the tape, at a given
 *                   point and at seeded random points
 *   ad_check_grad   one node's gradient against an expected array
 *   ad_jvpcheck     forward mode: J v against central differences
 *   ad_hvpcheck     second order: H v against differences of the gradient,
 *                   and the symmetry <H u, w> = <u, H w>
 *   ad_handcheck_hessian, ad_handcheck_hvp
 *                   your Hessian (or H v) against the tape's
 *   ad_trace        the reverse sweep step by step, like lecture notes
 *   ad_trace_tangent  the forward (tangent) sweep step by step
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
                                 failures (ad_gradcheck, ad_jvpcheck and
                                 ad_hvpcheck list all of a check of at
                                 most 24 elements anyway) */

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
     * (ad_gradcheck, ad_jvpcheck, ad_hvpcheck 1e-6 and 1e-5; ad_handcheck,
     * ad_check_grad, ad_handcheck_hessian, ad_handcheck_hvp 1e-9 and
     * 1e-9). If either is nonzero both are used exactly as given, so
     * atol = 0 with rtol > 0 is a purely relative test and vice versa. */
    double atol, rtol;
    /* ad_gradcheck (and ad_jvpcheck, ad_hvpcheck, see there): element
     * x_j is moved by +-h_j with
     * h_j = step * max(1, |x_j|); finite and > 0, or 0: the default
     * step = cbrt(DBL_EPSILON) ~ 6.06e-6, which balances truncation error
     * O(h^2) against rounding O(eps/h). */
    double step;
    /* ad_gradcheck, >= 0: 0 compares every element (2 evaluations each);
     * d > 0 instead compares g^T v with (f(x+hv) - f(x-hv)) / 2h for d
     * seeded random directions v (entries uniform in [-1, 1], h = step *
     * max(1, max|x|)), 2d evaluations whatever the input size.
     * ad_jvpcheck, ad_hvpcheck: 0 every unit direction, d > 0 d random
     * directions; ad_handcheck_hvp: 0 three random directions. */
    int directions;
    /* ad_handcheck with a callback, and the derivative-mode checks: random
     * points besides the given one.
     * 0: 3; negative: none; at most 100000 (more is AD_EMISUSE). Each
     * element of a moved input becomes x + spread * u * max(1, |x|), u
     * uniform in [-1, 1]. */
    int points;
    double spread;        /* ad_handcheck and the derivative-mode checks:
                             finite and > 0, or 0: 1.0 */
    uint64_t seed;        /* random directions and points; 0: a fixed seed */
    unsigned flags;       /* AD_CHECK_ALL_ROWS */
    /* ad_gradcheck, ad_jvpcheck, ad_hvpcheck: extra op names whose input
     * has a kink at 0 (custom ops), NULL-terminated; "relu" and "abs" are
     * always included. */
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

/* What a derivative-mode check compared (ad_check_index.kind). */
enum {
    AD_CMP_JVP = 1,      /* an element of J v against central differences      */
    AD_CMP_HVP = 2,      /* an element of H v (or of H) against differences of
                            the gradient, or against yours                     */
    AD_CMP_SYMMETRY = 3, /* <H u, w> against <u, H w>, or H[a][b] against H[b][a] */
    AD_CMP_HESSIAN = 4   /* an element of your Hessian against the tape's      */
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

/* Where an entry of a derivative-mode check was taken, beside its input,
 * elem and point (see each check for what they hold). */
typedef struct ad_check_index {
    int kind;         /* AD_CMP_JVP, _HVP, _SYMMETRY or _HESSIAN             */
    size_t out_elem;  /* AD_CMP_JVP: the output element compared; else 0    */
    int direction;    /* the direction (0-based) of a J v or H v entry, and
                         u's for a symmetry entry; -1 for a unit direction
                         (a column of J or H) and for AD_CMP_HESSIAN        */
    int direction2;   /* AD_CMP_SYMMETRY of two directions: w's; else -1    */
    int input2;       /* the column's input: a unit direction, a symmetry
                         pair of unit directions, AD_CMP_HESSIAN; else -1   */
    size_t elem2;     /* and its row-major element; else 0                  */
} ad_check_index;

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
    /* ---- added with the derivative-mode checks (ad_jvpcheck,
     * ad_hvpcheck, ad_handcheck_hessian, ad_handcheck_hvp), which alone
     * write them: read them only after one of those (see "How these
     * structs grow" below) ---- */
    const ad_check_index *index; /* nentries: where each entry was taken */
    ad_check_index worst_index;  /* where the worst entry was taken      */
    size_t index_cap_;           /* private */
    /* ---- added with ad_handcheck_ex, which alone writes them ---- */
    const struct ad_diagnosis *diagnoses; /* ndiagnoses: one per compared
                                 gradient block, in input order (see
                                 ad_handcheck_ex); in the entries' block,
                                 freed with it */
    size_t ndiagnoses;
} ad_check_report;

/* Frees what the report holds and leaves it empty (text ""). NULL: no-op.
 * Safe to call twice. index points into the freed memory afterwards:
 * nentries is 0, so a loop over the entries reads none of it. */
AD_API void ad_check_report_free(ad_check_report *rep);

/* How these structs grow. You allocate ad_check_report and ad_check_opts
 * (typically on the stack) and index arrays of ad_check_input and
 * ad_check_entry, so a program built against an older check.h hands the
 * library smaller structs than the current ones:
 *   - ad_check_input, ad_check_entry, ad_diagnosis and ad_diag_fit
 *     never change size or layout; what a later check needs per entry
 *     goes into a parallel array (ad_check_report.index).
 *   - ad_handcheck_opts and ad_dot_opts carry their size in their first
 *     field: later fields are read only when it covers them.
 *   - ad_check_report and ad_check_opts only gain fields at their ends.
 *     A field is written (report) or read (options) only by the
 *     functions released with it or later, which an older program never
 *     calls: ad_gradcheck, ad_handcheck and ad_check_grad touch exactly
 *     the fields of the first release, and ad_check_report_free frees a
 *     report of any release. */

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

/* ---- Diagnosis: why a hand-derived gradient block is wrong ---- */

/* What a hypothesis says about your gradient block (ad_diag_fit.kind). */
enum {
    AD_DIAG_NONE = 0,           /* no simple explanation found               */
    AD_DIAG_FACTOR = 1,         /* yours = factor x the tape's (x2, x1/2, -1) */
    AD_DIAG_TRANSPOSE = 2,      /* yours is the tape's block transposed      */
    AD_DIAG_WRONG_INPUT = 3,    /* yours is the tape's gradient of another
                                   input (other_input)                       */
    AD_DIAG_MISSING_FACTOR = 4, /* the tape's gradient with node's local
                                   derivative for operand slot left out      */
    AD_DIAG_EXTRA_FACTOR = 5,   /* ... with it applied twice                 */
    AD_DIAG_W_NOT_WT = 6,       /* ... with W where W^T belongs: node is a
                                   matvec/matmul/affine of a square W and
                                   the contribution to its other operands
                                   used W instead of W^T                     */
    AD_DIAG_MISSING_PATH = 7    /* ... without the path from operand slot
                                   through node (that operand feeds several
                                   nodes and one path was left out)          */
};

/* One hypothesis that explains a block: it holds on every compared
 * element of the block, at every point, to the check's tolerance. */
typedef struct ad_diag_fit {
    int kind;          /* AD_DIAG_*                                        */
    double factor;     /* AD_DIAG_FACTOR: yours = factor x tape; else 0    */
    size_t node;       /* the node, by recording index on the check's tape
                          (the inputs are leaves 1 .. n, then fn's nodes in
                          the order fn records them); 0 for block kinds   */
    int slot;          /* the node's operand (0-based); -1 when none        */
    int other_input;   /* AD_DIAG_WRONG_INPUT: the input; else -1           */
    char name[32];     /* the node's name (ad_set_name, AD_LET), else
                          "n<index>"; "" when no node                      */
} ad_diag_fit;

#define AD_DIAG_MAX_FITS 4

/* The diagnosis of one compared gradient block (input). Like
 * ad_check_entry it never changes size or layout. */
typedef struct ad_diagnosis {
    int input;         /* the input whose gradient this block is          */
    size_t checked;    /* elements compared (every point)                 */
    size_t failed;     /* of which differ                                 */
    double worst_abs;  /* the largest |yours - tape| of the block         */
    int nfits;         /* hypotheses that fit; 0: "no simple explanation
                          found" (or the block passed: failed == 0). The
                          first AD_DIAG_MAX_FITS are in fit[], in the order
                          of the AD_DIAG_* kinds                           */
    ad_diag_fit fit[AD_DIAG_MAX_FITS];
    char text[512];    /* the block's summary line as in rep->text, e.g.
                          "dW1: 24 of 32 elements differ, worst abs err 0.83
                          -- dW1 looks like the tape's gradient without the
                          factor (1 - tanh(a)^2) of node 'h' = tanh(a)"; a
                          longer line is cut, ending in "..."             */
} ad_diagnosis;

/* Extra options of ad_handcheck_ex. Set size to sizeof(ad_handcheck_opts)
 * (later releases add fields after these, read only when size covers
 * them); zero the rest for the defaults. */
typedef struct ad_handcheck_opts {
    size_t size;
    /* NULL: no diagnosis. "*": diagnose every compared block that fails.
     * An input's name: that block only; it must fail (AD_EMISUSE when it
     * passes: there is nothing to diagnose). A diagnosis needs your
     * gradient at two points or more: the callback form with opts->points
     * >= 0 (0: 3 random points), never in[i].grad alone. */
    const char *diagnose;
    /* Element rows of the text; 0: 40 (as ad_handcheck). The per-block
     * summary lines are always there. */
    size_t max_rows;
    /* A point with more than 24 values in all is named in the text
     * without its values ("random point 2"); given a stream, each such
     * point that heads rows of the text is written there in full, one
     * line each: "random point 2: W = [[...]], x = (...)". NULL: not
     * written. Write errors are left in ferror(points). */
    FILE *points;
    /* NULL, or n sizes: how many doubles your gradient of input i has (0
     * for an input you do not compare). Each must equal the input's size
     * (AD_EMISUSE naming the input and both sizes otherwise), so a dW of
     * the wrong shape is refused before it is read. */
    const size_t *grad_sizes;
} ad_handcheck_opts;

/* ad_handcheck, with a summary line per compared gradient block (wrong /
 * total elements, worst error, and its diagnosis when asked for) before
 * the element rows, and the options above. hopts NULL: as ad_handcheck
 * plus the block lines.
 *
 * The diagnosis tests, for each failing block, the usual mistakes of a
 * hand derivation against the tape -- the kinds AD_DIAG_* above: a
 * constant factor, the block transposed, another input's gradient, one
 * node's local derivative left out or applied twice, W where W^T belongs
 * through a matvec, one path left out where a node feeds several others.
 * The node hypotheses re-run the reverse sweep with the op's own vjp,
 * changed at that one node. A hypothesis is reported only when it holds
 * on every compared element of the block at every point (the given one
 * and the random ones) to the check's atol/rtol; none: "no simple
 * explanation found". Results in rep->diagnoses (one per compared block,
 * passing blocks with failed 0) and in rep->text:
 *   dW1: 24 of 32 elements differ, worst abs err 0.83 -- dW1 looks like the
 *   tape's gradient without the factor (1 - tanh(a)^2) of node 'h' = tanh(a)
 * (several fitting hypotheses are joined by "; or ").
 * Each node hypothesis costs one sweep per point, so the diagnosis grows
 * with the square of the tape's length (about 1 s for 4000 scalar nodes
 * and 4 points); tapes of more than 4096 nodes get only the block
 * hypotheses (factor, transpose, wrong input). The check's own tape
 * names the input leaves after in[i].name; name the function's nodes
 * with AD_LET (autodiff.h) so the diagnoses say "h", not "n10".
 *
 * Your values are checked too: a NaN or an infinity in your gradient is
 * AD_EMISUSE naming the element and the point ("handcheck: your dW[1][2]
 * is nan at random point 2"). Other errors as ad_handcheck, plus
 * AD_EMISUSE for: hopts->size smaller than this release's
 * sizeof(ad_handcheck_opts); a diagnose name that is no input's, or
 * names a block that passes or is not compared; a diagnosis without a
 * callback or with opts->points < 0; grad_sizes not matching. */
AD_API int ad_handcheck_ex(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                           ad_hand_fn yours, void *yours_ud, const ad_check_opts *opts,
                           const ad_handcheck_opts *hopts, ad_check_report *rep);

/* ------------------------------------------------------------------ */
/* Derivative modes: J v, H v and Hessians                             */
/* ------------------------------------------------------------------ */

/* The checks below test forward mode (ad_jvp) and second order (ad_hvp,
 * ad_hessian) as the ones above test the reverse sweep: fn is recorded
 * once on a tape of the check's own and re-evaluated with ad_replay; the
 * inputs' roles are as above. They share these conventions:
 *
 * Points: the given one (in[i].value), then opts->points seeded random
 * points (0: 3; negative: none; at most 100000), each element of every
 * input that is not AD_INPUT_CONSTANT moved to x + spread * u * max(1,
 * |x|), u uniform in [-1, 1] (opts->spread, 0: 1.0) -- the points
 * ad_handcheck draws for the same seed. entry.point: 0 the given point, k
 * the k-th random one.
 *
 * Directions move only the AD_INPUT_COMPARE inputs. dirs NULL and
 * opts->directions 0: every unit direction -- one per compared element,
 * so the columns of J (or H) are compared one by one. dirs NULL and
 * opts->directions = d > 0: d seeded random directions, entries uniform
 * in [-1, 1] on the compared inputs (the same directions at every point).
 * dirs given: ndirs directions of N doubles each, N the total size of all
 * inputs in order (input i's elements after those of inputs 0..i-1);
 * the entries of skip and constant inputs are ignored (taken as 0). The
 * directions are named v1, v2, ... in the text.
 *
 * Central differences along v use h = step * max(1, |x_j|) for the unit
 * direction of x_j, and h = step * max(1, max|x|) / max|v| for a direction
 * v (x over the compared inputs), so no element moves by more than
 * step * max(1, max|x|); step is opts->step (0: cbrt(DBL_EPSILON)).
 * A difference during which a relu/abs input (or one of opts->kink_ops)
 * changed side of 0 is AD_ELEM_KINK when it disagrees, as in
 * ad_gradcheck. Default tolerances: atol 1e-6, rtol 1e-5 against
 * differences, atol = rtol = 1e-9 against your own formulas.
 *
 * Reports: one ad_check_entry per compared number, with
 * rep->index[i] saying where it was taken (kind, output element,
 * direction, column input and element), and rep->worst_index for
 * rep->worst. Rows of the text name each number like the lecture notes:
 *   dJ/dx [2][1]        d J[2] / d x[1]: a Jacobian element (unit direction)
 *   dJ/dv1 [2]          element 2 of J v1
 *   d2J/dW db [1][0]    d2 J / d W[1] d b[0]: a Hessian element
 *   d2J/dW dv1 [1]      element 1 of the W part of H v1
 * J is the name the function gave its output with ad_set_name, else "J";
 * a matrix input's element is its row-major index.
 *
 * Errors are returned as by ad_gradcheck (AD_OK: ran; pass/fail in
 * rep->passed; else the status, also in rep->status, and rep->errmsg).
 * Besides its cases, each of these is AD_EMISUSE: ndirs negative, dirs
 * NULL with ndirs > 0, dirs given with ndirs 0 or together with
 * opts->directions > 0, a direction holding NaN or an infinity, and a
 * mode the tape refuses (a custom op without the rule: the tape's
 * message, e.g. "jvpcheck: jvp: custom op 'cube' has no jvp rule ..."). */

/* Forward mode against central differences: at every point and along
 * every direction v, the tape's J v (ad_jvp on the check's tape) against
 * (f(x + h v) - f(x - h v)) / 2h, element by element of the output. fn's
 * output may have any shape (a scalar, vector or matrix). Entries:
 * AD_CMP_JVP, tape = (J v)[k], other = the difference, index.out_elem = k;
 * for a unit direction input and elem name the column (the element moved),
 * for a direction input is -1 and elem and index.direction its number.
 * Options: atol, rtol, step, directions, points, spread, seed, flags,
 * kink_ops, alloc, registry (numbers validated as in ad_gradcheck). */
AD_API int ad_jvpcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                       const double *dirs, int ndirs, const ad_check_opts *opts,
                       ad_check_report *rep);

/* Second order against differences of the gradient, in the spirit of
 * PyTorch's gradgradcheck: fn's output must be a scalar. At every point
 * and along every direction v, the tape's H v (ad_hvp) against
 * (g(x + h v) - g(x - h v)) / 2h, g the tape's gradient (ad_backward at the
 * moved point), for each element of the compared inputs: AD_CMP_HVP
 * entries with input and elem the row; for a unit direction index.input2
 * and elem2 name the column (the entry is the Hessian element H[row][col]),
 * else index.direction is the direction's number. Then symmetry, which a
 * Hessian has and a wrong second-order rule often breaks: for every pair
 * of directions u = v_a, w = v_b (a < b), <H u, w> (tape) against
 * <u, H w> (other), entries AD_CMP_SYMMETRY with input -1, elem the pair's
 * number, index.direction a and direction2 b; with unit directions the
 * pairs are the elements H[r][c] against H[c][r] of the compared block,
 * r before c (input, elem: r; input2, elem2: c). The symmetry rows use
 * the same tolerances. Options as ad_jvpcheck. Extra AD_EMISUSE: fn's
 * output is not a scalar; a custom op without a second-order rule. */
AD_API int ad_hvpcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                       const double *dirs, int ndirs, const ad_check_opts *opts,
                       ad_check_report *rep);

/* Your Hessian at a point, for ad_handcheck_hessian: point[i] holds input
 * i's values; for each pair a <= b of AD_INPUT_COMPARE inputs, H[a * n + b]
 * receives the block d2(output) / d(input a) d(input b): ad_shape_size(a)
 * x ad_shape_size(b) doubles, row-major, element [r][c] = d2 out /
 * d a[r] d b[c] (zeroed before the call). Every other H[] entry is NULL
 * (the block (b, a) is the transpose of (a, b)). Return 0, or nonzero to
 * stop the check (AD_EMISUSE quoting the value). */
typedef int (*ad_hand_hess_fn)(const double *const *point, double *const *H, int n, void *ud);

/* Your Hessian-vector product at a point, for ad_handcheck_hvp: point[i]
 * and v[i] hold input i's values and direction (zeros on inputs that are
 * not compared); write the part of H v for input i into hv[i] (zeroed)
 * for every AD_INPUT_COMPARE input (hv[i] is NULL for the others). Return
 * 0, or nonzero to stop the check. */
typedef int (*ad_hand_hvp_fn)(const double *const *point, const double *const *v,
                              double *const *hv, int n, void *ud);

/* Your Hessian against the tape's (ad_hessian on the check's tape, with
 * respect to every input that is not constant). yours NULL: hess holds
 * n * n block pointers, hess[a * n + b] your block d2J / d(input a)
 * d(input b) at the given point (layout as ad_hand_hess_fn, any pair of
 * compared inputs in either order; NULL, or a pair involving an input
 * that is not compared: not compared), and only the given point is
 * checked. yours given (hess must be NULL): it is called at the given
 * point and at opts->points random points. Each mismatch is named like
 *   d2J/dW db [1][0]: yours 2, tape 1
 * under the point it was found at. Entries: AD_CMP_HESSIAN, input and
 * elem the row (input a, element r), index.input2 and elem2 the column,
 * tape and other the tape's and your value. Options: atol, rtol, points,
 * spread, seed, flags, alloc, registry. Extra AD_EMISUSE cases: both or
 * neither of hess and yours, nothing to compare, random points without a
 * callback, the callback returned nonzero, a custom op without a
 * second-order rule. */
AD_API int ad_handcheck_hessian(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                                const double *const *hess, ad_hand_hess_fn yours,
                                void *yours_ud, const ad_check_opts *opts,
                                ad_check_report *rep);

/* Your Hessian-vector products against the tape's (ad_hvp), for Hessians
 * too large to write down: at the given point and opts->points random
 * points, along the directions (dirs, or opts->directions random ones --
 * 0: 3; unit directions are not used here), yours (required) against the
 * tape's H v element by element of the compared inputs, rows named
 * "d2J/dW dv1 [1]: yours 2, tape 1". Entries: AD_CMP_HVP, input and elem
 * the row, index.direction the direction. Options as ad_handcheck_hessian
 * plus directions. */
AD_API int ad_handcheck_hvp(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                            const double *dirs, int ndirs, ad_hand_hvp_fn yours,
                            void *yours_ud, const ad_check_opts *opts, ad_check_report *rep);

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

/* Prints the forward (tangent) sweep to output, step by step, in
 * recording order: for each node output depends on, its op and value, its
 * tangent dN/dv along the first direction of the last forward sweep
 * (ad_forward after ad_tangents and ad_set_tangent, or a driver such as
 * ad_jvp), and how it is made of the operands' tangents, e.g.
 *   yhat = relu(z) = 1
 *     dyhat/dv = relu'(z) · dz/dv = 1 · 0.5 = 0.5
 * or, with several operands, the sum and each term on a line of its own
 *   Wx = W · x = -6
 *     dWx/dv = x · dW/dv + W · dx/dv = 1
 *       x · dW/dv = (1, 0, 2) · (1, 0, 0) = 1
 *       W · dx/dv = (4, 2, -5) · (0, 0, 0) = 0
 * and, for matrices, the shape-level rule with the operand shapes
 *   dWx/dv = dW/dv · x + W · dx/dv ... (3x4)·(4x1). Every number comes
 * from the tape: values and tangents as the sweep left them, and each term
 * from the op's own rules (a custom op's jvp; a built-in's vjp, run on
 * scratch buffers, gives the local derivative it is multiplied by).
 * Output is UTF-8; the tape is only read. Returns AD_OK, AD_EMISUSE (NULL
 * t/write, bad output node, a tape holding an error, no forward sweep of
 * the current recording) or AD_ENOMEM, the reason in opts->errbuf. */
AD_API int ad_trace_tangent(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                            const ad_print_opts *opts);
/* The same, written to f. f NULL: AD_EMISUSE. */
AD_API int ad_trace_tangent_fprint(FILE *f, const ad_tape *t, ad_node output,
                                   const ad_print_opts *opts);

/* Writes the tape as a Graphviz DOT digraph: one node per tape node with
 * its name, op, shape, value and gradient (in full when small, else the
 * first values and the norm), edges from
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

/* Extra options of ad_export_dot_ex. Set size to sizeof(ad_dot_opts)
 * (later releases add fields after these, read only when size covers
 * them); zero the rest for the defaults. */
typedef struct ad_dot_opts {
    size_t size;
    /* Nodes drawn highlighted (red, bold), by recording index (1 ..
     * ad_tape_len - 1; ad_node_index), e.g. the nodes a diagnosis points
     * at: ad_diag_fit.node is the index on the check's own tape, which
     * records the inputs as leaves 1 .. n, then your function -- the same
     * index on a tape of yours recorded the same way. */
    const size_t *highlight;
    size_t nhighlight;
} ad_dot_opts;

/* ad_export_dot with the options above; dopts NULL: as ad_export_dot.
 * Extra AD_EMISUSE (reason in opts->errbuf): dopts->size too small,
 * highlight NULL with nhighlight > 0, an index outside the tape. A value
 * or gradient with more than opts->max_values elements is abbreviated in
 * both functions: "value 4, 2, -5, 1, ... (12 values, norm 7.8)". */
AD_API int ad_export_dot_ex(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                            const ad_print_opts *opts, const ad_dot_opts *dopts);

#ifdef __cplusplus
}
#endif
#endif /* AUTODIFF_CHECK_H */
