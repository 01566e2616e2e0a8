/* fuzz_model_load.c -- libFuzzer harness for nn's parameter-file loader.
 *
 * nn reads parameter files from a path only (nn_params_load,
 * nn_model_load), so the input bytes are written to a temporary file made
 * once per process (mkstemp) and rewritten for every input. The same bytes
 * are then loaded into four stores:
 *   - three models of fixed shape (a sigmoid neuron 3 -> 1, an MLP
 *     4-8-3 relu/identity, a 2-3-1 tanh/identity stack whose tensor names
 *     clash with the MLP's at other shapes), with nn_model_load;
 *   - a bare store built to mirror the file (the names and shapes the file
 *     declares, when it parses), with nn_params_load, so that every
 *     well-formed file also reaches the copy-in path.
 * The harness parses the file itself, after the layout in docs/nn.md, and
 * predicts each outcome: NN_EFORMAT for a malformed file (bad magic or
 * version, a record that overruns, trailing bytes, a bad CRC), else
 * NN_ENOTFOUND / NN_ESHAPE / NN_EFORMAT from matching the records against
 * the store in file order, else NN_OK. Invariants, each a
 * __builtin_trap() when broken:
 *  - the status is the predicted one (or NN_ENOMEM when the allocator hook
 *    failed an allocation, which it does for one input in four, at an
 *    allocation chosen by a hash of the input);
 *  - a failed load leaves the store bit for bit as it was and names its
 *    reason (non-empty message);
 *  - a successful load holds exactly the file's doubles, bit for bit;
 *  - a loaded model is usable: nn_model_predict for one sample and for a
 *    batch of three matches a forward pass computed here from the loaded
 *    parameters (to 1e-9 of the terms' magnitude, when finite), also after
 *    an out-of-memory failure of an earlier predict; nn_model_save then
 *    loading that file again gives back the same values, and when the
 *    input's records were in the store's order the saved file is the input
 *    byte for byte;
 *  - every block goes back to the hook, with the size it was allocated
 *    with. */
#define _POSIX_C_SOURCE 200809L
#include <autodiff/autodiff.h>
#include <nn/nn.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *g_stage = "setup";

static void violated(const char *what, int line)
{
    fprintf(stderr, "fuzz_model_load: invariant violated at '%s' (line %d): %s\n", g_stage, line,
            what);
    __builtin_trap();
}
#define CHECK(c)                                                                              \
    do {                                                                                      \
        if (!(c))                                                                             \
            violated(#c, __LINE__);                                                           \
    } while (0)

/* ---- the allocator hook: sizes checked, failures injected ---- */

#define HDR 16

/* As in fuzz_api.c: a few large freed blocks (tape node chunks) are kept
 * for the next allocation of the same size, refilled with garbage, to
 * spare an mmap and its page faults per input. */
#define BIG_BLOCK ((size_t)64 << 10)
static struct {
    unsigned char *base;
    size_t size;
} g_cache[8];

static unsigned char *cache_take(size_t nsize)
{
    for (int i = 0; i < 8; i++)
        if (g_cache[i].base && g_cache[i].size == nsize) {
            unsigned char *b = g_cache[i].base;
            g_cache[i].base = NULL;
            memset(b + HDR, 0xA5, nsize < 16384 ? nsize : 16384);
            return b;
        }
    return NULL;
}

static int cache_put(unsigned char *base, size_t size)
{
    for (int i = 0; i < 8; i++)
        if (!g_cache[i].base) {
            g_cache[i].base = base;
            g_cache[i].size = size;
            return 1;
        }
    return 0;
}

/* Leaves the CRC and the reference math out of the coverage feedback. */
#if defined(__clang__)
#define NOCOV __attribute__((no_sanitize("coverage")))
#else
#define NOCOV
#endif

typedef struct hook {
    unsigned long count, fail_at, failures;
    long live_blocks;
} hook;

static void *hook_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    hook *h = ud;
    unsigned char *base = ptr ? (unsigned char *)ptr - HDR : NULL;
    if (base) {
        size_t size;
        memcpy(&size, base, sizeof size);
        CHECK(size == osize);
    } else {
        CHECK(osize == 0);
    }
    if (nsize == 0) {
        if (base) {
            if (osize < BIG_BLOCK || !cache_put(base, osize))
                free(base);
            h->live_blocks--;
        }
        return NULL;
    }
    if (++h->count == h->fail_at || nsize > ((size_t)64 << 20)) {
        h->failures++;
        return NULL;
    }
    unsigned char *nb = !base && nsize >= BIG_BLOCK ? cache_take(nsize) : NULL;
    if (!nb)
        nb = realloc(base, nsize + HDR);
    if (!nb) {
        h->failures++;
        return NULL;
    }
    memcpy(nb, &nsize, sizeof nsize);
    if (!base)
        h->live_blocks++;
    return nb + HDR;
}

