/* One dtype's plan kernels at one vector width: included by _plan_width.h for each width,
 * with FC_T float (suffix f) and double (suffix d). See _plan_kernels.h; each task function
 * is the twin of the ``fastconv.kernels.numba.nhwc`` kernel of the same name, whose docstring
 * gives its arguments. */

#define T FC_T
#define VT FC(vec)
#define L ((int)(FC_VBYTES / sizeof(T)))

typedef T VT __attribute__((vector_size(FC_VBYTES), aligned(sizeof(T))));
/* half of VT's lanes (a depthwise block's last channels) */
#define HT FC(half_vec)
typedef T HT __attribute__((vector_size(FC_VBYTES / 2), aligned(sizeof(T))));
/* the integer vector of the same lanes, for masks */
typedef __typeof__((VT){0} < (VT){0}) FC(ivec);

#define FC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void FC(zero_border_share)(T *buf, const fc_border *b, i64 task, i64 tasks) {
    fc_zero_border_share(buf, b, (i64)sizeof(T), task, tasks);
}

/* exp(x): for float, Cephes' polynomial of e^r on |r| <= ln 2 / 2 times 2^n made from the
 * exponent's bits (about one ulp; plain arithmetic, so that a loop of it vectorises, where a
 * call of libm's expf would not); for double, libm's exp. ``lo`` and ``hi`` bound x, at the
 * logarithms of the smallest normal float and (just past) the largest: the polynomial's
 * coefficients are doubled and the power is 2^(n - 1), n from -126 to 128, so that past the
 * largest float the product overflows to infinity, and below about 1.8e-38 the power is 0:
 * no compare beyond the bounds. The caller passes FC_EXP_BOUNDS's, which GCC cannot see
 * through. Seen as constants, they let it fold a whole branch of the caller (SiLU's y = x * 1 /
 * (1 + exp(88)) for x < -88) and then compute that branch for every lane: a multiply by a
 * subnormal constant, whose subnormal products cost a microcode assist each. */
static inline __attribute__((always_inline)) T FC(exp)(T x, float lo, float hi) {
    if (sizeof(T) != sizeof(float))
        return (T)exp((double)x);
    float v = (float)x;
    v = v < lo ? lo : v;  /* NaN stays NaN */
    v = v > hi ? hi : v;
    float n = floorf(v * 1.44269504088896341f + 0.5f);
    float r = v - n * 0.693359375f - n * -2.12194440e-4f;
    float q = 3.9751383000e-4f;  /* twice Cephes': 2 e^r, exactly */
    q = q * r + 2.7963999014e-3f;
    q = q * r + 1.66669038146e-2f;
    q = q * r + 8.3331591788e-2f;
    q = q * r + 3.3333330918e-1f;
    q = q * r + 1.00000002402f;
    q = q * r * r + (r + r) + 2.0f;
    union { int32_t i; float f; } half = { .i = ((int32_t)n + 126) << 23 };  /* 2^(n - 1) */
    return (T)(q * half.f);
}

/* tanh: for float, Cephes' odd polynomial below 0.625 and 1 - 2 / (exp(2|x|) + 1) above
 * (no cancellation near 0), the sign copied; for double, libm's. */
static inline __attribute__((always_inline)) T FC(tanh)(T x, float lo, float hi) {
    if (sizeof(T) != sizeof(float))
        return (T)tanh((double)x);
    float v = (float)x, size = fabsf(v), z = v * v;
    float large = 1.0f - 2.0f / ((float)FC(exp)((T)(size + size), lo, hi) + 1.0f);
    large = copysignf(large, v);
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * v + v;
    return (T)(size < 0.625f ? small : large);
}

/* erfc(z): for float, Numerical Recipes' (relative error below 1.2e-7, so that GELU's
 * negative tail keeps its digits) of |z|, 2 - it for z < 0; for double, libm's. */
static inline __attribute__((always_inline)) T FC(erfc)(T z, float lo, float hi) {
    if (sizeof(T) != sizeof(float))
        return (T)erfc((double)z);
    float v = (float)z, size = fabsf(v);
    float t = 1.0f / (1.0f + 0.5f * size);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float tail = t * (float)FC(exp)((T)(p - size * size), lo, hi);
    return (T)(v < 0 ? 2.0f - tail : tail);
}

/* ``y[0:count]`` through the activation; NaN stays NaN. One loop per kind, so that each
 * vectorises. */
static inline void FC(activate)(T *restrict y, i64 count, const fc_epi *e) {
    const T lo = (T)e->lo, hi = (T)e->hi, alpha = (T)e->alpha, beta = (T)e->beta;
    FC_EXP_BOUNDS(exp_lo, exp_hi);
    switch (e->kind) {
    case FC_ACT_CLAMP:
        for (i64 i = 0; i < count; i++) {
            T v = y[i];
            v = v < lo ? lo : v;
            y[i] = v > hi ? hi : v;
        }
        break;
    case FC_ACT_LEAKY:
        for (i64 i = 0; i < count; i++) y[i] = y[i] < 0 ? y[i] * alpha : y[i];
        break;
    case FC_ACT_HARDSIGMOID:
        for (i64 i = 0; i < count; i++) {
            T v = y[i] * alpha + beta;
            v = v < 0 ? 0 : v;
            y[i] = v > 1 ? 1 : v;
        }
        break;
    case FC_ACT_HARDSWISH: {
        /* the gate's lower bound opaque: seen as 0, GCC turns v * 0 into 0 below -3, where
           -inf * 0 is NaN (ONNX Runtime's and the specification's answer) */
        T zero = 0;
        __asm__("" : "+m"(zero));
        for (i64 i = 0; i < count; i++) {
            T v = y[i], g = v * (T)(1.0 / 6) + (T)0.5;  /* as FC(activate_tile) */
            g = g < zero ? zero : g;
            y[i] = v * (g > 1 ? 1 : g);
        }
        break;
    }
    case FC_ACT_SIGMOID:
        for (i64 i = 0; i < count; i++)
            y[i] = (T)1 / ((T)1 + FC(exp)(-y[i], exp_lo, exp_hi));
        break;
    case FC_ACT_SILU:  /* y times the sigmoid's form, which GCC vectorises */
        for (i64 i = 0; i < count; i++) {
            T v = y[i], g = (T)1 / ((T)1 + FC(exp)(-v, exp_lo, exp_hi));
            y[i] = v * g;
        }
        break;
    case FC_ACT_TANH:
        for (i64 i = 0; i < count; i++) y[i] = FC(tanh)(y[i], exp_lo, exp_hi);
        break;
    case FC_ACT_MISH:  /* y n (n + 2) / (n (n + 2) + 2), n = e^y; y itself above 20 */
        for (i64 i = 0; i < count; i++) {
            T v = y[i], n = FC(exp)(v, exp_lo, exp_hi), m = n * (n + 2);
            y[i] = v > 20 ? v : v * (m / (m + 2));
        }
        break;
    case FC_ACT_GELU:
        for (i64 i = 0; i < count; i++)
            y[i] = y[i] * (T)0.5 * FC(erfc)(y[i] * (T)-0.7071067811865476, exp_lo, exp_hi);
        break;
    case FC_ACT_EXP:
        for (i64 i = 0; i < count; i++) y[i] = FC(exp)(y[i], exp_lo, exp_hi);
        break;
    case FC_ACT_GELU_TANH:  /* y (1 + tanh(u)) / 2 as y / (1 + exp(-2 u)): no cancellation */
        for (i64 i = 0; i < count; i++) {
            T v = y[i], u = (T)(-2 * 0.7978845608028654) * (v + (T)0.044715 * v * v * v);
            y[i] = v / ((T)1 + FC(exp)(u, exp_lo, exp_hi));
        }
        break;
    default:
        break;
    }
}

/* ``v`` clamped to [lo, hi] lane by lane; a NaN lane stays NaN. x86's max and min return
 * their second operand when a lane is NaN: two instructions. Elsewhere, comparison masks (a
 * NaN lane's comparisons are false). */
static inline VT FC(clamp)(VT v, VT lo, VT hi) {
#if defined(FC_PS)
    if (sizeof(T) == 4) {
        v = (VT)FC_MAX_PS((FC_PS)lo, (FC_PS)v);
        return (VT)FC_MIN_PS((FC_PS)hi, (FC_PS)v);
    }
    v = (VT)FC_MAX_PD((FC_PD)lo, (FC_PD)v);
    return (VT)FC_MIN_PD((FC_PD)hi, (FC_PD)v);
#else
    typedef FC(ivec) IVT;
    IVT below = (IVT)(v < lo), above = (IVT)(v > hi);
    v = (VT)(((IVT)lo & below) | ((IVT)v & ~below));
    return (VT)(((IVT)hi & above) | ((IVT)v & ~above));
#endif
}

/* The activations without an exponential (a clamp, leaky ReLU, hard sigmoid, hard swish) on
 * a tile's accumulators, in registers; a NaN stays NaN (FC(clamp)). */
