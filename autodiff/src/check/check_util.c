/* check_util.c -- memory, text and report helpers for the checks, the
 * trace and the DOT export (see check_internal.h). */
#include "check_internal.h"
#include "internal.h" /* ad__default_alloc: the one place that calls realloc/free */

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- memory ---- */

ad__cmem ad__cmem_make(ad_alloc_fn fn, void *ud)
{
    ad__cmem m = {fn ? fn : ad__default_alloc, fn ? ud : NULL};
    return m;
}

void *ad__cmem_alloc(const ad__cmem *m, size_t n) { return n ? m->fn(m->ud, NULL, 0, n) : NULL; }

void *ad__cmem_array(const ad__cmem *m, size_t n, size_t sz)
{
    if (n == 0 || sz == 0 || n > SIZE_MAX / sz)
        return NULL;
    return ad__cmem_alloc(m, n * sz);
}

void ad__cmem_free(const ad__cmem *m, void *p, size_t n)
{
    if (p)
        m->fn(m->ud, p, n, 0);
}

/* ---- text ---- */

void ad__sb_init(ad__sb *b, ad__cmem mem)
{
    b->mem = mem;
    b->buf = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

static int sb_reserve(ad__sb *b, size_t extra)
{
    if (b->oom)
        return 0;
    if (b->len + extra + 1 <= b->cap)
        return 1;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + extra + 1)
        ncap *= 2;
    char *p = b->mem.fn(b->mem.ud, b->buf, b->cap, ncap);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->buf = p;
    b->cap = ncap;
    return 1;
}

