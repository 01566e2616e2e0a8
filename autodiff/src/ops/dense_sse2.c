/* dense_sse2.c -- the dense kernels with kernels.h's SSE2 intrinsics
 * (x86-64's baseline). Built on x86-64 unless AD_PORTABLE_KERNELS. */
#include <autodiff/autodiff.h>
#define AD__DENSE_TABLE ad__kernels_sse2
#define AD__DENSE_VARIANT AD_KERNELS_SSE2
#define AD__DENSE_NAME "sse2"
#include "dense_impl.h"
#if !defined(AD__SSE2)
#error "dense_sse2.c needs SSE2 (CMake builds it on x86-64 only)"
#endif
