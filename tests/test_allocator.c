/* test_allocator.c -- every byte the library uses goes through the
 * caller's allocator hook, and the hook's contract holds.
 *
 * The hook here serves blocks from a private static pool (never from
 * malloc) and keeps a table of live blocks, so it can check what the
 * library tells it: each free and resize names a live block with the size
 * it was given (osize), blocks are aligned for double, nothing is freed
 * twice, and at the end allocations equal frees with no byte held. While
 * the library runs, the C heap (mallinfo2) must not move: a library that
 * called malloc behind the hook's back would show there. The nn objects
 * are covered too when nn is built. */
#include "support.h"

#include <criterion/criterion.h>
#include <malloc.h>
#include <stdalign.h>
#include <stdint.h>
#include <string.h>

#if defined(__has_include)
#  if __has_include(<nn/nn.h>)
#    include <nn/nn.h>
#    define HAVE_NN 1
#  endif
#endif

/* ---- the checking hook ---- */

#define POOL_BYTES ((size_t)48 << 20)
#define MAX_LIVE 8192

typedef struct block {
    void *p;
    size_t size;
} block;

typedef struct hook {
    unsigned char *pool; /* bump-allocated; freed space is not reused */
    size_t used;
    block live[MAX_LIVE];
    size_t nlive;
    long allocs, frees, resizes, fails;
    long attempts, fail_at; /* fail the fail_at-th attempt (1-based); 0: never */
    size_t bytes, peak;
    long bad_free;    /* free/resize of a pointer that is not live   */
    long bad_osize;   /* osize differs from the size given           */
    long misaligned;
    long overflow;    /* live table or pool exhausted (test bug)      */
} hook;

static alignas(64) unsigned char pool_mem[POOL_BYTES];

static void hook_init(hook *h)
{
    memset(h, 0, sizeof *h);
    h->pool = pool_mem;
}

static long find_live(hook *h, void *p)
{
    for (size_t i = h->nlive; i-- > 0;)
        if (h->live[i].p == p)
            return (long)i;
    return -1;
}

static void *pool_take(hook *h, size_t n)
{
    size_t at = (h->used + 63) & ~(size_t)63;
    if (at + n > POOL_BYTES || h->nlive == MAX_LIVE) {
        h->overflow++;
        return NULL;
    }
    h->used = at + n;
    return h->pool + at;
}

static void *hook_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    hook *h = ud;
    long i = -1;
    if (ptr) {
        i = find_live(h, ptr);
        if (i < 0) {
            h->bad_free++;
            return NULL;
        }
        if (h->live[i].size != osize)
            h->bad_osize++;
    } else if (osize != 0 && nsize != 0) {
        h->bad_osize++; /* osize must be 0 for a new block */
    }
    if (nsize == 0) {
        if (ptr) {
            h->frees++;
            h->bytes -= h->live[i].size;
            h->live[i] = h->live[--h->nlive];
        }
        return NULL;
    }
    h->attempts++;
    if (h->fail_at && h->attempts == h->fail_at) {
        h->fails++;
        return NULL;
    }
    void *q = pool_take(h, nsize);
    if (!q)
        return NULL;
    if ((uintptr_t)q % alignof(double))
        h->misaligned++;
    if (ptr) {
        size_t keep = h->live[i].size < nsize ? h->live[i].size : nsize;
        memcpy(q, ptr, keep);
        h->bytes -= h->live[i].size;
        h->live[i].p = q;
        h->live[i].size = nsize;
        h->resizes++;
    } else {
        h->live[h->nlive].p = q;
        h->live[h->nlive].size = nsize;
        h->nlive++;
        h->allocs++;
    }
    h->bytes += nsize;
    if (h->bytes > h->peak)
        h->peak = h->bytes;
    return q;
}

static void assert_balanced(const hook *h)
{
    cr_assert_eq(h->overflow, 0, "the test's pool overflowed");
    cr_assert_eq(h->bad_free, 0, "%ld frees of pointers the hook never gave", h->bad_free);
    cr_assert_eq(h->bad_osize, 0, "%ld calls with a wrong osize", h->bad_osize);
    cr_assert_eq(h->misaligned, 0, "%ld blocks not aligned for double", h->misaligned);
    cr_assert_eq(h->allocs, h->frees, "%ld allocations but %ld frees", h->allocs, h->frees);
    cr_assert_eq(h->nlive, 0, "%zu blocks still live", h->nlive);
    cr_assert_eq(h->bytes, 0, "%zu bytes still held", h->bytes);
}

