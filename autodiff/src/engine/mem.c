/* mem.c -- the allocator hook, chunk pools and the tensor-data arena. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void *ad__default_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

void *ad__realloc(ad__mem *m, void *p, size_t osize, size_t nsize)
{
    void *q = m->fn(m->ud, p, osize, nsize);
    if (nsize == 0)
        m->held -= osize;
    else if (q)
        m->held += nsize - osize;
    return q;
}

void *ad__alloc(ad__mem *m, size_t n) { return ad__realloc(m, NULL, 0, n); }

void ad__free(ad__mem *m, void *p, size_t n)
{
    if (p)
        ad__realloc(m, p, n, 0);
}

/* ---- pools ---- */

int ad__pool_reserve(ad__pool *p, ad__mem *m, size_t i)
{
    size_t c = i >> p->shift;
    while (c >= p->nchunks) {
        if (p->nchunks == p->cap_chunks) {
            size_t ncap = p->cap_chunks ? 2 * p->cap_chunks : 8;
            void **tab = ad__realloc(m, p->chunk, p->cap_chunks * sizeof *tab, ncap * sizeof *tab);
            if (!tab)
                return AD_ENOMEM;
            p->chunk = tab;
            p->cap_chunks = ncap;
        }
        void *chunk = ad__alloc(m, p->elem << p->shift);
        if (!chunk)
            return AD_ENOMEM;
        p->chunk[p->nchunks++] = chunk;
    }
    return AD_OK;
}

void ad__pool_free(ad__pool *p, ad__mem *m)
{
    for (size_t c = 0; c < p->nchunks; c++)
        ad__free(m, p->chunk[c], p->elem << p->shift);
    ad__free(m, p->chunk, p->cap_chunks * sizeof *p->chunk);
    p->chunk = NULL;
    p->nchunks = p->cap_chunks = 0;
}

/* ---- arena ---- */

#define AD__ALIGN 64u                  /* cache line: tensors start aligned */
#define AD__BLOCK_MIN ((size_t)1 << 16) /* 64 KiB */
#define AD__HDR (((sizeof(ad__block) + AD__ALIGN - 1) / AD__ALIGN) * AD__ALIGN)

static ad__block *block_new(ad__mem *m, size_t size)
{
    /* Extra AD__ALIGN so the data can be aligned whatever the allocator's
     * own alignment. */
    ad__block *b = ad__alloc(m, AD__HDR + size + AD__ALIGN);
    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

static double *block_data(ad__block *b)
{
    uintptr_t p = (uintptr_t)b + AD__HDR;
    p = (p + AD__ALIGN - 1) & ~(uintptr_t)(AD__ALIGN - 1);
    return (double *)p;
}

static void block_free(ad__mem *m, ad__block *b)
{
    ad__free(m, b, AD__HDR + b->size + AD__ALIGN);
}

double *ad__arena_alloc(ad__arena *a, ad__mem *m, size_t ndoubles)
{
    if (ndoubles > (SIZE_MAX - 2 * AD__ALIGN - AD__HDR) / sizeof(double) / 2)
        return NULL;
    size_t bytes = (ndoubles * sizeof(double) + AD__ALIGN - 1) & ~(size_t)(AD__ALIGN - 1);
    if (bytes == 0)
        bytes = AD__ALIGN;
    ad__block *b = a->cur;
    while (b && b->size - b->used < bytes)
        b = b->next; /* blocks after cur are unused in this recording */
    if (!b) {
        size_t size = bytes > AD__BLOCK_MIN ? bytes : AD__BLOCK_MIN;
        /* Grow geometrically so a big recording needs few blocks. */
        if (a->cur && a->cur->size * 2 > size && a->cur->size * 2 > a->cur->size)
            size = a->cur->size * 2;
        b = block_new(m, size);
        if (!b)
            return NULL;
        if (a->cur) { /* append after the last block */
            ad__block *last = a->cur;
            while (last->next)
                last = last->next;
            last->next = b;
        } else {
            a->head = b;
        }
    }
    a->cur = b;
    double *p = (double *)((char *)block_data(b) + b->used);
    b->used += bytes;
    return p;
}

void ad__arena_reset(ad__arena *a, ad__mem *m)
{
    if (a->head && a->head->next) {
        /* The last recording needed several blocks: merge them into one
         * big enough for all, so the next identical recording fits without
         * allocating. If that allocation fails, keep the old blocks. */
        size_t all = 0;
        for (ad__block *b = a->head; b; b = b->next)
            all += b->size;
        ad__block *merged = block_new(m, all);
        if (merged) {
            ad__arena_free(a, m);
            a->head = a->cur = merged;
            return;
        }
    }
    for (ad__block *b = a->head; b; b = b->next)
        b->used = 0;
    a->cur = a->head;
}

void ad__arena_free(ad__arena *a, ad__mem *m)
{
    ad__block *b = a->head;
    while (b) {
        ad__block *next = b->next;
        block_free(m, b);
        b = next;
    }
    a->head = a->cur = NULL;
}
