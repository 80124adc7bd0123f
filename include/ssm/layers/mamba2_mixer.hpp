// ssm/layers/mamba2_mixer.hpp — the Mamba-2 block: in_proj → [z | xBC | dt], causal conv
// + SiLU over xBC, the SSD scan with a scalar A per head, D skip, gated RMSNorm, out_proj.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/activations.hpp"
#include "ssm/layers/causal_conv1d.hpp"
#include "ssm/layers/linear.hpp"
#include "ssm/layers/mamba_mixer.hpp"
#include "ssm/scan/ssd.hpp"
#include "ssm/scan/ssd_backward.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// Mamba-2 mixer, parameterised by how the SSD scan runs (`ChunkedSsd<>`, `SequentialSsd`).
///
/// Dimensions (REFERENCE names): D = hidden, E = d_inner, H heads of P = head_dim with
/// H·P = d_ssm ≤ E, G groups of B and C, N = state, K = conv width. in_proj's output is
/// [z0 | x0 | z | xBC | dt] with z0, x0 of E − d_ssm columns each (a gated MLP beside the
/// SSM, original `mamba_ssm` configs with `d_ssm` only; empty otherwise), z of d_ssm, xBC
/// of d_ssm + 2GN, dt of H. The recurrent state is the conv's last K−1 xBC inputs and
/// one (P, N) matrix per head (`MambaLayerState`, with `ssm` of H·P·N floats).
template <SsdScan ScanT = ChunkedSsd<>>
class Mamba2Mixer {
public:
    using scan = ScanT;

    Mamba2Mixer() = default;

    /// Loads `prefix.{in_proj,conv1d,out_proj}.*`, `prefix.{dt_bias,A_log,D}` and
    /// `prefix.norm.weight`, checking every shape against a Mamba-2 `config`.
    [[nodiscard]] static Mamba2Mixer load(const Checkpoint& ckpt, const MambaConfig& config,
                                          const std::string& prefix) {
        require(config.family == ModelFamily::Mamba2, ckpt.source().string(), ": ", prefix, ": a ",
                family_name(config.family),
                " config cannot be loaded as a Mamba-2 mixer (use ssm::with_mamba, which picks the type)");
        const Mamba2Fields& f = config.mamba2;
        Mamba2Mixer m;
        m.D_ = config.hidden_size;
        m.E_ = config.intermediate_size;
        m.H_ = f.num_heads;
        m.P_ = f.head_dim;
        m.G_ = f.n_groups;
        m.N_ = config.state_size;
        m.S_ = f.ssm_size;
        m.chunk_ = f.chunk_size;
        m.dt_min_ = static_cast<float>(f.dt_min);
        m.dt_max_ = static_cast<float>(f.dt_max);
        m.gated_norm_ = f.gated_norm;
        m.norm_eps_ = f.norm_epsilon;
        m.in_proj_ = Linear::load(ckpt, prefix + ".in_proj", m.in_width(), m.D_, config.use_bias);
        m.conv_ = CausalConv1d::load(ckpt, prefix + ".conv1d", m.conv_dim(), config.conv_kernel, config.use_conv_bias);
        m.out_proj_ = Linear::load(ckpt, prefix + ".out_proj", m.D_, m.E_, config.use_bias);
        const index h_shape[] = {m.H_};
        m.dt_bias_ = ckpt.load_f32(prefix + ".dt_bias", h_shape);
        m.A_log_ = ckpt.load_f32(prefix + ".A_log", h_shape);
        // D per head (or per channel, mamba_ssm's D_has_hdim), used per channel.
        m.d_per_channel_ = f.d_per_channel;
        const index d_shape[] = {f.d_per_channel ? m.S_ : m.H_};
        m.D_param_ = ckpt.load_f32(prefix + ".D", d_shape);
        m.A_ = Tensor::zeros({m.H_});
        m.Dskip_ = Tensor::zeros({m.S_});
        m.derive_A_D();
        if (m.gated_norm_) {
            const index w_shape[] = {m.S_};
            m.norm_weight_ = ckpt.load_f32(prefix + ".norm.weight", w_shape);
        }
        return m;
    }

