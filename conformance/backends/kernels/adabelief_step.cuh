/*
 * adabelief_step.cuh - the per-element AdaBelief update of MXNet 2.x (profiles "mxnet" and
 * "mxnet-doc"), written once for both the CUDA kernels (nvcc, NVRTC through CuPy) and the host
 * build that CI tests without a GPU (plain C99: gcc/clang compile this file as C).
 *
 * FLOATING-POINT CONTRACT (the choice that makes host and device bit-identical)
 *   - No fused multiply-add, anywhere. Every +, -, *, / and sqrt is one IEEE-754 operation in
 *     the compute type (float for float32 and float16-mp, double for float64), rounded to
 *     nearest even, evaluated in exactly the order written below.
 *   - Device: each operation is spelled with CUDA's round-to-nearest intrinsics (__fadd_rn,
 *     __fsub_rn, __fmul_rn, __fdiv_rn, __fsqrt_rn and the __d*_rn ones). CUDA documents that
 *     these are never merged into an FMA, whatever --fmad says. The kernels are compiled with
 *     --fmad=false --ftz=false --prec-div=true --prec-sqrt=true as well, so code added later
 *     without the intrinsics is also unfused, keeps subnormals and rounds correctly.
 *   - Host: plain C operators and sqrtf/sqrt (correctly rounded in IEEE-754 and glibc),
 *     compiled with -ffp-contract=off -fno-fast-math so the compiler contracts nothing;
 *     adabelief_host.c refuses to build under __FAST_MATH__ or with FLT_EVAL_METHOD != 0
 *     (no excess precision).
 *   - Subnormals are honoured on both sides: no flush-to-zero, no denormals-are-zero.
 *   - float16 <-> float32: device __half2float / __float2half_rn (cvt.f32.f16, cvt.rn.f16.f32:
 *     exact widening; IEEE round to nearest even, subnormals kept); host: the integer
 *     conversions below, which compute the same IEEE results bit for bit.
 *   - Results are bit-identical between host and device for every non-NaN value (signed zeros
 *     included). A NaN result is a NaN on both, but its sign and payload are unspecified
 *     (x86 propagates input payloads; the GPU returns a canonical NaN).
 *
 * The evaluation order (MXNet's single-tensor non-multi-precision kernel, canonical form):
 *     gs  = rescale * g
 *     mxnet:      g' = clamp(gs + wd * w)          (weight decay before clipping)
 *     mxnet-doc:  g' = clamp(gs) + wd * w          (clipping before weight decay)
 *     m1  = beta1 * m + (1 - beta1) * g'
 *     r   = g' - m1
 *     s1  = (beta2 * s + (1 - beta2) * (r * r)) + epsilon
 *     w1  = w - eta * (m1 / (sqrt(s1) + epsilon))
 * clamp(x) = x > c ? c : (x < -c ? -c : x): NaN stays NaN, +-inf becomes +-c. It is applied
 * only when AB_FLAG_CLIP is set; the host decides that (clip_gradient > 0), the bias-corrected
 * step size eta, the per-tensor wd and the skip rule (rescale_grad 0 or non-finite: no launch).
 */
#ifndef ADABELIEF_STEP_CUH
#define ADABELIEF_STEP_CUH

#define AB_FLAG_CLIP 1           /* clamp the gradient to [-clip, clip] */
#define AB_FLAG_WD_AFTER_CLIP 2  /* profile mxnet-doc: add wd * w after clipping */

#if defined(__CUDACC__)
#  define AB_HD static __host__ __device__ __forceinline__
#  if !defined(__CUDACC_RTC__) || __has_include(<cuda_fp16.h>)
#    include <cuda_fp16.h>
#    define AB_HAVE_CUDA_FP16 1
#  endif
#else
#  define AB_HD static inline
#endif

#if !defined(__CUDACC_RTC__)  /* NVRTC has no C library headers and needs none of these */
#  include <math.h>
#  include <string.h>
#endif