/* ---- the file, parsed here after docs/nn.md ---- */

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

NOCOV static uint32_t crc32_ref(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

#define MAXREC 1024

typedef struct record {
    char name[64];
    ad_shape shape;
    size_t values; /* offset of the first value byte */
} record;

typedef struct parsed {
    int ok; /* 1: well-formed (magic, version, records, no trailing bytes, CRC);
               0: malformed; -1: not known here */
    uint32_t count;
    record rec[MAXREC];
} parsed;

static int shape_ok(ad_shape s)
{
    switch (s.ndim) {
    case 0: return s.rows == 1 && s.cols == 1;
    case 1: return s.rows >= 1 && s.cols == 1;
    case 2: return s.rows >= 1 && s.cols >= 1;
    default: return 0;
    }
}

static void parse(const uint8_t *b, size_t len, parsed *p)
{
    p->ok = 0;
    p->count = 0;
    if (len < 20 || memcmp(b, "NNPARAMS", 8) != 0 || le32(b + 8) != 1)
        return;
    const uint32_t count = le32(b + 12);
    const size_t body = len - 4; /* the CRC is the last 4 bytes */
    size_t at = 16;
    for (uint32_t k = 0; k < count; k++) {
        if (k >= MAXREC) {
            p->ok = -1; /* more records than the harness keeps: no claim */
            return;
        }
        if (body - at < 2)
            return;
        const size_t nlen = (size_t)b[at] | (size_t)b[at + 1] << 8;
        at += 2;
        if (nlen == 0 || nlen > 63 || body - at < nlen + 9 || memchr(b + at, 0, nlen))
            return;
        record *r = &p->rec[k];
        memcpy(r->name, b + at, nlen);
        r->name[nlen] = '\0';
        at += nlen;
        r->shape.ndim = b[at];
        r->shape.rows = le32(b + at + 1);
        r->shape.cols = le32(b + at + 5);
        at += 9;
        if (!shape_ok(r->shape))
            return;
        const uint64_t n = (uint64_t)r->shape.rows * r->shape.cols;
        if (n > (body - at) / 8)
            return;
        r->values = at;
        at += 8 * (size_t)n;
    }
    if (at != body || le32(b + body) != crc32_ref(b, body))
        return;
    p->ok = 1;
    p->count = count;
}

/* The status loading p into store s must give. */
static int predict_status(const parsed *p, nn_params *s)
{
    if (p->ok != 1)
        return p->ok == 0 ? NN_EFORMAT : -1;
    const size_t n = nn_params_count(s);
    unsigned char seen[256] = {0};
    if (n > sizeof seen)
        return -1;
    for (uint32_t k = 0; k < p->count; k++) {
        size_t i;
        if (nn_params_find(s, p->rec[k].name, &i) != NN_OK)
            return NN_ENOTFOUND;
        const ad_shape a = nn_params_shape(s, i), b = p->rec[k].shape;
        if (a.ndim != b.ndim || a.rows != b.rows || a.cols != b.cols)
            return NN_ESHAPE;
        if (seen[i])
            return NN_EFORMAT;
        seen[i] = 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!seen[i])
            return NN_ENOTFOUND;
    return NN_OK;
}

/* The store's records in the file order is the store's own order. */
static int in_store_order(const parsed *p, nn_params *s)
{
    if (p->count != nn_params_count(s))
        return 0;
    for (uint32_t k = 0; k < p->count; k++)
        if (strcmp(nn_params_name(s, k), p->rec[k].name) != 0)
            return 0;
    return 1;
}

/* ---- temporary files ---- */
/* Made once per process, rewritten for every input, removed at exit. */

static char g_path[64], g_path2[64];

static void cleanup(void)
{
    if (g_path[0])
        unlink(g_path);
    if (g_path2[0])
        unlink(g_path2);
}

/* In FUZZ_TMPDIR, else /dev/shm (tmpfs: rewriting a file on a disk file
 * system can wait for the disk at every input), else TMPDIR or /tmp. */
static void make_temp(char *path, size_t cap)
{
    const char *dir = getenv("FUZZ_TMPDIR");
    if (!dir || !*dir)
        dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!dir || !*dir || strlen(dir) >= 32)
        dir = "/tmp";
    snprintf(path, cap, "%s/fuzz_model_load.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("fuzz_model_load: mkstemp");
        abort();
    }
    close(fd);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
}

