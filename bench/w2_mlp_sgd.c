/* W2 -- MLP, one sample per step (matvec), see WORKLOADS.md. */
#include "mlp_workload.h"

int main(void) { return mlp_workload("W2", 1); }
