// ssm/cuda/causal_conv1d.cuh — the depthwise causal conv1d (+ SiLU) on the device over
// packed sequences with carried state (ssm::CausalConv1d::forward), and its one-token
// update (ssm::CausalConv1d::step).
#pragma once

#include "ssm/cuda/common.cuh"

namespace ssm::cuda {

namespace detail {

// ---- causal conv1d ---------------------------------------------------------------------------

/// One thread per (t, e): out[t,e] = act(b[e] + Σ_k w[k,e] · x[t−(K−1)+k, e]) with the
/// inputs before the sequence's start taken from `state_in` or zero.
template <class T>
__global__ void causal_conv1d_kernel(const T* __restrict__ x, dindex ld_x, dindex rows, dindex E,
                                     int K, const float* __restrict__ taps,
                                     const float* __restrict__ bias,
                                     const dindex* __restrict__ offsets, int nseq,
                                     const float* __restrict__ state_in, bool silu_out,
                                     float* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < rows * E; i += grid_threads()) {
        const dindex t = i / E, e = i - t * E;
        const int s = find_sequence(offsets, nseq, t);
        const dindex start = offsets[s];
        float acc = bias ? bias[e] : 0.0f;
        for (int k = 0; k < K; ++k) {
            const dindex src = t - (K - 1) + k;
            float v;
            if (src >= start)
                v = to_float(x[src * ld_x + e]);
            else if (state_in)  // slot K−1 + (src − start) ∈ [0, K−1) of this sequence's state
                v = state_in[(static_cast<dindex>(s) * (K - 1) + (K - 1) + (src - start)) * E + e];
            else
                continue;
            acc += taps[static_cast<dindex>(k) * E + e] * v;
        }
        out[t * ld_out + e] = silu_out ? silu(acc) : acc;
    }
}

/// One thread per (sequence, e): the last K−1 inputs of the sequence, oldest first,
/// reaching back into `state_in` (or zeros) for a sequence shorter than K−1. Slot j reads
/// state slot j + len ≥ j, and each thread walks j upwards, so state_out may alias state_in.
template <class T>
__global__ void conv_final_state_kernel(const T* __restrict__ x, dindex ld_x, dindex E, int K,
                                        const dindex* __restrict__ offsets, int nseq,
                                        const float* state_in, float* state_out) {
    for (dindex i = global_thread(); i < nseq * E; i += grid_threads()) {
        const dindex s = i / E, e = i - s * E;
        const dindex start = offsets[s], end = offsets[s + 1];
        for (int j = 0; j < K - 1; ++j) {
            const dindex src = end - (K - 1) + j;
            float v = 0.0f;
            if (src >= start)
                v = to_float(x[src * ld_x + e]);
            else if (state_in)
                v = state_in[(s * (K - 1) + (K - 1) + (src - start)) * E + e];
            state_out[(s * (K - 1) + j) * E + e] = v;
        }
    }
}

/// One thread per (b, e): dot the window [state (K−1 oldest first), x] with the taps, then
/// shift x into the state.
template <class T>
__global__ void causal_conv1d_step_kernel(const T* __restrict__ x, dindex ld_x, dindex batch,
                                          dindex E, int K, const float* __restrict__ taps,
                                          const float* __restrict__ bias, float* __restrict__ state,
                                          bool silu_out, float* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < batch * E; i += grid_threads()) {
        const dindex b = i / E, e = i - b * E;
        float* st = state + b * (K - 1) * E;
        const float xv = to_float(x[b * ld_x + e]);
        float acc = bias ? bias[e] : 0.0f;
        for (int k = 0; k < K - 1; ++k) acc += taps[static_cast<dindex>(k) * E + e] * st[k * E + e];
        acc += taps[static_cast<dindex>(K - 1) * E + e] * xv;
        for (int k = 0; k + 1 < K - 1; ++k) st[k * E + e] = st[(k + 1) * E + e];
        if (K > 1) st[static_cast<dindex>(K - 2) * E + e] = xv;
        out[b * ld_out + e] = silu_out ? silu(acc) : acc;
    }
}

}  // namespace detail

/// x (T, E; ld_x) → out (T, E; ld_out), taps (K, E) (tap k of channel e at k·E + e; the
/// newest input meets tap K−1), bias (E) optional. `state_in` (nseq, K−1, E) gives the
/// inputs before each sequence (nullptr: zeros); `state_out` (nseq, K−1, E) receives each
/// sequence's last K−1 inputs and may be the same memory as `state_in`.
template <class T>
void causal_conv1d(const T* x, dindex ld_x, dindex E, int K, const float* taps, const float* bias,
                   const DeviceOffsets& offsets, const float* state_in, float* state_out, bool silu,
                   float* out, dindex ld_out, cudaStream_t stream) {
    const dindex rows = offsets.tokens();
    require(E > 0 && K > 0 && ld_x >= E && ld_out >= E && taps, "cuda::causal_conv1d: bad sizes");
    if (rows > 0) {
        detail::causal_conv1d_kernel<T>
            <<<detail::grid_for(rows * E, detail::kBlockThreads), detail::kBlockThreads, 0,
               stream>>>(x, ld_x, rows, E, K, taps, bias, offsets.data(), offsets.sequences(),
                         state_in, silu, out, ld_out);
        SSM_CUDA_CHECK_LAUNCH("causal_conv1d_kernel");
    }
    if (state_out && K > 1) {  // after the conv: it reads state_in, which this may overwrite
        const dindex work = static_cast<dindex>(offsets.sequences()) * E;
        detail::conv_final_state_kernel<T>
            <<<detail::grid_for(work, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
                x, ld_x, E, K, offsets.data(), offsets.sequences(), state_in, state_out);
        SSM_CUDA_CHECK_LAUNCH("conv_final_state_kernel");
    }
}

/// One new input per sequence (`ssm::CausalConv1d::step`): x (batch, E; ld_x) → out;
/// `state` (batch, K−1, E) is shifted to include x.
template <class T>
void causal_conv1d_step(const T* x, dindex ld_x, dindex batch, dindex E, int K, const float* taps,
                        const float* bias, float* state, bool silu, float* out, dindex ld_out,
                        cudaStream_t stream) {
    require(batch >= 0 && E > 0 && K > 0 && ld_x >= E && ld_out >= E && taps && (K == 1 || state),
            "cuda::causal_conv1d_step: bad sizes");
    if (batch == 0) return;
    detail::causal_conv1d_step_kernel<T>
        <<<detail::grid_for(batch * E, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            x, ld_x, batch, E, K, taps, bias, state, silu, out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("causal_conv1d_step_kernel");
}

}  // namespace ssm::cuda
