/* params_io.c -- the parameter file (layout in docs/nn.md):
 *
 *   "NNPARAMS" | u32 version | u32 count |
 *   count x ( u16 name length | name | u8 ndim | u32 rows | u32 cols |
 *             rows*cols f64 values ) |
 *   u32 CRC-32 of every byte before it
 *
 * All integers and doubles little-endian, whatever the host. Loading
 * validates the whole file against the store first and copies only then,
 * so a bad file leaves the store untouched. */
#if !defined(_POSIX_C_SOURCE) && (defined(__unix__) || defined(__APPLE__))
#define _POSIX_C_SOURCE 200809L /* stat, fstat, fileno: before any header */
#endif
#include "params_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>
#define NN__HAVE_STAT 1
#else
#define NN__HAVE_STAT 0 /* no file type check; every file is read to its end */
#endif

#define MAGIC "NNPARAMS"
#define MAGIC_LEN 8
#define VERSION 1u
#define HEADER_LEN (MAGIC_LEN + 4 + 4)
#define TENSOR_HDR_LEN (1 + 4 + 4) /* after the name: ndim, rows, cols */

/* ---- little-endian encoding ---- */

void nn__put_u16(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}
void nn__put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}
void nn__put_u64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}
void nn__put_f64(unsigned char *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v); /* IEEE-754 binary64 bits */
    nn__put_u64(b, v);
}
uint32_t nn__get_u16(const unsigned char *b) { return (uint32_t)b[0] | (uint32_t)b[1] << 8; }
uint32_t nn__get_u32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
uint64_t nn__get_u64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}
double nn__get_f64(const unsigned char *b)
{
    const uint64_t v = nn__get_u64(b);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}
#define put_u16 nn__put_u16
#define put_u32 nn__put_u32
#define put_f64 nn__put_f64
#define get_u16 nn__get_u16
#define get_u32 nn__get_u32
#define get_f64 nn__get_f64

/* ---- saving ---- */

typedef struct writer {
    FILE *f;
    uint32_t crc;
    bool failed;
} writer;

static void put(writer *w, const void *data, size_t n)
{
    if (w->failed)
        return;
    w->crc = nn_crc32(w->crc, data, n);
    if (fwrite(data, 1, n, w->f) != n)
        w->failed = true;
}

int nn_params_save(nn_params *p, const char *path)
{
    if (!p)
        return NN_EMISUSE;
    if (!path)
        return nn__fail(p->msg, NN_EMISUSE, "params: save: path is NULL");
    if (p->count > UINT32_MAX)
        return nn__fail(p->msg, NN_ELIMIT, "params: save: too many tensors for the format");
    writer w = {fopen(path, "wb"), 0, false};
    if (!w.f)
        return nn__fail(p->msg, NN_EIO, "params: cannot open '%s' for writing", path);

    unsigned char b[512];
    memcpy(b, MAGIC, MAGIC_LEN);
    put_u32(b + MAGIC_LEN, VERSION);
    put_u32(b + MAGIC_LEN + 4, (uint32_t)p->count);
    put(&w, b, HEADER_LEN);
    for (size_t i = 0; i < p->count; i++) {
        const nn__entry *e = p->list[i];
        const size_t len = strlen(e->name);
        put_u16(b, (uint32_t)len);
        memcpy(b + 2, e->name, len);
        b[2 + len] = (unsigned char)e->shape.ndim;
        put_u32(b + 3 + len, e->shape.rows);
        put_u32(b + 7 + len, e->shape.cols);
        put(&w, b, 2 + len + TENSOR_HDR_LEN);
        const double *v = p->val + e->offset;
        for (size_t k = 0; k < e->size;) { /* values in chunks of 64 */
            size_t n = e->size - k < 64 ? e->size - k : 64;
            for (size_t j = 0; j < n; j++)
                put_f64(b + 8 * j, v[k + j]);
            put(&w, b, 8 * n);
            k += n;
        }
    }
    uint32_t crc = w.crc;
    put_u32(b, crc);
    put(&w, b, 4);
    if (fclose(w.f) != 0)
        w.failed = true;
    if (w.failed) {
        remove(path); /* do not leave a partial file behind */
        return nn__fail(p->msg, NN_EIO, "params: writing '%s' failed", path);
    }
    return NN_OK;
}

/* ---- loading ---- */

/* Why path is not a regular file ("a directory", ...), or NULL when it is
 * one or that cannot be told (no such file: fopen says so; no POSIX). */
static const char *not_regular(const char *path, FILE *f)
{
#if NN__HAVE_STAT
    struct stat st;
    if (f ? fstat(fileno(f), &st) != 0 : stat(path, &st) != 0)
        return NULL;
    if (S_ISREG(st.st_mode))
        return NULL;
    if (S_ISDIR(st.st_mode))
        return "a directory";
    if (S_ISFIFO(st.st_mode))
        return "a FIFO";
    if (S_ISCHR(st.st_mode))
        return "a character device";
    if (S_ISBLK(st.st_mode))
        return "a block device";
    if (S_ISSOCK(st.st_mode))
        return "a socket";
    return "of another kind";
#else
    (void)path, (void)f;
    return NULL;
#endif
}

