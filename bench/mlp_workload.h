/* mlp_workload.h -- W2 (batch 1, matvec) and W3 (batch 64, matmul): the
 * same 784-128-10 network trained one epoch by nn and by hand_mlp. */
#ifndef AD_BENCH_MLP_WORKLOAD_H
#define AD_BENCH_MLP_WORKLOAD_H

/* Runs the workload with the given batch size, prints the table and JSON
 * lines, returns the process exit status (non-zero on a failed check). */
int mlp_workload(const char *name, unsigned batch);

#endif