static inline __attribute__((always_inline)) void FC(activate_tile)(
    const int MR, const int NV, VT acc[FC_MAX_MR][FC_MAX_NV], const fc_epi *e) {
    typedef FC(ivec) IVT;
    const VT zero = (VT){0}, one = zero + 1, lo = zero + (T)e->lo, hi = zero + (T)e->hi;
    const VT alpha = zero + (T)e->alpha, beta = zero + (T)e->beta;
    const VT sixth = zero + (T)(1.0 / 6), half = zero + (T)0.5;
#define FC_EACH(EXPR)                                                                     \
    _Pragma("GCC unroll 16") for (int m = 0; m < MR; m++)                                 \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                            \
            const VT a = acc[m][v];                                                       \
            acc[m][v] = (EXPR);                                                           \
        }
    switch (e->kind) {
    case FC_ACT_CLAMP: FC_EACH(FC(clamp)(a, lo, hi)); break;
    case FC_ACT_LEAKY: FC_EACH((VT)(((IVT)(a * alpha) & (IVT)(a < zero))
                                    | ((IVT)a & ~(IVT)(a < zero)))); break;
    case FC_ACT_HARDSIGMOID: FC_EACH(FC(clamp)(a * alpha + beta, zero, one)); break;
    case FC_ACT_HARDSWISH: FC_EACH(a * FC(clamp)(a * sixth + half, zero, one)); break;
    default: break;
    }
#undef FC_EACH
}

/* Whether FC(activate_tile) applies the epilogue's activation: any other (with an
 * exponential) runs on the stored rows, where its temporaries spill no accumulator. */
#define FC_IN_REGISTERS(kind) ((kind) <= FC_ACT_HARDSWISH)

/* A tile's epilogue in registers, on its first nvv vectors (those it stores): bias, a
 * residual before the activation, an activation without an exponential, a residual after
 * it. With ``activate`` 0 (another activation, applied to the stored values), only the bias
 * and the residual before it. */
static inline __attribute__((always_inline)) void FC(tile_epilogue)(
    const int MR, const int NV, VT acc[FC_MAX_MR][FC_MAX_NV], const i64 *at, i64 n_shift,
    int nvv, int activate, const fc_gemm *g) {
    const T *bias = (const T *)g->bias, *res = (const T *)g->res;
    /* one test per step, each loop unrolled: the accumulators stay in registers */
    if (g->has_bias)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            if (v < nvv) {
                VT b = *(const VT *)(bias + n_shift + v * L);
#pragma GCC unroll 16
                for (int m = 0; m < MR; m++) acc[m][v] += b;
            }
#define FC_RESIDUAL()                                                                     \
    _Pragma("GCC unroll 16") for (int m = 0; m < MR; m++) {                                \
        const T *r = res + g->res_rows[at[m]] + n_shift;                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                               \
            if (v < nvv) acc[m][v] += *(const VT *)(r + v * L);                            \
    }
    if (g->res_mode == 1) FC_RESIDUAL();
    if (activate) FC(activate_tile)(MR, NV, acc, &g->epi);
    if (activate && g->res_mode == 2) FC_RESIDUAL();
#undef FC_RESIDUAL
}

/* The activation of a tile row of ``n_valid`` values in memory, then the residual after it
 * (pixel ``at``'s); out of line, so that the tile's register code stays as it was. */
static __attribute__((noinline)) void FC(tile_activate_row)(T *y, i64 n_valid, i64 at,
                                                            i64 n_shift, const fc_gemm *g) {
    FC(activate)(y, n_valid, &g->epi);
    if (g->res_mode == 2) {
        const T *r = (const T *)g->res + g->res_rows[at] + n_shift;
        for (i64 n = 0; n < n_valid; n++) y[n] += r[n];
    }
}

/* --- the GEMM tile (numba.microkernel's _Tile) ---------------------------------------------
 * MR pixels by NV vectors of channels: the accumulators stay in registers through the
 * reduction over the taps and the channels [c_lo, c_hi); pixels past m_valid repeat the last
 * one; n_valid (at most NV * L) channels are stored. The weights are packed in panels of PV
 * vectors (PV >= NV: a panel's last channels take fewer vectors than the panel's). start:
 * the sums start from zero, else from the partial sums in out; finish: bias, residual and
 * activation are applied. */
static inline __attribute__((always_inline)) void FC(tile_body)(
    const int MR, const int NV, const int PV, const T *x, const i64 *rows, i64 m0,
    i64 m_valid, i64 x_shift, const i64 *taps, i64 n_taps, i64 c_in, i64 c_lo, i64 c_hi,
    const fc_gemm *g, i64 w_at, T *out, const i64 *out_rows, i64 n_shift, i64 n_valid,
    int start, int finish) {
    const int NR = PV * L;
    const T *w = (const T *)g->w;
    const i64 prefetch = g->prefetch;
    VT acc[FC_MAX_MR][FC_MAX_NV];
    T buf[FC_MAX_MR * FC_MAX_NV * (FC_VBYTES / sizeof(T))] __attribute__((aligned(64)));
    i64 at[FC_MAX_MR];
    const T *xr[FC_MAX_MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++) {
        at[m] = m0 + (m < m_valid ? m : m_valid - 1);
        xr[m] = x + rows[at[m]] + x_shift;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[m][v] = (VT){0};
    }
    /* whole vectors of channels (a whole panel, or its first nvv vectors): vector loads and
       stores of those alone, the rest of the panel computed and dropped */
    const int whole = n_valid % L == 0, nvv = (int)(n_valid / L);
    if (!start) {
        if (whole) {
            for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    if (v < nvv)
                        acc[m][v] = *(const VT *)(out + out_rows[at[m]] + n_shift + v * L);
        } else {
            memset(buf, 0, sizeof(buf));
            for (int m = 0; m < MR; m++) {
                memcpy(buf + m * NR, out + out_rows[at[m]] + n_shift, n_valid * sizeof(T));
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[m][v] = *(const VT *)(buf + m * NR + v * L);
            }
        }
    }
    /* one step of the reduction: NV weight vectors, MR broadcasts, MR x NV FMAs */
#define FC_STEP()                                                                          \
    do {                                                                                   \
        VT wv[FC_MAX_NV];                                                                  \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                               \
            wv[v] = *(const VT *)(wp + v * L);                                             \
        _Pragma("GCC unroll 16") for (int m = 0; m < MR; m++) {                            \
            const T a = xr[m][tap + k];                                                    \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[m][v] += a * wv[v];   \
        }                                                                                  \
    } while (0)
    for (i64 t = 0; t < n_taps; t++) {
        const T *wp = w + w_at + (t * c_in + c_lo) * NR;
        const i64 tap = taps[t];
        /* two loops, not a test in one: the branch would cost GCC registers, and the
         * accumulators would spill */
        if (prefetch) {  /* the weights a few steps ahead: they may come from memory */
            for (i64 k = c_lo; k < c_hi; k++, wp += NR) {
                for (int line = 0; line < NV * L * (int)sizeof(T); line += 64)
                    __builtin_prefetch((const char *)(wp + prefetch) + line, 0, 3);
                FC_STEP();
            }
        } else {
            for (i64 k = c_lo; k < c_hi; k++, wp += NR) FC_STEP();
        }
    }
#undef FC_STEP
    if (whole) {
        /* in registers: bias, a residual, an activation without an exponential, then the
           stores; any other activation (and a residual after it) on the stored rows, still
           in cache */
        const int in_registers = FC_IN_REGISTERS(g->epi.kind);
        if (finish) FC(tile_epilogue)(MR, NV, acc, at, n_shift, nvv, in_registers, g);
        for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                if (v < nvv) *(VT *)(out + out_rows[at[m]] + n_shift + v * L) = acc[m][v];
        if (finish && !in_registers)
            for (int m = 0; m < m_valid; m++)  /* once per pixel: the last may repeat */
                FC(tile_activate_row)(out + out_rows[at[m]] + n_shift, n_valid, at[m], n_shift,
                                      g);
        return;
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) *(VT *)(buf + m * NR + v * L) = acc[m][v];
    if (finish) {
        const T *bias = (const T *)g->bias, *res = (const T *)g->res;
        for (int m = 0; m < MR; m++) {
            T *y = buf + m * NR;
            if (g->has_bias)
                for (i64 n = 0; n < n_valid; n++) y[n] += bias[n_shift + n];
            if (g->res_mode == 1) {
                const T *r = res + g->res_rows[at[m]] + n_shift;
                for (i64 n = 0; n < n_valid; n++) y[n] += r[n];
            }
            FC(tile_activate_row)(y, n_valid, at[m], n_shift, g);
        }
    }
    for (int m = 0; m < MR; m++)
        memcpy(out + out_rows[at[m]] + n_shift, buf + m * NR, n_valid * sizeof(T));
}

#define FC_TILE_ARGS x, rows, m0, m_valid, x_shift, taps, n_taps, c_in, c_lo, c_hi, g, w_at, \
    out, out_rows, n_shift, n_valid, start, finish
#define FC_TILE_CASE(M, V) \
    if (mr == M && nv == V) { FC(tile_body)(M, V, V, FC_TILE_ARGS); return; }

/* One tile of ``mr`` pixels (tuning's shapes compiled for, others through a slower generic
 * loop). */
