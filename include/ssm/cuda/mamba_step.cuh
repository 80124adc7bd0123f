// ssm/cuda/mamba_step.cuh — one decoding step of a Mamba-1 mixer between in_proj and
// out_proj (ssm::MambaMixer::step: conv step, x_proj, dt_proj + softplus, state update),
// fused in two kernels (`MambaStepParams`, `mamba_decode_step`); Falcon-Mamba's
// normalisation of dt_low, B and C runs between them.
#pragma once

#include <cstddef>
#include <type_traits>

#include "ssm/cuda/common.cuh"
#include "ssm/cuda/norm.cuh"
#include "ssm/scan/scan_operator.hpp"

namespace ssm::cuda {

/// The operands of one decoding step of a Mamba-1 mixer between its two big projections
/// (`ssm::MambaMixer::step` after in_proj and before out_proj), for `batch` sequences, one
/// token each: the conv window update, x_proj, dt_proj + softplus and the selective state
/// update. The two small projections' weights are fp32 or bf16 (`W`); activations, the
/// states and all arithmetic are fp32. Row b of every activation is sequence b.
template <class W = float>
struct MambaStepParams {
    dindex batch = 0, E = 0;
    int N = 0, K = 0, R = 0;    // state size, conv width, dt rank
    const float* xz = nullptr;  // (batch, 2E) in_proj output [x | z]
    dindex ld_xz = 0;
    const float* conv_taps = nullptr;  // (K, E): tap k of channel e at k·E + e
    const float* conv_bias = nullptr;  // (E) optional
    float* conv_state = nullptr;       // (batch, K−1, E) oldest first; shifted to take x
    const W* x_proj = nullptr;         // (R+2N, E)
    const W* dt_proj = nullptr;        // (E, R)
    const float* dt_bias = nullptr;    // (E) optional, added before softplus
    const float* A = nullptr;          // (E, N) = −exp(A_log)
    const float* D = nullptr;          // (E) skip, optional
    float* ssm_state = nullptr;        // (batch, E, N), advanced by one token
    float* u = nullptr;                // (batch, E) out: silu(conv(x)), row stride E
    float* xdbl = nullptr;             // (batch, R+2N) out: [dt_low | B | C], row stride R+2N
    float* y = nullptr;                // (batch, E) out: the gated SSM output, input of out_proj
    dindex ld_y = 0;
    double dt_bc_rms_eps = 0.0;  // Falcon-Mamba's mixer_rms_eps: dt_low, B and C normalised; 0: Mamba-1
};

namespace detail {

// ---- fused decoding step ------------------------------------------------------------------------

/// Decoding, first half: block (group of kSeqs sequences, group of kThreads/32 rows of
/// x_proj). Every block computes u = silu(bias + Σ_k w_k · window_k) for all E channels of
/// its sequences into shared memory — the window is the conv state (read, not yet
/// shifted) followed by x — and the blocks of row group 0 also write u out. Then one warp
/// per x_proj row j: xdbl[b, j] = Σ_e x_proj[j, e] · u[b, e], lanes striding over e and a
/// fixed butterfly sum (the same order every run). The conv state is shifted by the
/// second half, after every block here has read it.
template <class W, int kThreads, int kSeqs>
__global__ void __launch_bounds__(kThreads) mamba_step_project_kernel(const MambaStepParams<W> p) {
    extern __shared__ float s_u[];  // (kSeqs, E)
    const dindex E = p.E;
    const int K = p.K, J = p.R + 2 * p.N;
    const dindex b0 = static_cast<dindex>(blockIdx.x) * kSeqs;
    for (dindex i = threadIdx.x; i < kSeqs * E; i += kThreads) {
        const dindex s = i / E, e = i - s * E, b = b0 + s;
        float v = 0.0f;  // sequences past the batch: zeros, never written out
        if (b < p.batch) {
            const float* st = p.conv_state + b * (K - 1) * E;
            float acc = p.conv_bias ? p.conv_bias[e] : 0.0f;
            for (int k = 0; k < K - 1; ++k)
                acc += p.conv_taps[static_cast<dindex>(k) * E + e] *
                       st[static_cast<dindex>(k) * E + e];
            acc += p.conv_taps[static_cast<dindex>(K - 1) * E + e] * p.xz[b * p.ld_xz + e];
            v = silu(acc);
            if (blockIdx.y == 0) p.u[b * E + e] = v;
        }
        s_u[i] = v;  // i = s·E + e
    }
    __syncthreads();

    constexpr int kWarps = kThreads / 32;
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int j = static_cast<int>(blockIdx.y) * kWarps + warp;
    if (j >= J) return;  // whole warps only, and no barrier follows
    const W* w = p.x_proj + static_cast<dindex>(j) * E;
    float acc[kSeqs];
#pragma unroll
    for (int s = 0; s < kSeqs; ++s) acc[s] = 0.0f;
    for (dindex e = lane; e < E; e += 32) {
        const float wv = to_float(w[e]);
#pragma unroll
        for (int s = 0; s < kSeqs; ++s) acc[s] += wv * s_u[s * E + e];
    }
#pragma unroll
    for (int s = 0; s < kSeqs; ++s) acc[s] = warp_sum(acc[s]);
    if (lane == 0)
#pragma unroll
        for (int s = 0; s < kSeqs; ++s)
            if (b0 + s < p.batch) p.xdbl[(b0 + s) * J + j] = acc[s];
}

/// Decoding, second half: one thread per (b, e). Δ = softplus(dt_proj[e] · dt_low[b] +
/// bias[e]); for each state n: s ← exp(Δ·A[e,n])·s + Δ·u·B[b,n], y += s·C[b,n]; then
/// y += D[e]·u, y *= silu(z); finally the conv window of (b, e) moves on by one: the oldest
/// input drops out and x[b, e] comes in. Each thread touches only its own (b, e) entries.
template <class W>
__global__ void mamba_step_update_kernel(const MambaStepParams<W> p) {
    const dindex E = p.E;
    const int N = p.N, K = p.K, R = p.R, J = R + 2 * N;
    for (dindex i = global_thread(); i < p.batch * E; i += grid_threads()) {
        const dindex b = i / E, e = i - b * E;
        const float* xd = p.xdbl + b * J;  // [dt_low | B | C] of sequence b
        const W* wr = p.dt_proj + e * R;
        float dt = 0.0f;
        for (int r = 0; r < R; ++r) dt += to_float(wr[r]) * xd[r];
        if (p.dt_bias) dt += p.dt_bias[e];
        dt = softplus(dt);
        const float u = p.u[b * E + e];
        float* s = p.ssm_state + (b * E + e) * N;
        float y = 0.0f;
        for (int n = 0; n < N; ++n) {
            const float h = ScanOp::advance(s[n], expf(dt * p.A[e * N + n]), dt * u * xd[R + n]);
            s[n] = h;
            y += h * xd[R + N + n];
        }
        if (p.D) y += p.D[e] * u;
        y *= silu(p.xz[b * p.ld_xz + E + e]);
        p.y[b * p.ld_y + e] = y;
        float* st = p.conv_state + b * (K - 1) * E;
        for (int k = 0; k + 1 < K - 1; ++k)
            st[static_cast<dindex>(k) * E + e] = st[static_cast<dindex>(k + 1) * E + e];
        if (K > 1) st[static_cast<dindex>(K - 2) * E + e] = p.xz[b * p.ld_xz + e];
    }
}

}  // namespace detail

/// One decoding step of a Mamba-1 mixer between in_proj and out_proj, fused into two
/// kernels (see `MambaStepParams`): the first computes the conv output u and x_proj's
/// [dt_low | B | C], the second dt_proj + softplus, the state update, the skip and the
/// gate, and shifts the conv window. Two, not one, because every channel's Δ, B and C are
/// sums over all E channels of u: the split is the one grid-wide barrier the step needs.
/// Replaces `causal_conv1d_step`, the x_proj and dt_proj GEMMs and `selective_state_update`
/// (four launches and the Δ buffer); the numbers are the same up to fp32 summation order.
/// With `dt_bc_rms_eps` > 0 (Falcon-Mamba) a third launch normalises xdbl's dt_low, B and C
/// between the two (`normalize_dt_b_c`), since each is a sum over the whole row.
template <class W>
void mamba_decode_step(const MambaStepParams<W>& p, cudaStream_t stream) {
    static_assert(std::is_same_v<W, float> || std::is_same_v<W, __nv_bfloat16>,
                  "cuda::mamba_decode_step: weights are fp32 or bf16");
    require(p.batch >= 0 && p.E > 0 && p.N > 0 && p.K > 0 && p.R > 0 && p.ld_xz >= 2 * p.E &&
                p.ld_y >= p.E && p.dt_bc_rms_eps >= 0.0,
            "cuda::mamba_decode_step: bad sizes batch ", p.batch, ", E ", p.E, ", N ", p.N, ", K ",
            p.K, ", R ", p.R, ", mixer_rms_eps ", p.dt_bc_rms_eps);
    require(p.xz && p.conv_taps && (p.K == 1 || p.conv_state) && p.x_proj && p.dt_proj && p.A &&
                p.ssm_state && p.u && p.xdbl && p.y,
            "cuda::mamba_decode_step: a required operand is null");
    if (p.batch == 0) return;
    constexpr int kThreads = 256, kSeqs = 4, kRows = kThreads / 32;
    const dindex J = p.R + 2 * static_cast<dindex>(p.N);
    require((J + kRows - 1) / kRows <= 65535, "cuda::mamba_decode_step: R + 2N = ", J,
            " is too many x_proj rows");
    auto project = detail::mamba_step_project_kernel<W, kThreads, kSeqs>;
    const std::size_t bytes =
        static_cast<std::size_t>(kSeqs) * static_cast<std::size_t>(p.E) * sizeof(float);
    if (bytes > 48 * 1024) {  // past the default limit: opt in, up to the device's
        const int limit =
            detail::allow_shared_memory(reinterpret_cast<const void*>(project), bytes);
        require(bytes <= static_cast<std::size_t>(limit), "cuda::mamba_decode_step: E = ", p.E,
                " needs ", bytes, " bytes of shared memory per block, the device allows ", limit);
    }
    const dim3 grid(static_cast<unsigned>((p.batch + kSeqs - 1) / kSeqs),
                    static_cast<unsigned>((J + kRows - 1) / kRows));
    project<<<grid, kThreads, bytes, stream>>>(p);
    SSM_CUDA_CHECK_LAUNCH("mamba_step_project_kernel");
    if (p.dt_bc_rms_eps > 0.0)  // Falcon-Mamba: xdbl normalised in place before it is used
        normalize_dt_b_c(p.xdbl, p.batch, J, p.R, p.N, p.dt_bc_rms_eps, stream);
    detail::mamba_step_update_kernel<W><<<detail::grid_for(p.batch * p.E, detail::kBlockThreads),
                                          detail::kBlockThreads, 0, stream>>>(p);
    SSM_CUDA_CHECK_LAUNCH("mamba_step_update_kernel");
}

}  // namespace ssm::cuda