/* ---- watching the C heap ----
 *
 * glibc lets a program replace malloc and friends; these replacements
 * forward to glibc's own allocator and count the calls made while
 * `watching` is set, so even a malloc the library frees again before
 * returning is seen. Under a sanitizer, which replaces malloc itself, the
 * heap checks see nothing and only the hook's own checks remain. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define SANITIZED 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
      __has_feature(memory_sanitizer)
#    define SANITIZED 1
#  endif
#endif

static int watching;
static long heap_calls;

#if defined(__GLIBC__) && !defined(SANITIZED)
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

void *malloc(size_t n)
{
    heap_calls += watching;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size)
{
    heap_calls += watching;
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    heap_calls += watching;
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n)
{
    heap_calls += watching;
    return __libc_memalign(align, n);
}
void free(void *p)
{
    heap_calls += watching && p;
    __libc_free(p);
}
#endif

/* Bytes in use on the C heap, small blocks and mmap'd big ones. */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Whether mallinfo2 sees malloc at all: not under a sanitizer or
 * valgrind, whose allocators it does not describe. */
static int heap_visible(void)
{
    size_t before = heap_in_use();
    void *volatile p = malloc(1000);
    size_t during = heap_in_use();
    free(p);
    return during != before;
}

/* Whether the replacements above are the malloc in use: not under a
 * sanitizer or valgrind, which put their own in its place. */
static int calls_visible(void)
{
    heap_calls = 0;
    watching = 1;
    void *volatile p = malloc(8);
    free(p);
    p = realloc(NULL, 8);
    p = realloc(p, 16);
    free(p);
    watching = 0;
    return heap_calls == 5;
}

typedef struct heap_watch {
    size_t bytes;
    long calls;
} heap_watch;

static void watch_start(heap_watch *w)
{
    w->bytes = heap_in_use();
    heap_calls = 0;
    watching = 1;
}

static void watch_stop(heap_watch *w)
{
    watching = 0;
    w->calls = heap_calls;
    w->bytes = heap_in_use() - w->bytes; /* wraps if it shrank: still nonzero */
}

static void assert_heap_untouched(const heap_watch *w)
{
    cr_assert_eq(w->calls, 0, "%ld calls into the C allocator bypassed the hook", w->calls);
    cr_assert_eq(w->bytes, 0, "the C heap moved by %ld bytes: an allocation bypassed the hook",
                 (long)w->bytes);
}

/* ---- workloads ---- */

/* y = y^3 elementwise; dx += 3 x^2 dy */
static void cube_fwd(const ad_call *c)
{
    for (size_t i = 0; i < ad_shape_size(c->out.shape); i++)
        c->out.val[i] = c->in[0].val[i] * c->in[0].val[i] * c->in[0].val[i];
}
static void cube_vjp(const ad_call *c)
{
    if (c->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(c->out.shape); i++)
            c->in[0].grad[i] += 3 * c->in[0].val[i] * c->in[0].val[i] * c->out.grad[i];
}
static const ad_opdef cube_def = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};

/* Everything a tape can allocate for: inline scalars, vector and matrix
 * data (several arena blocks), op constants, names, a registry with a
 * custom op, replays, resets and an error. Returns the first failure. */
static int tape_workload(hook *h, size_t *tape_mem, size_t *hook_bytes)
{
    ad_registry *reg = ad_registry_new(hook_fn, h);
    if (!reg)
        return AD_ENOMEM;
    int st = ad_registry_add(reg, &cube_def);
    if (st != AD_OK) {
        ad_registry_free(reg);
        return st;
    }
    ad_tape_opts o = {hook_fn, h, reg};
    ad_tape *t = ad_tape_new(&o);
    if (!t) {
        ad_registry_free(reg);
        return AD_ENOMEM;
    }
    static double W[200 * 300], gW[200 * 300], x[300];
    for (int i = 0; i < 300; i++)
        x[i] = 0.01 * i;
    for (int i = 0; i < 200 * 300; i++)
        W[i] = 1e-4 * (i % 97);
    for (int round = 0; round < 3 && st == AD_OK; round++) {
        ad_tape_reset(t);
        ad_node s = ad_scalar_var(t, 0.5);
        for (int i = 0; i < 6000; i++) /* 12000 inline nodes: two chunks */
            s = ad_add_const(t, ad_scale(t, s, 0.999), 1e-3);
        ad_node Wn = ad_param(t, ad_shape_mat(200, 300), W, gW);
        ad_node xn = ad_variable(t, ad_shape_vec(300), x);
        ad_node h1 = ad_tanh(t, ad_matvec(t, Wn, xn));               /* (200) */
        ad_node M = ad_outer(t, h1, xn);                             /* (200,300): > 64 KiB */
        ad_node c = ad_apply_named(t, "cube", &h1, 1, 0);
        ad_node L = ad_add(t, ad_add(t, ad_sum(t, c), ad_mean(t, M)), s);
        for (int i = 0; i < 50; i++) {
            char name[32];
            snprintf(name, sizeof name, "node%d", i);
            ad_set_name(t, ad_tape_node(t, (size_t)(1 + i * 7)), name);
        }
        st = ad_backward(t, L);
        if (st == AD_OK)
            st = ad_replay(t);
        if (st == AD_OK)
            st = ad_backward(t, L);
        if (st == AD_OK)
            st = ad_tape_status(t);
    }
    if (st == AD_OK) {
        ad_node a = ad_variable(t, ad_shape_vec(3), NULL);
        ad_node b = ad_variable(t, ad_shape_vec(4), NULL);
        ad_dot(t, a, b); /* an error: its message needs no memory */
        if (ad_tape_status(t) != AD_ESHAPE)
            st = -1;
    }
    if (tape_mem)
        *tape_mem = ad_tape_memory(t);
    if (hook_bytes)
        *hook_bytes = h->bytes;
    ad_tape_free(t);
    ad_registry_free(reg);
    return st;
}