    [[nodiscard]] index hidden_size() const noexcept { return D_; }
    [[nodiscard]] index inner_size() const noexcept { return E_; }
    [[nodiscard]] index state_size() const noexcept { return N_; }
    [[nodiscard]] index num_heads() const noexcept { return H_; }
    [[nodiscard]] index head_dim() const noexcept { return P_; }
    [[nodiscard]] index num_groups() const noexcept { return G_; }
    /// The config's chunk length, which `ChunkedSsd<>` uses (`ChunkedSsd<Q>` uses Q).
    [[nodiscard]] index chunk_size() const noexcept { return chunk_; }
    [[nodiscard]] const Tensor& A() const noexcept { return A_; }
    /// Channels the SSM heads cover (H·P = d_ssm ≤ E); the other E − d_ssm are the gated MLP.
    [[nodiscard]] index ssm_size() const noexcept { return S_; }
    [[nodiscard]] index mlp_size() const noexcept { return E_ - S_; }

    // What another backend (ssm::cuda::Mamba2Mixer) takes over from a loaded mixer.
    [[nodiscard]] const Linear& in_proj() const noexcept { return in_proj_; }
    [[nodiscard]] const CausalConv1d& conv() const noexcept { return conv_; }
    [[nodiscard]] const Linear& out_proj() const noexcept { return out_proj_; }
    [[nodiscard]] const Tensor& dt_bias() const noexcept { return dt_bias_; }
    /// D spread to every SSM channel (S), whether the checkpoint holds it per head or per channel.
    [[nodiscard]] const Tensor& skip() const noexcept { return Dskip_; }
    /// The gated norm's weight (S); empty without the gated norm.
    [[nodiscard]] const Tensor& norm_weight() const noexcept { return norm_weight_; }
    [[nodiscard]] bool gated_norm() const noexcept { return gated_norm_; }
    [[nodiscard]] double norm_eps() const noexcept { return norm_eps_; }
    /// Δ after softplus is clamped to [dt_min, dt_max] (`time_step_limit`).
    [[nodiscard]] float dt_min() const noexcept { return dt_min_; }
    [[nodiscard]] float dt_max() const noexcept { return dt_max_; }

    /// An all-zero recurrent state for `batch` sequences.
    [[nodiscard]] MambaLayerState make_state(index batch) const {
        return MambaLayerState(batch, conv_.state_size(), H_ * P_ * N_);
    }

    /// Prefill over packed sequences: out (T, D) (+)= mixer(h (T, D)). `state_in` continues
    /// each sequence from a carried state (nullptr: from zero); `state_out` receives each
    /// sequence's state after its last token. Both may be the same object.
    void forward(ConstStridedMap h, std::span<const index> offsets, StridedMap out, bool accumulate,
                 Workspace& ws, const MambaLayerState* state_in = nullptr,
                 MambaLayerState* state_out = nullptr) const {
        const index T = h.rows();
        const index nseq = static_cast<index>(offsets.size()) - 1;
        check_state(state_in, nseq);
        check_state(state_out, nseq);
        StridedMap zx = ws.matrix(T, in_width());  // (T, 2(E−S) + S + conv_dim + H)
        in_proj_.forward(h, zx);
        StridedMap xbc = ws.matrix(T, conv_dim());  // (T, S + 2GN): silu(conv(xBC))
        conv_.forward(column_slice(zx, xbc_col(), conv_dim()), offsets, xbc, true,
                      state_in ? state_in->conv.data() : nullptr, state_out ? state_out->conv.data() : nullptr);
        StridedMap dt = ws.matrix(T, H_);  // (T, H)
        make_dt(zx, dt);
        StridedMap y = ws.matrix(T, E_);  // (T, E): [gated MLP (E−S) | SSM (S)]
        SsdArgs args = scan_args(T, xbc, dt, y);
        args.offsets = offsets;
        args.initial_state = state_in ? state_in->ssm.data() : nullptr;
        args.final_state = state_out ? state_out->ssm.data() : nullptr;
        args.chunk = chunk_;
        ScanT::run(args);
        finish(zx, xbc, y);
        out_proj_.forward(cview(y), out, accumulate);
    }