static __attribute__((noinline)) void FC(tile)(
    int mr, int nv, const T *x, const i64 *rows, i64 m0, i64 m_valid, i64 x_shift,
    const i64 *taps, i64 n_taps, i64 c_in, i64 c_lo, i64 c_hi, const fc_gemm *g, i64 w_at,
    T *out, const i64 *out_rows, i64 n_shift, i64 n_valid, int start, int finish) {
    FC_TILE_CASE(12, 2) FC_TILE_CASE(6, 2) FC_TILE_CASE(4, 2) FC_TILE_CASE(2, 2)
    FC_TILE_CASE(1, 2) FC_TILE_CASE(6, 4) FC_TILE_CASE(4, 4) FC_TILE_CASE(2, 4)
    FC_TILE_CASE(1, 4) FC_TILE_CASE(4, 3) FC_TILE_CASE(2, 3) FC_TILE_CASE(1, 3)
    FC(tile_body)(mr, nv, nv, FC_TILE_ARGS);
}

/* The full tiles of a strip, the tile's body inlined in the loop (short reductions, a
 * pointwise layer of few channels, pay a call per tile otherwise); returns where they end. */
static inline __attribute__((always_inline)) i64 FC(full_tiles)(
    const int MR, const int NV, const int PV, const T *x, const i64 *rows, i64 p0, i64 p1,
    i64 x_shift, const i64 *taps, i64 n_taps, i64 c_in, i64 c_lo, i64 c_hi, const fc_gemm *g,
    i64 w_at, T *out, const i64 *out_rows, i64 n_shift, i64 n_valid, int start, int finish) {
    i64 m0 = p0;
    for (; m0 + MR <= p1; m0 += MR)
        FC(tile_body)(MR, NV, PV, x, rows, m0, MR, x_shift, taps, n_taps, c_in, c_lo, c_hi, g,
                      w_at, out, out_rows, n_shift, n_valid, start, finish);
    return m0;
}

#define FC_STRIP_ARGS x, rows, p0, p1, x_shift, taps, n_taps, c_in, c_lo, c_hi, g, w_at, out, \
    out_rows, n_shift, n_valid, start, finish

/* Pixels p0 to p1 of one panel and one chunk of input channels, in full tiles, the last few
 * in narrower ones (a full one would repeat a pixel). */
static void FC(tiles)(const T *x, const i64 *rows, i64 p0, i64 p1, i64 x_shift,
                      const i64 *taps, i64 n_taps, i64 c_in, i64 c_lo, i64 c_hi,
                      const fc_gemm *g, i64 w_at, T *out, const i64 *out_rows, i64 n_shift,
                      i64 n_valid, int start, int finish) {
    const int nv = (int)(g->nr / L), needed = (int)((n_valid + L - 1) / L);
    i64 m0 = p0;
    /* a panel whose channels end in fewer vectors than the panel's (16 channels of a 32-wide
     * panel) multiplies those alone: the rest would be computed and dropped */
#define FC_FULL_TILES(M, V, P) \
    if (g->mr == M && nv == P && needed == V) m0 = FC(full_tiles)(M, V, P, FC_STRIP_ARGS); else
    FC_FULL_TILES(12, 2, 2) FC_FULL_TILES(12, 1, 2) FC_FULL_TILES(6, 2, 2)
    FC_FULL_TILES(6, 1, 2) FC_FULL_TILES(6, 4, 4) FC_FULL_TILES(6, 3, 4)
    FC_FULL_TILES(6, 2, 4) FC_FULL_TILES(6, 1, 4) FC_FULL_TILES(4, 3, 3)
    FC_FULL_TILES(4, 2, 3) FC_FULL_TILES(4, 1, 3) {}
#undef FC_FULL_TILES
    while (m0 < p1) {
        i64 left = p1 - m0;
        i64 m_valid = left >= g->mr ? g->mr : (left >= 4 ? 4 : left);
        int mr = m_valid == g->mr ? (int)g->mr : (m_valid >= 3 ? 4 : (int)m_valid);
        FC(tile)(mr, nv, FC_TILE_ARGS);
        m0 += m_valid;
    }
}

#undef FC_STRIP_ARGS

/* --- convolutions and linear layers (nhwc.conv) ------------------------------------------- */

static void FC(conv_task)(const void *p, i64 task, i64 tasks) {
    const fc_conv_args *a = (const fc_conv_args *)p;
    const fc_gemm *g = &a->g;
    T *out = (T *)a->out;
    FC(zero_border_share)(out, &a->border, task, tasks);
    const i64 mr = g->mr, nr = g->nr, opg = a->out_per_group;
    const i64 tiles = (a->pixels + mr - 1) / mr, panels = (opg + nr - 1) / nr;
    const i64 units = a->groups * panels;
    const i64 ti = task / a->unit_groups, ui = task % a->unit_groups;
    const i64 t0 = ti * tiles / a->tile_groups, t1 = (ti + 1) * tiles / a->tile_groups;
    const i64 u0 = ui * units / a->unit_groups, u1 = (ui + 1) * units / a->unit_groups;
    /* blocks of tiles whose input stays in cache while every panel passes over them */
    for (i64 b0 = t0; b0 < t1; b0 += a->block) {
        i64 b1 = FC_MIN(t1, b0 + a->block);
        for (i64 u = u0; u < u1; u++) {
            i64 grp = u / panels, j = u - grp * panels;
            for (i64 c0 = 0; c0 < a->c_in; c0 += a->chunk) {
                i64 c1 = FC_MIN(a->c_in, c0 + a->chunk);
                FC(tiles)((const T *)a->x, a->rows, b0 * mr, FC_MIN(a->pixels, b1 * mr),
                          grp * a->c_in, a->taps, a->n_taps, a->c_in, c0, c1, g, u * g->panel,
                          out, a->out_rows, grp * opg + j * nr, FC_MIN(nr, opg - j * nr),
                          c0 == 0, c1 == a->c_in);
            }
        }
    }
}

/* --- depthwise (nhwc.depthwise) ----------------------------------------------------------- */

/* What a 3x3 depthwise row leaves of its activation, on the ``count`` contiguous values of
 * its output row, every block done: any activation but a clamp, which the row applies in
 * registers to its whole blocks; the clamp too when the channels end in part of a block
 * (run as a k x k row, which has no epilogue; a clamp applied twice is the same clamp). */
static inline void FC(activate_row)(T *y, i64 count, i64 channels, i64 block,
                                    const fc_epi *e) {
    if (e->kind > FC_ACT_CLAMP || (e->kind == FC_ACT_CLAMP && channels % block))
        FC(activate)(y, count, e);
}

static inline void FC(depthwise_taps_row)(const T *restrict x, i64 x_at, i64 row_step,
                                          i64 col_step, i64 dil_step, const T *restrict w,
                                          i64 c0, i64 c1, i64 channels, const T *restrict bias,
                                          T *restrict out, i64 out_at, i64 out_step, i64 count,
                                          i64 kh, i64 kw);

/* One row of a 3x3 depthwise convolution over channels [c0, c1): output i reads
 * x[x_at + i * col_step + r * row_step + s * dil_step + c] for tap (r, s), weights
 * w[(3 r + s) * channels + c], and is stored at out[out_at + i * out_step + c]. Of the
 * activations, only a clamp, on a whole block: the caller applies the rest to the whole row,
 * every block done (FC(activate_row)), in one pass instead of one per pixel and block. */
static inline void FC(depthwise_row)(const T *restrict x, i64 x_at, i64 row_step,
                                     i64 col_step, i64 dil_step, const T *restrict w, i64 c0,
                                     i64 c1, i64 channels, const T *restrict bias,
                                     T *restrict out, i64 out_at, i64 out_step, i64 count,
                                     const fc_epi *e) {
    const i64 d = dil_step, r = row_step;
    if (c1 - c0 == FC_DW_VECTORS * L) {
        /* a whole block: its nine weight vectors (per vector) and bias stay in registers */
        VT wv[9][FC_DW_VECTORS], bv[FC_DW_VECTORS];
        const VT lo = (VT){0} + (T)e->lo, hi = (VT){0} + (T)e->hi;
        for (int v = 0; v < FC_DW_VECTORS; v++) {
            bv[v] = *(const VT *)(bias + c0 + v * L);
            for (int k = 0; k < 9; k++) wv[k][v] = *(const VT *)(w + k * channels + c0 + v * L);
        }
        for (i64 i = 0; i < count; i++) {
            const T *p = x + x_at + i * col_step + c0;
            T *o = out + out_at + i * out_step + c0;
#pragma GCC unroll 4
            for (int v = 0; v < FC_DW_VECTORS; v++) {
                const T *q = p + v * L;
                VT s = bv[v];
                s += *(const VT *)q * wv[0][v] + *(const VT *)(q + d) * wv[1][v]
                     + *(const VT *)(q + 2 * d) * wv[2][v];
                s += *(const VT *)(q + r) * wv[3][v] + *(const VT *)(q + r + d) * wv[4][v]
                     + *(const VT *)(q + r + 2 * d) * wv[5][v];
                s += *(const VT *)(q + 2 * r) * wv[6][v] + *(const VT *)(q + 2 * r + d) * wv[7][v]
                     + *(const VT *)(q + 2 * r + 2 * d) * wv[8][v];
                if (e->kind == FC_ACT_CLAMP) s = FC(clamp)(s, lo, hi);
                *(VT *)(o + v * L) = s;
            }
        }
        return;
    }
    /* a block's last channels (fewer than a whole block): as a k x k row at 3 x 3, four
     * outputs at a time in whole and half vectors; the caller clamps them with the row */
    FC(depthwise_taps_row)(x, x_at, row_step, col_step, dil_step, w, c0, c1, channels, bias,
                           out, out_at, out_step, count, 3, 3);
}

