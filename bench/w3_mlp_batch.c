/* W3 -- MLP, mini-batches of 64 (matmul), see WORKLOADS.md. */
#include "mlp_workload.h"

int main(void) { return mlp_workload("W3", 64); }
