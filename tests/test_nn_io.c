/* test_nn_io.c -- the parameter file: byte layout, round trip, and every
 * bad file (truncated at every length, bad magic, other version, bad CRC,
 * trailing bytes, shape mismatch, missing and extra tensors), each with
 * its message and with the model left untouched. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <nn/nn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmp_path(const char *tag)
{
    static char path[256]; /* test-local: each test runs in its own process */
    snprintf(path, sizeof path, "/tmp/test_nn_io_%ld_%s.nnp", (long)getpid(), tag);
    return path;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void write_all(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

static void put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

/* Recomputes the trailing CRC after an edit, so only the edit is wrong. */
static void fix_crc(unsigned char *b, size_t len)
{
    put_u32(b + len - 4, nn_crc32(0, b, len - 4));
}

static nn_model *model(const uint32_t *sizes, size_t n, uint64_t seed)
{
    nn_model_opts o = {NULL, NULL, seed};
    nn_model *m = nn_model_new(&o);
    cr_assert_eq(nn_model_add_mlp(m, sizes, n, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK);
    return m;
}

static const uint32_t SIZES[] = {4, 3, 2};

/* A saved model's file, and a second model (another seed) to load into. */
typedef struct fixture {
    nn_model *src, *dst;
    unsigned char *file;
    size_t len;
    double *before; /* dst's values before any load */
    size_t n;
} fixture;

static fixture setup(const char *tag)
{
    fixture f;
    f.src = model(SIZES, 3, 1);
    f.dst = model(SIZES, 3, 2);
    const char *p = tmp_path(tag);
    cr_assert_eq(nn_model_save(f.src, p), NN_OK, "%s", nn_model_errmsg(f.src));
    f.file = read_all(p, &f.len);
    remove(p);
    f.n = nn_params_size(nn_model_params(f.dst));
    f.before = malloc(f.n * sizeof(double));
    memcpy(f.before, nn_params_values(nn_model_params(f.dst)), f.n * sizeof(double));
    return f;
}

static void teardown(fixture *f)
{
    nn_model_free(f->src);
    nn_model_free(f->dst);
    free(f->file);
    free(f->before);
}

/* Loads bytes into dst; checks the status and that dst is untouched. */
static const char *load_bad(fixture *f, const char *tag, const unsigned char *b, size_t len,
                            int status)
{
    const char *p = tmp_path(tag);
    write_all(p, b, len);
    int st = nn_model_load(f->dst, p);
    remove(p);
    cr_assert_eq(st, status, "%s: status %d (%s)", tag, st, nn_model_errmsg(f->dst));
    cr_assert_eq(memcmp(nn_params_values(nn_model_params(f->dst)), f->before, f->n * sizeof(double)),
                 0, "%s: the model was changed by a failed load", tag);
    return nn_model_errmsg(f->dst);
}

Test(nn_io, byte_layout)
{
    fixture f = setup("layout");
    /* header: magic, version 1, 4 tensors */
    cr_assert_eq(memcmp(f.file, "NNPARAMS", 8), 0);
    cr_assert(f.file[8] == 1 && f.file[9] == 0 && f.file[10] == 0 && f.file[11] == 0);
    cr_assert(f.file[12] == 4 && f.file[13] == 0);
    /* first tensor: name "dense1.W" (8 bytes), ndim 2, 3 x 4, 12 doubles */
    const unsigned char *r = f.file + 16;
    cr_assert(r[0] == 8 && r[1] == 0);
    cr_assert_eq(memcmp(r + 2, "dense1.W", 8), 0);
    cr_assert(r[10] == 2 && r[11] == 3 && r[15] == 4);
    const double w0 = nn_params_value(nn_model_params(f.src), 0)[0];
    uint64_t bits;
    memcpy(&bits, &w0, 8);
    for (int i = 0; i < 8; i++) /* little-endian double */
        cr_assert_eq(r[19 + i], (unsigned char)(bits >> (8 * i)));
    /* size: header + per tensor (2 + name + 9 + 8 n) + CRC */
    const size_t want = 16 + (2 + 8 + 9 + 8 * 12) + (2 + 8 + 9 + 8 * 3) + (2 + 8 + 9 + 8 * 6) +
                        (2 + 8 + 9 + 8 * 2) + 4;
    cr_assert_eq(f.len, want);
    /* CRC32 of everything before it, little-endian */
    const uint32_t crc = nn_crc32(0, f.file, f.len - 4);
    const unsigned char *c = f.file + f.len - 4;
    cr_assert_eq((uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24, crc);
    teardown(&f);
}

Test(nn_io, round_trip)
{
    fixture f = setup("rt");
    const char *p = tmp_path("rt2");
    write_all(p, f.file, f.len);
    cr_assert_eq(nn_model_load(f.dst, p), NN_OK, "%s", nn_model_errmsg(f.dst));
    remove(p);
    nn_params *a = nn_model_params(f.src), *b = nn_model_params(f.dst);
    cr_assert_eq(memcmp(nn_params_values(a), nn_params_values(b), f.n * sizeof(double)), 0,
                 "bit-for-bit equal after a round trip");
    double X[4] = {0.5, -1, 2, 0.25}, ya[2], yb[2];
    nn_model_predict(f.src, X, 1, ya);
    nn_model_predict(f.dst, X, 1, yb);
    cr_assert(ya[0] == yb[0] && ya[1] == yb[1]);
    /* saving the loaded model gives the same bytes */
    cr_assert_eq(nn_model_save(f.dst, p), NN_OK);
    size_t len2;
    unsigned char *again = read_all(p, &len2);
    remove(p);
    cr_assert(len2 == f.len && memcmp(again, f.file, f.len) == 0);
    free(again);
    /* special values survive */
    nn_params_values(a)[0] = -0.0;
    nn_params_values(a)[1] = 1e-310;
    nn_params_values(a)[2] = -1e300;
    cr_assert_eq(nn_model_save(f.src, p), NN_OK);
    cr_assert_eq(nn_model_load(f.dst, p), NN_OK);
    remove(p);
    cr_assert_eq(memcmp(nn_params_values(a), nn_params_values(b), f.n * sizeof(double)), 0);
    teardown(&f);
}

Test(nn_io, truncated_at_every_length)
{
    fixture f = setup("trunc");
    for (size_t len = 0; len < f.len; len++) {
        const char *msg = load_bad(&f, "trunc2", f.file, len, NN_EFORMAT);
        cr_assert(strstr(msg, "is truncated"), "length %zu: %s", len, msg);
    }
    const char *msg = load_bad(&f, "trunc3", f.file, 5, NN_EFORMAT);
    cr_assert(strstr(msg, "is truncated: 5 bytes, no header"), "%s", msg);
    msg = load_bad(&f, "trunc4", f.file, 17, NN_EFORMAT);
    cr_assert(strstr(msg, "is truncated: 17 bytes, the header and CRC alone need 20"), "%s", msg);
    msg = load_bad(&f, "trunc5", f.file, 60, NN_EFORMAT);
    cr_assert(strstr(msg, "is truncated or corrupted: dense1.W needs 96 bytes of values at "
                          "offset 35 but the file has 60 bytes"), "%s", msg);
    msg = load_bad(&f, "trunc6", f.file, f.len - 2, NN_EFORMAT);
    cr_assert(strstr(msg, "is truncated or corrupted: dense2.b needs 16 bytes of values at "
                          "offset 260 but the file has 278 bytes"), "%s", msg);
    msg = load_bad(&f, "trunc7", f.file, 140, NN_EFORMAT);
    cr_assert(strstr(msg, "is truncated or corrupted: it ends inside the header of tensor 1 "
                          "(140 bytes)"), "%s", msg);
    teardown(&f);
}

Test(nn_io, bad_magic)
{
    fixture f = setup("magic");
    f.file[0] = 'X';
    fix_crc(f.file, f.len);
    const char *msg = load_bad(&f, "magic2", f.file, f.len, NN_EFORMAT);
    cr_assert(strstr(msg, "is not an nn parameter file (bad magic)"), "%s", msg);
    const unsigned char text[] = "hello, this is not a parameter file at all";
    msg = load_bad(&f, "magic3", text, sizeof text, NN_EFORMAT);
    cr_assert(strstr(msg, "bad magic"), "%s", msg);
    teardown(&f);
}

Test(nn_io, other_version)
{
    fixture f = setup("version");
    put_u32(f.file + 8, 2);
    fix_crc(f.file, f.len); /* a well-formed file of another version */
    const char *msg = load_bad(&f, "version2", f.file, f.len, NN_EFORMAT);
    cr_assert(strstr(msg, "has format version 2; this library reads version 1"), "%s", msg);
    teardown(&f);
}

Test(nn_io, bad_crc)
{
    fixture f = setup("crc");
    /* a byte in each of dense1.W's 12 values (offset 35), then in dense2.b's (offset 260) */
    const size_t at_list[] = {35, 44, 53, 62, 71, 80, 89, 98, 107, 116, 125, 130, 260, 275};
    for (size_t i = 0; i < sizeof at_list / sizeof *at_list; i++) {
        const size_t at = at_list[i];
        f.file[at] ^= 0x10;
        const char *msg = load_bad(&f, "crc2", f.file, f.len, NN_EFORMAT);
        cr_assert(strstr(msg, "is corrupted: stored CRC32"), "byte %zu: %s", at, msg);
        f.file[at] ^= 0x10;
    }
    f.file[f.len - 1] ^= 1;
    const char *msg = load_bad(&f, "crc3", f.file, f.len, NN_EFORMAT);
    cr_assert(strstr(msg, "is corrupted"), "%s", msg);
    teardown(&f);
}

Test(nn_io, malformed)
{
    fixture f = setup("malformed");
    unsigned char *b = malloc(f.len + 3);
    memcpy(b, f.file, f.len);
    b[f.len] = 0; /* three trailing bytes after the CRC */
    b[f.len + 1] = 0;
    b[f.len + 2] = 0;
    const char *msg = load_bad(&f, "mal2", b, f.len + 3, NN_EFORMAT);
    cr_assert(strstr(msg, "is malformed: 3 unexpected bytes after the last tensor"), "%s", msg);
    memcpy(b, f.file, f.len);
    b[16] = 0; /* empty name */
    fix_crc(b, f.len);
    msg = load_bad(&f, "mal3", b, f.len, NN_EFORMAT);
    cr_assert(strstr(msg, "is malformed: tensor 0 has a name of 0 bytes (1..63)"), "%s", msg);
    memcpy(b, f.file, f.len);
    b[26] = 7; /* ndim 7 */
    fix_crc(b, f.len);
    msg = load_bad(&f, "mal4", b, f.len, NN_EFORMAT);
    cr_assert(strstr(msg, "is malformed: dense1.W has ndim 7 and 3x4, not a valid shape"), "%s", msg);
    memcpy(b, f.file, f.len);
    memcpy(b + 16 + 2 + 8 + 9 + 96 + 2, "dense1.W", 8); /* second tensor renamed to the first */
    fix_crc(b, f.len);
    msg = load_bad(&f, "mal5", b, f.len, NN_ESHAPE); /* 3 in the file vs 3x4: shape first */
    cr_assert(strstr(msg, "dense1.W is a vector of length 3 in"), "%s", msg);
    free(b);
    teardown(&f);
}

Test(nn_io, shape_mismatch)
{
    fixture f = setup("shape");
    const uint32_t other[] = {4, 5, 2};
    nn_model *m = model(other, 3, 9);
    const size_t n = nn_params_size(nn_model_params(m));
    double *before = malloc(n * sizeof(double));
    memcpy(before, nn_params_values(nn_model_params(m)), n * sizeof(double));
    const char *p = tmp_path("shape2");
    write_all(p, f.file, f.len);
    cr_assert_eq(nn_model_load(m, p), NN_ESHAPE);
    char want[512];
    snprintf(want, sizeof want, "params: dense1.W is 3x4 in '%s' but 5x4 in the model", p);
    cr_assert_str_eq(nn_model_errmsg(m), want);
    cr_assert_eq(memcmp(nn_params_values(nn_model_params(m)), before, n * sizeof(double)), 0);
    remove(p);
    free(before);
    nn_model_free(m);
    teardown(&f);
}

Test(nn_io, missing_and_extra_tensors)
{
    fixture f = setup("count");
    const char *p = tmp_path("count2");
    write_all(p, f.file, f.len);
    const uint32_t deeper[] = {4, 3, 2, 2};
    nn_model *m = model(deeper, 4, 3);
    cr_assert_eq(nn_model_load(m, p), NN_ENOTFOUND);
    cr_assert(strstr(nn_model_errmsg(m), "holds 4 tensors but the model has 6 (dense3.W is missing)"),
              "%s", nn_model_errmsg(m));
    /* the other way: the file has tensors the model does not */
    cr_assert_eq(nn_model_save(m, p), NN_OK);
    const char *msg;
    cr_assert_eq(nn_model_load(f.dst, p), NN_ENOTFOUND);
    msg = nn_model_errmsg(f.dst);
    cr_assert(strstr(msg, "holds a tensor dense3.W that the model does not have"), "%s", msg);
    cr_assert_eq(memcmp(nn_params_values(nn_model_params(f.dst)), f.before, f.n * sizeof(double)), 0);
    remove(p);
    nn_model_free(m);
    teardown(&f);
}

Test(nn_io, file_errors)
{
    nn_model *m = model(SIZES, 3, 1);
    cr_assert_eq(nn_model_load(m, "/nonexistent/dir/x.nnp"), NN_EIO);
    cr_assert_str_eq(nn_model_errmsg(m), "params: cannot open '/nonexistent/dir/x.nnp' for reading");
    cr_assert_eq(nn_model_save(m, "/nonexistent/dir/x.nnp"), NN_EIO);
    cr_assert_str_eq(nn_model_errmsg(m), "params: cannot open '/nonexistent/dir/x.nnp' for writing");
    cr_assert_eq(nn_model_save(m, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "params: save: path is NULL");
    cr_assert_eq(nn_model_load(m, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "params: load: path is NULL");
    cr_assert_eq(nn_model_save(NULL, "x"), NN_EMISUSE);
    cr_assert_eq(nn_params_load(NULL, "x"), NN_EMISUSE);
    /* a full device fails on write or close */
    if (access("/dev/full", W_OK) == 0) {
        cr_assert_eq(nn_model_save(m, "/dev/full"), NN_EIO);
        cr_assert_str_eq(nn_model_errmsg(m), "params: writing '/dev/full' failed");
    }
    nn_model_free(m);
}

/* What is not a regular file is refused before anything is read: a
 * directory (fopen succeeds on one, and its size reads as LONG_MAX), a
 * FIFO (opening it would wait for a writer) and a device. */
Test(nn_io, not_a_regular_file)
{
    nn_model *m = model(SIZES, 3, 1);
    nn_params *p = nn_model_params(m);
    const size_t n = nn_params_size(p);
    double *before = malloc(n * sizeof(double));
    memcpy(before, nn_params_values(p), n * sizeof(double));

    cr_assert_eq(nn_model_load(m, "/tmp"), NN_EIO, "%s", nn_model_errmsg(m));
    cr_assert_str_eq(nn_model_errmsg(m), "params: cannot load '/tmp': not a regular file (a directory)");
    cr_assert_eq(nn_params_load(p, "/tmp/"), NN_EIO, "%s", nn_params_errmsg(p));
    cr_assert_str_eq(nn_params_errmsg(p), "params: cannot load '/tmp/': not a regular file (a directory)");

    const char *fifo = tmp_path("fifo");
    remove(fifo);
    if (mkfifo(fifo, 0600) == 0) {
        cr_assert_eq(nn_model_load(m, fifo), NN_EIO, "%s", nn_model_errmsg(m));
        cr_assert(strstr(nn_model_errmsg(m), "': not a regular file (a FIFO)"), "%s",
                  nn_model_errmsg(m));
        remove(fifo);
    }
    if (access("/dev/null", R_OK) == 0) {
        cr_assert_eq(nn_model_load(m, "/dev/null"), NN_EIO, "%s", nn_model_errmsg(m));
        cr_assert_str_eq(nn_model_errmsg(m),
                         "params: cannot load '/dev/null': not a regular file (a character "
                         "device)");
    }
    cr_assert_eq(memcmp(nn_params_values(p), before, n * sizeof(double)), 0,
                 "a refused load changed the model");
    free(before);
    nn_model_free(m);
}

/* A file under /proc is regular but reports st_size 0: it is read to its
 * end, so the complaint is about its content, not "truncated: 0 bytes". */
Test(nn_io, proc_file_read_to_eof)
{
    const char *path = "/proc/self/status";
    if (access(path, R_OK) != 0)
        cr_skip_test("no %s here", path);
    nn_model *m = model(SIZES, 3, 1);
    cr_assert_eq(nn_model_load(m, path), NN_EFORMAT, "%s", nn_model_errmsg(m));
    cr_assert_str_eq(nn_model_errmsg(m),
                     "params: '/proc/self/status' is not an nn parameter file (bad magic)");
    nn_model_free(m);
}

Test(nn_io, empty_store_round_trip)
{
    nn_params *p = nn_params_new(NULL, NULL), *q = nn_params_new(NULL, NULL);
    const char *path = tmp_path("empty");
    cr_assert_eq(nn_params_save(p, path), NN_OK);
    cr_assert_eq(nn_params_load(q, path), NN_OK, "%s", nn_params_errmsg(q));
    nn_params_add(q, "w", ad_shape_vec(2), NULL);
    cr_assert_eq(nn_params_load(q, path), NN_ENOTFOUND);
    cr_assert(strstr(nn_params_errmsg(q), "holds 0 tensors but the model has 1 (w is missing)"));
    remove(path);
    nn_params_free(p);
    nn_params_free(q);
}