static void FC(depthwise_3x3_task)(const void *p, i64 task, i64 tasks) {
    const fc_depthwise_args *a = (const fc_depthwise_args *)p;
    T *out = (T *)a->out;
    FC(zero_border_share)(out, &a->border, task, tasks);
    const i64 channels = a->channels, rows = a->n * a->ho;
    for (i64 row = task * rows / tasks; row < (task + 1) * rows / tasks; row++) {
        i64 n = row / a->ho, oh = row - n * a->ho;
        i64 x_at = ((n * a->rows + a->top + oh * a->sh) * a->cols + a->left) * channels;
        i64 o_at = ((n * a->out_rows + a->out_top + oh) * a->out_cols + a->out_left) * channels;
        for (i64 c0 = 0; c0 < channels; c0 += a->block)
            FC(depthwise_row)((const T *)a->x, x_at, a->dh * a->cols * channels,
                              a->sw * channels, a->dw * channels, (const T *)a->w, c0,
                              FC_MIN(channels, c0 + a->block), channels, (const T *)a->bias,
                              out, o_at, channels, a->wo, &a->epi);
        FC(activate_row)(out + o_at, a->wo * channels, channels, a->block, &a->epi);
    }
}

/* Outputs i .. i + P - 1 (P up to 4) of a kh x kw depthwise row over V vectors of type VTYPE
 * (LANES lanes) from channel c0: their accumulators stay in registers over every tap, and each
 * tap's weight vectors, loaded once, serve all P. A whole block takes V = FC_DW_VECTORS of
 * VT; a block's last channels one VT, then one vector of half of VT's lanes (HT), so that
 * only fewer than L / 2 channels of a block are left to plain loops. */
