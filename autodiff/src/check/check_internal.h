/*
 * check_internal.h -- helpers shared by the gradient checks, the trace and
 * the DOT export: memory through the caller's hook, a growable text
 * buffer, number and tensor formatting, element names, report building
 * and a seeded random generator. Uses only the public API of the tape.
 */
#ifndef AD_CHECK_INTERNAL_H
#define AD_CHECK_INTERNAL_H

#include "autodiff/autodiff.h"
#include "autodiff/check.h"

#include <stddef.h>
#include <stdint.h>

/* ---- memory ---- */

typedef struct ad__cmem {
    ad_alloc_fn fn;
    void *ud;
} ad__cmem;

/* fn NULL: realloc/free. */
ad__cmem ad__cmem_make(ad_alloc_fn fn, void *ud);
/* n bytes (n > 0), or NULL. */
void *ad__cmem_alloc(const ad__cmem *m, size_t n);
/* n elements of size sz, NULL on overflow or failure. */
void *ad__cmem_array(const ad__cmem *m, size_t n, size_t sz);
void ad__cmem_free(const ad__cmem *m, void *p, size_t n);

/* ---- text ---- */

/* A growable NUL-terminated buffer; oom is sticky and makes every later
 * append a no-op. */
typedef struct ad__sb {
    ad__cmem mem;
    char *buf;
    size_t len, cap;
    int oom;
} ad__sb;

