/* rng.c -- xoshiro256** seeded through splitmix64: fast, small state, and
 * the same stream everywhere, so runs are reproducible bit for bit. */
#include "nn_internal.h"

#include <math.h>

/* splitmix64: spreads one 64-bit seed over the four state words. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void nn_rng_seed(nn_rng *r, uint64_t seed)
{
    if (!r)
        return;
    for (int i = 0; i < 4; i++)
        r->s_[i] = splitmix64(&seed); /* four distinct words: never all zero */
}

uint64_t nn_rng_next(nn_rng *r)
{
    if (!r)
        return 0;
    uint64_t *s = r->s_;
    const uint64_t out = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double nn_rng_uniform(nn_rng *r)
{
    return r ? (double)(nn_rng_next(r) >> 11) * 0x1.0p-53 : 0.0; /* [0,1), 53 bits */
}

double nn_rng_normal(nn_rng *r)
{
    if (!r)
        return 0.0;
    /* Box-Muller: sqrt(-2 ln u1) cos(2 pi u2), u1 in (0,1] so the log is finite. */
    const double u1 = 1.0 - nn_rng_uniform(r), u2 = nn_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

uint64_t nn_rng_below(nn_rng *r, uint64_t n)
{
    if (!r || n == 0)
        return 0;
    /* Reject the top partial copy of [0, n) so every value is equally likely. */
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = nn_rng_next(r);
    while (x >= limit);
    return x % n;
}

void nn_rng_shuffle(nn_rng *r, uint32_t *idx, size_t n)
{
    if (!r || !idx)
        return;
    for (size_t i = n; i-- > 1;) { /* swap i with a uniform j in [0, i] */
        const size_t j = (size_t)nn_rng_below(r, (uint64_t)i + 1);
        const uint32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