void ad__sb_put(ad__sb *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void ad__sb_puts(ad__sb *b, const char *s) { ad__sb_put(b, s, strlen(s)); }

void ad__sb_printf(ad__sb *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        ad__sb_put(b, small, (size_t)n);
        return;
    }
    if (!sb_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ad__sb_free(ad__sb *b)
{
    ad__cmem_free(&b->mem, b->buf, b->cap);
    b->buf = NULL;
    b->len = b->cap = 0;
}

const char *ad__num(double v, int neg_parens, char *buf, size_t cap)
{
    if (v == 0.0)
        v = 0.0; /* print -0 as 0 */
    snprintf(buf, cap, neg_parens && v < 0 ? "(%g)" : "%g", v);
    return buf;
}

void ad__sb_values(ad__sb *b, const double *v, ad_shape s)
{
    char num[40];
    if (s.ndim == 0) {
        ad__sb_puts(b, ad__num(v[0], 0, num, sizeof num));
        return;
    }
    if (s.ndim == 1) {
        ad__sb_puts(b, "(");
        for (uint32_t i = 0; i < s.rows; i++)
            ad__sb_printf(b, "%s%s", i ? ", " : "", ad__num(v[i], 0, num, sizeof num));
        ad__sb_puts(b, ")");
        return;
    }
    ad__sb_puts(b, "[");
    for (uint32_t r = 0; r < s.rows; r++) { /* v: (rows, cols) */
        ad__sb_puts(b, r ? ", [" : "[");
        for (uint32_t c = 0; c < s.cols; c++)
            ad__sb_printf(b, "%s%s", c ? ", " : "",
                          ad__num(v[(size_t)r * s.cols + c], 0, num, sizeof num));
        ad__sb_puts(b, "]");
    }
    ad__sb_puts(b, "]");
}

const char *ad__shape_name(ad_shape s, char *buf, size_t cap)
{
    if (s.ndim == 0)
        snprintf(buf, cap, "scalar");
    else if (s.ndim == 1)
        snprintf(buf, cap, "vector(%u)", (unsigned)s.rows);
    else
        snprintf(buf, cap, "%ux%u", (unsigned)s.rows, (unsigned)s.cols);
    return buf;
}

void ad__elem_name(ad__sb *b, const char *prefix, const char *name, ad_shape s, size_t elem)
{
    ad__sb_printf(b, "%s%s", prefix, name);
    if (s.ndim == 1)
        ad__sb_printf(b, "[%zu]", elem);
    else if (s.ndim == 2)
        ad__sb_printf(b, "[%zu][%zu]", elem / s.cols, elem % s.cols);
}

int ad__shape_ok(ad_shape s)
{
    if (s.ndim == 0)
        return s.rows == 1 && s.cols == 1;
    if (s.ndim == 1)
        return s.rows > 0 && s.cols == 1;
    return s.ndim == 2 && s.rows > 0 && s.cols > 0;
}

/* ---- options ---- */

/* An option's value for a message: NaN as "nan" whatever its sign bit. */
static const char *opt_num(double v, char *buf, size_t cap)
{
    if (isnan(v))
        return "nan";
    snprintf(buf, cap, "%g", v);
    return buf;
}

/* A double option: finite and >= 0; zero_default says 0 stands for the
 * default (then the rule reads "> 0, or 0 for the default"). */
static int check_double(ad_check_report *r, const char *who, const char *field, double v,
                        int zero_default)
{
    char nb[40];
    if (isfinite(v) && v >= 0)
        return AD_OK;
    return ad__report_fail(r, AD_EMISUSE, "%s: opts.%s is %s; it must be finite and %s", who,
                           field, opt_num(v, nb, sizeof nb),
                           zero_default ? "> 0, or 0 for the default" : ">= 0");
}

int ad__check_opts(ad_check_report *r, const char *who, const ad_check_opts *o, unsigned fields)
{
    int st = AD_OK;
    if (!o)
        return AD_OK;
    if ((fields & AD__OPT_TOL) && ((st = check_double(r, who, "atol", o->atol, 0)) != AD_OK ||
                                   (st = check_double(r, who, "rtol", o->rtol, 0)) != AD_OK))
        return st;
    if ((fields & AD__OPT_STEP) && (st = check_double(r, who, "step", o->step, 1)) != AD_OK)
        return st;
    if ((fields & AD__OPT_DIRECTIONS) && o->directions < 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: opts.directions is %d; it must be >= 0 (0: every element)",
                               who, o->directions);
    if ((fields & AD__OPT_POINTS) && o->points > AD__MAX_POINTS)
        return ad__report_fail(r, AD_EMISUSE, "%s: opts.points is %d; it must be at most %d", who,
                               o->points, AD__MAX_POINTS);
    if ((fields & AD__OPT_SPREAD) && (st = check_double(r, who, "spread", o->spread, 1)) != AD_OK)
        return st;
    return AD_OK;
}

/* ---- reports ---- */

/* The size of a report of the first release: what ad_gradcheck,
 * ad_handcheck and ad_check_grad may write. */
#define REPORT_V1_SIZE offsetof(ad_check_report, index)

void ad__report_init(ad_check_report *r, ad__cmem mem)
{
    memset(r, 0, REPORT_V1_SIZE);
    r->text = "";
    r->alloc_ = mem.fn;
    r->alloc_ud_ = mem.ud;
}

static ad_check_index no_index(void)
{
    ad_check_index ix;
    memset(&ix, 0, sizeof ix);
    ix.direction = ix.direction2 = ix.input2 = -1;
    return ix;
}

void ad__report_init_ix(ad_check_report *r, ad__cmem mem)
{
    ad__report_init(r, mem);
    r->index = NULL;
    r->worst_index = no_index();
    r->index_cap_ = 0;
}

int ad__report_fail(ad_check_report *r, int status, const char *fmt, ...)
{
    r->status = status;
    r->passed = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
    return status;
}

/* How far outside its tolerance an entry is: > 1 fails. */
static double badness(const ad_check_entry *e, double atol, double rtol)
{
    double scale = fmax(fabs(e->tape), fabs(e->other));
    double tol = atol + rtol * scale;
    if (isnan(e->abs_err))
        return INFINITY;
    return tol > 0 ? e->abs_err / tol : (e->abs_err > 0 ? INFINITY : 0);
}

/* Fills in e's errors and verdict, counts it and keeps the worst case.
 * Returns 1 when e became the worst. */
static int judge(ad_check_report *r, ad_check_entry *pe, double atol, double rtol, int kink)
{
    ad_check_entry e = *pe;
    e.abs_err = fabs(e.tape - e.other);
    double scale = fmax(fabs(e.tape), fabs(e.other));
    e.rel_err = scale > 0 ? e.abs_err / scale : (e.abs_err > 0 ? INFINITY : 0);
    if (isnan(e.tape) || isnan(e.other))
        e.abs_err = e.rel_err = NAN;
    double bad = badness(&e, atol, rtol);
    e.verdict = bad <= 1.0 ? AD_ELEM_OK : (kink ? AD_ELEM_KINK : AD_ELEM_FAIL);
    r->checked++;
    if (e.verdict == AD_ELEM_FAIL)
        r->failed++;
    else if (e.verdict == AD_ELEM_KINK)
        r->kinks++;
    *pe = e;
    if (e.verdict != AD_ELEM_KINK && (!r->has_worst || bad > badness(&r->worst, atol, rtol))) {
        r->worst = e;
        r->has_worst = 1;
        return 1;
    }
    return 0;
}

int ad__report_add(ad_check_report *r, const char *who, ad_check_entry e, double atol,
                   double rtol, int kink)
{
    ad__cmem mem = {r->alloc_, r->alloc_ud_};
    if (r->nentries == r->entries_cap_) {
        size_t ncap = r->entries_cap_ ? 2 * r->entries_cap_ : 16;
        if (ncap > SIZE_MAX / sizeof e)
            return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for the report's entries",
                                   who);
        void *p = mem.fn(mem.ud, (void *)r->entries, r->entries_cap_ * sizeof e, ncap * sizeof e);
        if (!p)
            return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for the report's entries",
                                   who);
        r->entries = p;
        r->entries_cap_ = ncap;
    }
    judge(r, &e, atol, rtol, kink);
    ((ad_check_entry *)r->entries)[r->nentries++] = e;
    return AD_OK;
}

