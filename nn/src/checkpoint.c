/* checkpoint.c -- a training run's whole state in one CRC-protected file
 * (layout in docs/distributed.md), written atomically:
 *
 *   "NNCHKPT1" | u32 version | u32 ranks | u32 optimizer kind | u32 count |
 *   u64 size | u64 steps | f64 lr, momentum, beta1, beta2, eps |
 *   f64 beta1^t, beta2^t | u64 epoch | u64 position |
 *   4 x u64 caller's generator | 4 x u64 model's generator |
 *   count x ( u16 name length | name | u8 ndim | u32 rows | u32 cols ) |
 *   size f64 values | size f64 first moments (momentum, Adam) |
 *   size f64 second moments (Adam) | u32 CRC-32 of every byte before it
 *
 * Little-endian whatever the host. Loading checks everything -- structure,
 * CRC, then the match with the trainer -- before it changes anything. */
#if !defined(_POSIX_C_SOURCE) && (defined(__unix__) || defined(__APPLE__))
#define _POSIX_C_SOURCE 200809L /* fsync, fileno, open: before any header */
#endif
#include "params_impl.h"

#include <stdio.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#define NN__HAVE_FSYNC 1
#else
#define NN__HAVE_FSYNC 0 /* fflush only: the rename is still atomic */
#endif

#define CK_MAGIC "NNCHKPT1"
#define CK_MAGIC_LEN 8
#define CK_VERSION 1u
#define CK_HEADER_LEN 176 /* through the model's generator */
#define CK_TENSOR_HDR (1 + 4 + 4)

/* Moment blocks stored after the values: 0 SGD, 1 momentum, 2 Adam. */
static unsigned nstate(nn_optim_kind k)
{
    return k == NN_OPTIM_ADAM ? 2u : k == NN_OPTIM_MOMENTUM ? 1u : 0u;
}

typedef struct ck_writer {
    FILE *f;
    uint32_t crc;
    bool failed;
} ck_writer;

static void ck_put(ck_writer *w, const void *data, size_t n)
{
    if (w->failed)
        return;
    w->crc = nn_crc32(w->crc, data, n);
    if (fwrite(data, 1, n, w->f) != n)
        w->failed = true;
}

static void ck_put_doubles(ck_writer *w, const double *v, size_t n)
{
    unsigned char b[512];
    for (size_t k = 0; k < n;) { /* in chunks of 64 */
        const size_t c = n - k < 64 ? n - k : 64;
        for (size_t j = 0; j < c; j++)
            nn__put_f64(b + 8 * j, v[k + j]);
        ck_put(w, b, 8 * c);
        k += c;
    }
}

static void ck_put_rng(unsigned char *b, const nn_rng *r)
{
    for (int i = 0; i < 4; i++)
        nn__put_u64(b + 8 * i, r->s_[i]);
}

/* Flushes f to the disk (fsync): the data are there before the rename. */
static bool ck_sync(FILE *f)
{
    if (fflush(f) != 0)
        return false;
#if NN__HAVE_FSYNC
    if (fsync(fileno(f)) != 0)
        return false;
#endif
    return true;
}

/* fsync of the directory holding path, so that the rename itself is on
 * the disk. buf has room for path. Best effort: a file system that cannot
 * sync a directory does not fail the save. */
