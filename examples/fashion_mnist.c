/* fashion_mnist.c -- trains a 784 -> 128 -> 10 ReLU network on
 * Fashion-MNIST with softmax cross-entropy and mini-batches, every
 * gradient from the tape's reverse sweep. The trainer records the forward
 * pass and loss once per batch size and replays them for every batch.
 *
 * Data: the gzip'd IDX files of the Debian package dataset-fashion-mnist
 * (/usr/share/datasets/fashion-mnist), read with zlib.
 *
 *   fashion_mnist [--epochs N] [--batch N] [--lr X] [--hidden N]
 *                 [--optimizer sgd|momentum|adam] [--seed N] [--limit N]
 *                 [--data DIR] [--out FILE]
 */
#define _POSIX_C_SOURCE 200809L
#include <nn/nn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
#define PIXELS 784
#define CLASSES 10

typedef struct options {
    int epochs;
    uint32_t batch;
    double lr;          /* 0: the optimizer's default */
    uint32_t hidden;
    nn_optim_kind optimizer;
    uint64_t seed;
    long limit;         /* 0: all training images */
    int cosine;         /* 1: cosine decay of the learning rate to 0 */
    const char *data;
    const char *out;
} options;

typedef struct dataset {
    unsigned char *images; /* n x 784 */
    unsigned char *labels; /* n       */
    long n;
} dataset;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fashion_mnist [options]\n"
            "  --epochs N       passes over the training set (default 10)\n"
            "  --batch N        mini-batch size (default 64)\n"
            "  --lr X           learning rate (default: 0.002 adam, 0.05 momentum, 0.1 sgd)\n"
            "  --hidden N       hidden units (default 128)\n"
            "  --optimizer K    sgd, momentum or adam (default adam)\n"
            "  --seed N         initialisation and shuffling seed (default 1)\n"
            "  --schedule S     cosine (decay the learning rate to 0 over the run) or\n"
            "                   constant (default cosine)\n"
            "  --limit N        use only the first N training images\n"
            "  --data DIR       dataset directory (default " DATA_DIR ")\n"
            "  --out FILE       where to save the model (default fashion_mnist.nnp)\n");
}

static int parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "fashion_mnist: %s needs a value (or unknown option)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        char *end;
        if (!strcmp(a, "--epochs")) {
            o->epochs = (int)strtol(v, &end, 10);
        } else if (!strcmp(a, "--batch")) {
            o->batch = (uint32_t)strtoul(v, &end, 10);
        } else if (!strcmp(a, "--lr")) {
            o->lr = strtod(v, &end);
        } else if (!strcmp(a, "--hidden")) {
            o->hidden = (uint32_t)strtoul(v, &end, 10);
        } else if (!strcmp(a, "--seed")) {
            o->seed = strtoull(v, &end, 10);
        } else if (!strcmp(a, "--limit")) {
            o->limit = strtol(v, &end, 10);
        } else if (!strcmp(a, "--data")) {
            o->data = v;
            continue;
        } else if (!strcmp(a, "--out")) {
            o->out = v;
            continue;
        } else if (!strcmp(a, "--schedule")) {
            if (strcmp(v, "cosine") && strcmp(v, "constant")) {
                fprintf(stderr, "fashion_mnist: unknown schedule '%s' (cosine, constant)\n", v);
                return -1;
            }
            o->cosine = !strcmp(v, "cosine");
            continue;
        } else if (!strcmp(a, "--optimizer")) {
            if (!strcmp(v, "sgd"))
                o->optimizer = NN_OPTIM_SGD;
            else if (!strcmp(v, "momentum"))
                o->optimizer = NN_OPTIM_MOMENTUM;
            else if (!strcmp(v, "adam"))
                o->optimizer = NN_OPTIM_ADAM;
            else {
                fprintf(stderr, "fashion_mnist: unknown optimizer '%s' (sgd, momentum, adam)\n", v);
                return -1;
            }
            continue;
        } else {
            fprintf(stderr, "fashion_mnist: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
        if (*end != '\0' || end == v) {
            fprintf(stderr, "fashion_mnist: bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    if (o->epochs < 1 || o->batch < 1 || o->hidden < 1 || o->limit < 0 || !(o->lr >= 0)) {
        fprintf(stderr, "fashion_mnist: epochs, batch and hidden must be positive, "
                        "limit and lr not negative\n");
        return -1;
    }
    return 0;
}

/* Reads a gzip'd IDX file: a big-endian header (magic, dimensions), then
 * unsigned bytes. Returns the data (malloc'd) and the item count, or NULL.
 * *missing is set when the file cannot be opened at all. */
static unsigned char *read_idx(const char *path, unsigned magic, long *count, int *missing)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        *missing = 1;
        return NULL;
    }
    unsigned char hdr[16];
    const int ndims = magic == 0x803 ? 3 : 1;
    const int hlen = 4 + 4 * ndims;
    unsigned char *data = NULL;
    if (gzread(f, hdr, (unsigned)hlen) != hlen)
        goto bad;
    unsigned long d[4] = {0};
    for (int i = 0; i < 1 + ndims; i++)
        d[i] = (unsigned long)hdr[4 * i] << 24 | (unsigned long)hdr[4 * i + 1] << 16 |
               (unsigned long)hdr[4 * i + 2] << 8 | hdr[4 * i + 3];
    if (d[0] != magic || (ndims == 3 && d[2] * d[3] != PIXELS) || d[1] > 1000000)
        goto bad;
    const size_t item = ndims == 3 ? PIXELS : 1, bytes = d[1] * item;
    data = malloc(bytes ? bytes : 1);
    if (!data || gzread(f, data, (unsigned)bytes) != (int)bytes)
        goto bad;
    gzclose(f);
    *count = (long)d[1];
    return data;
bad:
    fprintf(stderr, "fashion_mnist: %s is not a valid IDX file\n", path);
    free(data);
    gzclose(f);
    return NULL;
}

