/* dense.c -- which dense-kernel table a variant number names, and what
 * the CPU supports. Reads only the CPU's feature bits (through the
 * compiler's builtins): no state of its own. */
#include <autodiff/autodiff.h>

#include "dense.h"

#if defined(AD_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
static int cpu_has_avx2_fma(void)
{
    __builtin_cpu_init(); /* idempotent; needed before constructors have run */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

const ad__kernels *ad__kernels_get(int variant)
{
    switch (variant) {
    case AD_KERNELS_AUTO:
#if defined(AD_HAVE_AVX2_KERNELS)
        if (cpu_has_avx2_fma())
            return &ad__kernels_avx2;
#endif
#if defined(AD_HAVE_SSE2_KERNELS)
        return &ad__kernels_sse2;
#else
        return &ad__kernels_portable;
#endif
    case AD_KERNELS_PORTABLE:
        return &ad__kernels_portable;
    case AD_KERNELS_SSE2:
#if defined(AD_HAVE_SSE2_KERNELS)
        return &ad__kernels_sse2;
#else
        return NULL;
#endif
    case AD_KERNELS_AVX2:
#if defined(AD_HAVE_AVX2_KERNELS)
        return cpu_has_avx2_fma() ? &ad__kernels_avx2 : NULL;
#else
        return NULL;
#endif
    default:
        return NULL;
    }
}
