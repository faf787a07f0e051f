/*
 * adabelief_host.c - the CUDA kernels' per-element source (adabelief_step.cuh) compiled for
 * the host, so that CI checks the GPU arithmetic without a GPU. adabelief_conformance._native
 * builds it with:  cc -std=c99 -O2 -fPIC -shared -ffp-contract=off -fno-fast-math
 *
 * The loops mirror the device kernels' multi-tensor layout: the parameters lie end to end in
 * flat buffers, tensor k owns elements [offsets[k], offsets[k+1]) and has its own step size
 * eta[k] and weight decay wd[k]; the other scalars are shared by all tensors of the step.
 */
#include <float.h>

#include "adabelief_step.cuh"

#if defined(__FAST_MATH__)
#error "adabelief_host.c must be compiled without -ffast-math (see adabelief_step.cuh)"
#endif
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "adabelief_host.c needs FLT_EVAL_METHOD == 0: every float operation rounded to float"
#endif

typedef char ab_check_uint_is_32_bits[sizeof(unsigned int) == 4 ? 1 : -1];
typedef char ab_check_ushort_is_16_bits[sizeof(unsigned short) == 2 ? 1 : -1];

#if defined(_WIN32)
#define AB_EXPORT __declspec(dllexport)
#else
#define AB_EXPORT __attribute__((visibility("default")))
#endif

/* Bumped whenever a signature below changes; the Python side checks it after loading. */
AB_EXPORT int ab_host_abi_version(void)
{
    return 1;
}

AB_EXPORT void ab_host_step_f32(long long n_tensors, const long long *offsets,
                                float *w, float *m, float *s, const float *g,
                                const float *eta, const float *wd,
                                float rescale, float beta1, float one_minus_beta1, float beta2,
                                float one_minus_beta2, float epsilon, float clip, int flags)
{
    const ab_hyper_f32 h = {rescale, beta1, one_minus_beta1, beta2, one_minus_beta2,
                            epsilon, clip, flags};
    long long k, i;
    for (k = 0; k < n_tensors; ++k)
        for (i = offsets[k]; i < offsets[k + 1]; ++i)
            ab_element_f32(&w[i], &m[i], &s[i], g[i], eta[k], wd[k], &h);
}

AB_EXPORT void ab_host_step_f64(long long n_tensors, const long long *offsets,
                                double *w, double *m, double *s, const double *g,
                                const double *eta, const double *wd,
                                double rescale, double beta1, double one_minus_beta1,
                                double beta2, double one_minus_beta2, double epsilon,
                                double clip, int flags)
{
    const ab_hyper_f64 h = {rescale, beta1, one_minus_beta1, beta2, one_minus_beta2,
                            epsilon, clip, flags};
    long long k, i;
    for (k = 0; k < n_tensors; ++k)
        for (i = offsets[k]; i < offsets[k + 1]; ++i)
            ab_element_f64(&w[i], &m[i], &s[i], g[i], eta[k], wd[k], &h);
}

AB_EXPORT void ab_host_step_f16_master(long long n_tensors, const long long *offsets,
                                       float *w, float *m, float *s, unsigned short *w16,
                                       const unsigned short *g,
                                       const float *eta, const float *wd,
                                       float rescale, float beta1, float one_minus_beta1,
                                       float beta2, float one_minus_beta2, float epsilon,
                                       float clip, int flags)
{
    const ab_hyper_f32 h = {rescale, beta1, one_minus_beta1, beta2, one_minus_beta2,
                            epsilon, clip, flags};
    long long k, i;
    for (k = 0; k < n_tensors; ++k)
        for (i = offsets[k]; i < offsets[k + 1]; ++i)
            ab_element_f16_master(&w[i], &m[i], &s[i], &w16[i], g[i], eta[k], wd[k], &h);
}

/* The conversions on their own, for tests and for setting up the float16 weight copy. */
AB_EXPORT void ab_host_half_to_float(long long n, const unsigned short *h, float *out)
{
    long long i;
    for (i = 0; i < n; ++i)
        out[i] = ab_half_to_float(h[i]);
}

AB_EXPORT void ab_host_float_to_half(long long n, const float *f, unsigned short *out)
{
    long long i;
    for (i = 0; i < n; ++i)
        out[i] = ab_float_to_half(f[i]);
}

/*
 * The calling thread's flush-to-zero / denormals-are-zero bits (0 when both are off). A
 * library loaded into the process that was built with -ffast-math can switch them on, which
 * would silently flush subnormals in every loop above; the Python side refuses to run then.
 */
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <xmmintrin.h>
AB_EXPORT unsigned int ab_host_flush_flags(void)
{
    return _mm_getcsr() & 0x8040u; /* FTZ (bit 15) | DAZ (bit 6) */
}
#elif defined(__aarch64__)
AB_EXPORT unsigned int ab_host_flush_flags(void)
{
    unsigned long long fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    return (unsigned int)(fpcr & (1ull << 24)); /* FZ */
}
#else
AB_EXPORT unsigned int ab_host_flush_flags(void)
{
    return 0u;
}
#endif
