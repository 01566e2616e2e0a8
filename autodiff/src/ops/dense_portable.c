/* dense_portable.c -- the plain-C dense kernels, built on every target
 * (kernels.h without its SSE2 intrinsics). */
#ifndef AD_PORTABLE_KERNELS
#define AD_PORTABLE_KERNELS 1
#endif
#include <autodiff/autodiff.h>
#define AD__DENSE_TABLE ad__kernels_portable
#define AD__DENSE_VARIANT AD_KERNELS_PORTABLE
#define AD__DENSE_NAME "portable"
#include "dense_impl.h"