/* ----- the operations, each one IEEE rounding to nearest even, never contracted --------- */
#if defined(__CUDA_ARCH__)
#  define AB_ADD_F32(a, b) __fadd_rn((a), (b))
#  define AB_SUB_F32(a, b) __fsub_rn((a), (b))
#  define AB_MUL_F32(a, b) __fmul_rn((a), (b))
#  define AB_DIV_F32(a, b) __fdiv_rn((a), (b))
#  define AB_SQRT_F32(a) __fsqrt_rn(a)
#  define AB_ADD_F64(a, b) __dadd_rn((a), (b))
#  define AB_SUB_F64(a, b) __dsub_rn((a), (b))
#  define AB_MUL_F64(a, b) __dmul_rn((a), (b))
#  define AB_DIV_F64(a, b) __ddiv_rn((a), (b))
#  define AB_SQRT_F64(a) __dsqrt_rn(a)
#else
#  define AB_ADD_F32(a, b) ((a) + (b))
#  define AB_SUB_F32(a, b) ((a) - (b))
#  define AB_MUL_F32(a, b) ((a) * (b))
#  define AB_DIV_F32(a, b) ((a) / (b))
#  define AB_SQRT_F32(a) sqrtf(a)
#  define AB_ADD_F64(a, b) ((a) + (b))
#  define AB_SUB_F64(a, b) ((a) - (b))
#  define AB_MUL_F64(a, b) ((a) * (b))
#  define AB_DIV_F64(a, b) ((a) / (b))
#  define AB_SQRT_F64(a) sqrt(a)
#endif

/*
 * AB_DEFINE_STEP(T, SUF) defines, for compute type T:
 *   ab_hyper_SUF     the step's scalars, already rounded to T by the host;
 *   ab_clamp_SUF     clamp(x) above;
 *   ab_element_SUF   one element: reads *w, *m, *s once, writes each once.
 */
#define AB_DEFINE_STEP(T, SUF, ADD, SUB, MUL, DIV, SQRT)                                       \
    typedef struct ab_hyper_##SUF {                                                            \
        T rescale;         /* rescale_grad */                                                  \
        T beta1;                                                                               \
        T one_minus_beta1; /* 1 - beta1, rounded in T */                                       \
        T beta2;                                                                               \
        T one_minus_beta2; /* 1 - beta2, rounded in T */                                       \
        T epsilon;                                                                             \
        T clip;            /* clip_gradient; read only under AB_FLAG_CLIP */                    \
        int flags;         /* AB_FLAG_* */                                                     \
    } ab_hyper_##SUF;                                                                          \
                                                                                               \
    AB_HD T ab_clamp_##SUF(T x, T c)                                                           \
    {                                                                                          \
        /* Comparisons, not fmin/fmax: those would turn a NaN gradient into +-c. */            \
        return x > c ? c : (x < -c ? -c : x);                                                  \
    }                                                                                          \
                                                                                               \
    AB_HD void ab_element_##SUF(T *w, T *m, T *s, T g, T eta, T wd, const ab_hyper_##SUF *h)   \
    {                                                                                          \
        const T w0 = *w;                                                                       \
        const T gs = MUL(h->rescale, g);                                                       \
        T gc;                                                                                  \
        if (h->flags & AB_FLAG_WD_AFTER_CLIP) {                                                \
            const T gk = (h->flags & AB_FLAG_CLIP) ? ab_clamp_##SUF(gs, h->clip) : gs;         \
            gc = ADD(gk, MUL(wd, w0));                                                         \
        } else {                                                                               \
            const T gw = ADD(gs, MUL(wd, w0));                                                 \
            gc = (h->flags & AB_FLAG_CLIP) ? ab_clamp_##SUF(gw, h->clip) : gw;                 \
        }                                                                                      \
        const T m1 = ADD(MUL(h->beta1, *m), MUL(h->one_minus_beta1, gc));                      \
        const T r = SUB(gc, m1);                                                               \
        /* epsilon is added inside s and stored with it (MXNet), then added again below. */    \
        const T s1 = ADD(ADD(MUL(h->beta2, *s), MUL(h->one_minus_beta2, MUL(r, r))),          \
                         h->epsilon);                                                          \
        const T d = ADD(SQRT(s1), h->epsilon);                                                 \
        *w = SUB(w0, MUL(eta, DIV(m1, d)));                                                    \
        *m = m1;                                                                               \
        *s = s1;                                                                               \
    }