Test(allocator, tape_and_registry_use_only_the_hook)
{
    static hook h;
    hook_init(&h);
    heap_watch w;
    size_t tape_mem = 0, hook_bytes = 0;
    watch_start(&w);
    int st = tape_workload(&h, &tape_mem, &hook_bytes);
    watch_stop(&w);

    cr_assert_eq(st, AD_OK, "workload failed: %s", ad_strstatus(st));
    cr_assert_gt(h.allocs, 10, "the hook was used (%ld allocations)", h.allocs);
    cr_assert_gt(h.peak, (size_t)200 * 300 * sizeof(double), "the tensors went through the hook");
    assert_heap_untouched(&w);
    /* ad_tape_memory counts exactly what the tape holds through the hook
     * (the registry holds the rest). */
    cr_assert_gt(tape_mem, 0);
    cr_assert_leq(tape_mem, hook_bytes);
    assert_balanced(&h);
}

Test(allocator, tape_memory_equals_hook_bytes)
{
    static hook h;
    hook_init(&h);
    ad_tape_opts o = {hook_fn, &h, NULL};
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    cr_assert_eq(ad_tape_memory(t), h.bytes);
    ad_node v = ad_variable(t, ad_shape_mat(100, 100), NULL);
    ad_node s = ad_sum(t, ad_square(t, v));
    ad_set_name(t, s, "loss");
    cr_assert_eq(ad_backward(t, s), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_tape_memory(t), h.bytes);
    ad_tape_reset(t);
    cr_assert_eq(ad_tape_memory(t), h.bytes);
    ad_tape_free(t);
    assert_balanced(&h);
}

Test(allocator, steady_state_replay_allocates_nothing)
{
    static hook h;
    hook_init(&h);
    ad_tape_opts o = {hook_fn, &h, NULL};
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    double W[12] = {0}, gW[12], x[4] = {1, 2, 3, 4};
    ad_node L = ad_sum(t, ad_tanh(t, ad_matvec(t, ad_param(t, ad_shape_mat(3, 4), W, gW),
                                                ad_param(t, ad_shape_vec(4), x, NULL))));
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    long n = h.attempts;
    for (int i = 0; i < 100; i++) {
        x[i % 4] += 0.1;
        cr_assert_eq(ad_replay(t), AD_OK);
        cr_assert_eq(ad_backward(t, L), AD_OK);
    }
    cr_assert_eq(h.attempts, n, "%ld allocations during replays", h.attempts - n);
    ad_tape_free(t);
    assert_balanced(&h);
}

/* Failing each allocation in turn: the workload reports AD_ENOMEM (or
 * still succeeds when the failed block was optional) and nothing leaks. */
Test(allocator, every_failed_allocation_is_cleaned_up)
{
    static hook h;
    hook_init(&h);
    cr_assert_eq(tape_workload(&h, NULL, NULL), AD_OK);
    long total = h.attempts;
    cr_assert_gt(total, 10);
    cr_log_info("failing each of %ld allocations in turn", total);
    int enomem = 0;
    for (long n = 1; n <= total; n++) {
        hook_init(&h);
        h.fail_at = n;
        int st = tape_workload(&h, NULL, NULL);
        cr_assert(st == AD_OK || st == AD_ENOMEM, "failing allocation %ld gave status %d (%s)", n,
                  st, ad_strstatus(st));
        enomem += st == AD_ENOMEM;
        assert_balanced(&h);
    }
    cr_assert_gt(enomem, 0, "some failure was reported");
}

