#include "fmnist.h"

#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

static int read_all(const char *path, unsigned char **buf, size_t *len, char *why, size_t cap)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(why, cap, "cannot open %s (install the Debian package dataset-fashion-mnist)", path);
        return -1;
    }
    size_t size = 1 << 20, n = 0;
    unsigned char *p = malloc(size);
    for (;;) {
        if (!p) {
            gzclose(f);
            snprintf(why, cap, "out of memory reading %s", path);
            return -1;
        }
        int got = gzread(f, p + n, (unsigned)(size - n));
        if (got < 0) {
            free(p);
            gzclose(f);
            snprintf(why, cap, "%s: corrupt gzip data", path);
            return -1;
        }
        n += (size_t)got;
        if (got == 0)
            break;
        if (n == size) {
            size *= 2;
            unsigned char *q = realloc(p, size);
            if (!q)
                free(p);
            p = q;
        }
    }
    gzclose(f);
    *buf = p;
    *len = n;
    return 0;
}

static unsigned be32(const unsigned char *p)
{
    return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | p[3];
}

int fmnist_load(fmnist *d, const char *split, size_t limit, char *why, size_t cap)
{
    char path[512];
    unsigned char *img = NULL, *lab = NULL;
    size_t ni, nl;
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", FMNIST_DIR, split);
    if (read_all(path, &img, &ni, why, cap))
        return -1;
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", FMNIST_DIR, split);
    if (read_all(path, &lab, &nl, why, cap)) {
        free(img);
        return -1;
    }
    if (ni < 16 || nl < 8 || be32(img) != 2051 || be32(lab) != 2049) {
        snprintf(why, cap, "%s: not IDX image/label files", split);
        free(img), free(lab);
        return -1;
    }
    size_t n = be32(img + 4), dim = (size_t)be32(img + 8) * be32(img + 12);
    if (be32(lab + 4) != n || ni < 16 + n * dim || nl < 8 + n) {
        snprintf(why, cap, "%s: image and label files disagree or are truncated", split);
        free(img), free(lab);
        return -1;
    }
    if (limit && limit < n)
        n = limit;
    d->n = n;
    d->dim = dim;
    d->x = malloc(n * dim * sizeof *d->x);
    d->y = malloc(n);
    if (!d->x || !d->y) {
        snprintf(why, cap, "out of memory");
        free(img), free(lab), free(d->x), free(d->y);
        return -1;
    }
    for (size_t i = 0; i < n * dim; i++)
        d->x[i] = img[16 + i] / 255.0;
    for (size_t i = 0; i < n; i++)
        d->y[i] = lab[8 + i];
    free(img), free(lab);
    return 0;
}

void fmnist_free(fmnist *d)
{
    free(d->x);
    free(d->y);
    d->x = NULL;
    d->y = NULL;
}
