/* fashion_mnist_mpi.c -- examples/fashion_mnist.c over MPI: P processes
 * train one 784 -> 128 -> 10 network, each taking B/P rows of every global
 * batch of B, their gradients summed by nn_mpi (an MPI_Iallreduce per
 * tensor, started from the backward sweep as each gradient is complete).
 * The data order is the single-process example's (the same seeded
 * shuffle on every rank) and the loss is averaged over the global batch,
 * so the run is that example's run to rounding: same losses, same test
 * accuracy. Rank 0 prints and saves; checkpoints make it resumable.
 *
 *   mpirun -np 2 ./build/examples/fashion_mnist_mpi [--epochs N] [--batch N]
 *       [--lr X] [--hidden N] [--seed N] [--limit N] [--data DIR] [--out FILE]
 *       [--checkpoint FILE] [--every N] [--resume] [--stop N]
 *
 * Every rank reads the (gzip'd, 30 MB) training file: the shuffled order
 * sends any row to any rank, so each keeps the bytes (47 MB) and converts
 * only its B/P rows per step. The batch (and the last, partial batch of an
 * epoch) must be a multiple of P; otherwise the program says so and stops
 * (uneven shards would weight the ranks' rows unequally). */
#define _POSIX_C_SOURCE 200809L
#include <nn/nn_mpi.h>

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

typedef struct dataset {
    unsigned char *images; /* n x 784 */
    unsigned char *labels; /* n       */
    long n;
} dataset;

