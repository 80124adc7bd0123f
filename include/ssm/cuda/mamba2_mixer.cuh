// ssm/cuda/mamba2_mixer.cuh — the Mamba-2 mixer on the device (ssm::Mamba2Mixer), taken over
// from a loaded CPU mixer: in_proj → [z0 | x0 | z | xBC | dt] (cuBLAS), causal conv + SiLU
// over xBC, Δ = clamp(softplus(dt + dt_bias), time_step_limit), the chunked SSD
// (`ssd_scan`), the D skip, the gate and the gated RMSNorm per group, the gated MLP beside
// the SSM (d_ssm < d_inner), out_proj; and the one-token decoding step. in_proj and out_proj
// are fp32 or, after `store_weights_bf16`, bf16 (with the activations rounded to bf16 per
// GEMM, as the device model's Mamba-1 layers do); everything else stays fp32.
#pragma once

#include <algorithm>
#include <cstddef>

#include "ssm/cuda/causal_conv1d.cuh"
#include "ssm/cuda/gemm.cuh"
#include "ssm/cuda/ssd.cuh"
#include "ssm/cuda/upload.cuh"
#include "ssm/cuda/weight.cuh"
#include "ssm/layers/mamba2_mixer.hpp"

namespace ssm::cuda {

namespace detail {

/// Δ[t,h] = clamp(softplus(raw[t,h] + bias[h]), lo, hi), one thread per element.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    mamba2_dt_kernel(const float* __restrict__ raw, dindex ld_raw, dindex rows, dindex H,
                     const float* __restrict__ bias, float lo, float hi, float* __restrict__ dt,
                     dindex ld_dt) {
    for (dindex i = global_thread(); i < rows * H; i += grid_threads()) {
        const dindex t = i / H, h = i - t * H;
        const float v = softplus(raw[t * ld_raw + h] + bias[h]);
        dt[t * ld_dt + h] = fminf(fmaxf(v, lo), hi);
    }
}

/// The gated MLP beside the SSM: y[t,c] = silu(z0[t,c])·x0[t,c] for c < M, one thread per
/// element (z0 and x0 are in_proj's first 2M columns).
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    mamba2_mlp_kernel(const float* __restrict__ zx, dindex ld_zx, dindex rows, dindex M,
                      float* __restrict__ y, dindex ld_y) {
    for (dindex i = global_thread(); i < rows * M; i += grid_threads()) {
        const dindex t = i / M, c = i - t * M;
        y[t * ld_y + c] = silu(zx[t * ld_zx + c]) * zx[t * ld_zx + M + c];
    }
}

/// One warp per (row, group): ys ← (ys + D·x)·silu(z) over the group's S/G channels, then,
/// with the gated norm, ys ← ys · rsqrt(mean(ys²) + eps) · w (the sum in double, as the CPU).
/// Each lane rewrites only the channels it read, so no barrier is needed.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    mamba2_gate_norm_kernel(const float* __restrict__ z, dindex ld_z, const float* __restrict__ x,
                            dindex ld_x, const float* __restrict__ D,
                            const float* __restrict__ norm_w, double eps, dindex rows, dindex S,
                            dindex G, float* __restrict__ ys, dindex ld_y) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    const dindex group = S / G;
    for (dindex w = global_thread() / 32; w < rows * G; w += grid_threads() / 32) {
        const dindex t = w / G, c0 = (w - t * G) * group;
        float* yr = ys + t * ld_y;
        double sum = 0.0;
        for (dindex c = c0 + lane; c < c0 + group; c += 32) {
            const float v = (yr[c] + D[c] * x[t * ld_x + c]) * silu(z[t * ld_z + c]);
            yr[c] = v;
            sum += static_cast<double>(v) * v;
        }
        if (!norm_w) continue;
        const auto scale = static_cast<float>(1.0 / sqrt(warp_sum(sum) / static_cast<double>(group) + eps));
        for (dindex c = c0 + lane; c < c0 + group; c += 32) yr[c] = yr[c] * scale * norm_w[c];
    }
}

}  // namespace detail

