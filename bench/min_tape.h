/* min_tape.h -- the least a tape interpreter can do, as a yardstick for W1.
 *
 * Not part of the library, and not a usable tape: one flat array of
 * 32-byte nodes allocated up front, four ops (W1's), no handles, no checks,
 * no growth, no error state, no API promises (the engine keeps ad_value()
 * pointers valid while the tape grows, so its nodes live in chunks that
 * never move). What is left is what every interpreting tape must do per
 * node: write it when recording, and in each pass read its op, jump on it,
 * load its operands and store a result. W1 times it beside the engine, so
 * the engine's per-op cost can be read against the cost of the technique
 * itself on the same machine, in the same run. */
#ifndef AD_BENCH_MIN_TAPE_H
#define AD_BENCH_MIN_TAPE_H

#include <stddef.h>
#include <stdint.h>

enum { MT_LEAF, MT_ADD, MT_SUB, MT_SCALE, MT_SQUARE };

typedef struct mt_node {
    uint32_t op, a, b; /* b: second operand, or the constant's index (scale) */
    uint32_t pad;
    double v, g;
} mt_node;

typedef struct min_tape {
    mt_node *n; /* n[0] unused, as in the engine */
    size_t len, cap;
    double k[1]; /* scale constant (W1 has one) */
} min_tape;

/* cap: nodes to hold, including node 0. Returns 0 when out of memory. */
int mt_init(min_tape *t, size_t cap, double scale_constant);
void mt_free(min_tape *t);
void mt_reset(min_tape *t); /* back to node 0 only */

/* Recording: the caller stays within cap. */
uint32_t mt_leaf(min_tape *t, double v);
uint32_t mt_add(min_tape *t, uint32_t a, uint32_t b);
uint32_t mt_sub(min_tape *t, uint32_t a, uint32_t b);
uint32_t mt_scale(min_tape *t, uint32_t a); /* by k[0] */
uint32_t mt_square(min_tape *t, uint32_t a);

/* Recomputes every value from the leaves, zeroing adjoints. */
void mt_replay(min_tape *t);
/* Seeds out with 1 and accumulates adjoints down to node 1 (after a
 * recording or a replay: adjoints must start at zero). Nodes whose adjoint
 * is zero are skipped, as in the engine. */
void mt_sweep(min_tape *t, uint32_t out);

#endif