    /// Decoding: one token per sequence. out (B, D) (+)= mixer(h (B, D)); `state` advances.
    void step(ConstStridedMap h, MambaLayerState& state, StridedMap out, bool accumulate, Workspace& ws) const {
        const index B = h.rows();
        check_state(&state, B);
        StridedMap zx = ws.matrix(B, in_width());
        in_proj_.forward(h, zx);
        StridedMap xbc = ws.matrix(B, conv_dim());
        conv_.step(column_slice(zx, xbc_col(), conv_dim()), state.conv.data(), xbc, true);
        StridedMap dt = ws.matrix(B, H_);
        make_dt(zx, dt);
        StridedMap y = ws.matrix(B, E_);
        ssd_state_update(scan_args(B, xbc, dt, y), state.ssm.data());
        finish(zx, xbc, y);
        out_proj_.forward(cview(y), out, accumulate);
    }

    /// Keeps the two projections' weights in bfloat16 (conv, A, D, norm and biases stay float32).
    void store_bf16() {
        for (Linear* l : {&in_proj_, &out_proj_}) l->store_bf16();
    }

    // ---- Training ----------------------------------------------------------------------

    /// What backward needs, per token O(E + conv_dim) floats: the mixer's input, in_proj's
    /// output, the conv's pre-activation and output, Δ before and after softplus, the scan's
    /// output and out_proj's input. The scan's states are recomputed in backward
    /// (`ssd_scan_backward_chunked`).
    struct Cache {
        Matrix h;                  // (T, D) input (in_proj's)
        Matrix zx;                 // (T, in_width) in_proj's output [z0 | x0 | z | xBC | dt]
        CausalConv1d::Cache conv;  // (T, conv_dim) conv pre-activation
        Matrix xbc;                // (T, conv_dim) silu(conv(xBC)) = [x | B | C]
        Matrix dt_in;              // (T, H) dt + dt_bias, before softplus
        Matrix dt;                 // (T, H) Δ
        Matrix yssm;               // (T, S) the scan's output, before the D skip
        Matrix y;                  // (T, E) out_proj's input
        std::vector<index> offsets;

        [[nodiscard]] std::size_t floats() const noexcept {
            return static_cast<std::size_t>(h.size() + zx.size() + conv.pre.size() + xbc.size() + dt_in.size() +
                                            dt.size() + yssm.size() + y.size());
        }
    };