static int load_set(const char *dir, const char *prefix, dataset *ds, int *missing)
{
    char ip[1024], lp[1024];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    long ni = 0, nl = 0;
    ds->images = read_idx(ip, 0x803, &ni, missing);
    ds->labels = ds->images ? read_idx(lp, 0x801, &nl, missing) : NULL;
    if (!ds->images || !ds->labels) {
        if (*missing)
            fprintf(stderr, "fashion_mnist: cannot open %s\n", ds->images ? lp : ip);
        return -1;
    }
    if (ni != nl) {
        fprintf(stderr, "fashion_mnist: %s has %ld images but %ld labels\n", prefix, ni, nl);
        return -1;
    }
    ds->n = ni;
    return 0;
}

/* Pixels to [0, 1]. */
static void to_input(const unsigned char *img, double *x)
{
    for (int j = 0; j < PIXELS; j++)
        x[j] = img[j] * (1.0 / 255.0);
}

static void progress(int epoch, int epochs, long done, long total, double loss)
{
    const int width = 30, fill = (int)(width * done / total);
    fprintf(stderr, "\repoch %d/%d [", epoch, epochs);
    for (int i = 0; i < width; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %3ld%%  loss %.4f ", 100 * done / total, loss);
    fflush(stderr);
}

/* Fraction of test images whose largest output is the label. */
static double accuracy(nn_model *m, const dataset *test, double *X, double *out, uint32_t chunk,
                       int *err)
{
    long correct = 0;
    for (long i = 0; i < test->n; i += chunk) {
        const uint32_t b = (uint32_t)(test->n - i < chunk ? test->n - i : chunk);
        for (uint32_t r = 0; r < b; r++)
            to_input(test->images + (size_t)(i + r) * PIXELS, X + (size_t)r * PIXELS);
        if (nn_model_predict(m, X, b, out) != NN_OK) {
            *err = 1;
            return 0;
        }
        for (uint32_t r = 0; r < b; r++) {
            int best = 0;
            for (int c = 1; c < CLASSES; c++)
                if (out[r * CLASSES + c] > out[r * CLASSES + best])
                    best = c;
            correct += best == test->labels[i + r];
        }
    }
    return (double)correct / (double)test->n;
}

int main(int argc, char **argv)
{
    options o = {10, 64, 0, 128, NN_OPTIM_ADAM, 1, 0, 1, DATA_DIR, "fashion_mnist.nnp"};
    if (parse_args(argc, argv, &o) != 0)
        return 1;

    dataset train = {0}, test = {0};
    int missing = 0;
    if (load_set(o.data, "train", &train, &missing) != 0 ||
        load_set(o.data, "t10k", &test, &missing) != 0) {
        if (missing)
            fprintf(stderr, "fashion_mnist: the Fashion-MNIST data is missing; install the "
                            "Debian package dataset-fashion-mnist\n"
                            "  (sudo apt-get install dataset-fashion-mnist)\n");
        free(train.images), free(train.labels), free(test.images), free(test.labels);
        return missing ? 2 : 1;
    }
    const long n = o.limit && o.limit < train.n ? o.limit : train.n;

    nn_model_opts mo = {NULL, NULL, o.seed};
    nn_model *m = nn_model_new(&mo);
    const uint32_t sizes[] = {PIXELS, o.hidden, CLASSES};
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(o.optimizer), 0};
    if (o.lr > 0)
        to.optim.lr = o.lr;
    else /* tuned for this network: see docs/nn.md */
        to.optim.lr = o.optimizer == NN_OPTIM_ADAM ? 0.002 : o.optimizer == NN_OPTIM_SGD ? 0.1 : 0.05;
    nn_trainer *tr = NULL;
    const uint32_t chunk = 500;
    double *X = malloc((size_t)(o.batch > chunk ? o.batch : chunk) * PIXELS * sizeof *X);
    double *Y = malloc((size_t)o.batch * CLASSES * sizeof *Y);
    double *out = malloc((size_t)chunk * CLASSES * sizeof *out);
    long *order = malloc((size_t)n * sizeof *order);
    int rc = 1;
    if (!m || !X || !Y || !out || !order) {
        fprintf(stderr, "fashion_mnist: out of memory\n");
        goto done;
    }
    if (nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY) != NN_OK ||
        !(tr = nn_trainer_new(m, &to))) {
        fprintf(stderr, "fashion_mnist: %s\n", nn_model_errmsg(m));
        goto done;
    }

    printf("Fashion-MNIST: %ld training images, %ld test images\n", n, test.n);
    printf("network 784 -> %u -> 10 (relu), softmax cross-entropy, %s lr %g (%s), batch %u, "
           "%d epochs, seed %llu\n",
           (unsigned)o.hidden, nn_optim_name(o.optimizer), to.optim.lr,
           o.cosine ? "cosine decay" : "constant", (unsigned)o.batch, o.epochs,
           (unsigned long long)o.seed);
    fflush(stdout);

    nn_rng shuffle;
    nn_rng_seed(&shuffle, o.seed ^ 0x5DEECE66Du);
    for (long i = 0; i < n; i++)
        order[i] = i;
    const int tty = isatty(2);
    double total_time = 0;
    const long steps_per_epoch = (n + o.batch - 1) / o.batch;
    const double total_steps = (double)steps_per_epoch * o.epochs;
    for (int epoch = 1; epoch <= o.epochs; epoch++) {
        const double t0 = now();
        for (long i = n - 1; i > 0; i--) { /* Fisher-Yates */
            long j = (long)nn_rng_below(&shuffle, (uint64_t)i + 1), tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        double sum = 0;
        long seen = 0, step = 0;
        for (long i = 0; i < n; i += o.batch, step++) {
            const uint32_t b = (uint32_t)(n - i < o.batch ? n - i : o.batch);
            memset(Y, 0, (size_t)b * CLASSES * sizeof *Y);
            for (uint32_t r = 0; r < b; r++) {
                const long k = order[i + r];
                to_input(train.images + (size_t)k * PIXELS, X + (size_t)r * PIXELS);
                Y[r * CLASSES + train.labels[k]] = 1.0; /* one-hot */
            }
            if (o.cosine) { /* lr_t = lr0 (1 + cos(pi t / T)) / 2 */
                const double t = (double)((epoch - 1) * steps_per_epoch + step);
                nn_optim_set_lr(nn_trainer_optim(tr),
                                to.optim.lr * 0.5 * (1.0 + cos(3.14159265358979 * t / total_steps)));
            }
            double loss;
            if (nn_trainer_step(tr, X, Y, b, &loss) != NN_OK) {
                fprintf(stderr, "\nfashion_mnist: %s\n", nn_trainer_errmsg(tr));
                goto done;
            }
            sum += loss * b;
            seen += b;
            if (tty && (step % 20 == 0 || i + b >= n))
                progress(epoch, o.epochs, seen, n, sum / seen);
        }
        const double train_time = now() - t0;
        int err = 0;
        const double acc = accuracy(m, &test, X, out, chunk, &err);
        if (err) {
            fprintf(stderr, "\nfashion_mnist: %s\n", nn_model_errmsg(m));
            goto done;
        }
        const double dt = now() - t0;
        total_time += dt;
        if (tty)
            fprintf(stderr, "\r%*s\r", 70, "");
        printf("epoch %d/%d  loss %.4f  test accuracy %.2f%%  time %.1f s (train %.1f s)\n", epoch,
               o.epochs, sum / seen, 100 * acc, dt, train_time);
        fflush(stdout);
    }
    printf("total %.1f s, %.1f s per epoch\n", total_time, total_time / o.epochs);
    if (nn_model_save(m, o.out) != NN_OK) {
        fprintf(stderr, "fashion_mnist: %s\n", nn_model_errmsg(m));
        goto done;
    }
    printf("model saved to %s\n", o.out);
    rc = 0;
done:
    nn_trainer_free(tr);
    nn_model_free(m);
    free(X), free(Y), free(out), free(order);
    free(train.images), free(train.labels), free(test.images), free(test.labels);
    return rc;
}