/* A hint for the first buffer: the size the system reports (0 for files
 * under /proc, which are read to their end all the same). */
static size_t size_hint(FILE *f)
{
#if NN__HAVE_STAT
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && (uintmax_t)st.st_size < NN__MAX_DOUBLES)
        return (size_t)st.st_size + 1; /* + 1: the read that finds the end needs no growth */
#else
    (void)f;
#endif
    return 512;
}

/* Reads the whole file into memory from the store's allocator, to its end
 * whatever size the system reported; *cap is the block's size. Refuses
 * anything but a regular file before opening it (a FIFO would block). */
int nn__slurp(nn__mem *mem, char *msg, const char *who, const char *path, unsigned char **out,
              size_t *len, size_t *cap)
{
    const char *kind = not_regular(path, NULL);
    if (kind)
        return nn__fail(msg, NN_EIO, "%s: cannot load '%s': not a regular file (%s)", who, path,
                        kind);
    FILE *f = fopen(path, "rb");
    if (!f)
        return nn__fail(msg, NN_EIO, "%s: cannot open '%s' for reading", who, path);
    if ((kind = not_regular(path, f)) != NULL) { /* replaced since the check */
        fclose(f);
        return nn__fail(msg, NN_EIO, "%s: cannot load '%s': not a regular file (%s)", who, path,
                        kind);
    }
    size_t n = 0, size = size_hint(f);
    unsigned char *buf = nn__alloc(mem, size);
    int st = NN_OK;
    if (!buf)
        st = nn__fail(msg, NN_ENOMEM, "%s: out of memory reading '%s' (%zu bytes)", who, path,
                      size);
    while (st == NN_OK) {
        n += fread(buf + n, 1, size - n, f);
        if (n < size) { /* the end, or an error */
            if (ferror(f))
                st = nn__fail(msg, NN_EIO, "%s: reading '%s' failed", who, path);
            break;
        }
        if (size > NN__MAX_DOUBLES / 2) {
            st = nn__fail(msg, NN_ELIMIT, "%s: '%s' is too large (more than %zu bytes)", who,
                          path, size);
            break;
        }
        unsigned char *nb = nn__realloc(mem, buf, size, 2 * size);
        if (!nb) {
            st = nn__fail(msg, NN_ENOMEM, "%s: out of memory reading '%s' (%zu bytes)", who,
                          path, 2 * size);
            break;
        }
        buf = nb;
        size *= 2;
    }
    fclose(f);
    if (st != NN_OK) {
        nn__free(mem, buf, size);
        return st;
    }
    *out = buf;
    *len = n;
    *cap = size;
    return NN_OK;
}

/* One tensor as the file describes it. */
typedef struct record {
    char name[NN_NAME_MAX];
    ad_shape shape;
    size_t values;              /* offset of the first value byte */
} record;

/* Parses the tensor header at *pos (bounds-checked); advances *pos past
 * the values. */
static int parse_record(nn_params *p, const char *path, const unsigned char *buf, size_t len,
                        size_t *pos, uint32_t k, record *r)
{
    /* The last 4 bytes are the CRC: tensors must end before them. */
    const size_t body = len >= 4 ? len - 4 : 0;
    size_t at = *pos;
    if (body < at || body - at < 2)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is truncated or corrupted: it ends inside the header of "
                        "tensor %u (%zu bytes)", path, (unsigned)k, len);
    const uint32_t nlen = get_u16(buf + at);
    if (nlen == 0 || nlen >= NN_NAME_MAX)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is malformed: tensor %u has a name of %u bytes (1..%d)",
                        path, (unsigned)k, (unsigned)nlen, NN_NAME_MAX - 1);
    at += 2;
    if (body - at < nlen + TENSOR_HDR_LEN)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is truncated or corrupted: it ends inside the header of "
                        "tensor %u (%zu bytes)", path, (unsigned)k, len);
    memcpy(r->name, buf + at, nlen);
    r->name[nlen] = '\0';
    if (memchr(r->name, '\0', nlen))
        return nn__fail(p->msg, NN_EFORMAT, "params: '%s' is malformed: tensor %u's name holds a NUL",
                        path, (unsigned)k);
    at += nlen;
    r->shape.ndim = buf[at];
    r->shape.rows = get_u32(buf + at + 1);
    r->shape.cols = get_u32(buf + at + 5);
    at += TENSOR_HDR_LEN;
    if (!nn__shape_ok(r->shape))
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is malformed: %s has ndim %d and %ux%u, not a valid shape",
                        path, r->name, r->shape.ndim, (unsigned)r->shape.rows,
                        (unsigned)r->shape.cols);
    const size_t n = ad_shape_size(r->shape);
    if (n > NN__MAX_DOUBLES || body - at < 8 * n)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is truncated or corrupted: %s needs %zu bytes of values at "
                        "offset %zu but the file has %zu bytes", path, r->name, 8 * n, at, len);
    r->values = at;
    *pos = at + 8 * n;
    return NN_OK;
}