Test(allocator, default_allocator_when_hook_is_null)
{
    /* NULL hook: the library falls back to realloc/free, and the watch
     * sees it -- so the checks above can see the library's allocations. */
    heap_watch w;
    watch_start(&w);
    ad_tape *t = ad_tape_new(NULL);
    ad_node v = ad_variable(t, ad_shape_mat(64, 64), NULL);
    watch_stop(&w);
    ad_tape_free(t);
    cr_assert_not_null(t);
    cr_assert_not(ad_node_is_nil(v));
    if (calls_visible())
        cr_assert_gt(w.calls, 1, "the malloc calls were counted");
    if (heap_visible()) {
        cr_assert_gt(w.bytes, (size_t)64 * 64 * sizeof(double), "the default allocator uses the heap");
        cr_assert_lt(w.bytes, (size_t)1 << 40);
    }
}

#ifdef HAVE_NN
/* The nn objects: a model with its store and tapes, a trainer with its
 * optimizer, predictions, a standalone store and optimizer. */
static int nn_workload(hook *h)
{
    nn_model_opts mo = {hook_fn, h, 42};
    nn_model *m = nn_model_new(&mo);
    if (!m)
        return NN_ENOMEM;
    const uint32_t sizes[] = {4, 16, 3};
    int st = nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY);
    nn_trainer *tr = NULL;
    if (st == NN_OK) {
        nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 1.0};
        tr = nn_trainer_new(m, &to);
        if (!tr)
            st = NN_ENOMEM;
    }
    double X[8 * 4], Y[8 * 3], out[8 * 3];
    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 4; j++)
            X[i * 4 + j] = 0.1 * (i - j);
        for (int k = 0; k < 3; k++)
            Y[i * 3 + k] = k == i % 3;
    }
    for (int step = 0; step < 5 && st == NN_OK; step++) {
        st = nn_trainer_step(tr, X, Y, 8, NULL);
        if (st == NN_OK)
            st = nn_trainer_step(tr, X, Y, 3, NULL); /* a second batch size */
    }
    if (st == NN_OK)
        st = nn_model_predict(m, X, 8, out);
    if (st == NN_OK)
        st = nn_model_predict(m, X, 1, out);
    nn_trainer_free(tr);
    nn_model_free(m);
    if (st != NN_OK)
        return st;

    nn_params *p = nn_params_new(hook_fn, h);
    if (!p)
        return NN_ENOMEM;
    for (int i = 0; i < 20 && st == NN_OK; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d.W", i);
        st = nn_params_add(p, name, ad_shape_mat(8, 8), NULL);
    }
    nn_optim_opts oo = nn_optim_defaults(NN_OPTIM_MOMENTUM);
    nn_optim *o = st == NN_OK ? nn_optim_new(&oo, nn_params_size(p), hook_fn, h) : NULL;
    if (st == NN_OK && !o)
        st = NN_ENOMEM;
    if (st == NN_OK)
        st = nn_optim_step(o, p);
    nn_optim_free(o);
    nn_params_free(p);
    return st;
}

Test(allocator, nn_objects_use_only_the_hook)
{
    static hook h;
    hook_init(&h);
    heap_watch w;
    watch_start(&w);
    int st = nn_workload(&h);
    watch_stop(&w);
    cr_assert_eq(st, NN_OK, "nn workload failed: %s", nn_strstatus(st));
    cr_assert_gt(h.allocs, 5);
    assert_heap_untouched(&w);
    assert_balanced(&h);
}

Test(allocator, nn_failed_allocations_are_cleaned_up)
{
    static hook h;
    hook_init(&h);
    cr_assert_eq(nn_workload(&h), NN_OK);
    long total = h.attempts;
    cr_assert_gt(total, 5);
    cr_log_info("failing each of %ld nn allocations in turn", total);
    int enomem = 0;
    for (long n = 1; n <= total; n++) {
        hook_init(&h);
        h.fail_at = n;
        int st = nn_workload(&h);
        cr_assert(st == NN_OK || st == NN_ENOMEM, "failing allocation %ld gave status %d (%s)", n,
                  st, nn_strstatus(st));
        enomem += st == NN_ENOMEM;
        assert_balanced(&h);
    }
    cr_assert_gt(enomem, 0, "some failure was reported");
}
#endif