static uint8_t g_saved[1 << 16];

static size_t read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    size_t n = fread(g_saved, 1, sizeof g_saved, f);
    fclose(f);
    return n;
}

/* ---- the stores ---- */

typedef struct arch {
    int nlayers;
    uint32_t sizes[4];
    nn_act act[3];
    int neuron;
} arch;

static const arch ARCHS[3] = {
    {1, {3, 1}, {NN_ACT_SIGMOID}, 1},
    {2, {4, 8, 3}, {NN_ACT_RELU, NN_ACT_IDENTITY}, 0},
    {2, {2, 3, 1}, {NN_ACT_TANH, NN_ACT_IDENTITY}, 0},
};

static nn_model *build(const arch *a, hook *h)
{
    nn_model_opts o = {hook_fn, h, 7};
    nn_model *m = nn_model_new(&o);
    CHECK(m != NULL);
    for (int l = 0; l < a->nlayers; l++) {
        int st = a->neuron ? nn_model_add_neuron(m, a->sizes[0], a->act[0])
                           : nn_model_add_dense(m, a->sizes[l], a->sizes[l + 1], a->act[l]);
        CHECK(st == NN_OK);
    }
    return m;
}

static double act(nn_act a, double z)
{
    switch (a) {
    case NN_ACT_RELU: return z > 0 ? z : 0;
    case NN_ACT_TANH: return tanh(z);
    case NN_ACT_SIGMOID: return 1.0 / (1.0 + exp(-z));
    default: return z;
    }
}

/* The forward pass computed here from the store, checked against out. */
NOCOV static void check_predict(const arch *a, nn_model *m, const double *X, uint32_t batch,
                          const double *out)
{
    nn_params *p = nn_model_params(m);
    for (uint32_t r = 0; r < batch; r++) {
        double cur[8], mag[8], next[8], nmag[8];
        const uint32_t n0 = a->sizes[0];
        for (uint32_t j = 0; j < n0; j++)
            cur[j] = X[r * n0 + j], mag[j] = fabs(cur[j]);
        for (int l = 0; l < a->nlayers; l++) {
            char wn[32], bn[32];
            snprintf(wn, sizeof wn, "%s.W", nn_model_layer_name(m, (size_t)l));
            snprintf(bn, sizeof bn, "%s.b", nn_model_layer_name(m, (size_t)l));
            size_t wi = 0, bi = 0;
            CHECK(nn_params_find(p, wn, &wi) == NN_OK && nn_params_find(p, bn, &bi) == NN_OK);
            const double *W = nn_params_value(p, wi), *b = nn_params_value(p, bi);
            const uint32_t n = a->sizes[l], k = a->sizes[l + 1];
            for (uint32_t i = 0; i < k; i++) {
                double z = 0, zm = 0;
                for (uint32_t j = 0; j < n; j++)
                    z += W[i * n + j] * cur[j], zm += fabs(W[i * n + j]) * mag[j];
                z += b[i];
                zm += fabs(b[i]);
                next[i] = act(a->act[l], z);
                /* every activation here is 1-Lipschitz: the magnitude of
                 * the terms bounds the error that reaches the next layer */
                nmag[i] = zm + fabs(next[i]);
            }
            memcpy(cur, next, sizeof next);
            memcpy(mag, nmag, sizeof nmag);
        }
        for (uint32_t i = 0; i < a->sizes[a->nlayers]; i++) {
            const double got = out[r * a->sizes[a->nlayers] + i];
            if (isfinite(cur[i]) && isfinite(mag[i]))
                CHECK(fabs(got - cur[i]) <= 1e-9 * mag[i] + 1e-280);
        }
    }
}