/// Scratch of a mixer's forward and step, reused between calls (grows, never shrinks).
struct Mamba2Workspace {
    DeviceBuffer<float> zx;   // (T, in_width) in_proj's output
    DeviceBuffer<float> xbc;  // (T, conv_dim) silu(conv(xBC)) = [x | B | C]
    DeviceBuffer<float> dt;   // (T, H)
    DeviceBuffer<float> y;    // (T, E) out_proj's input
    DeviceBuffer<__nv_bfloat16> x16;  // a GEMM input rounded to bf16 (bf16 weights only)
    SsdWorkspace ssd;
};

/// A Mamba-2 mixer on the device, fp32 (or in_proj and out_proj in bf16 after
/// `store_weights_bf16`). `upload` takes the weights of a loaded
/// `ssm::Mamba2Mixer` (with float32 projections: upload before `store_bf16()`), so the
/// checkpoint is read and checked once, by the CPU loader, and A = −exp(A_log), D per
/// channel and the conv taps are the CPU's own (`upload.cuh`).
class Mamba2Mixer {
public:
    template <class Scan>
    [[nodiscard]] static Mamba2Mixer upload(const ssm::Mamba2Mixer<Scan>& cpu) {
        Mamba2Mixer m;
        m.D_ = cpu.hidden_size();
        m.E_ = cpu.inner_size();
        m.H_ = cpu.num_heads();
        m.P_ = cpu.head_dim();
        m.G_ = cpu.num_groups();
        m.N_ = cpu.state_size();
        m.S_ = cpu.ssm_size();
        m.K_ = static_cast<int>(cpu.conv().width());
        m.chunk_ = cpu.chunk_size();
        m.dt_min_ = cpu.dt_min();
        m.dt_max_ = cpu.dt_max();
        m.eps_ = cpu.norm_eps();
        m.in_proj_w_ = DeviceWeight(upload_matrix(cpu.in_proj().weight(), "the Mamba-2 mixer's in_proj"));
        if (cpu.in_proj().bias()) m.in_proj_b_ = upload_tensor(*cpu.in_proj().bias());
        m.out_proj_w_ = DeviceWeight(upload_matrix(cpu.out_proj().weight(), "the Mamba-2 mixer's out_proj"));
        if (cpu.out_proj().bias()) m.out_proj_b_ = upload_tensor(*cpu.out_proj().bias());
        m.conv_taps_ = upload_tensor(cpu.conv().taps());
        if (cpu.conv().bias()) m.conv_b_ = upload_tensor(*cpu.conv().bias());
        m.dt_bias_ = upload_tensor(cpu.dt_bias());
        m.A_ = upload_tensor(cpu.A());
        m.D_skip_ = upload_tensor(cpu.skip());
        if (cpu.gated_norm()) m.norm_w_ = upload_tensor(cpu.norm_weight());
        return m;
    }

    [[nodiscard]] dindex hidden_size() const noexcept { return D_; }
    [[nodiscard]] dindex num_heads() const noexcept { return H_; }
    [[nodiscard]] dindex head_dim() const noexcept { return P_; }
    [[nodiscard]] dindex state_size() const noexcept { return N_; }
    /// Floats of one sequence's conv state, (K−1, conv_dim) oldest first, as the CPU's.
    [[nodiscard]] dindex conv_state_floats() const noexcept { return (K_ - 1) * conv_dim(); }
    /// Floats of one sequence's SSM state, (H, P, N), as the CPU's.
    [[nodiscard]] dindex ssm_state_floats() const noexcept { return H_ * P_ * N_; }

    /// Where the SSD's chunk products run in `forward` (`SsdMath`: fp32 on the CUDA cores,
    /// the default, or TF32 with error compensation on the tensor cores). Decoding steps are
    /// unaffected.
    void set_ssd_math(SsdMath math) noexcept { math_ = math; }
    [[nodiscard]] SsdMath ssd_math() const noexcept { return math_; }

    /// Keeps in_proj and out_proj in bf16 from now on (rounded to nearest even; waits on
    /// `stream`, then frees the fp32 copies). The conv, Δ, A, D, the norm and the scan stay
    /// fp32.
    void store_weights_bf16(cudaStream_t stream) {
        in_proj_w_.to_bf16(stream);
        out_proj_w_.to_bf16(stream);
    }
    [[nodiscard]] bool weights_bf16() const noexcept { return in_proj_w_.is_bf16(); }