#define FC_DW_TAPS_OUTPUTS(NAME, VTYPE, LANES)                                                \
static inline __attribute__((always_inline)) void NAME(                                       \
    const int P, const int V, const T *restrict x, i64 x_at, i64 row_step, i64 col_step,       \
    i64 dil_step, const T *restrict w, i64 c0, i64 channels, const T *restrict bias,          \
    T *restrict out, i64 out_at, i64 out_step, i64 i, i64 kh, i64 kw) {                       \
    VTYPE acc[4][FC_DW_VECTORS];                                                              \
    _Pragma("GCC unroll 4")                                                                   \
    for (int p = 0; p < P; p++)                                                               \
        _Pragma("GCC unroll 4")                                                               \
        for (int v = 0; v < V; v++) acc[p][v] = *(const VTYPE *)(bias + c0 + v * (LANES));    \
    const T *first = x + x_at + i * col_step + c0;                                            \
    if (col_step == dil_step) {                                                               \
        /* output p's tap s reads the column of output p + s's tap 0: a window of P columns   \
           slides along the kernel's row, one column loaded per tap */                        \
        for (i64 r = 0; r < kh; r++) {                                                        \
            const T *row = first + r * row_step;                                              \
            VTYPE win[4][FC_DW_VECTORS];                                                      \
            _Pragma("GCC unroll 4")                                                           \
            for (int p = 0; p + 1 < P; p++)                                                   \
                _Pragma("GCC unroll 4")                                                       \
                for (int v = 0; v < V; v++)                                                   \
                    win[p][v] = *(const VTYPE *)(row + p * col_step + v * (LANES));           \
            for (i64 s = 0; s < kw; s++) {                                                    \
                const T *wt = w + (r * kw + s) * channels + c0;                               \
                _Pragma("GCC unroll 4")                                                       \
                for (int v = 0; v < V; v++) {                                                 \
                    win[P - 1][v] = *(const VTYPE *)(row + (s + P - 1) * col_step             \
                                                      + v * (LANES));                         \
                    const VTYPE wv = *(const VTYPE *)(wt + v * (LANES));                      \
                    _Pragma("GCC unroll 4")                                                   \
                    for (int p = 0; p < P; p++) acc[p][v] += win[p][v] * wv;                  \
                    _Pragma("GCC unroll 4")                                                   \
                    for (int p = 0; p + 1 < P; p++) win[p][v] = win[p + 1][v];                \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    } else                                                                                    \
    for (i64 r = 0; r < kh; r++)                                                              \
        for (i64 s = 0; s < kw; s++) {                                                        \
            const T *q = first + r * row_step + s * dil_step;                                 \
            const T *wt = w + (r * kw + s) * channels + c0;                                   \
            _Pragma("GCC unroll 4")                                                           \
            for (int v = 0; v < V; v++) {                                                     \
                const VTYPE wv = *(const VTYPE *)(wt + v * (LANES));                          \
                _Pragma("GCC unroll 4")                                                       \
                for (int p = 0; p < P; p++)                                                   \
                    acc[p][v] += *(const VTYPE *)(q + p * col_step + v * (LANES)) * wv;       \
            }                                                                                 \
        }                                                                                     \
    _Pragma("GCC unroll 4")                                                                   \
    for (int p = 0; p < P; p++) {                                                             \
        T *o = out + out_at + (i + p) * out_step + c0;                                        \
        _Pragma("GCC unroll 4")                                                               \
        for (int v = 0; v < V; v++) *(VTYPE *)(o + v * (LANES)) = acc[p][v];                  \
    }                                                                                         \
}

FC_DW_TAPS_OUTPUTS(FC(depthwise_taps_outputs), VT, L)
FC_DW_TAPS_OUTPUTS(FC(depthwise_taps_half), HT, L / 2)
#undef FC_DW_TAPS_OUTPUTS

/* One row of a kh x kw depthwise convolution over channels [c0, c1): as FC(depthwise_row),
 * tap (r, s) with weights w[(kw r + s) * channels + c]; in vectors (FC_DW_TAPS_OUTPUTS),
 * four outputs at a time, and the few channels left past the last half vector tap by tap;
 * no activation: the caller applies it to the whole row, every block done. */
static inline void FC(depthwise_taps_row)(const T *restrict x, i64 x_at, i64 row_step,
                                          i64 col_step, i64 dil_step, const T *restrict w,
                                          i64 c0, i64 c1, i64 channels, const T *restrict bias,
                                          T *restrict out, i64 out_at, i64 out_step, i64 count,
                                          i64 kh, i64 kw) {
/* four outputs at a time, the last four again for the row's last ones (each output is
 * written once from its own sums: recomputed, it is stored alike); one at a time in a row of
 * fewer than four */
#define FC_DW_TAPS_SPAN(FN, V, AT)                                                            \
    do {                                                                                      \
        if (count < 4) {                                                                      \
            for (i64 i = 0; i < count; i++)                                                   \
                FN(1, V, x, x_at, row_step, col_step, dil_step, w, AT, channels, bias, out,   \
                   out_at, out_step, i, kh, kw);                                           \
            break;                                                                            \
        }                                                                                     \
        for (i64 i = 0; i < count; i += 4)                                                    \
            FN(4, V, x, x_at, row_step, col_step, dil_step, w, AT, channels, bias, out,       \
               out_at, out_step, FC_MIN(i, count - 4), kh, kw);                            \
    } while (0)
    if (c1 - c0 == FC_DW_VECTORS * L) {
        FC_DW_TAPS_SPAN(FC(depthwise_taps_outputs), FC_DW_VECTORS, c0);
        return;
    }
    for (; c0 + L <= c1; c0 += L) FC_DW_TAPS_SPAN(FC(depthwise_taps_outputs), 1, c0);
    if (L > 1 && c0 + L / 2 <= c1) {
        FC_DW_TAPS_SPAN(FC(depthwise_taps_half), 1, c0);
        c0 += L / 2;
    }
#undef FC_DW_TAPS_SPAN
    const i64 n = c1 - c0;
    if (n <= 0)
        return;
    for (i64 i = 0; i < count; i++) {
        T *restrict o = out + out_at + i * out_step + c0;
        for (i64 c = 0; c < n; c++) o[c] = bias[c0 + c];
        for (i64 r = 0; r < kh; r++)
            for (i64 s = 0; s < kw; s++) {
                const T *p = x + x_at + i * col_step + r * row_step + s * dil_step + c0;
                const T *wt = w + (r * kw + s) * channels + c0;
                for (i64 c = 0; c < n; c++) o[c] += p[c] * wt[c];
            }
    }
}

/* Any kernel size: with one filter per channel, in register blocks of channels
 * (FC(depthwise_taps_row)); with a channel multiplier, tap by tap into the output row. */
static void FC(depthwise_task)(const void *p, i64 task, i64 tasks) {
    const fc_depthwise_args *a = (const fc_depthwise_args *)p;
    const T *x = (const T *)a->x, *w = (const T *)a->w, *bias = (const T *)a->bias;
    T *out = (T *)a->out;
    const i64 channels = a->channels, rows = a->n * a->ho, mult = a->multiplier;
    for (i64 row = task * rows / tasks; row < (task + 1) * rows / tasks; row++) {
        i64 n = row / a->ho, oh = row - n * a->ho;
        i64 o_at = ((n * a->out_rows + a->out_top + oh) * a->out_cols + a->out_left) * channels;
        T *o = out + o_at;
        if (mult == 1) {
            i64 x_at = ((n * a->rows + a->top + oh * a->sh) * a->cols + a->left) * channels;
            for (i64 c0 = 0; c0 < channels; c0 += a->block)
                FC(depthwise_taps_row)(x, x_at, a->dh * a->cols * channels, a->sw * channels,
                                       a->dw * channels, w, c0, FC_MIN(channels, c0 + a->block),
                                       channels, bias, out, o_at, channels, a->wo, a->kh,
                                       a->kw);
            FC(activate)(o, a->wo * channels, &a->epi);
            continue;
        }
        for (i64 ow = 0; ow < a->wo; ow++)
            for (i64 c = 0; c < channels; c++) o[ow * channels + c] = bias[c];
        for (i64 i = 0; i < a->kh; i++) {
            i64 ih = a->top + oh * a->sh + i * a->dh;
            for (i64 j = 0; j < a->kw; j++) {
                const T *wt = w + (i * a->kw + j) * channels;
                for (i64 ow = 0; ow < a->wo; ow++) {
                    i64 iw = a->left + ow * a->sw + j * a->dw;
                    const T *xp = x + ((n * a->rows + ih) * a->cols + iw) * a->c_in;
                    T *op = o + ow * channels;
                    for (i64 c = 0; c < channels; c++) op[c] += wt[c] * xp[c / mult];
                }
            }
        }
        FC(activate)(o, a->wo * channels, &a->epi);
    }
}

/* --- depthwise and pointwise fused (nhwc.separable) --------------------------------------- */

/* One output row of a pair's depthwise layer, every block of its channels, into ``out``
 * from ``out_at`` (a task's scratch). */
static inline void FC(depthwise_rows)(const fc_separable_args *a, const T *x, i64 x_at,
                                      i64 row_step, i64 col_step, i64 dil_step, i64 channels,
                                      T *out, i64 out_at) {
    for (i64 c0 = 0; c0 < channels; c0 += a->block)
        FC(depthwise_row)(x, x_at, row_step, col_step, dil_step, (const T *)a->dw_w, c0,
                          FC_MIN(channels, c0 + a->block), channels, (const T *)a->dw_bias,
                          out, out_at, channels, a->wo, &a->dw_epi);
    FC(activate_row)(out + out_at, a->wo * channels, channels, a->block, &a->dw_epi);
}

/* A pair's pointwise layer on pixels p0 to p1, read from the task's scratch (pixel p0 at
 * its start), every panel. */
static inline void FC(project)(const fc_separable_args *a, const T *sc, i64 p0, i64 p1,
                               i64 channels) {
    const fc_gemm *g = &a->g;
    const i64 panels = (a->out_channels + g->nr - 1) / g->nr;
    for (i64 j = 0; j < panels; j++)
        FC(tiles)(sc, a->s_rows, p0, p1, -p0 * channels, &fc_zero_tap, 1, channels, 0,
                  channels, g, j * g->panel, (T *)a->out, a->out_rows, j * g->nr,
                  FC_MIN(g->nr, a->out_channels - j * g->nr), 1, 1);
}

static void FC(separable_task)(const void *p, i64 task, i64 tasks) {
    const fc_separable_args *a = (const fc_separable_args *)p;
    T *out = (T *)a->out;
    FC(zero_border_share)(out, &a->border, task, tasks);
    const i64 channels = a->channels, wo = a->wo, rows = a->n * a->ho;
    T *sc = (T *)a->scratch + task * a->scratch_pitch;
    i64 first = task * rows / tasks, last = (task + 1) * rows / tasks;
    i64 steps = (last - first + a->rows_per_step - 1) / a->rows_per_step;
    for (i64 step = 0; step < steps; step++) {  /* equal steps of at most rows_per_step rows */
        i64 r0 = first + step * (last - first) / steps;
        i64 r1 = first + (step + 1) * (last - first) / steps;
        for (i64 r = r0; r < r1; r++) {
            i64 n = r / a->ho, oh = r - n * a->ho;
            i64 x_at = ((n * a->rows + a->top + oh * a->sh) * a->cols + a->left) * channels;
            FC(depthwise_rows)(a, (const T *)a->x, x_at, a->dh * a->cols * channels,
                               a->sw * channels, a->dw * channels, channels, sc,
                               (r - r0) * wo * channels);
        }
        FC(project)(a, sc, r0 * wo, r1 * wo, channels);  /* the step's rows, from the scratch */
    }
}

/* An expand layer (1x1) before the pair: its rows into a zero-bordered slab in the task's
 * scratch, which the depthwise rows read (nhwc.separable.expanded_separable). */
static void FC(expanded_separable_task)(const void *p, i64 task, i64 tasks) {
    const fc_separable_args *a = (const fc_separable_args *)p;
    T *out = (T *)a->out;
    FC(zero_border_share)(out, &a->border, task, tasks);
    const i64 c_in = a->channels, expanded = a->e_channels, width = a->width;
    const i64 height = a->height, stride = a->sh, wo = a->wo, ho = a->ho;
    const i64 pitch = (width + 2) * expanded;  /* one slab row, its two zero columns included */
    const i64 rows = a->n * ho, capacity = (a->rows_per_step - 1) * stride + 3;
    const fc_gemm *e = &a->e;
    const i64 e_panels = (expanded + e->nr - 1) / e->nr;
    T *sl = (T *)a->slab + task * a->slab_pitch, *sc = (T *)a->scratch + task * a->scratch_pitch;
    for (i64 j = 0; j < capacity; j++) {  /* the expand tiles write only between the zero columns */
        memset(sl + j * pitch, 0, expanded * sizeof(T));
        memset(sl + (j + 1) * pitch - expanded, 0, expanded * sizeof(T));
    }
    i64 held_n = -1, held_p0 = 0, held_count = 0;  /* the image and padded rows the slab holds */
    i64 first = task * rows / tasks, last = (task + 1) * rows / tasks;
    i64 steps = (last - first + a->rows_per_step - 1) / a->rows_per_step;
    for (i64 step = 0; step < steps; step++) {
        i64 r = first + step * (last - first) / steps;
        i64 r1 = first + (step + 1) * (last - first) / steps;
        while (r < r1) {  /* the step's rows, image by image */
            i64 n = r / ho, oh0 = r - n * ho;
            i64 seg = FC_MIN(r1, (n + 1) * ho);
            i64 p0 = oh0 * stride;  /* padded row p is the image's row p - 1 */
            i64 need = (seg - 1 - r) * stride + 3, keep = 0;
            if (held_n == n && held_p0 <= p0 && p0 < held_p0 + held_count) {
                keep = FC_MIN(need, held_p0 + held_count - p0);
                memmove(sl, sl + (p0 - held_p0) * pitch, keep * pitch * sizeof(T));
            }
            for (i64 j = keep; j < need;) {
                i64 h = p0 + j - 1;
                if (h < 0 || h >= height) {  /* the depthwise layer's zero padding */
                    memset(sl + j * pitch, 0, pitch * sizeof(T));
                    j++;
                    continue;
                }
                i64 j1 = FC_MIN(need, height + 1 - p0);  /* slab rows j..j1 hold image rows */
                i64 x_shift = ((n * a->rows + a->top + p0 - 1) * a->cols + a->left) * c_in;
                for (i64 u = 0; u < e_panels; u++)
                    FC(tiles)((const T *)a->x, a->e_rows, j * width, j1 * width, x_shift,
                              &fc_zero_tap, 1, c_in, 0, c_in, e, u * e->panel, sl,
                              a->slab_rows, u * e->nr, FC_MIN(e->nr, expanded - u * e->nr),
                              1, 1);
                j = j1;
            }
            held_n = n;
            held_p0 = p0;
            held_count = need;
            for (i64 oh = oh0; oh < oh0 + seg - r; oh++)
                FC(depthwise_rows)(a, sl, (oh - oh0) * stride * pitch, pitch, stride * expanded,
                                   expanded, expanded, sc, (oh - oh0) * wo * expanded);
            FC(project)(a, sc, r * wo, seg * wo, expanded);  /* the segment's rows */
            r = seg;
        }
    }
}

/* --- Winograd F(2x2, 3x3) (nhwc.winograd) ------------------------------------------------- */

/* V = B^T d B of one 4x4 patch, for channel c (or the vector of channels from c), as
 * ``V``s: LD(offset) loads the patch at an offset from d + c, ST(offset, value) stores into
 * v + c. */
#define FC_LOAD_V(off) (*(const VT *)(d + (off) + c))
#define FC_STORE_V(off, value) (*(VT *)(v + (off) + c) = (value))
#define FC_LOAD_S(off) (d[(off) + c])
#define FC_STORE_S(off, value) (v[(off) + c] = (value))
#define FC_WINOGRAD_IN(V, LD, ST)                                                          \
    do {                                                                                   \
        V e[4][4];                                                                         \
        for (int j = 0; j < 4; j++) {                                                      \
            V d0 = LD(j * col_step), d1 = LD(row_step + j * col_step);                      \
            V d2 = LD(2 * row_step + j * col_step), d3 = LD(3 * row_step + j * col_step);   \
            e[0][j] = d0 - d2;                                                             \
            e[1][j] = d1 + d2;                                                             \
            e[2][j] = d2 - d1;                                                             \
            e[3][j] = d1 - d3;                                                             \
        }                                                                                  \
        for (int i = 0; i < 4; i++) {                                                      \
            ST((4 * i + 0) * v_shift, e[i][0] - e[i][2]);                                  \
            ST((4 * i + 1) * v_shift, e[i][1] + e[i][2]);                                  \
            ST((4 * i + 2) * v_shift, e[i][2] - e[i][1]);                                  \
            ST((4 * i + 3) * v_shift, e[i][1] - e[i][3]);                                  \
        }                                                                                  \
    } while (0)
/* Y = A^T M A of one tile's 16 products P (V each), plus the bias B, into y[2][2] */
#define FC_WINOGRAD_OUT(V, P, B, Y)                                                        \
    do {                                                                                   \
        V r0[4], r1[4];                                                                    \
        for (int j = 0; j < 4; j++) {                                                      \
            r0[j] = P[j] + P[4 + j] + P[8 + j];                                            \
            r1[j] = P[4 + j] - P[8 + j] - P[12 + j];                                       \
        }                                                                                  \
        Y[0][0] = r0[0] + r0[1] + r0[2] + (B);                                             \
        Y[0][1] = r0[1] - r0[2] - r0[3] + (B);                                             \
        Y[1][0] = r1[0] + r1[1] + r1[2] + (B);                                             \
        Y[1][1] = r1[1] - r1[2] - r1[3] + (B);                                             \
    } while (0)

static void FC(winograd_task)(const void *p, i64 task, i64 tasks) {
    const fc_winograd_args *a = (const fc_winograd_args *)p;
    const T *x = (const T *)a->x, *bias = (const T *)a->g.bias, *res = (const T *)a->res;
    T *out = (T *)a->out;
    FC(zero_border_share)(out, &a->border, task, tasks);
    const i64 channels = a->channels, o_ch = a->out_channels, ho = a->ho, wo = a->wo;
    const i64 tiles_h = (ho + 1) / 2, tiles_w = (wo + 1) / 2, per_image = tiles_h * tiles_w;
    const i64 tiles = a->n * per_image, block = a->block;
    const i64 v_shift = block * channels, m_shift = block * o_ch;
    const fc_gemm *g = &a->g;
    const i64 panels = a->g.panels;
    T *vs = (T *)a->v + task * a->v_pitch, *ms = (T *)a->m + task * a->m_pitch;
    const i64 row_step = a->cols * channels, col_step = channels;
    for (i64 b0 = task * block; b0 < tiles; b0 += tasks * block) {
        i64 count = FC_MIN(tiles, b0 + block) - b0;
        for (i64 t = 0; t < count; t++) {  /* V = B^T d B */
            i64 q = b0 + t, n = q / per_image, rr = q % per_image;
            i64 th = rr / tiles_w, tw = rr % tiles_w;
            const T *d = x + ((n * a->rows + a->top + 2 * th) * a->cols + a->left + 2 * tw)
                                 * channels;
            T *v = vs + t * channels;
            i64 c = 0;
            for (; c + L <= channels; c += L)  /* a vector of channels at a time */
                FC_WINOGRAD_IN(VT, FC_LOAD_V, FC_STORE_V);
            for (; c < channels; c++)
                FC_WINOGRAD_IN(T, FC_LOAD_S, FC_STORE_S);
        }
        for (int xi = 0; xi < 16; xi++)  /* the 16 GEMMs */
            for (i64 j = 0; j < panels; j++) {
                fc_gemm plain = *g;
                plain.has_bias = 0;
                plain.res_mode = 0;
                plain.epi.kind = FC_ACT_NONE;
                FC(tiles)(vs, a->v_rows, 0, count, xi * v_shift, &fc_zero_tap, 1, channels, 0,
                          channels, &plain, (xi * panels + j) * g->panel, ms, a->m_rows,
                          xi * m_shift + j * g->nr, FC_MIN(g->nr, o_ch - j * g->nr), 1, 1);
            }
        for (i64 t = 0; t < count; t++) {  /* Y = A^T M A, with the epilogue */
            i64 q = b0 + t, n = q / per_image, rr = q % per_image;
            i64 th = rr / tiles_w, tw = rr % tiles_w;
            i64 rows_in = FC_MIN(2, ho - 2 * th), cols_in = FC_MIN(2, wo - 2 * tw);
            T *o = out + ((n * a->out_rows + a->out_top + 2 * th) * a->out_cols + a->out_left
                          + 2 * tw) * o_ch;
            const T *r = res + ((n * a->res_rows + a->res_top + 2 * th) * a->res_cols
                                + a->res_left + 2 * tw) * a->res_pitch + a->res_channel;
            const T *mm = ms + t * o_ch;
            i64 c0 = 0;
            /* none or a clamp: a vector of channels at a time */
            if (a->g.epi.kind <= FC_ACT_CLAMP)
                for (; c0 + L <= o_ch; c0 += L) {
                    const VT lo = (VT){0} + (T)a->g.epi.lo, hi = (VT){0} + (T)a->g.epi.hi;
                    VT p[16], y[2][2];
                    for (int k = 0; k < 16; k++) p[k] = *(const VT *)(mm + k * m_shift + c0);
                    FC_WINOGRAD_OUT(VT, p, *(const VT *)(bias + c0), y);
                    for (i64 i = 0; i < rows_in; i++)
                        for (i64 j = 0; j < cols_in; j++) {
                            const T *ri = r + (i * a->res_cols + j) * a->res_pitch + c0;
                            VT value = y[i][j];
                            if (a->g.res_mode == 1) value += *(const VT *)ri;
                            if (a->g.epi.kind == FC_ACT_CLAMP) value = FC(clamp)(value, lo, hi);
                            if (a->g.res_mode == 2) value += *(const VT *)ri;
                            *(VT *)(o + (i * a->out_cols + j) * o_ch + c0) = value;
                        }
                }
            for (i64 c = c0; c < o_ch; c++) {  /* the rest, one channel at a time */
                T p[16], y[2][2];
                for (int k = 0; k < 16; k++) p[k] = mm[k * m_shift + c];
                FC_WINOGRAD_OUT(T, p, bias[c], y);
                for (i64 i = 0; i < rows_in; i++)
                    for (i64 j = 0; j < cols_in; j++)
                        o[(i * a->out_cols + j) * o_ch + c] =
                            y[i][j] + (a->g.res_mode == 1
                                       ? r[(i * a->res_cols + j) * a->res_pitch + c] : 0);
            }
            for (i64 i = 0; i < rows_in; i++)  /* their activation, and a residual after it */
                for (i64 j = 0; j < cols_in; j++) {
                    T *y = o + (i * a->out_cols + j) * o_ch;
                    const T *ri = r + (i * a->res_cols + j) * a->res_pitch;
                    FC(activate)(y + c0, o_ch - c0, &a->g.epi);
                    if (a->g.res_mode == 2)
                        for (i64 c = c0; c < o_ch; c++) y[c] += ri[c];
                }
        }
    }
}

/* --- pooling (nhwc.pool) ------------------------------------------------------------------ */

static void FC(pool_task)(const void *p, i64 task, i64 tasks) {
    const fc_pool_args *a = (const fc_pool_args *)p;
    const T *x = (const T *)a->x;
    T *out = (T *)a->out;
    const i64 channels = a->channels, rows = a->n * a->ho;
    for (i64 row = task * rows / tasks; row < (task + 1) * rows / tasks; row++) {
        i64 n = row / a->ho, oh = row - n * a->ho;
        for (i64 ow = 0; ow < a->wo; ow++) {
            T *o = out + ((n * a->out_rows + a->out_top + oh) * a->out_cols + a->out_left + ow)
                             * channels;
            if (!a->average) {
                for (i64 c = 0; c < channels; c++) o[c] = -INFINITY;
                for (i64 i = 0; i < a->kh; i++) {
                    i64 ih = oh * a->sh - a->ph + i * a->dh;
                    if (ih < 0 || ih >= a->height) continue;
                    for (i64 j = 0; j < a->kw; j++) {
                        i64 iw = ow * a->sw - a->pw + j * a->dw;
                        if (iw < 0 || iw >= a->width) continue;
                        const T *v = x + ((n * a->rows + a->top + ih) * a->cols + a->left + iw)
                                             * channels;
                        for (i64 c = 0; c < channels; c++)
                            o[c] = (v[c] > o[c] || v[c] != v[c]) ? v[c] : o[c];
                    }
                }
                continue;
            }
            i64 h0 = oh * a->sh - a->ph, w0 = ow * a->sw - a->pw;
            i64 h1 = FC_MIN(h0 + a->kh, a->height + a->pad_bottom);
            i64 w1 = FC_MIN(w0 + a->kw, a->width + a->pad_right);
            i64 a0 = FC_MAX(h0, 0), a1 = FC_MIN(h1, a->height);
            i64 b0 = FC_MAX(w0, 0), b1 = FC_MIN(w1, a->width);
            i64 count = a->divisor > 0 ? a->divisor
                        : (a->count_include_pad ? (h1 - h0) * (w1 - w0) : (a1 - a0) * (b1 - b0));
            for (i64 c = 0; c < channels; c++) o[c] = 0;
            for (i64 ih = a0; ih < a1; ih++)
                for (i64 iw = b0; iw < b1; iw++) {
                    const T *v = x + ((n * a->rows + a->top + ih) * a->cols + a->left + iw)
                                         * channels;
                    for (i64 c = 0; c < channels; c++) o[c] += v[c];
                }
            for (i64 c = 0; c < channels; c++) o[c] = o[c] / (T)count;
        }
    }
}

/* Task ``task`` of ``tasks`` per image sums its share of the channels. */
static void FC(global_average_task)(const void *p, i64 block, i64 blocks) {
    const fc_gap_args *a = (const fc_gap_args *)p;
    const i64 tasks = blocks / a->n, n = block / tasks, part = block - n * tasks;
    const i64 channels = a->channels;
    const i64 c0 = part * channels / tasks, c1 = (part + 1) * channels / tasks;
    T *total = (T *)a->out + ((n * a->out_rows + a->out_top) * a->out_cols + a->out_left)
                                 * channels;
    const T *x = (const T *)a->x;
    const T scale = (T)(1.0 / (double)(a->height * a->width));
    if (a->maximum) {  /* a NaN stays: no later value beats it */
        for (i64 c = c0; c < c1; c++) total[c] = (T)-INFINITY;
        for (i64 h = 0; h < a->height; h++) {
            const T *row = x + ((n * a->rows + a->top + h) * a->cols + a->left) * channels;
            for (i64 w = 0; w < a->width; w++)
                for (i64 c = c0; c < c1; c++) {
                    T v = row[w * channels + c];
                    total[c] = (v > total[c] || v != v) ? v : total[c];
                }
        }
        return;
    }
    for (i64 c = c0; c < c1; c++) total[c] = 0;
    for (i64 h = 0; h < a->height; h++) {
        const T *row = x + ((n * a->rows + a->top + h) * a->cols + a->left) * channels;
        for (i64 w = 0; w < a->width; w++)
            for (i64 c = c0; c < c1; c++) total[c] += row[w * channels + c];
    }
    for (i64 c = c0; c < c1; c++) total[c] *= scale;
}

/* Squeeze-and-excitation as one step (nhwc.squeeze_excite): each task scales its share of
 * the rows, computing the gate of every image that share touches from the whole image. */
static void FC(squeeze_excite_task)(const void *p, i64 task, i64 tasks) {
    const fc_se_args *a = (const fc_se_args *)p;
    const i64 channels = a->channels, squeeze = a->squeeze, height = a->height;
    const i64 rows = a->n * height, r0 = task * rows / tasks, r1 = (task + 1) * rows / tasks;
    const T *x = (const T *)a->x, *w1 = (const T *)a->w1, *b1 = (const T *)a->b1;
    const T *w2 = (const T *)a->w2, *b2 = (const T *)a->b2;
    T *out = (T *)a->out, *mean = (T *)a->scratch + task * a->scratch_pitch;
    T *gate = mean + channels, *hidden = gate + channels;
    const T scale = (T)(1.0 / (double)(height * a->width));
    for (i64 n = r0 / height; n < (r1 + height - 1) / height; n++) {
        for (i64 c = 0; c < channels; c++) mean[c] = 0;
        for (i64 h = 0; h < height; h++) {
            const T *row = x + ((n * a->rows + a->top + h) * a->cols + a->left) * channels;
            for (i64 w = 0; w < a->width; w++)
                for (i64 c = 0; c < channels; c++) mean[c] += row[w * channels + c];
        }
        for (i64 j = 0; j < squeeze; j++) {
            T total = 0;
            for (i64 c = 0; c < channels; c++) total += w1[j * channels + c] * mean[c];
            hidden[j] = total * scale + b1[j];  /* the mean's scale, once per output */
        }
        FC(activate)(hidden, squeeze, &a->s_epi);
        for (i64 c = 0; c < channels; c++) gate[c] = b2[c];
        for (i64 j = 0; j < squeeze; j++)
            for (i64 c = 0; c < channels; c++) gate[c] += w2[j * channels + c] * hidden[j];
        FC(activate)(gate, channels, &a->epi);
        for (i64 r = FC_MAX(r0, n * height); r < FC_MIN(r1, (n + 1) * height); r++) {
            const i64 h = r - n * height;
            const T *restrict s = x + ((n * a->rows + a->top + h) * a->cols + a->left) * channels;
            T *restrict o = out + ((n * a->out_rows + a->out_top + h) * a->out_cols
                                   + a->out_left) * channels;
            for (i64 w = 0; w < a->width; w++)
                for (i64 c = 0; c < channels; c++)
                    o[w * channels + c] = s[w * channels + c] * gate[c];
        }
    }
}

/* --- layout and element-wise steps (nhwc.layout) ------------------------------------------ */

static void FC(from_nchw_task)(const void *p, i64 task, i64 tasks) {
    const fc_from_nchw_args *a = (const fc_from_nchw_args *)p;
    const T *x = (const T *)a->x;
    T *out = (T *)a->out;
    FC(zero_border_share)(out, &a->border, task, tasks);
    const i64 rows = a->n * a->h, channels = a->c;
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        i64 n = r / a->h, h = r - n * a->h;
        T *o = out + ((n * a->border.rows + a->top + h) * a->border.cols + a->left) * channels;
        const T *xr = x + n * a->sn + h * a->sh;
        if (channels == 3 && a->sw == 1) {  /* an image's: the three rows interleaved */
            const T *r0 = xr, *r1 = xr + a->sc, *r2 = xr + 2 * a->sc;
            for (i64 w = 0; w < a->w; w++) {
                o[3 * w] = r0[w];
                o[3 * w + 1] = r1[w];
                o[3 * w + 2] = r2[w];
            }
            continue;
        }
        if (channels <= 8) {  /* few channels: each plane's row read along, in vectors */
            for (i64 c = 0; c < channels; c++) {
                const T *xc = xr + c * a->sc;
                for (i64 w = 0; w < a->w; w++) o[w * channels + c] = xc[w * a->sw];
            }
            continue;
        }
        for (i64 w = 0; w < a->w; w++) {  /* many: each pixel's channels written together */
            const T *xw = xr + w * a->sw;
            T *ow = o + w * channels;
            for (i64 c = 0; c < channels; c++) ow[c] = xw[c * a->sc];
        }
    }
}

static void FC(to_output_task)(const void *p, i64 task, i64 tasks) {
    const fc_to_output_args *a = (const fc_to_output_args *)p;
    const T *src = (const T *)a->src;
    T *out = (T *)a->out;
    if (a->flat) {  /* one pixel per image: (N, C) */
        for (i64 n = task * a->n / tasks; n < (task + 1) * a->n / tasks; n++)
            memcpy(out + n * a->c, src + ((n * a->rows + a->top) * a->cols + a->left)
                                             * a->channels, a->c * sizeof(T));
        return;
    }
    /* by rows, and along a row in runs of pixels whose channels stay in L1 while each plane's
     * part of the run is written: a plane at a time would read the whole buffer per plane */
    const i64 rows = a->n * a->h, plane = a->h * a->w;
    const i64 run = FC_MAX(1, 8192 / (i64)sizeof(T) / a->channels);
    for (i64 q = task * rows / tasks; q < (task + 1) * rows / tasks; q++) {
        i64 n = q / a->h, h = q - n * a->h;
        const T *s = src + ((n * a->rows + a->top + h) * a->cols + a->left) * a->channels;
        T *o = out + n * a->c * plane + h * a->w;
        for (i64 w0 = 0; w0 < a->w; w0 += run) {
            const i64 w1 = FC_MIN(a->w, w0 + run);
            for (i64 c = 0; c < a->c; c++)
                for (i64 w = w0; w < w1; w++) o[c * plane + w] = s[w * a->channels + c];
        }
    }
}

static void FC(zero_border_task)(const void *p, i64 task, i64 tasks) {
    const fc_zero_border_args *a = (const fc_zero_border_args *)p;
    FC(zero_border_share)((T *)a->buf, &a->border, task, tasks);
}

static void FC(affine_task)(const void *p, i64 task, i64 tasks) {
    const fc_affine_args *a = (const fc_affine_args *)p;
    const T *x = (const T *)a->x, *scale = (const T *)a->scale, *shift = (const T *)a->shift;
    T *out = (T *)a->out;
    const i64 channels = a->channels, rows = a->n * a->height;
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        i64 n = r / a->height, h = r - n * a->height;
        const T *s = x + ((n * a->rows + a->top + h) * a->cols + a->left) * channels;
        T *o = out + ((n * a->out_rows + a->out_top + h) * a->out_cols + a->out_left) * channels;
        for (i64 w = 0; w < a->width; w++) {
            const T *sv = s + w * channels;
            T *ov = o + w * channels;
            if (a->has_affine)
                for (i64 c = 0; c < channels; c++) ov[c] = sv[c] * scale[c] + shift[c];
            else
                for (i64 c = 0; c < channels; c++) ov[c] = sv[c];
        }
        FC(activate)(o, a->width * channels, &a->epi);
    }
}

static void FC(binary_task)(const void *p, i64 task, i64 tasks) {
    const fc_binary_args *a = (const fc_binary_args *)p;
    const T *av = (const T *)a->a, *bv = (const T *)a->b;
    T *out = (T *)a->out;
    const i64 channels = a->channels, rows = a->n * a->height;
    const i64 b_step = a->b_pixels ? channels : 0;
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        i64 n = r / a->height, h = r - n * a->height;
        const T *x = av + ((n * a->a_rows + a->a_top + h) * a->a_cols + a->a_left) * channels;
        const T *y = bv + ((n * a->b_rows + a->b_top + (a->b_pixels ? h : 0)) * a->b_cols
                           + a->b_left) * channels;
        T *o = out + ((n * a->out_rows + a->out_top + h) * a->out_cols + a->out_left) * channels;
        for (i64 w = 0; w < a->width; w++) {
            const T *xw = x + w * channels, *yw = y + w * b_step;
            T *ow = o + w * channels;
            switch (a->op) {
            case FC_BINARY_ADD: for (i64 c = 0; c < channels; c++) ow[c] = xw[c] + yw[c]; break;
            case FC_BINARY_MUL: for (i64 c = 0; c < channels; c++) ow[c] = xw[c] * yw[c]; break;
            case FC_BINARY_SUB: for (i64 c = 0; c < channels; c++) ow[c] = xw[c] - yw[c]; break;
            case FC_BINARY_DIV: for (i64 c = 0; c < channels; c++) ow[c] = xw[c] / yw[c]; break;
            case FC_BINARY_SUB_FROM:
                for (i64 c = 0; c < channels; c++) ow[c] = yw[c] - xw[c];
                break;
            case FC_BINARY_DIV_INTO:
                for (i64 c = 0; c < channels; c++) ow[c] = yw[c] / xw[c];
                break;
            default:  /* PRelu; NaN takes the product and stays NaN */
                for (i64 c = 0; c < channels; c++) ow[c] = xw[c] >= 0 ? xw[c] : xw[c] * yw[c];
                break;
            }
        }
        FC(activate)(o, a->width * channels, &a->epi);
    }
}