void ad__sb_init(ad__sb *b, ad__cmem mem);
void ad__sb_put(ad__sb *b, const char *s, size_t n);
void ad__sb_puts(ad__sb *b, const char *s);
void ad__sb_printf(ad__sb *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void ad__sb_free(ad__sb *b);

/* A number as %g; neg_parens: "(-4)" for a negative value (a factor after
 * another). Into buf (at least 32 bytes). */
const char *ad__num(double v, int neg_parens, char *buf, size_t cap);
/* A tensor's values: "7", "(1, 0, 2)" or "[[1, 2], [3, 4]]". */
void ad__sb_values(ad__sb *b, const double *v, ad_shape s);
/* "scalar", "vector(3)", "2x3". */
const char *ad__shape_name(ad_shape s, char *buf, size_t cap);
/* Row name of one element: prefix + name + index, e.g. "dW[0][2]". */
void ad__elem_name(ad__sb *b, const char *prefix, const char *name, ad_shape s, size_t elem);
/* 1 if s is a valid shape the tape accepts (ndim 0..2, no zero size). */
int ad__shape_ok(ad_shape s);

/* ---- options ---- */

/* Which fields of ad_check_opts a check reads (ad__check_opts). */
enum {
    AD__OPT_TOL = 1u,        /* atol, rtol: finite, >= 0                        */
    AD__OPT_STEP = 2u,       /* step: finite, > 0 or 0 (the default)            */
    AD__OPT_DIRECTIONS = 4u, /* directions: >= 0                                */
    AD__OPT_POINTS = 8u,     /* points: at most AD__MAX_POINTS (negative: none) */
    AD__OPT_SPREAD = 16u     /* spread: finite, > 0 or 0 (the default)          */
};
#define AD__MAX_POINTS 100000

/* Validates the given fields of o (NULL: the defaults, always valid). On
 * the first bad one fills r with AD_EMISUSE and a message naming who, the
 * field and its value ("gradcheck: opts.step is nan; it must be finite and
 * > 0, or 0 for the default") and returns AD_EMISUSE; else AD_OK. Reads
 * nothing but o: no tape is touched. */
int ad__check_opts(ad_check_report *r, const char *who, const ad_check_opts *o, unsigned fields);

/* ---- reports ---- */

/* Initialises the fields of the first release only (ad_gradcheck,
 * ad_handcheck, ad_check_grad): a caller built against that check.h has
 * no room for the later ones. */
void ad__report_init(ad_check_report *r, ad__cmem mem);
/* The same plus the fields of the derivative-mode checks (index). */
void ad__report_init_ix(ad_check_report *r, ad__cmem mem);
/* Records the error (status and message) and returns status. */
int ad__report_fail(ad_check_report *r, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Appends an entry and updates the counts and the worst case; atol/rtol
 * decide its verdict unless kink says the element crossed a kink.
 * Returns AD_OK or AD_ENOMEM (the message starts with who). */
int ad__report_add(ad_check_report *r, const char *who, ad_check_entry e, double atol,
                   double rtol, int kink);
/* The same for a report made by ad__report_init_ix: ix says where the
 * entry was taken. The index lives in the entries' block (after room for
 * index_cap_ entries), so ad_check_report_free frees both. */
int ad__report_add_ix(ad_check_report *r, const char *who, ad_check_entry e, ad_check_index ix,
                      double atol, double rtol, int kink);
/* Takes ownership of the text in b (or records AD_ENOMEM if b ran out). */
int ad__report_set_text(ad_check_report *r, const char *who, ad__sb *b);

/* ---- random numbers (splitmix64): no global state ---- */

uint64_t ad__rng_next(uint64_t *state);
/* Uniform in [-1, 1). */
double ad__rng_sym(uint64_t *state);

/* ---- a recorded function under check (check_session.c) ---- */

typedef struct ad__session {
    ad__cmem mem;
    const char *who;          /* "gradcheck", "handcheck": message prefix */
    ad_tape *t;
    const ad_check_input *in;
    int n;
    ad_node *leaf;            /* n leaves, one per input                  */
    size_t *off;              /* n + 1 offsets into the flat arrays       */
    double *cur;              /* off[n]: the values now in the leaves     */
    double *g;                /* off[n]: gradient from the last sweep     */
    ad_node out;
    size_t m;                 /* the output's size                        */
} ad__session;

#define AD__SESSION_ANY_SHAPE 1u /* the output may be a tensor (ad_jvpcheck) */

/* Checks the arguments, copies the inputs, records fn once and checks its
 * output is a scalar (any shape with AD__SESSION_ANY_SHAPE). On error
 * fills r and returns its status; the session is then closed already. */
int ad__session_open(ad__session *s, const char *who, ad_check_fn fn, void *ud,
                     const ad_check_input *in, int n, const ad_check_opts *o,
                     ad_check_report *r, unsigned flags);
/* Copies cur into the leaf of input i (all moved inputs when i < 0) and
 * replays; the output's value is then ad_value(s->t, s->out). */
int ad__session_replay(ad__session *s, int i, ad_check_report *r);
/* ad__session_replay, and the (scalar) output in *f. */
int ad__session_eval(ad__session *s, int i, ad_check_report *r, double *f);
/* Reverse sweep at the current values; gradients into g (0 for inputs
 * the output does not depend on). */
int ad__session_sweep(ad__session *s, ad_check_report *r);
void ad__session_close(ad__session *s);
/* The input's display name: its name, or "in<i>". */
const char *ad__input_name(const ad_check_input *in, int i, char *buf, size_t cap);
/* Moves every input that is not constant to a random point around its
 * given value: x + spread * u * max(1, |x|), u uniform in [-1, 1]
 * (o->spread; 0 or o NULL: 1). Writes s->cur only. */
void ad__session_random_point(ad__session *s, const ad_check_opts *o, uint64_t *rng);
/* "the given point (W = ..., x = ...)" or "random point 2 (...)", the
 * values only when the inputs have at most 24 elements in all; x holds
 * the point's values (s->off layout). */
void ad__describe_point(ad__sb *b, const ad__session *s, const double *x, int p);
/* The point's values in full, whatever their number: "W = ..., x = ...". */
void ad__point_values(ad__sb *b, const ad__session *s, const double *x);
/* 1 if the point has at most 24 values: ad__describe_point writes them. */
int ad__point_is_small(const ad__session *s);

/* ---- diagnosis of a failing gradient block (diagnose.c) ---- */

typedef struct ad__diag_in {
    ad__session *s;           /* replayed at each point                   */
    int npoints;              /* >= 2                                     */
    const double *pts;        /* npoints * off[n]: the points             */
    const double *tg, *yg;    /* npoints * off[n]: the tape's and your gradients */
    double atol, rtol;
    const unsigned char *want;/* n: 1 to diagnose input i's block         */
} ad__diag_in;

/* Tests the hypotheses (ad_diag_fit kinds) on each wanted block and fills
 * out[i].nfits and out[i].fit, and appends " -- <diagnosis>" to
 * out[i].text. Replays the session's tape at the points (it is left at
 * the last one). AD_OK, AD_ENOMEM or a replay's status, in r. */
int ad__diagnose(const ad__diag_in *d, ad_diagnosis *out, ad_check_report *r);

/* ---- kinks: relu/abs (and opts->kink_ops) inputs near 0 ---- */

typedef struct ad__kinks {
    size_t n;             /* kink nodes        */
    ad_node *node;        /* their input nodes */
    size_t *off;          /* n + 1 offsets into side */
    signed char *side;
} ad__kinks;

/* Finds the kink nodes on the session's tape and notes the side of 0 each
 * of their input elements lies on now. AD_OK or AD_ENOMEM (k is then
 * empty). */
int ad__kinks_find(ad__kinks *k, const ad__session *s, const ad_check_opts *o);
/* Notes the sides again, at the tape's current values. */
void ad__kinks_note(ad__kinks *k, const ad_tape *t);
/* 1 if some kink input is on another side of 0 than when noted. */
int ad__kinks_crossed(const ad__kinks *k, const ad_tape *t);
void ad__kinks_free(ad__kinks *k, const ad__cmem *m);

/* ---- shared by the trace and the DOT export (trace.c) ---- */

/* The node's display name: ad_node_name, or "n<index>". */
const char *ad__node_label(const ad_tape *t, ad_node n, char *buf, size_t cap);
/* The node's op as an expression of its inputs' names: "relu(z)",
 * "W · x", "0.5 · sq"; leaves: "variable" or "constant". */
void ad__node_expr(ad__sb *b, const ad_tape *t, ad_node n);
/* Runs node nd's vjp on scratch buffers: out_grad (the node's size)
 * receives a copy of seed; res[k] (input k's size; NULL: input k takes no
 * gradient) is zeroed, then receives input k's contribution. vals NULL or
 * vals[k] NULL: input k's value on the tape, else vals[k] stands for it. */
void ad__node_vjp(const ad_tape *t, ad_node nd, const double *seed, double *out_grad,
                  double *const *res, const double *const *vals);
/* 1 if operand k of nd is elementwise with nd (a built-in of the trace's
 * table, operand of nd's size): its local derivative is then the vjp with
 * seed 1 at each element; the factor's text ("(1 - tanh(a)^2)", "0.5")
 * is appended to b (b NULL: not written). 0 otherwise. */
int ad__local_factor(ad__sb *b, const ad_tape *t, ad_node nd, int k);
/* Copies the message into opts->errbuf (if any) and returns status. */
int ad__print_fail(const ad_print_opts *o, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* A write callback onto a FILE (ud). */
void ad__file_write(void *ud, const char *text, size_t len);

#endif /* AD_CHECK_INTERNAL_H */