typedef struct options {
    int epochs;
    uint32_t batch, hidden;
    double lr;
    uint64_t seed;
    long limit, every, stop;
    int resume;
    const char *data, *out, *checkpoint;
} options;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_args(int argc, char **argv, options *o, int rank)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--resume")) {
            o->resume = 1;
            continue;
        }
        if (!strcmp(a, "--help") || i + 1 >= argc) {
            if (rank == 0)
                fprintf(stderr, "usage: mpirun -np P fashion_mnist_mpi [--epochs N] [--batch N] "
                        "[--lr X] [--hidden N] [--seed N] [--limit N] [--data DIR] [--out FILE] "
                        "[--checkpoint FILE] [--every STEPS] [--resume] [--stop STEPS]\n");
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (!strcmp(a, "--epochs")) o->epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch")) o->batch = (uint32_t)strtoul(v, &end, 10);
        else if (!strcmp(a, "--lr")) o->lr = strtod(v, &end);
        else if (!strcmp(a, "--hidden")) o->hidden = (uint32_t)strtoul(v, &end, 10);
        else if (!strcmp(a, "--seed")) o->seed = strtoull(v, &end, 10);
        else if (!strcmp(a, "--limit")) o->limit = strtol(v, &end, 10);
        else if (!strcmp(a, "--every")) o->every = strtol(v, &end, 10);
        else if (!strcmp(a, "--stop")) o->stop = strtol(v, &end, 10);
        else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--checkpoint")) o->checkpoint = v;
        else {
            if (rank == 0)
                fprintf(stderr, "fashion_mnist_mpi: unknown option %s\n", a);
            return -1;
        }
        if (end && (*end != '\0' || end == v)) {
            if (rank == 0)
                fprintf(stderr, "fashion_mnist_mpi: bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    if (o->epochs < 1 || o->batch < 1 || o->hidden < 1 || o->limit < 0 || !(o->lr > 0) ||
        o->every < 0 || o->stop < 0) {
        if (rank == 0)
            fprintf(stderr, "fashion_mnist_mpi: epochs, batch, hidden and lr must be positive, "
                            "limit, every and stop not negative\n");
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
    fprintf(stderr, "fashion_mnist_mpi: %s is not a valid IDX file\n", path);
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
            fprintf(stderr, "fashion_mnist_mpi: cannot open %s\n", ds->images ? lp : ip);
        return -1;
    }
    if (ni != nl) {
        fprintf(stderr, "fashion_mnist_mpi: %s has %ld images but %ld labels\n", prefix, ni, nl);
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

/* Test accuracy: each rank counts its slice of the test set, summed. */
static double accuracy(nn_model *m, const dataset *test, double *X, double *out, uint32_t chunk,
                       int rank, int P, int *err)
{
    uint64_t lo, hi;
    nn_shard((uint64_t)test->n, (uint32_t)P, (uint32_t)rank, &lo, &hi);
    long correct = 0, all = 0;
    for (long i = (long)lo; i < (long)hi; i += chunk) {
        const uint32_t b = (uint32_t)((long)hi - i < chunk ? (long)hi - i : chunk);
        for (uint32_t r = 0; r < b; r++)
            to_input(test->images + (size_t)(i + r) * PIXELS, X + (size_t)r * PIXELS);
        if (nn_model_predict(m, X, b, out) != NN_OK) {
            *err = 1;
            break;
        }
        for (uint32_t r = 0; r < b; r++) {
            int best = 0;
            for (int c = 1; c < CLASSES; c++)
                if (out[r * CLASSES + c] > out[r * CLASSES + best])
                    best = c;
            correct += best == test->labels[i + r];
        }
    }
    int anyerr = 0;
    MPI_Allreduce(err, &anyerr, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    *err = anyerr;
    MPI_Allreduce(&correct, &all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    return (double)all / (double)test->n;
}

/* The single-process example's order after `epochs` shuffles from the seed. */
static void shuffle(nn_rng *r, uint32_t *order, long n)
{
    nn_rng_shuffle(r, order, (size_t)n); /* Fisher-Yates, as fashion_mnist.c */
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    options o = {10, 64, 128, 0.002, 1, 0, 0, 0, 0, DATA_DIR, "fashion_mnist_mpi.nnp", NULL};
    if (parse_args(argc, argv, &o, rank) != 0) {
        MPI_Finalize();
        return 1;
    }
    dataset train = {0}, test = {0};
    int missing = 0, bad = 0, anybad = 0;
    if (load_set(o.data, "train", &train, &missing) != 0 ||
        load_set(o.data, "t10k", &test, &missing) != 0)
        bad = missing ? 2 : 1;
    MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (anybad) {
        if (rank == 0 && missing)
            fprintf(stderr, "fashion_mnist_mpi: the Fashion-MNIST data is missing; install the "
                            "Debian package dataset-fashion-mnist\n");
        free(train.images), free(train.labels), free(test.images), free(test.labels);
        MPI_Finalize();
        return anybad;
    }
    const long n = o.limit && o.limit < train.n ? o.limit : train.n;
    if (o.batch % (uint32_t)P != 0 || (n % o.batch) % P != 0) {
        if (rank == 0)
            fprintf(stderr, "fashion_mnist_mpi: the batch %u (and the last batch of an epoch, %ld "
                    "rows) must be a multiple of the %d ranks: each rank takes an equal share\n",
                    (unsigned)o.batch, n % o.batch, P);
        free(train.images), free(train.labels), free(test.images), free(test.labels);
        MPI_Finalize();
        return 1;
    }
    const uint32_t local = o.batch / (uint32_t)P, chunk = 500;
    nn_model_opts mo = {NULL, NULL, o.seed};
    nn_model *m = nn_model_new(&mo);
    const uint32_t sizes[] = {PIXELS, o.hidden, CLASSES};
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 0};
    to.optim.lr = o.lr;
    nn_trainer *tr = NULL;
    nn_mpi *comm = NULL;
    double *X = malloc((size_t)(local > chunk ? local : chunk) * PIXELS * sizeof *X);
    double *Y = malloc((size_t)local * CLASSES * sizeof *Y);
    double *out = malloc((size_t)chunk * CLASSES * sizeof *out);
    uint32_t *order = malloc((size_t)n * sizeof *order);
    int rc = 1;
    if (!m || !X || !Y || !out || !order) {
        fprintf(stderr, "fashion_mnist_mpi: rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1); /* the other ranks would wait in a collective */
    }
    if (nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY) != NN_OK ||
        !(tr = nn_trainer_new(m, &to))) {
        fprintf(stderr, "fashion_mnist_mpi: %s\n", nn_model_errmsg(m));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    comm = nn_mpi_new(MPI_COMM_WORLD, nn_params_count(nn_model_params(m)), NULL, NULL);
    nn_reduce red = nn_mpi_reduce(comm, 1);
    if (!comm || nn_trainer_set_reduce(tr, &red) != NN_OK) {
        fprintf(stderr, "fashion_mnist_mpi: cannot set up the reduction: %s\n",
                nn_trainer_errmsg(tr));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    /* the data order: the same seeded shuffle on every rank */
    nn_checkpoint ck = {0, 0, {{0}}, 0};
    nn_rng_seed(&ck.rng, o.seed ^ 0x5DEECE66Du);
    if (o.resume && o.checkpoint && access(o.checkpoint, F_OK) != 0) {
        if (rank == 0)
            printf("no checkpoint at %s yet: starting from the beginning\n", o.checkpoint);
    } else if (o.resume && o.checkpoint) {
        const int st = nn_trainer_resume(tr, o.checkpoint, &ck);
        if (st != NN_OK) {
            if (rank == 0)
                fprintf(stderr, "fashion_mnist_mpi: cannot resume: %s\n", nn_trainer_errmsg(tr));
            goto done; /* every rank read the same file and fails alike */
        }
        if (rank == 0)
            printf("resumed from %s (written by %u ranks): epoch %llu, row %llu, step %llu\n",
                   o.checkpoint, (unsigned)ck.ranks, (unsigned long long)ck.epoch + 1,
                   (unsigned long long)ck.position,
                   (unsigned long long)nn_optim_steps(nn_trainer_optim(tr)));
    }
    /* ck.rng is the generator at the start of epoch ck.epoch; the order
     * is shuffled cumulatively, so rebuild it from the seed */
    nn_rng r;
    nn_rng_seed(&r, o.seed ^ 0x5DEECE66Du);
    for (long i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    for (uint64_t e = 0; e < ck.epoch; e++)
        shuffle(&r, order, n);
    if (memcmp(&r, &ck.rng, sizeof r) != 0) {
        if (rank == 0)
            fprintf(stderr, "fashion_mnist_mpi: the checkpoint's data order does not follow "
                            "from --seed %llu\n", (unsigned long long)o.seed);
        goto done;
    }
    if (rank == 0) {
        printf("Fashion-MNIST on %d ranks: %ld training images, %ld test images\n", P, n, test.n);
        printf("network 784 -> %u -> 10 (relu), softmax cross-entropy, adam lr %g (cosine "
               "decay), global batch %u (%u per rank), %d epochs, seed %llu\n",
               (unsigned)o.hidden, o.lr, (unsigned)o.batch, (unsigned)local, o.epochs,
               (unsigned long long)o.seed);
        fflush(stdout);
    }
    const long steps_per_epoch = (n + o.batch - 1) / o.batch;
    const double total_steps = (double)steps_per_epoch * o.epochs;
    double total_time = 0;
    for (int epoch = (int)ck.epoch + 1; epoch <= o.epochs; epoch++) {
        const double t0 = now();
        nn_rng at_start = r;
        shuffle(&r, order, n);
        double sum = 0; /* this rank's share of the epoch's summed loss */
        const long first = (long)ck.position;
        for (long i = (long)ck.position; i < n; i += o.batch) {
            const uint32_t b = (uint32_t)(n - i < o.batch ? n - i : o.batch), lb = b / (uint32_t)P;
            uint64_t lo, hi;
            nn_shard(b, (uint32_t)P, (uint32_t)rank, &lo, &hi); /* rows [lo, hi) of the batch */
            memset(Y, 0, (size_t)lb * CLASSES * sizeof *Y);
            for (uint32_t q = 0; q < lb; q++) {
                const long k = order[i + (long)lo + q];
                to_input(train.images + (size_t)k * PIXELS, X + (size_t)q * PIXELS);
                Y[q * CLASSES + train.labels[k]] = 1.0;
            }
            const double t = (double)nn_optim_steps(nn_trainer_optim(tr)); /* lr from the step */
            nn_optim_set_lr(nn_trainer_optim(tr),
                            o.lr * 0.5 * (1.0 + cos(3.14159265358979 * t / total_steps)));
            double loss;
            if (nn_trainer_step(tr, X, Y, lb, &loss) != NN_OK) {
                fprintf(stderr, "fashion_mnist_mpi: rank %d: %s (%s)\n", rank,
                        nn_trainer_errmsg(tr), nn_mpi_errmsg(comm));
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            sum += loss * b; /* loss is this rank's share: (1/b) x its rows' sum */
            const long done = i + b, step = (long)nn_optim_steps(nn_trainer_optim(tr));
            ck.epoch = (uint64_t)epoch - (done == n ? 0 : 1);
            ck.position = done == n ? 0 : (uint64_t)done;
            ck.rng = done == n ? r : at_start;
            if (o.checkpoint && rank == 0 &&
                ((o.every && step % o.every == 0) || (!o.every && done == n) ||
                 (o.stop && step == o.stop))) {
                if (nn_trainer_save(tr, o.checkpoint, &ck) != NN_OK)
                    fprintf(stderr, "fashion_mnist_mpi: %s\n", nn_trainer_errmsg(tr));
            }
            if (o.stop && step == o.stop) {
                if (rank == 0)
                    printf("stopped after step %ld (--stop)%s%s\n", step,
                           o.checkpoint ? "; checkpoint in " : "", o.checkpoint ? o.checkpoint : "");
                rc = 0;
                goto done;
            }
        }
        ck.position = 0;
        double total = 0;
        MPI_Reduce(&sum, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        const double train_time = now() - t0;
        int err = 0;
        const double acc = accuracy(m, &test, X, out, chunk, rank, P, &err);
        if (err) {
            if (rank == 0)
                fprintf(stderr, "fashion_mnist_mpi: %s\n", nn_model_errmsg(m));
            goto done;
        }
        const double dt = now() - t0;
        total_time += dt;
        if (rank == 0) {
            printf("epoch %d/%d  loss %.4f  test accuracy %.2f%%  time %.1f s (train %.1f s)\n",
                   epoch, o.epochs, total / (double)(n - first), 100 * acc, dt, train_time);
            fflush(stdout);
        }
    }
    if (rank == 0) {
        printf("total %.1f s\n", total_time);
        if (nn_model_save(m, o.out) != NN_OK)
            fprintf(stderr, "fashion_mnist_mpi: %s\n", nn_model_errmsg(m));
        else
            printf("model saved to %s\n", o.out);
    }
    rc = 0;
done:
    nn_mpi_free(comm);
    nn_trainer_free(tr);
    nn_model_free(m);
    free(X), free(Y), free(out), free(order);
    free(train.images), free(train.labels), free(test.images), free(test.labels);
    MPI_Finalize();
    return rc;
}