/* Channels x_c0 .. x_c0 + count of x into out from its channel c0 (a concatenation's slice,
   a split's part, or all of a value), each pixel repeated sh x sw times (a nearest
   upsampling by integer factors; 1 x 1: a copy). The tasks share the output's rows. */
static void FC(copy_channels_task)(const void *p, i64 task, i64 tasks) {
    const fc_copy_args *a = (const fc_copy_args *)p;
    const T *x = (const T *)a->x;
    T *out = (T *)a->out;
    const i64 channels = a->channels, out_height = a->height * a->sh;
    const i64 rows = a->n * out_height;
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        i64 n = r / out_height, oh = r - n * out_height, h = oh / a->sh;
        const T *s = x + ((n * a->rows + a->top + h * a->row_step) * a->cols + a->left) * channels
                     + a->x_c0 + (oh - h * a->sh) * a->sw * a->phase_step;
        T *o = out + ((n * a->out_rows + a->out_top + oh) * a->out_cols + a->out_left) * a->total
               + a->c0;
        for (i64 w = 0; w < a->width; w++)
            for (i64 j = 0; j < a->sw; j++) {
                /* a loop, not memcpy: a call per pixel would cost more than a few channels */
                T *restrict to = o + (w * a->sw + j) * a->total;
                const T *restrict from = s + w * a->col_step * channels + j * a->phase_step;
                for (i64 c = 0; c < a->count; c++) to[c] = from[c];
            }
    }
}

