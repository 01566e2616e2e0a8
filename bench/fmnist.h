/* fmnist.h -- Fashion-MNIST from the Debian package dataset-fashion-mnist
 * (gzip'd IDX files), for the benchmarks. */
#ifndef AD_BENCH_FMNIST_H
#define AD_BENCH_FMNIST_H

#include <stddef.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct fmnist {
    size_t n;           /* images */
    size_t dim;         /* 784 */
    double *x;          /* n x dim, pixels / 255 */
    unsigned char *y;   /* labels 0..9 */
} fmnist;

/* Loads at most limit images (0: all) of "train" or "t10k". Returns 0, or
 * -1 with a reason in why. */
int fmnist_load(fmnist *d, const char *split, size_t limit, char *why, size_t cap);
void fmnist_free(fmnist *d);

#endif
