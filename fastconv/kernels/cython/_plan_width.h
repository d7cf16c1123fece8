/* One vector width's plan kernels, included by _plan_kernels.h once per width with FC_ISA (a
 * name), FC_VBITS (its vector bits) and FC_DW_VECTORS (tuning.DEPTHWISE_VECTORS) defined,
 * inside that width's ``#pragma GCC target``; it undefines them. Defines the table
 * ``fc_kernels_<FC_ISA>`` of both dtypes' task functions. */

#define FC_VBYTES (FC_VBITS / 8)

/* the vector min and max of this width (the clamp of ReLU and ReLU6) */
#if FC_VBITS == 512
#define FC_PS __m512
#define FC_PD __m512d
#define FC_MAX_PS _mm512_max_ps
#define FC_MIN_PS _mm512_min_ps
#define FC_MAX_PD _mm512_max_pd
#define FC_MIN_PD _mm512_min_pd
#elif FC_VBITS == 256
#define FC_PS __m256
#define FC_PD __m256d
#define FC_MAX_PS _mm256_max_ps
#define FC_MIN_PS _mm256_min_ps
#define FC_MAX_PD _mm256_max_pd
#define FC_MIN_PD _mm256_min_pd
#elif defined(__SSE2__)
#define FC_PS __m128
#define FC_PD __m128d
#define FC_MAX_PS _mm_max_ps
#define FC_MIN_PS _mm_min_ps
#define FC_MAX_PD _mm_max_pd
#define FC_MIN_PD _mm_min_pd
#endif

#define FC_T float
#define FC_SUFFIX FC_CAT(f, FC_ISA)
#include "_plan_kernels_t.h"
#undef FC_T
#undef FC_SUFFIX

#define FC_T double
#define FC_SUFFIX FC_CAT(d, FC_ISA)
#include "_plan_kernels_t.h"
#undef FC_T
#undef FC_SUFFIX

#define FC_ENTRY(k) .k##_f = FC_CAT(FC_CAT(fc_##k##_task, f), FC_ISA), \
                    .k##_d = FC_CAT(FC_CAT(fc_##k##_task, d), FC_ISA),
#define FC_STR2(x) #x
#define FC_STR(x) FC_STR2(x)
static const fc_kernel_table FC_CAT(fc_kernels, FC_ISA) = {
    .isa = FC_STR(FC_ISA), .vector_bits = FC_VBITS, .dw_vectors = FC_DW_VECTORS,
    FC_KERNELS(FC_ENTRY)
};
#undef FC_ENTRY
#undef FC_STR
#undef FC_STR2

#undef FC_PS
#undef FC_PD
#undef FC_MAX_PS
#undef FC_MIN_PS
#undef FC_MAX_PD
#undef FC_MIN_PD
#undef FC_VBYTES
#undef FC_ISA
#undef FC_VBITS
#undef FC_DW_VECTORS