/* out[out_rows[p] + c] = x[rows[p] + c * c_step] (nhwc.layout.gather): a reshape or a
   transpose that moves values between the pixels and the channels. The tasks share the
   output's pixels. */
static void FC(gather_task)(const void *p, i64 task, i64 tasks) {
    const fc_gather_args *a = (const fc_gather_args *)p;
    const T *x = (const T *)a->x;
    T *out = (T *)a->out;
    const i64 channels = a->channels, step = a->c_step;
    for (i64 q = task * a->pixels / tasks; q < (task + 1) * a->pixels / tasks; q++) {
        T *restrict to = out + a->out_rows[q];
        const T *restrict from = x + a->rows[q];
        if (step == 1)
            for (i64 c = 0; c < channels; c++) to[c] = from[c];
        else
            for (i64 c = 0; c < channels; c++) to[c] = from[c * step];
    }
}

/* The softmax over each pixel's channels (nhwc.layout.softmax); an fc_gap_args' window. */
static void FC(softmax_task)(const void *p, i64 task, i64 tasks) {
    const fc_gap_args *a = (const fc_gap_args *)p;
    const T *x = (const T *)a->x;
    T *out = (T *)a->out;
    const i64 channels = a->channels, rows = a->n * a->height;
    FC_EXP_BOUNDS(exp_lo, exp_hi);
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        const i64 n = r / a->height, h = r - n * a->height;
        const T *s = x + ((n * a->rows + a->top + h) * a->cols + a->left) * channels;
        T *o = out + ((n * a->out_rows + a->out_top + h) * a->out_cols + a->out_left) * channels;
        for (i64 w = 0; w < a->width; w++, s += channels, o += channels) {
            T top = s[0], total = 0;
            for (i64 c = 1; c < channels; c++)  /* a NaN makes them all NaN */
                top = (s[c] > top || s[c] != s[c]) ? s[c] : top;
            for (i64 c = 0; c < channels; c++) o[c] = FC(exp)(s[c] - top, exp_lo, exp_hi);
            for (i64 c = 0; c < channels; c++) total += o[c];
            const T inverse = (T)1 / total;
            for (i64 c = 0; c < channels; c++) o[c] *= inverse;
        }
    }
}