static double g_before[4096];

/* Loads the input into model m (or bare store s) and checks the outcome. */
static void load_one(const parsed *pf, const uint8_t *data, size_t size, nn_model *m, nn_params *s,
                     const arch *a, hook *h, int inject)
{
    nn_params *p = m ? nn_model_params(m) : s;
    const int want = predict_status(pf, p);
    const size_t n = nn_params_size(p);
    CHECK(n <= sizeof g_before / sizeof g_before[0]);
    if (n)
        memcpy(g_before, nn_params_values(p), n * sizeof(double));
    const unsigned long fails = h->failures;
    if (inject)
        h->fail_at = h->count + (unsigned long)inject;
    g_stage = m ? "nn_model_load" : "nn_params_load";
    const int st = m ? nn_model_load(m, g_path) : nn_params_load(p, g_path);
    h->fail_at = 0;
    const char *msg = m ? nn_model_errmsg(m) : nn_params_errmsg(p);
    CHECK(msg != NULL);
    if (st != NN_OK) {
        CHECK(msg[0] != '\0');
        CHECK(n == 0 || memcmp(g_before, nn_params_values(p), n * sizeof(double)) == 0);
    }
    if (st == NN_ENOMEM)
        CHECK(h->failures > fails);
    else if (want >= 0)
        CHECK(st == want);
    if (st != NN_OK)
        return;
    /* exactly the file's doubles */
    for (uint32_t k = 0; k < pf->count; k++) {
        size_t i;
        CHECK(nn_params_find(p, pf->rec[k].name, &i) == NN_OK);
        const double *v = nn_params_value(p, i);
        const size_t cnt = ad_shape_size(pf->rec[k].shape);
        for (size_t j = 0; j < cnt; j++) {
            uint64_t bits = 0, got;
            for (int q = 0; q < 8; q++)
                bits |= (uint64_t)data[pf->rec[k].values + 8 * j + (size_t)q] << (8 * q);
            memcpy(&got, &v[j], sizeof got);
            CHECK(got == bits);
        }
    }
    if (!m)
        return;

    /* usable: predict (once possibly out of memory), save, load again */
    g_stage = "nn_model_predict";
    double X[3 * 8], out[3 * 8], out1[8];
    const uint32_t nin = nn_model_input_size(m);
    for (uint32_t i = 0; i < 3 * nin; i++)
        X[i] = (double)((int)(i * 5 % 11) - 5) / 4.0;
    if (inject)
        h->fail_at = h->count + (unsigned long)inject;
    int ps = nn_model_predict(m, X, 3, out);
    h->fail_at = 0;
    CHECK(ps == NN_OK || (ps == NN_ENOMEM && h->failures > fails));
    if (ps != NN_OK)
        CHECK(nn_model_errmsg(m)[0] != '\0');
    ps = nn_model_predict(m, X, 3, out);
    CHECK(ps == NN_OK);
    check_predict(a, m, X, 3, out);
    CHECK(nn_model_predict(m, X + nin, 1, out1) == NN_OK);
    check_predict(a, m, X + nin, 1, out1);

    g_stage = "nn_model_save";
    const size_t np = nn_params_size(p);
    memcpy(g_before, nn_params_values(p), np * sizeof(double));
    CHECK(nn_model_save(m, g_path2) == NN_OK);
    const size_t saved = read_file(g_path2);
    if (in_store_order(pf, p))
        CHECK(saved == size && memcmp(g_saved, data, size) == 0);
    g_stage = "reload";
    CHECK(nn_model_load(m, g_path2) == NN_OK);
    CHECK(memcmp(g_before, nn_params_values(p), np * sizeof(double)) == 0);
}