AB_DEFINE_STEP(float, f32, AB_ADD_F32, AB_SUB_F32, AB_MUL_F32, AB_DIV_F32, AB_SQRT_F32)
AB_DEFINE_STEP(double, f64, AB_ADD_F64, AB_SUB_F64, AB_MUL_F64, AB_DIV_F64, AB_SQRT_F64)

/* ----- float16 storage <-> float32 compute ------------------------------------------------ */
#if defined(__CUDA_ARCH__)

#if defined(AB_HAVE_CUDA_FP16)
AB_HD float ab_half_to_float(unsigned short h)
{
    return __half2float(__ushort_as_half(h));
}

AB_HD unsigned short ab_float_to_half(float f)
{
    return __half_as_ushort(__float2half_rn(f));
}
#else /* NVRTC without the toolkit's headers: the same two instructions cuda_fp16.h emits */
AB_HD float ab_half_to_float(unsigned short h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

AB_HD unsigned short ab_float_to_half(float f)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

#else /* host: IEEE-754 binary16 conversions on the bit patterns */

AB_HD unsigned int ab_float_bits(float f)
{
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
}

AB_HD float ab_bits_float(unsigned int u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Exact: every binary16 value is a binary32 value. */
AB_HD float ab_half_to_float(unsigned short h)
{
    const unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    const unsigned int exp = ((unsigned int)h >> 10) & 0x1fu;
    const unsigned int man = (unsigned int)h & 0x3ffu;
    if (exp == 0x1fu) /* inf, or NaN with its payload */
        return ab_bits_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0u) { /* zero or subnormal: man * 2^-24, exact in float */
        const float mag = (float)man * 5.9604644775390625e-08f;
        return sign ? -mag : mag;
    }
    return ab_bits_float(sign | ((exp + 112u) << 23) | (man << 13)); /* rebias 15 -> 127 */
}

/* Round to nearest, ties to even; overflow to inf; binary16 subnormals produced exactly. */
AB_HD unsigned short ab_float_to_half(float f)
{
    const unsigned int u = ab_float_bits(f);
    const unsigned int sign = (u >> 16) & 0x8000u;
    const unsigned int a = u & 0x7fffffffu;
    unsigned int e, man, q, rem, half, shift;
    if (a >= 0x7f800000u) /* inf; NaN stays a (quiet) NaN */
        return (unsigned short)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
    if (a >= 0x477ff000u) /* >= 65520 = 65504 + half an ulp: the tie goes to even, i.e. inf */
        return (unsigned short)(sign | 0x7c00u);
    e = a >> 23;
    if (e < 113u) { /* below 2^-14: a binary16 subnormal (or zero), quantum 2^-24 */
        shift = 126u - e; /* the value in units of 2^-24 is man >> shift */
        if (shift > 24u) /* below 2^-25: rounds to zero (2^-25 itself ties to even 0) */
            return (unsigned short)sign;
        man = (a & 0x7fffffu) | 0x800000u;
        q = man >> shift;
        rem = man & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q += 1u; /* may carry into the smallest normal, 0x0400: still right */
        return (unsigned short)(sign | q);
    }
    q = ((e - 112u) << 10) | ((a >> 13) & 0x3ffu);
    rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
        q += 1u; /* a carry into the exponent is the correctly rounded result */
    return (unsigned short)(sign | q);
}

#endif /* __CUDA_ARCH__ */

/* float16-mp: float16 gradient, float32 master weight and state, float16 copy of the weight. */
AB_HD void ab_element_f16_master(float *w, float *m, float *s, unsigned short *w16,
                                 unsigned short g, float eta, float wd, const ab_hyper_f32 *h)
{
    ab_element_f32(w, m, s, ab_half_to_float(g), eta, wd, h);
    *w16 = ab_float_to_half(*w);
}

#endif /* ADABELIEF_STEP_CUH */