    /// Bytes of weights on the device.
    [[nodiscard]] std::size_t weight_bytes() const noexcept {
        return in_proj_w_.bytes() + in_proj_b_.bytes() + out_proj_w_.bytes() + out_proj_b_.bytes() +
               conv_taps_.bytes() + conv_b_.bytes() + dt_bias_.bytes() + A_.bytes() + D_skip_.bytes() +
               norm_w_.bytes();
    }

    /// Grows `ws` for calls over `rows` rows (tokens, or sequences when decoding), so that a
    /// call of that size allocates nothing (a captured decoding graph needs that).
    void reserve(Mamba2Workspace& ws, dindex rows) const {
        const auto r = static_cast<std::size_t>(std::max<dindex>(rows, 1));
        ws.zx.reserve(r * static_cast<std::size_t>(in_width()));
        ws.xbc.reserve(r * static_cast<std::size_t>(conv_dim()));
        ws.dt.reserve(r * static_cast<std::size_t>(H_));
        ws.y.reserve(r * static_cast<std::size_t>(E_));
        if (weights_bf16()) ws.x16.reserve(r * static_cast<std::size_t>(std::max(D_, E_)));
    }

    /// Prefill over the packed sequences of `offsets`: out (T, D; ld_out) (+)= mixer(h (T, D;
    /// ld_h)). `conv_in` / `ssm_in` (nseq sequences' states, nullptr: zeros) continue each
    /// sequence; `conv_out` / `ssm_out`, when non-null, receive the states after each
    /// sequence's last token and may be the same memory as the inputs. Queued on the
    /// handle's stream.
    void forward(const Cublas& blas, const float* h, dindex ld_h, const DeviceOffsets& offsets,
                 float* out, dindex ld_out, bool accumulate, Mamba2Workspace& ws,
                 const float* conv_in = nullptr, const float* ssm_in = nullptr,
                 float* conv_out = nullptr, float* ssm_out = nullptr) const {
        const dindex T = offsets.tokens();
        const cudaStream_t stream = blas.stream();
        reserve(ws, T);
        project(blas, T, in_width(), D_, h, ld_h, in_proj_w_, ws.zx.data(), in_width(), in_proj_b_.data(),
                ws.x16);
        causal_conv1d<float>(ws.zx.data() + xbc_col(), in_width(), conv_dim(), K_,
                             conv_taps_.data(), conv_b_.data(), offsets, conv_in, conv_out, true,
                             ws.xbc.data(), conv_dim(), stream);
        SsdParams p = scan_params(ws);
        make_dt(ws, T, stream);
        p.initial_state = ssm_in;
        p.final_state = ssm_out;
        p.chunk = chunk_;
        p.math = math_;
        ssd_scan(p, offsets, ws.ssd, stream);
        finish(ws, T, stream);
        project(blas, T, D_, E_, ws.y.data(), E_, out_proj_w_, out, ld_out, out_proj_b_.data(), ws.x16,
                accumulate);
    }

    /// Decoding: one token for each of `batch` sequences, out (batch, D) (+)= mixer(h);
    /// `conv_state` (batch, K−1, conv_dim) and `ssm_state` (batch, H, P, N) advance.
    void step(const Cublas& blas, const float* h, dindex ld_h, dindex batch, float* conv_state,
              float* ssm_state, float* out, dindex ld_out, bool accumulate, Mamba2Workspace& ws) const {
        require(batch >= 0 && conv_state && ssm_state, "cuda::Mamba2Mixer::step: no state");
        if (batch == 0) return;
        const cudaStream_t stream = blas.stream();
        reserve(ws, batch);
        project(blas, batch, in_width(), D_, h, ld_h, in_proj_w_, ws.zx.data(), in_width(), in_proj_b_.data(),
                ws.x16);
        causal_conv1d_step<float>(ws.zx.data() + xbc_col(), in_width(), batch, conv_dim(), K_,
                                  conv_taps_.data(), conv_b_.data(), conv_state, true, ws.xbc.data(),
                                  conv_dim(), stream);
        make_dt(ws, batch, stream);
        ssd_state_update(scan_params(ws), batch, ssm_state, stream);
        finish(ws, batch, stream);
        project(blas, batch, D_, E_, ws.y.data(), E_, out_proj_w_, out, ld_out, out_proj_b_.data(), ws.x16,
                accumulate);
    }

private:
    [[nodiscard]] dindex mlp_width() const noexcept { return E_ - S_; }
    [[nodiscard]] dindex conv_dim() const noexcept { return S_ + 2 * G_ * N_; }
    [[nodiscard]] dindex z_col() const noexcept { return 2 * mlp_width(); }
    [[nodiscard]] dindex xbc_col() const noexcept { return z_col() + S_; }
    [[nodiscard]] dindex dt_col() const noexcept { return xbc_col() + conv_dim(); }
    [[nodiscard]] dindex in_width() const noexcept { return dt_col() + H_; }