/* Checks the whole file against the store; on success decodes it into the
 * store. seen has room for p->count flags. */
static int check_and_copy(nn_params *p, const char *path, const unsigned char *buf, size_t len,
                          unsigned char *seen)
{
    if (len < MAGIC_LEN)
        return nn__fail(p->msg, NN_EFORMAT, "params: '%s' is truncated: %zu bytes, no header",
                        path, len);
    if (memcmp(buf, MAGIC, MAGIC_LEN) != 0)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is not an nn parameter file (bad magic)", path);
    if (len < HEADER_LEN + 4)
        return nn__fail(p->msg, NN_EFORMAT, "params: '%s' is truncated: %zu bytes, the header "
                        "and CRC alone need %d", path, len, HEADER_LEN + 4);
    const uint32_t version = get_u32(buf + MAGIC_LEN);
    if (version != VERSION)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' has format version %u; this library reads version %u",
                        path, (unsigned)version, VERSION);
    const uint32_t count = get_u32(buf + MAGIC_LEN + 4);

    /* Structure first: every record inside the file, nothing after. */
    size_t pos = HEADER_LEN;
    record r;
    for (uint32_t k = 0; k < count; k++) {
        int st = parse_record(p, path, buf, len, &pos, k, &r);
        if (st != NN_OK)
            return st;
    }
    if (len - pos > 4) /* parse_record keeps 4 bytes for the CRC: never fewer */
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is malformed: %zu unexpected bytes after the last tensor",
                        path, len - pos - 4);
    const uint32_t stored = get_u32(buf + pos), crc = nn_crc32(0, buf, pos);
    if (stored != crc)
        return nn__fail(p->msg, NN_EFORMAT,
                        "params: '%s' is corrupted: stored CRC32 %08x, computed %08x", path,
                        (unsigned)stored, (unsigned)crc);

    /* Then the match with the store: same names, same shapes, no repeats. */
    char a[48], b[48];
    memset(seen, 0, p->count);
    pos = HEADER_LEN;
    for (uint32_t k = 0; k < count; k++) {
        parse_record(p, path, buf, len, &pos, k, &r); /* checked above */
        nn__entry *e;
        HASH_FIND(hh, p->by_name, r.name, strlen(r.name), e);
        if (!e)
            return nn__fail(p->msg, NN_ENOTFOUND,
                            "params: '%s' holds a tensor %s that the model does not have", path,
                            r.name);
        if (e->shape.ndim != r.shape.ndim || e->shape.rows != r.shape.rows ||
            e->shape.cols != r.shape.cols)
            return nn__fail(p->msg, NN_ESHAPE, "params: %s is %s in '%s' but %s in the model",
                            r.name, nn__shape_str(r.shape, a, sizeof a), path,
                            nn__shape_str(e->shape, b, sizeof b));
        const size_t i = e->index;
        if (seen[i])
            return nn__fail(p->msg, NN_EFORMAT, "params: '%s' is malformed: %s appears twice",
                            path, r.name);
        seen[i] = 1;
    }
    for (size_t i = 0; i < p->count; i++)
        if (!seen[i])
            return nn__fail(p->msg, NN_ENOTFOUND,
                            "params: '%s' holds %u tensors but the model has %zu (%s is missing)",
                            path, (unsigned)count, p->count, p->list[i]->name);

    /* All valid: commit. */
    pos = HEADER_LEN;
    for (uint32_t k = 0; k < count; k++) {
        parse_record(p, path, buf, len, &pos, k, &r);
        nn__entry *e;
        HASH_FIND(hh, p->by_name, r.name, strlen(r.name), e);
        double *v = p->val + e->offset;
        for (size_t j = 0; j < e->size; j++)
            v[j] = get_f64(buf + r.values + 8 * j);
    }
    return NN_OK;
}

int nn_params_load(nn_params *p, const char *path)
{
    if (!p)
        return NN_EMISUSE;
    if (!path)
        return nn__fail(p->msg, NN_EMISUSE, "params: load: path is NULL");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    int st = nn__slurp(&p->mem, p->msg, "params", path, &buf, &len, &cap);
    if (st != NN_OK)
        return st;
    unsigned char *seen = nn__alloc(&p->mem, p->count ? p->count : 1);
    if (!seen)
        st = nn__fail(p->msg, NN_ENOMEM, "params: out of memory loading '%s'", path);
    else
        st = check_and_copy(p, path, buf, len, seen);
    nn__free(&p->mem, seen, p->count ? p->count : 1);
    nn__free(&p->mem, buf, cap);
    return st;
}