/* A bare store with the names and shapes the file declares. */
static nn_params *mirror(const parsed *pf, hook *h)
{
    if (pf->ok != 1)
        return NULL;
    uint64_t total = 0;
    for (uint32_t k = 0; k < pf->count; k++)
        total += ad_shape_size(pf->rec[k].shape);
    if (total > 4096 || pf->count > 256)
        return NULL;
    nn_params *s = nn_params_new(hook_fn, h);
    CHECK(s != NULL);
    for (uint32_t k = 0; k < pf->count; k++) {
        int st = nn_params_add(s, pf->rec[k].name, pf->rec[k].shape, NULL);
        CHECK(st == NN_OK || st == NN_EEXIST); /* a repeated name stays one tensor */
    }
    return s;
}

static uint32_t fnv(const uint8_t *d, size_t n)
{
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < n; i++)
        x = (x ^ d[i]) * 16777619u;
    return x;
}

/* FUZZ_MODEL_LOAD_SEEDS=dir: write the seed corpus -- a file saved by
 * nn_model_save for each model above (initialised from its seed), one of
 * a bare store with a scalar, a vector and a matrix, and the empty store's
 * -- into dir, and exit. */
static void write_seeds(const char *dir)
{
    char path[512];
    hook h = {0, 0, 0, 0};
    for (int i = 0; i < 3; i++) {
        nn_model *m = build(&ARCHS[i], &h);
        snprintf(path, sizeof path, "%s/model-%d.nnp", dir, i + 1);
        CHECK(nn_model_save(m, path) == NN_OK);
        nn_model_free(m);
    }
    nn_params *s = nn_params_new(hook_fn, &h);
    CHECK(s != NULL);
    snprintf(path, sizeof path, "%s/params-empty.nnp", dir);
    CHECK(nn_params_save(s, path) == NN_OK);
    const ad_shape shapes[3] = {{1, 1, 0}, {3, 1, 1}, {2, 2, 2}};
    const char *names[3] = {"scale", "bias", "mix.W"};
    for (int i = 0; i < 3; i++) {
        size_t k;
        CHECK(nn_params_add(s, names[i], shapes[i], &k) == NN_OK);
        double *v = nn_params_value(s, k);
        for (size_t j = 0; j < ad_shape_size(shapes[i]); j++)
            v[j] = 0.25 * (double)(i + 1) - 0.5 * (double)j;
    }
    snprintf(path, sizeof path, "%s/params-3.nnp", dir);
    CHECK(nn_params_save(s, path) == NN_OK);
    nn_params_free(s);
    CHECK(h.live_blocks == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *dir = getenv("FUZZ_MODEL_LOAD_SEEDS");
    if (dir && *dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static parsed pf;
    if (!g_path[0]) {
        make_temp(g_path, sizeof g_path);
        make_temp(g_path2, sizeof g_path2);
        atexit(cleanup);
    }
    if (size > sizeof g_saved)
        return 0;
    g_stage = "write";
    write_file(g_path, data, size);
    parse(data, size, &pf);

    /* one input in four runs with an allocation failing, the k-th after
     * each load or predict starts */
    const uint32_t hash = fnv(data, size);
    const int inject = (hash & 3) == 0 ? 1 + (int)((hash >> 2) % 6) : 0;

    hook h = {0, 0, 0, 0};
    for (int i = 0; i < 3; i++) {
        g_stage = "build";
        nn_model *m = build(&ARCHS[i], &h);
        load_one(&pf, data, size, m, NULL, &ARCHS[i], &h, inject);
        nn_model_free(m);
    }
    g_stage = "mirror";
    nn_params *s = mirror(&pf, &h);
    if (s) {
        load_one(&pf, data, size, NULL, s, NULL, &h, inject);
        nn_params_free(s);
    }
    g_stage = "teardown";
    CHECK(h.live_blocks == 0);
    return 0;
}