_Static_assert(sizeof(ad_check_entry) % _Alignof(ad_check_index) == 0,
               "the index after the entries is aligned");

/* The entries' block of an indexed report holds room for index_cap_
 * entries, then index_cap_ index records; entries_cap_ counts the whole
 * block in entries (what ad_check_report_free frees). */
int ad__report_add_ix(ad_check_report *r, const char *who, ad_check_entry e, ad_check_index ix,
                      double atol, double rtol, int kink)
{
    const size_t se = sizeof(ad_check_entry), si = sizeof(ad_check_index);
    ad__cmem mem = {r->alloc_, r->alloc_ud_};
    if (r->nentries == r->index_cap_) {
        const size_t ncap = r->index_cap_ ? 2 * r->index_cap_ : 16;
        if (ncap > SIZE_MAX / 2 / (se + si))
            return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for the report's entries",
                                   who);
        const size_t units = ncap + (ncap * si + se - 1) / se;
        char *p = mem.fn(mem.ud, (void *)r->entries, r->entries_cap_ * se, units * se);
        if (!p)
            return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for the report's entries",
                                   who);
        /* the index moves up to its new place after the entries */
        if (r->nentries)
            memmove(p + ncap * se, p + r->index_cap_ * se, r->nentries * si);
        r->entries = (const ad_check_entry *)(void *)p;
        r->entries_cap_ = units;
        r->index_cap_ = ncap;
        r->index = (const ad_check_index *)(void *)(p + ncap * se);
    }
    if (judge(r, &e, atol, rtol, kink))
        r->worst_index = ix;
    ((ad_check_entry *)r->entries)[r->nentries] = e;
    ((ad_check_index *)r->index)[r->nentries] = ix;
    r->nentries++;
    return AD_OK;
}

int ad__report_set_text(ad_check_report *r, const char *who, ad__sb *b)
{
    if (b->oom || !b->buf) {
        ad__sb_free(b);
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory writing the report text", who);
    }
    r->text = b->buf;
    r->text_len = b->len;
    r->text_cap_ = b->cap;
    b->buf = NULL;
    b->len = b->cap = 0;
    return AD_OK;
}

void ad_check_report_free(ad_check_report *r)
{
    if (!r)
        return;
    ad__cmem mem = ad__cmem_make(r->alloc_, r->alloc_ud_);
    ad__cmem_free(&mem, (void *)r->entries, r->entries_cap_ * sizeof *r->entries);
    if (r->text_cap_)
        ad__cmem_free(&mem, (void *)r->text, r->text_cap_);
    r->entries = NULL;
    r->nentries = r->entries_cap_ = 0;
    r->text = "";
    r->text_len = r->text_cap_ = 0;
}

/* ---- random numbers ---- */

uint64_t ad__rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

double ad__rng_sym(uint64_t *s)
{
    /* 53 random bits -> [0, 1) -> [-1, 1) */
    return (double)(ad__rng_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}