static void ck_sync_dir(const char *path, char *buf)
{
#if NN__HAVE_FSYNC
    const char *slash = strrchr(path, '/');
    if (slash == path)
        strcpy(buf, "/");
    else if (slash) {
        memcpy(buf, path, (size_t)(slash - path));
        buf[slash - path] = '\0';
    } else
        strcpy(buf, ".");
    const int fd = open(buf, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
#else
    (void)path, (void)buf;
#endif
}

static int ck_write(nn_trainer *tr, FILE *f, const nn_checkpoint *ck)
{
    nn_params *p = tr->m->params;
    const nn_optim *o = tr->opt;
    ck_writer w = {f, 0, false};
    unsigned char b[CK_HEADER_LEN];
    memcpy(b, CK_MAGIC, CK_MAGIC_LEN);
    nn__put_u32(b + 8, CK_VERSION);
    nn__put_u32(b + 12, nn_trainer_ranks(tr));
    nn__put_u32(b + 16, (uint32_t)o->o.kind);
    nn__put_u32(b + 20, (uint32_t)p->count);
    nn__put_u64(b + 24, (uint64_t)p->size);
    nn__put_u64(b + 32, o->t);
    nn__put_f64(b + 40, o->o.lr);
    nn__put_f64(b + 48, o->o.momentum);
    nn__put_f64(b + 56, o->o.beta1);
    nn__put_f64(b + 64, o->o.beta2);
    nn__put_f64(b + 72, o->o.eps);
    nn__put_f64(b + 80, o->b1t);
    nn__put_f64(b + 88, o->b2t);
    nn__put_u64(b + 96, ck->epoch);
    nn__put_u64(b + 104, ck->position);
    ck_put_rng(b + 112, &ck->rng);
    ck_put_rng(b + 144, &tr->m->rng);
    ck_put(&w, b, CK_HEADER_LEN);
    for (size_t i = 0; i < p->count; i++) {
        const nn__entry *e = p->list[i];
        unsigned char t[2 + NN_NAME_MAX + CK_TENSOR_HDR];
        const size_t len = strlen(e->name);
        nn__put_u16(t, (uint32_t)len);
        memcpy(t + 2, e->name, len);
        t[2 + len] = (unsigned char)e->shape.ndim;
        nn__put_u32(t + 3 + len, e->shape.rows);
        nn__put_u32(t + 7 + len, e->shape.cols);
        ck_put(&w, t, 2 + len + CK_TENSOR_HDR);
    }
    ck_put_doubles(&w, p->val, p->size);
    if (nstate(o->o.kind) >= 1)
        ck_put_doubles(&w, o->m1, p->size);
    if (nstate(o->o.kind) >= 2)
        ck_put_doubles(&w, o->m2, p->size);
    const uint32_t crc = w.crc;
    nn__put_u32(b, crc);
    ck_put(&w, b, 4);
    return w.failed ? NN_EIO : NN_OK;
}

int nn_trainer_save(nn_trainer *tr, const char *path, const nn_checkpoint *ck)
{
    if (!tr)
        return NN_EMISUSE;
    if (!path || !ck)
        return nn__fail(tr->msg, NN_EMISUSE, "checkpoint: save: %s is NULL",
                        !path ? "path" : "the checkpoint");
    nn_params *p = tr->m->params;
    if (nn_params_version(p) != tr->version)
        return nn__fail(tr->msg, NN_EMISUSE,
                        "checkpoint: save: the model's parameters changed after the trainer was made");
    if (p->count > UINT32_MAX)
        return nn__fail(tr->msg, NN_ELIMIT, "checkpoint: save: too many tensors for the format");
    nn__mem *mem = &tr->m->mem;
    const size_t plen = strlen(path), cap = plen + 5;
    char *tmp = nn__alloc(mem, cap);
    if (!tmp)
        return nn__fail(tr->msg, NN_ENOMEM, "checkpoint: out of memory saving '%s'", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int st = NN_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f)
        st = nn__fail(tr->msg, NN_EIO, "checkpoint: cannot open '%s' for writing", tmp);
    else {
        if (ck_write(tr, f, ck) != NN_OK)
            st = nn__fail(tr->msg, NN_EIO, "checkpoint: writing '%s' failed", tmp);
        else if (!ck_sync(f))
            st = nn__fail(tr->msg, NN_EIO, "checkpoint: flushing '%s' to disk failed", tmp);
        if (fclose(f) != 0 && st == NN_OK)
            st = nn__fail(tr->msg, NN_EIO, "checkpoint: closing '%s' failed", tmp);
        if (st == NN_OK && rename(tmp, path) != 0)
            st = nn__fail(tr->msg, NN_EIO, "checkpoint: cannot rename '%s' to '%s'", tmp, path);
        if (st != NN_OK)
            remove(tmp); /* the previous checkpoint at path stays as it was */
        else
            ck_sync_dir(path, tmp);
    }
    nn__free(mem, tmp, cap);
    return st;
}

/* ---- loading ---- */

static void ck_get_rng(nn_rng *r, const unsigned char *b)
{
    for (int i = 0; i < 4; i++)
        r->s_[i] = nn__get_u64(b + 8 * i);
}

/* Checks buf (len bytes) against tr; on success copies it in. */
static int ck_check_and_copy(nn_trainer *tr, const char *path, const unsigned char *buf,
                             size_t len, nn_checkpoint *ck)
{
    char *msg = tr->msg;
    nn_params *p = tr->m->params;
    nn_optim *o = tr->opt;
    if (len < CK_MAGIC_LEN || memcmp(buf, CK_MAGIC, CK_MAGIC_LEN) != 0)
        return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is not an nn checkpoint (bad magic)",
                        path);
    if (len < CK_HEADER_LEN + 4)
        return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is truncated: %zu bytes, the header and "
                        "CRC alone need %d", path, len, CK_HEADER_LEN + 4);
    const uint32_t version = nn__get_u32(buf + 8);
    if (version != CK_VERSION)
        return nn__fail(msg, NN_EFORMAT,
                        "checkpoint: '%s' has format version %u; this library reads version %u",
                        path, (unsigned)version, CK_VERSION);
    const uint32_t kind = nn__get_u32(buf + 16), count = nn__get_u32(buf + 20);
    const uint64_t size = nn__get_u64(buf + 24);
    if (kind >= NN_OPTIM_COUNT)
        return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is malformed: optimizer kind %u",
                        path, (unsigned)kind);
    /* structure: the tensor table, then exactly (1 + state) x size doubles */
    size_t pos = CK_HEADER_LEN, total = 0;
    const size_t body = len - 4;
    for (uint32_t k = 0; k < count; k++) {
        if (body - pos < 2 || body - pos - 2 < nn__get_u16(buf + pos) + (size_t)CK_TENSOR_HDR)
            return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is truncated or corrupted: it ends "
                            "inside the table entry of tensor %u (%zu bytes)", path, (unsigned)k,
                            len);
        const size_t nlen = nn__get_u16(buf + pos);
        if (nlen == 0 || nlen >= NN_NAME_MAX)
            return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is malformed: tensor %u has a name "
                            "of %zu bytes (1..%d)", path, (unsigned)k, nlen, NN_NAME_MAX - 1);
        const unsigned char *sh = buf + pos + 2 + nlen;
        const ad_shape s = {nn__get_u32(sh + 1), nn__get_u32(sh + 5), sh[0]};
        if (!nn__shape_ok(s))
            return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is malformed: tensor %u has no "
                            "valid shape", path, (unsigned)k);
        total += ad_shape_size(s); /* each at most 2^64 / 2^32 ... bounded below by size */
        if (total > NN__MAX_DOUBLES)
            return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is malformed: too many values",
                            path);
        pos += 2 + nlen + CK_TENSOR_HDR;
    }
    if (total != size)
        return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is malformed: the tensors hold %zu "
                        "values but the header says %llu", path, total, (unsigned long long)size);
    const size_t want = pos + 8 * total * (1 + nstate((nn_optim_kind)kind)) + 4;
    if (len != want)
        return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is %s: %zu bytes where its header and "
                        "tensor table call for %zu", path, len < want ? "truncated" : "malformed",
                        len, want);
    const uint32_t stored = nn__get_u32(buf + len - 4), crc = nn_crc32(0, buf, len - 4);
    if (stored != crc)
        return nn__fail(msg, NN_EFORMAT,
                        "checkpoint: '%s' is corrupted: stored CRC32 %08x, computed %08x", path,
                        (unsigned)stored, (unsigned)crc);

    /* a valid file: is it this trainer's architecture and optimizer? */
    if (kind != (uint32_t)o->o.kind)
        return nn__fail(msg, NN_ESHAPE, "checkpoint: '%s' holds %s state but the trainer uses %s",
                        path, nn_optim_name((nn_optim_kind)kind), nn_optim_name(o->o.kind));
    if (count != p->count)
        return nn__fail(msg, NN_ESHAPE, "checkpoint: '%s' is of another model: %u tensors, the "
                        "model has %zu", path, (unsigned)count, p->count);
    pos = CK_HEADER_LEN;
    for (uint32_t k = 0; k < count; k++) {
        const size_t nlen = nn__get_u16(buf + pos);
        const unsigned char *sh = buf + pos + 2 + nlen;
        const ad_shape s = {nn__get_u32(sh + 1), nn__get_u32(sh + 5), sh[0]};
        const nn__entry *e = p->list[k];
        char a[48], b[48];
        if (strlen(e->name) != nlen || memcmp(e->name, buf + pos + 2, nlen) != 0)
            return nn__fail(msg, NN_ESHAPE, "checkpoint: '%s' is of another model: tensor %u is "
                            "%.*s there but %s in the model", path, (unsigned)k, (int)nlen,
                            (const char *)buf + pos + 2, e->name);
        if (s.ndim != e->shape.ndim || s.rows != e->shape.rows || s.cols != e->shape.cols)
            return nn__fail(msg, NN_ESHAPE, "checkpoint: '%s' is of another model: %s is %s "
                            "there but %s in the model", path, e->name,
                            nn__shape_str(s, a, sizeof a), nn__shape_str(e->shape, b, sizeof b));
        pos += 2 + nlen + CK_TENSOR_HDR;
    }
    nn_optim_opts oo = o->o;
    oo.lr = nn__get_f64(buf + 40);
    oo.momentum = nn__get_f64(buf + 48);
    oo.beta1 = nn__get_f64(buf + 56);
    oo.beta2 = nn__get_f64(buf + 64);
    oo.eps = nn__get_f64(buf + 72);
    char why[NN__MSG_CAP];
    if (nn_optim_check(&oo, why, sizeof why) != NN_OK)
        return nn__fail(msg, NN_EFORMAT, "checkpoint: '%s' is malformed: %s", path, why);

    /* all valid: commit */
    o->o = oo;
    o->t = nn__get_u64(buf + 32);
    o->b1t = nn__get_f64(buf + 80);
    o->b2t = nn__get_f64(buf + 88);
    ck_get_rng(&tr->m->rng, buf + 144);
    double *dst[3] = {p->val, o->m1, o->m2};
    for (unsigned blk = 0; blk < 1 + nstate(o->o.kind); blk++, pos += 8 * total)
        for (size_t j = 0; j < total; j++)
            dst[blk][j] = nn__get_f64(buf + pos + 8 * j);
    if (ck) {
        ck->ranks = nn__get_u32(buf + 12);
        ck->epoch = nn__get_u64(buf + 96);
        ck->position = nn__get_u64(buf + 104);
        ck_get_rng(&ck->rng, buf + 112);
    }
    return NN_OK;
}

int nn_trainer_resume(nn_trainer *tr, const char *path, nn_checkpoint *ck)
{
    if (!tr)
        return NN_EMISUSE;
    if (!path)
        return nn__fail(tr->msg, NN_EMISUSE, "checkpoint: resume: path is NULL");
    if (nn_params_version(tr->m->params) != tr->version)
        return nn__fail(tr->msg, NN_EMISUSE, "checkpoint: resume: the model's parameters changed "
                        "after the trainer was made");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    int st = nn__slurp(&tr->m->mem, tr->msg, "checkpoint", path, &buf, &len, &cap);
    if (st != NN_OK)
        return st;
    st = ck_check_and_copy(tr, path, buf, len, ck);
    nn__free(&tr->m->mem, buf, cap);
    return st;
}
