"""The CUDA source of the multi-tensor kernel, shared by the CuPy backend (NVRTC) and the
device-compile check (nvcc) of the host build: below both, so that neither imports the other."""

from __future__ import annotations

__all__ = ["KERNEL_SOURCE"]

# Every kernel: chunk c covers elements [chunk_start[c], min(chunk_start[c] + chunk_size,
# offsets[k + 1])) of tensor k = chunk_tensor[c]; each element is read once and written once.
KERNEL_SOURCE = r"""
#include "adabelief_step.cuh"

#define AB_CHUNK_LOOP_BEGIN                                                                   \
    for (int c = blockIdx.x; c < n_chunks; c += gridDim.x) {                                  \
        const int k = chunk_tensor[c];                                                        \
        const long long first = chunk_start[c];                                               \
        const long long stop = offsets[k + 1];                                                \
        const long long last = first + chunk_size < stop ? first + chunk_size : stop;         \
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x) {
#define AB_CHUNK_LOOP_END                                                                     \
        }                                                                                     \
    }

extern "C" __global__ void adabelief_step_f32(
    float* __restrict__ w, float* __restrict__ m, float* __restrict__ s,
    const float* __restrict__ g,
    const long long* __restrict__ offsets, const int* __restrict__ chunk_tensor,
    const long long* __restrict__ chunk_start, int n_chunks, int chunk_size,
    const float* __restrict__ eta, const float* __restrict__ wd,
    float rescale, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
    float epsilon, float clip, int flags)
{
    const ab_hyper_f32 h = {rescale, beta1, one_minus_beta1, beta2, one_minus_beta2,
                            epsilon, clip, flags};
    AB_CHUNK_LOOP_BEGIN
        float wi = w[i], mi = m[i], si = s[i];
        ab_element_f32(&wi, &mi, &si, g[i], eta[k], wd[k], &h);
        w[i] = wi; m[i] = mi; s[i] = si;
    AB_CHUNK_LOOP_END
}

extern "C" __global__ void adabelief_step_f64(
    double* __restrict__ w, double* __restrict__ m, double* __restrict__ s,
    const double* __restrict__ g,
    const long long* __restrict__ offsets, const int* __restrict__ chunk_tensor,
    const long long* __restrict__ chunk_start, int n_chunks, int chunk_size,
    const double* __restrict__ eta, const double* __restrict__ wd,
    double rescale, double beta1, double one_minus_beta1, double beta2,
    double one_minus_beta2, double epsilon, double clip, int flags)
{
    const ab_hyper_f64 h = {rescale, beta1, one_minus_beta1, beta2, one_minus_beta2,
                            epsilon, clip, flags};
    AB_CHUNK_LOOP_BEGIN
        double wi = w[i], mi = m[i], si = s[i];
        ab_element_f64(&wi, &mi, &si, g[i], eta[k], wd[k], &h);
        w[i] = wi; m[i] = mi; s[i] = si;
    AB_CHUNK_LOOP_END
}

extern "C" __global__ void adabelief_step_f16_master(
    float* __restrict__ w, float* __restrict__ m, float* __restrict__ s,
    unsigned short* __restrict__ w16, const unsigned short* __restrict__ g,
    const long long* __restrict__ offsets, const int* __restrict__ chunk_tensor,
    const long long* __restrict__ chunk_start, int n_chunks, int chunk_size,
    const float* __restrict__ eta, const float* __restrict__ wd,
    float rescale, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
    float epsilon, float clip, int flags)
{
    const ab_hyper_f32 h = {rescale, beta1, one_minus_beta1, beta2, one_minus_beta2,
                            epsilon, clip, flags};
    AB_CHUNK_LOOP_BEGIN
        float wi = w[i], mi = m[i], si = s[i];
        unsigned short hi;
        ab_element_f16_master(&wi, &mi, &si, &hi, g[i], eta[k], wd[k], &h);
        w[i] = wi; m[i] = mi; s[i] = si; w16[i] = hi;
    AB_CHUNK_LOOP_END
}
"""
