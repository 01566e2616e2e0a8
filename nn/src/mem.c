/* mem.c -- the allocator hook, status strings and error messages. */
#include "nn_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

void nn__mem_init(nn__mem *m, ad_alloc_fn fn, void *ud)
{
    m->fn = fn ? fn : default_alloc;
    m->ud = fn ? ud : NULL;
}

void *nn__realloc(nn__mem *m, void *p, size_t osize, size_t nsize)
{
    return m->fn(m->ud, p, osize, nsize);
}

void *nn__alloc(nn__mem *m, size_t n) { return n ? m->fn(m->ud, NULL, 0, n) : NULL; }

void nn__free(nn__mem *m, void *p, size_t n)
{
    if (p)
        m->fn(m->ud, p, n, 0);
}

static const char *const status_text[NN_STATUS_COUNT] = {
    [NN_OK] = "ok",
    [NN_ENOMEM] = "out of memory",
    [NN_ESHAPE] = "shape mismatch",
    [NN_EMISUSE] = "misuse",
    [NN_ENOTFOUND] = "not found",
    [NN_EEXIST] = "already exists",
    [NN_ELIMIT] = "size limit exceeded",
    [NN_EIO] = "input/output error",
    [NN_EFORMAT] = "bad file format",
};

const char *nn_strstatus(int status)
{
    if (status < 0 || status >= NN_STATUS_COUNT)
        return "unknown status";
    return status_text[status];
}

int nn__fail(char *msg, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, NN__MSG_CAP, fmt, ap);
    va_end(ap);
    return status;
}

int nn__copy_msg(char *msg, int status, const char *from)
{
    snprintf(msg, NN__MSG_CAP, "%s", from ? from : "");
    return status;
}

int nn__from_ad(int s)
{
    switch (s) {
    case AD_OK: return NN_OK;
    case AD_ENOMEM: return NN_ENOMEM;
    case AD_ESHAPE: return NN_ESHAPE;
    case AD_ELIMIT: return NN_ELIMIT;
    case AD_ENOTFOUND: return NN_ENOTFOUND;
    case AD_EEXIST: return NN_EEXIST;
    default: return NN_EMISUSE;
    }
}

const char *nn__shape_str(ad_shape s, char *buf, size_t cap)
{
    if (s.ndim == 0)
        snprintf(buf, cap, "a scalar");
    else if (s.ndim == 1)
        snprintf(buf, cap, "a vector of length %u", (unsigned)s.rows);
    else if (s.ndim == 2)
        snprintf(buf, cap, "%ux%u", (unsigned)s.rows, (unsigned)s.cols);
    else
        snprintf(buf, cap, "no valid shape");
    return buf;
}

bool nn__shape_ok(ad_shape s)
{
    switch (s.ndim) {
    case 0: return s.rows == 1 && s.cols == 1;
    case 1: return s.rows >= 1 && s.cols == 1;
    case 2: return s.rows >= 1 && s.cols >= 1;
    default: return false;
    }
}