    /// The scan's operands in the workspace: x, B, C are column slices of xbc; y is the SSM
    /// part of out_proj's input.
    SsdParams scan_params(Mamba2Workspace& ws) const {
        SsdParams p;
        p.H = H_;
        p.P = P_;
        p.N = N_;
        p.G = G_;
        p.x = ws.xbc.data();
        p.ld_x = conv_dim();
        p.B = ws.xbc.data() + S_;
        p.ld_B = conv_dim();
        p.C = ws.xbc.data() + S_ + G_ * N_;
        p.ld_C = conv_dim();
        p.dt = ws.dt.data();
        p.ld_dt = H_;
        p.A = A_.data();
        p.y = ws.y.data() + mlp_width();
        p.ld_y = E_;
        return p;
    }

    void make_dt(Mamba2Workspace& ws, dindex rows, cudaStream_t stream) const {
        if (rows == 0) return;
        detail::mamba2_dt_kernel<detail::kBlockThreads>
            <<<detail::grid_for(rows * H_, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
                ws.zx.data() + dt_col(), in_width(), rows, H_, dt_bias_.data(), dt_min_, dt_max_,
                ws.dt.data(), H_);
        SSM_CUDA_CHECK_LAUNCH("mamba2_dt_kernel");
    }

    /// y ← [silu(z0)·x0 | norm((y_ssm + D·x)·silu(z))].
    void finish(Mamba2Workspace& ws, dindex rows, cudaStream_t stream) const {
        if (rows == 0) return;
        if (mlp_width() > 0) {
            detail::mamba2_mlp_kernel<detail::kBlockThreads>
                <<<detail::grid_for(rows * mlp_width(), detail::kBlockThreads), detail::kBlockThreads, 0,
                   stream>>>(ws.zx.data(), in_width(), rows, mlp_width(), ws.y.data(), E_);
            SSM_CUDA_CHECK_LAUNCH("mamba2_mlp_kernel");
        }
        detail::mamba2_gate_norm_kernel<detail::kBlockThreads>
            <<<detail::grid_for(rows * G_ * 32, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
                ws.zx.data() + z_col(), in_width(), ws.xbc.data(), conv_dim(), D_skip_.data(),
                norm_w_.empty() ? nullptr : norm_w_.data(), eps_, rows, S_, G_, ws.y.data() + mlp_width(), E_);
        SSM_CUDA_CHECK_LAUNCH("mamba2_gate_norm_kernel");
    }

    dindex D_ = 0, E_ = 0, H_ = 0, P_ = 0, G_ = 1, N_ = 0, S_ = 0, chunk_ = 256;
    int K_ = 1;
    float dt_min_ = 0.0f, dt_max_ = HUGE_VALF;
    double eps_ = 1e-5;
    SsdMath math_ = SsdMath::Fp32;
    DeviceWeight in_proj_w_;                     // (in_width, D)
    DeviceBuffer<float> in_proj_b_;              // (in_width)
    DeviceBuffer<float> conv_taps_, conv_b_;     // (K, conv_dim), (conv_dim)
    DeviceWeight out_proj_w_;                    // (D, E)
    DeviceBuffer<float> out_proj_b_;             // (D)
    DeviceBuffer<float> dt_bias_, A_;            // (H) each
    DeviceBuffer<float> D_skip_;                 // (S) D per channel
    DeviceBuffer<float> norm_w_;                 // (S), empty without the gated norm
};

}  // namespace ssm::cuda
