/* util.c -- errors, a growable string, numbers as text and as JSON. */
#include "adgrad.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int adgrad_fail(adgrad_error *err, int line, int col, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->line = line;
        err->col = col;
        err->note[0] = '\0';
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static int reserve(adgrad_buf *b, size_t extra)
{
    if (b->oom)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return 0;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return 0;
    }
    b->s = s;
    b->cap = cap;
    return 1;
}

void adgrad_buf_put(adgrad_buf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    if (n)
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void adgrad_buf_puts(adgrad_buf *b, const char *s) { adgrad_buf_put(b, s, strlen(s)); }

void adgrad_buf_printf(adgrad_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        adgrad_buf_put(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void adgrad_buf_free(adgrad_buf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void adgrad_buf_num(adgrad_buf *b, double v)
{
    if (isnan(v))
        adgrad_buf_puts(b, "nan");
    else if (isinf(v))
        adgrad_buf_puts(b, v > 0 ? "inf" : "-inf");
    else
        adgrad_buf_printf(b, "%.10g", v == 0 ? 0.0 : v); /* -0 as 0 */
}

void adgrad_buf_json_num(adgrad_buf *b, double v)
{
    if (!isfinite(v)) {
        adgrad_buf_puts(b, "null");
        return;
    }
    if (v == 0) {
        adgrad_buf_puts(b, "0");
        return;
    }
    char s[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, v);
        if (strtod(s, NULL) == v)
            break;
    }
    adgrad_buf_puts(b, s);
}

void adgrad_buf_json_str(adgrad_buf *b, const char *s, size_t n)
{
    adgrad_buf_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': adgrad_buf_puts(b, "\\\""); break;
        case '\\': adgrad_buf_puts(b, "\\\\"); break;
        case '\n': adgrad_buf_puts(b, "\\n"); break;
        case '\t': adgrad_buf_puts(b, "\\t"); break;
        case '\r': adgrad_buf_puts(b, "\\r"); break;
        default:
            if (c < 0x20 || c == 0x7F)
                adgrad_buf_printf(b, "\\u%04x", c);
            else
                adgrad_buf_put(b, (const char *)&s[i], 1);
        }
    }
    adgrad_buf_puts(b, "\"");
}

void adgrad_buf_values(adgrad_buf *b, const double *v, ad_shape s, const char *row_sep)
{
    if (s.ndim == 0) {
        adgrad_buf_num(b, v[0]);
        return;
    }
    if (s.ndim == 1) {
        adgrad_buf_puts(b, "(");
        for (uint32_t i = 0; i < s.rows; i++) {
            if (i)
                adgrad_buf_puts(b, ", ");
            adgrad_buf_num(b, v[i]);
        }
        adgrad_buf_puts(b, ")");
        return;
    }
    adgrad_buf_puts(b, "[");
    for (uint32_t r = 0; r < s.rows; r++) {
        if (r)
            adgrad_buf_puts(b, row_sep ? row_sep : ", ");
        adgrad_buf_puts(b, "[");
        for (uint32_t c = 0; c < s.cols; c++) {
            if (c)
                adgrad_buf_puts(b, ", ");
            adgrad_buf_num(b, v[(size_t)r * s.cols + c]);
        }
        adgrad_buf_puts(b, "]");
    }
    adgrad_buf_puts(b, "]");
}

void adgrad_buf_json_values(adgrad_buf *b, const double *v, ad_shape s)
{
    if (s.ndim == 0) {
        adgrad_buf_json_num(b, v[0]);
        return;
    }
    if (s.ndim == 1) {
        adgrad_buf_puts(b, "[");
        for (uint32_t i = 0; i < s.rows; i++) {
            if (i)
                adgrad_buf_puts(b, ", ");
            adgrad_buf_json_num(b, v[i]);
        }
        adgrad_buf_puts(b, "]");
        return;
    }
    adgrad_buf_puts(b, "[");
    for (uint32_t r = 0; r < s.rows; r++) {
        adgrad_buf_puts(b, r ? ", [" : "[");
        for (uint32_t c = 0; c < s.cols; c++) {
            if (c)
                adgrad_buf_puts(b, ", ");
            adgrad_buf_json_num(b, v[(size_t)r * s.cols + c]);
        }
        adgrad_buf_puts(b, "]");
    }
    adgrad_buf_puts(b, "]");
}

void adgrad_buf_shape(adgrad_buf *b, ad_shape s)
{
    if (s.ndim == 0)
        adgrad_buf_puts(b, "scalar");
    else if (s.ndim == 1)
        adgrad_buf_printf(b, "vector(%u)", (unsigned)s.rows);
    else
        adgrad_buf_printf(b, "%ux%u", (unsigned)s.rows, (unsigned)s.cols);
}

void adgrad_shape_words(char *buf, size_t cap, ad_shape s)
{
    if (s.ndim == 0)
        snprintf(buf, cap, "a scalar");
    else if (s.ndim == 1)
        snprintf(buf, cap, "a vector of length %u", (unsigned)s.rows);
    else
        snprintf(buf, cap, "%ux%u", (unsigned)s.rows, (unsigned)s.cols);
}

/* The line of text holding the error, and a caret under its column. */
void adgrad_show_place(adgrad_buf *b, const char *text, size_t len, int line, int col)
{
    size_t i = 0;
    for (int l = 1; l < line && i < len; i++)
        if (text[i] == '\n')
            l++;
    size_t end = i;
    while (end < len && text[end] != '\n')
        end++;
    /* characters of the line, as display strings */
    int skip = col > 100 ? col - 60 : 0; /* keep a long line's window around the column */
    adgrad_buf shown = {0}, caret = {0};
    int c = 1, width = 0;
    if (skip) {
        adgrad_buf_puts(&shown, "...");
        adgrad_buf_puts(&caret, "   ");
    }
    for (size_t k = i; k < end;) {
        unsigned char ch = (unsigned char)text[k];
        size_t w = 1;
        if (ch >= 0x80) {
            while (k + w < end && ((unsigned char)text[k + w] & 0xC0) == 0x80 && w < 4)
                w++;
        }
        if (c > skip) {
            if (width >= 120) {
                adgrad_buf_puts(&shown, "...");
                break;
            }
            if (ch == '\t' || (ch >= 0x20 && ch < 0x7F) || (ch >= 0xC2 && w > 1))
                adgrad_buf_put(&shown, text + k, w);
            else
                adgrad_buf_puts(&shown, "?");
            if (c < col)
                adgrad_buf_puts(&caret, ch == '\t' ? "\t" : " ");
            width++;
        }
        c++;
        k += w;
    }
    adgrad_buf_puts(&caret, "^");
    adgrad_buf_printf(b, "  %s\n  %s\n", shown.s ? shown.s : "", caret.s ? caret.s : "^");
    adgrad_buf_free(&shown);
    adgrad_buf_free(&caret);
}