    /// Makes every weight an owned float32 master with a gradient, registered under the
    /// checkpoint's names in PyTorch's parameter order: `prefix.dt_bias`, `prefix.A_log`,
    /// `prefix.D` (no decay), `prefix.conv1d.{weight,bias}`, `prefix.in_proj.*`,
    /// `prefix.norm.weight` (no decay; with the gated norm only), `prefix.out_proj.*`.
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        train::register_tensor(params, prefix + ".dt_bias", dt_bias_, dt_bias_grad_, false);
        train::register_tensor(params, prefix + ".A_log", A_log_, A_log_grad_, false);
        train::register_tensor(params, prefix + ".D", D_param_, D_grad_, false);
        conv_.register_parameters(params, prefix + ".conv1d");
        in_proj_.register_parameters(params, prefix + ".in_proj");
        if (gated_norm_) train::register_tensor(params, prefix + ".norm.weight", norm_weight_, norm_grad_, false);
        out_proj_.register_parameters(params, prefix + ".out_proj");
        A_ = Tensor::zeros({H_});  // owned from now on, refreshed from the masters
        Dskip_ = Tensor::zeros({S_});
        refresh_derived();
    }

    /// Re-derives A = −exp(A_log), D per channel and the conv taps from the masters after
    /// they changed (an optimizer step); every training forward calls it first.
    void refresh_derived() {
        if (A_log_grad_.empty()) return;
        derive_A_D();
        conv_.refresh_derived();
    }

    /// Training forward over packed sequences from zero state: out (T, D) (+)= mixer(h), as
    /// `forward` computes it, filling `cache`.
    void forward(ConstStridedMap h, std::span<const index> offsets, StridedMap out, bool accumulate, Cache& cache) {
        require(!A_log_grad_.empty(), "Mamba2Mixer: register_parameters was not called before a training forward");
        refresh_derived();
        const index T = h.rows();
        cache.offsets.assign(offsets.begin(), offsets.end());
        cache.h = h;
        cache.zx.resize(T, in_width());
        in_proj_.forward(cview(cache.h), view(cache.zx));
        StridedMap zx = view(cache.zx);
        cache.xbc.resize(T, conv_dim());
        conv_.forward(column_slice(zx, xbc_col(), conv_dim()), offsets, view(cache.xbc), true, cache.conv);
        cache.dt_in.resize(T, H_);
        cache.dt.resize(T, H_);
        StridedMap xbc = view(cache.xbc), dt = view(cache.dt), dt_in = view(cache.dt_in);
        make_dt(zx, dt, &dt_in);
        cache.y.resize(T, E_);
        StridedMap y = view(cache.y);
        SsdArgs args = scan_args(T, xbc, dt, y);
        args.offsets = offsets;
        args.chunk = chunk_;
        ScanT::run(args);
        cache.yssm = cache.y.rightCols(S_);
        finish(zx, xbc, y);
        out_proj_.forward(cview(cache.y), out, accumulate);
    }

    /// Backward from dout (T, D), the gradient of the mixer's output: every parameter
    /// gradient accumulates (dA_log = dA ⊙ A); dh (T, D) is written (added with
    /// `accumulate`). dh must not alias dout.
    void backward(ConstStridedMap dout, const Cache& cache, StridedMap dh, bool accumulate = false) {
        const index T = cache.h.rows(), M = mlp_width(), group = S_ / G_;
        require(dout.rows() == T && dout.cols() == D_ && dh.rows() == T && dh.cols() == D_,
                "Mamba2Mixer::backward: gradients do not fit the cached (", T, ", ", D_, ") input");
        Matrix dy(T, E_);
        out_proj_.backward(cview(cache.y), dout, view(dy));
        Matrix dzx = Matrix::Zero(T, in_width());
        Matrix dys(T, S_);           // gradient of the scan's output
        Matrix dxbc(T, conv_dim());  // gradient of silu(conv(xBC)): [dx | dB | dC]
        Matrix dD_rows(T, S_), dw_rows(T, gated_norm_ ? S_ : 0);
        // The gated MLP, the gate, the norm and the D skip, row by row.
        parallel_for(T, 16, [&](index begin, index end) {
            std::vector<float> v(static_cast<std::size_t>(S_)), g(v.size()), dg(v.size()), sig(v.size());
            for (index t = begin; t < end; ++t) {
                const float* zrow = cache.zx.data() + t * cache.zx.cols();
                const float* xrow = cache.xbc.data() + t * cache.xbc.cols();
                const float* ys = cache.yssm.data() + t * S_;
                const float* dyrow = dy.data() + t * E_;
                float* dzrow = dzx.data() + t * dzx.cols();
                for (index c = 0; c < M; ++c) {  // y0 = silu(z0)·x0
                    const float z0 = zrow[c], x0 = zrow[M + c], sg = 1.0f / (1.0f + std::exp(-z0));
                    dzrow[c] = dyrow[c] * x0 * sg * (1.0f + z0 * (1.0f - sg));
                    dzrow[M + c] = dyrow[c] * z0 * sg;
                }
                const float* z = zrow + z_col();
                for (index c = 0; c < S_; ++c) {
                    const auto cu = static_cast<std::size_t>(c);
                    v[cu] = ys[c] + Dskip_.data()[c] * xrow[c];
                    sig[cu] = 1.0f / (1.0f + std::exp(-z[c]));
                    g[cu] = v[cu] * z[c] * sig[cu];
                    dg[cu] = dyrow[M + c];
                }
                if (gated_norm_) {
                    for (index g0 = 0; g0 < S_; g0 += group) {
                        double sum = 0.0, dot = 0.0;
                        for (index c = g0; c < g0 + group; ++c) {
                            const auto cu = static_cast<std::size_t>(c);
                            sum += static_cast<double>(g[cu]) * g[cu];
                            dot += static_cast<double>(dg[cu]) * norm_weight_.data()[c] * g[cu];
                        }
                        const double r = 1.0 / std::sqrt(sum / static_cast<double>(group) + norm_eps_);
                        const double k = r * r * dot / static_cast<double>(group);
                        for (index c = g0; c < g0 + group; ++c) {
                            const auto cu = static_cast<std::size_t>(c);
                            dw_rows(t, c) = static_cast<float>(dg[cu] * g[cu] * r);
                            dg[cu] = static_cast<float>(r * (dg[cu] * norm_weight_.data()[c] - g[cu] * k));
                        }
                    }
                }
                float* dzs = dzrow + z_col();
                for (index c = 0; c < S_; ++c) {
                    const auto cu = static_cast<std::size_t>(c);
                    const float sg = sig[cu];
                    dzs[c] = dg[cu] * v[cu] * sg * (1.0f + z[c] * (1.0f - sg));
                    const float dv = dg[cu] * z[c] * sg;
                    dys(t, c) = dv;
                    dD_rows(t, c) = dv * xrow[c];
                }
            }
        });
        // The scan.
        Matrix dx_scan(T, S_), ddt(T, H_);
        std::vector<float> dA(static_cast<std::size_t>(H_));
        SsdGrads sg;
        sg.dy = dys.data();
        sg.ld_dy = S_;
        sg.dx = dx_scan.data();
        sg.ld_dx = S_;
        sg.ddt = ddt.data();
        sg.ld_ddt = H_;
        sg.dB = dxbc.data() + S_;
        sg.ld_dB = conv_dim();
        sg.dC = dxbc.data() + S_ + G_ * N_;
        sg.ld_dC = conv_dim();
        sg.dA = dA.data();
        // Chunks of the forward's length up to 64: the backward's Q × Q work per token
        // grows with Q, and a CPU does best with short ones (the result is the same).
        ssd_scan_backward_chunked(train_scan_args(cache), sg, std::min<index>(chunk_, 64));
        for (index t = 0; t < T; ++t)
            for (index c = 0; c < S_; ++c) dxbc(t, c) = dx_scan(t, c) + dys(t, c) * Dskip_.data()[c];
        float* gA = A_log_grad_.mutable_data();
        for (index hh = 0; hh < H_; ++hh) gA[hh] += dA[static_cast<std::size_t>(hh)] * A_.data()[hh];
        float* gD = D_grad_.mutable_data();
        for (index c = 0; c < S_; ++c) {
            double sum = 0.0;
            for (index t = 0; t < T; ++t) sum += dD_rows(t, c);
            gD[d_per_channel_ ? c : c / P_] += static_cast<float>(sum);
        }
        if (gated_norm_) {
            float* gw = norm_grad_.mutable_data();
            for (index c = 0; c < S_; ++c) {
                double sum = 0.0;
                for (index t = 0; t < T; ++t) sum += dw_rows(t, c);
                gw[c] += static_cast<float>(sum);
            }
        }
        // Δ = clamp(softplus(v), dt_min, dt_max): dv = dΔ·sigmoid(v) inside the limits (dΔ
        // itself where softplus is the identity, v > 20), 0 outside.
        float* gbias = dt_bias_grad_.mutable_data();
        for (index hh = 0; hh < H_; ++hh) {
            double sum = 0.0;
            for (index t = 0; t < T; ++t) {
                const float v = cache.dt_in(t, hh);
                const float sp = v > 20.0f ? v : std::log1p(std::exp(v));
                float d = 0.0f;
                if (sp >= dt_min_ && sp <= dt_max_) d = v > 20.0f ? ddt(t, hh) : ddt(t, hh) / (1.0f + std::exp(-v));
                dzx(t, dt_col() + hh) = d;
                sum += d;
            }
            gbias[hh] += static_cast<float>(sum);
        }
        const ConstStridedMap xbc_in(cache.zx.data() + xbc_col(), T, conv_dim(), Eigen::OuterStride<>(cache.zx.cols()));
        conv_.backward(xbc_in, cache.offsets, cview(dxbc), cache.conv,
                       StridedMap(dzx.data() + xbc_col(), T, conv_dim(), Eigen::OuterStride<>(dzx.cols())));
        in_proj_.backward(cview(cache.h), cview(dzx), dh, accumulate);
    }