/* ONNX's Resize through per-axis tables (nhwc.layout.resize). */
static void FC(resize_task)(const void *p, i64 task, i64 tasks) {
    const fc_resize_args *a = (const fc_resize_args *)p;
    const T *x = (const T *)a->x, *row_w = (const T *)a->row_w, *col_w = (const T *)a->col_w;
    T *out = (T *)a->out;
    const i64 channels = a->channels, rows = a->n * a->ho;
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        const i64 n = r / a->ho, oh = r - n * a->ho;
        const T *upper_row = x + ((n * a->rows + a->top + a->rows0[oh]) * a->cols + a->left)
                                     * channels;
        const T *lower_row = x + ((n * a->rows + a->top + a->rows1[oh]) * a->cols + a->left)
                                     * channels;
        const T wy = row_w[oh];
        T *o = out + ((n * a->out_rows + a->out_top + oh) * a->out_cols + a->out_left) * channels;
        for (i64 ow = 0; ow < a->wo; ow++) {
            const T wx = col_w[ow];
            const T *restrict u0 = upper_row + a->cols0[ow] * channels;
            const T *restrict u1 = upper_row + a->cols1[ow] * channels;
            const T *restrict l0 = lower_row + a->cols0[ow] * channels;
            const T *restrict l1 = lower_row + a->cols1[ow] * channels;
            T *restrict to = o + ow * channels;
            for (i64 c = 0; c < channels; c++) {
                T upper = u0[c] + wx * (u1[c] - u0[c]), lower = l0[c] + wx * (l1[c] - l0[c]);
                to[c] = upper + wy * (lower - upper);
            }
        }
    }
}

/* torch's flatten order, NCHW, into a flat (N, F) output. */
static void FC(flatten_task)(const void *p, i64 task, i64 tasks) {
    const fc_flatten_args *a = (const fc_flatten_args *)p;
    const T *src = (const T *)a->src;
    T *out = (T *)a->out;
    const i64 channels = a->channels, features = channels * a->height * a->width;
    const i64 planes = a->n * channels;
    for (i64 q = task * planes / tasks; q < (task + 1) * planes / tasks; q++) {
        i64 n = q / channels, c = q - n * channels;
        T *o = out + n * features + c * a->height * a->width;
        for (i64 h = 0; h < a->height; h++) {
            const T *s = src + ((n * a->rows + a->top + h) * a->cols + a->left) * channels + c;
            for (i64 w = 0; w < a->width; w++) o[h * a->width + w] = s[w * channels];
        }
    }
}

#undef FC_LOAD_V
#undef FC_STORE_V
#undef FC_LOAD_S
#undef FC_STORE_S
#undef FC_WINOGRAD_IN
#undef FC_WINOGRAD_OUT
#undef FC_TILE_ARGS
#undef FC_TILE_CASE
#undef FC_MIN
#undef FC_MAX
#undef L
#undef VT
#undef HT
#undef T