private:
    /// A = −exp(A_log) per head and D spread to every channel of its head.
    void derive_A_D() {
        float* a = A_.mutable_data();
        for (index hh = 0; hh < H_; ++hh) a[hh] = -std::exp(A_log_.data()[hh]);
        float* d = Dskip_.mutable_data();
        for (index c = 0; c < S_; ++c) d[c] = D_param_.data()[d_per_channel_ ? c : c / P_];
    }

    /// The scan's operands in a training cache; `y` is not written by the backward.
    [[nodiscard]] SsdArgs train_scan_args(const Cache& c) const {
        const index T = c.h.rows();
        StridedMap xbc(const_cast<float*>(c.xbc.data()), T, conv_dim(), Eigen::OuterStride<>(conv_dim()));
        StridedMap dt(const_cast<float*>(c.dt.data()), T, H_, Eigen::OuterStride<>(H_));
        StridedMap y(const_cast<float*>(c.y.data()), T, E_, Eigen::OuterStride<>(E_));
        SsdArgs a = scan_args(T, xbc, dt, y);
        a.offsets = c.offsets;
        a.chunk = chunk_;
        return a;
    }

    [[nodiscard]] index mlp_width() const noexcept { return E_ - S_; }
    [[nodiscard]] index conv_dim() const noexcept { return S_ + 2 * G_ * N_; }
    [[nodiscard]] index z_col() const noexcept { return 2 * mlp_width(); }
    [[nodiscard]] index xbc_col() const noexcept { return z_col() + S_; }
    [[nodiscard]] index dt_col() const noexcept { return xbc_col() + conv_dim(); }
    [[nodiscard]] index in_width() const noexcept { return dt_col() + H_; }

    static ConstStridedMap column_slice(const StridedMap& m, index col, index width) {
        return {m.data() + col, m.rows(), width, Eigen::OuterStride<>(m.outerStride())};
    }

    /// dt = clamp(softplus(dt_raw + dt_bias), time_step_limit); `dt_in`, when given, keeps
    /// dt_raw + dt_bias (what the backward differentiates softplus at).
    void make_dt(const StridedMap& zx, StridedMap& dt, StridedMap* dt_in = nullptr) const {
        const index rows = zx.rows();
        for (index t = 0; t < rows; ++t) {
            const float* raw = zx.data() + t * zx.outerStride() + dt_col();
            float* d = dt.data() + t * dt.outerStride();
            for (index hh = 0; hh < H_; ++hh) d[hh] = raw[hh] + dt_bias_.data()[hh];
            if (dt_in) std::copy(d, d + H_, dt_in->data() + t * dt_in->outerStride());
            softplus_inplace(d, H_);
            for (index hh = 0; hh < H_; ++hh) d[hh] = std::clamp(d[hh], dt_min_, dt_max_);
        }
    }

    SsdArgs scan_args(index T, const StridedMap& xbc, const StridedMap& dt, StridedMap& y) const {
        SsdArgs a;
        a.T = T;
        a.H = H_;
        a.P = P_;
        a.N = N_;
        a.G = G_;
        a.x = xbc.data();
        a.ld_x = xbc.outerStride();
        a.B = xbc.data() + S_;
        a.ld_B = xbc.outerStride();
        a.C = xbc.data() + S_ + G_ * N_;
        a.ld_C = xbc.outerStride();
        a.dt = dt.data();
        a.ld_dt = dt.outerStride();
        a.A = A_.data();
        a.y = y.data() + mlp_width();
        a.ld_y = y.outerStride();
        return a;
    }

    /// y ← [silu(z0)·x0 | norm((y_ssm + D·x) · silu(z))], the norm per group of S/G channels.
    void finish(const StridedMap& zx, const StridedMap& xbc, StridedMap& y) const {
        const index rows = zx.rows(), M = mlp_width(), group = S_ / G_;
        parallel_for(rows, 16, [&](index begin, index end) {
            std::vector<float> gate(static_cast<std::size_t>(std::max(S_, M)));
            for (index t = begin; t < end; ++t) {
                const float* zrow = zx.data() + t * zx.outerStride();
                const float* xrow = xbc.data() + t * xbc.outerStride();
                float* yrow = y.data() + t * y.outerStride();
                if (M > 0) {
                    std::copy(zrow, zrow + M, gate.begin());
                    silu_inplace(gate.data(), M);
                    for (index c = 0; c < M; ++c) yrow[c] = gate[static_cast<std::size_t>(c)] * zrow[M + c];
                }
                float* ys = yrow + M;
                std::copy(zrow + z_col(), zrow + z_col() + S_, gate.begin());
                silu_inplace(gate.data(), S_);
                for (index c = 0; c < S_; ++c)
                    ys[c] = (ys[c] + Dskip_.data()[c] * xrow[c]) * gate[static_cast<std::size_t>(c)];
                if (!gated_norm_) continue;
                for (index g0 = 0; g0 < S_; g0 += group) {
                    double sum = 0.0;
                    for (index c = g0; c < g0 + group; ++c) sum += static_cast<double>(ys[c]) * ys[c];
                    const auto scale =
                        static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(group) + norm_eps_));
                    for (index c = g0; c < g0 + group; ++c) ys[c] = ys[c] * scale * norm_weight_.data()[c];
                }
            }
        });
    }

    void check_state(const MambaLayerState* s, index batch) const {
        if (!s) return;
        require(s->batch == batch && s->conv.size() == static_cast<std::size_t>(batch * conv_.state_size()) &&
                    s->ssm.size() == static_cast<std::size_t>(batch * H_ * P_ * N_),
                "Mamba2Mixer: recurrent state is for ", s->batch, " sequences of another shape, the batch has ",
                batch);
    }

    index D_ = 0, E_ = 0, H_ = 0, P_ = 0, G_ = 1, N_ = 0, S_ = 0, chunk_ = 256;
    float dt_min_ = 0.0f, dt_max_ = HUGE_VALF;
    bool gated_norm_ = true;
    double norm_eps_ = 1e-5;
    Linear in_proj_;      // (2(E−S) + S + conv_dim + H, D)
    CausalConv1d conv_;   // (conv_dim, 1, K)
    Linear out_proj_;     // (D, E)
    bool d_per_channel_ = false;
    Tensor dt_bias_;      // (H)
    Tensor A_log_;        // (H)
    Tensor D_param_;      // (H), or (S) with d_per_channel_, as the checkpoint holds it
    Tensor A_;            // (H) = −exp(A_log)
    Tensor Dskip_;        // (S): D per channel
    Tensor norm_weight_;  // (S)
    Tensor dt_bias_grad_, A_log_grad_, D_grad_, norm_grad_;  // once trainable
};

}  // namespace ssm
