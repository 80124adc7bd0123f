// ssm/layers/mamba_mixer.hpp — the Mamba-1 selective SSM block: in_proj, causal conv,
// x_proj, dt_proj + softplus, selective scan, gating, out_proj.
#pragma once

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
#include "ssm/scan/discretization.hpp"
#include "ssm/scan/selective_scan.hpp"
#include "ssm/scan/selective_scan_backward.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// The recurrent state one Mamba layer carries for a batch of `batch` sequences.
struct MambaLayerState {
    index batch = 0;
    std::vector<float> conv;  // (batch, K−1, E): the last K−1 inputs of the conv, oldest first
    std::vector<float> ssm;   // (batch, E, N): the SSM state s, float32

    MambaLayerState() = default;
    MambaLayerState(index b, index conv_floats, index ssm_floats)
        : batch(b),
          conv(static_cast<std::size_t>(b * conv_floats), 0.0f),
          ssm(static_cast<std::size_t>(b * ssm_floats), 0.0f) {}
};

/// Mamba-1 mixer, parameterised by how the SSM is discretised and how the scan runs.
///
/// Dimensions (REFERENCE names): D = hidden, E = intermediate, N = state, K = conv width,
/// R = dt rank. Input and output are rows of the residual stream, (T, D).
template <Discretization Disc = MambaDiscretization, Scan ScanT = ParallelScan>
class MambaMixer {
public:
    using discretization = Disc;
    using scan = ScanT;

    MambaMixer() = default;

    /// Loads `prefix.{in_proj,conv1d,x_proj,dt_proj,out_proj}.*`, `prefix.A_log` and
    /// `prefix.D`, checking every shape against `config`.
    [[nodiscard]] static MambaMixer load(const Checkpoint& ckpt, const MambaConfig& config,
                                         const std::string& prefix) {
        require(config.family != ModelFamily::Mamba2, ckpt.source().string(), ": ", prefix,
                ": a Mamba-2 config cannot be loaded as a Mamba-1 mixer (use ssm::Mamba2LM or ssm::with_mamba)");
        MambaMixer m;
        if (config.family == ModelFamily::FalconMamba) m.dt_bc_rms_eps_ = config.mixer_rms_eps;
        m.D_ = config.hidden_size;
        m.E_ = config.intermediate_size;
        m.N_ = config.state_size;
        m.K_ = config.conv_kernel;
        m.R_ = config.time_step_rank;
        m.in_proj_ = Linear::load(ckpt, prefix + ".in_proj", 2 * m.E_, m.D_, config.use_bias);
        m.conv_ = CausalConv1d::load(ckpt, prefix + ".conv1d", m.E_, m.K_, config.use_conv_bias);
        m.x_proj_ = Linear::load(ckpt, prefix + ".x_proj", m.R_ + 2 * m.N_, m.E_, false);
        m.dt_proj_ = Linear::load(ckpt, prefix + ".dt_proj", m.E_, m.R_, true);
        m.out_proj_ = Linear::load(ckpt, prefix + ".out_proj", m.D_, m.E_, config.use_bias);
        const index a_shape[] = {m.E_, m.N_};
        const Tensor a_log = ckpt.load_f32(prefix + ".A_log", a_shape);
        std::vector<float> a(static_cast<std::size_t>(a_log.size()));
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = -std::exp(a_log.data()[i]);
        m.A_ = Tensor::from({m.E_, m.N_}, std::move(a));
        m.A_log_ = a_log;
        const index d_shape[] = {m.E_};
        m.Dskip_ = ckpt.load_f32(prefix + ".D", d_shape);
        return m;
    }

    [[nodiscard]] index hidden_size() const noexcept { return D_; }
    [[nodiscard]] index inner_size() const noexcept { return E_; }
    [[nodiscard]] index state_size() const noexcept { return N_; }
    [[nodiscard]] index dt_rank() const noexcept { return R_; }
    [[nodiscard]] const Tensor& A() const noexcept { return A_; }
    // What another backend (ssm::cuda::MambaModel) takes over from a loaded mixer.
    [[nodiscard]] const Linear& in_proj() const noexcept { return in_proj_; }
    [[nodiscard]] const CausalConv1d& conv() const noexcept { return conv_; }
    [[nodiscard]] const Linear& x_proj() const noexcept { return x_proj_; }
    [[nodiscard]] const Linear& dt_proj() const noexcept { return dt_proj_; }
    [[nodiscard]] const Linear& out_proj() const noexcept { return out_proj_; }
    /// D (E), the skip.
    [[nodiscard]] const Tensor& skip() const noexcept { return Dskip_; }
    /// Falcon-Mamba: the eps of the weightless RMS norm of dt_low, B and C (0: none, Mamba-1).
    [[nodiscard]] double dt_bc_rms_eps() const noexcept { return dt_bc_rms_eps_; }

    /// An all-zero recurrent state for `batch` sequences.
    [[nodiscard]] MambaLayerState make_state(index batch) const {
        return MambaLayerState(batch, conv_.state_size(), E_ * N_);
    }

    /// Prefill over packed sequences: out (T, D) (+)= mixer(h (T, D)).
    /// `state_in` continues each sequence from a carried state (nullptr: from zero);
    /// `state_out` receives each sequence's state after its last token. Both may be
    /// the same object.
    void forward(ConstStridedMap h, std::span<const index> offsets, StridedMap out, bool accumulate,
                 Workspace& ws, const MambaLayerState* state_in = nullptr,
                 MambaLayerState* state_out = nullptr) const {
        const index T = h.rows();
        const index nseq = static_cast<index>(offsets.size()) - 1;
        check_state(state_in, nseq);
        check_state(state_out, nseq);
        StridedMap xz = ws.matrix(T, 2 * E_);  // (T, 2E): [x | z]
        in_proj_.forward(h, xz);
        const ConstStridedMap x(xz.data(), T, E_, Eigen::OuterStride<>(2 * E_));
        StridedMap u = ws.matrix(T, E_);  // (T, E): silu(conv(x))
        conv_.forward(x, offsets, u, true, state_in ? state_in->conv.data() : nullptr,
                      state_out ? state_out->conv.data() : nullptr);
        StridedMap xdbl = ws.matrix(T, R_ + 2 * N_);  // (T, R+2N): [dt_low | B | C]
        x_proj_.forward(cview(u), xdbl);
        if (dt_bc_rms_eps_ > 0) normalize_dt_b_c(xdbl);
        StridedMap dt = ws.matrix(T, E_);  // (T, E)
        dt_proj_.forward(ConstStridedMap(xdbl.data(), T, R_, Eigen::OuterStride<>(R_ + 2 * N_)), dt);
        parallel_for(T, 64, [&](index b, index e) { softplus_inplace(dt.data() + b * E_, (e - b) * E_); });
        StridedMap y = ws.matrix(T, E_);  // (T, E)
        SelectiveScanArgs args = scan_args(T, u, dt, xdbl, xz.data() + E_, y);
        args.offsets = offsets;
        args.initial_state = state_in ? state_in->ssm.data() : nullptr;
        args.final_state = state_out ? state_out->ssm.data() : nullptr;
        ScanT::template run<Disc>(args);
        out_proj_.forward(cview(y), out, accumulate);
    }

    /// Decoding: one token per sequence. out (B, D) (+)= mixer(h (B, D)); `state` advances.
    void step(ConstStridedMap h, MambaLayerState& state, StridedMap out, bool accumulate,
              Workspace& ws) const {
        const index B = h.rows();
        check_state(&state, B);
        StridedMap xz = ws.matrix(B, 2 * E_);
        in_proj_.forward(h, xz);
        const ConstStridedMap x(xz.data(), B, E_, Eigen::OuterStride<>(2 * E_));
        StridedMap u = ws.matrix(B, E_);
        conv_.step(x, state.conv.data(), u, true);
        StridedMap xdbl = ws.matrix(B, R_ + 2 * N_);
        x_proj_.forward(cview(u), xdbl);
        if (dt_bc_rms_eps_ > 0) normalize_dt_b_c(xdbl);
        StridedMap dt = ws.matrix(B, E_);
        dt_proj_.forward(ConstStridedMap(xdbl.data(), B, R_, Eigen::OuterStride<>(R_ + 2 * N_)), dt);
        softplus_inplace(dt.data(), B * E_);
        StridedMap y = ws.matrix(B, E_);
        SelectiveScanArgs args = scan_args(B, u, dt, xdbl, xz.data() + E_, y);
        selective_state_update<Disc>(args, state.ssm.data());
        out_proj_.forward(cview(y), out, accumulate);
    }

    /// Keeps the four projections' weights in `format` (conv, A, D and biases stay float32).
    void store_weights(WeightFormat format) {
        for (Linear* l : {&in_proj_, &x_proj_, &dt_proj_, &out_proj_}) l->store_weights(format);
    }

    // ---- Training ----------------------------------------------------------------------

    /// What backward needs, per token O(E + N) floats (D + 7E + R + 2N) plus the scan's
    /// states every `ScanCheckpoints::chunk` rows; the scan's states themselves are
    /// recomputed chunk by chunk in backward.
    struct Cache {
        Matrix h;                   // (T, D) input (in_proj's)
        Matrix xz;                  // (T, 2E) [x | z]
        CausalConv1d::Cache conv;   // (T, E) conv pre-activation
        Matrix u;                   // (T, E) silu(conv(x))
        Matrix xdbl;                // (T, R+2N) [dt_low | B | C] (Falcon-Mamba: normalised)
        Matrix xdbl_scale;          // (T, 3) Falcon-Mamba: 1/rms of dt_low, B and C; else empty
        Matrix dt_in;               // (T, E) dt_proj output, before softplus
        Matrix dt;                  // (T, E) Δ = softplus(dt_in)
        Matrix y;                   // (T, E) gated scan output (out_proj's input)
        ScanCheckpoints scan;
        std::vector<index> offsets;

        [[nodiscard]] std::size_t floats() const noexcept {
            return static_cast<std::size_t>(h.size() + xz.size() + conv.pre.size() + u.size() + xdbl.size() +
                                            xdbl_scale.size() + dt_in.size() + dt.size() + y.size()) +
                   scan.floats();
        }
    };

    /// Makes every weight an owned float32 master with a gradient, registered under the
    /// checkpoint's names in PyTorch's parameter order: `prefix.A_log`, `prefix.D` (no
    /// decay), `prefix.conv1d.{weight,bias}`, `prefix.in_proj.*`, `prefix.x_proj.weight`,
    /// `prefix.dt_proj.{weight,bias}`, `prefix.out_proj.*` (biases without decay).
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        train::register_tensor(params, prefix + ".A_log", A_log_, A_log_grad_, false);
        train::register_tensor(params, prefix + ".D", Dskip_, D_grad_, false);
        conv_.register_parameters(params, prefix + ".conv1d");
        in_proj_.register_parameters(params, prefix + ".in_proj");
        x_proj_.register_parameters(params, prefix + ".x_proj");
        dt_proj_.register_parameters(params, prefix + ".dt_proj");
        out_proj_.register_parameters(params, prefix + ".out_proj");
        A_ = Tensor::zeros({E_, N_});  // owned from now on, refreshed from A_log
        refresh_derived();
    }

    /// Re-derives A = −exp(A_log) and the conv taps from the masters after they changed
    /// (an optimizer step); every training forward calls it first.
    void refresh_derived() {
        if (A_log_grad_.empty()) return;
        float* a = A_.mutable_data();
        for (index i = 0; i < A_.size(); ++i) a[i] = -std::exp(A_log_.data()[i]);
        conv_.refresh_derived();
    }

    /// Training forward over packed sequences from zero state: out (T, D) (+)= mixer(h),
    /// as `forward` computes it, filling `cache`.
    void forward(ConstStridedMap h, std::span<const index> offsets, StridedMap out, bool accumulate, Cache& cache) {
        static_assert(TrainableScan<ScanT>, "MambaMixer: this scan policy has no backward (ScanTraining)");
        require(!A_log_grad_.empty(), "MambaMixer: register_parameters was not called before a training forward");
        refresh_derived();
        const index T = h.rows();
        cache.offsets.assign(offsets.begin(), offsets.end());
        cache.h = h;
        cache.xz.resize(T, 2 * E_);
        in_proj_.forward(cview(cache.h), view(cache.xz));
        const ConstStridedMap x(cache.xz.data(), T, E_, Eigen::OuterStride<>(2 * E_));
        cache.u.resize(T, E_);
        conv_.forward(x, offsets, view(cache.u), true, cache.conv);
        cache.xdbl.resize(T, R_ + 2 * N_);
        x_proj_.forward(cview(cache.u), view(cache.xdbl));
        if (dt_bc_rms_eps_ > 0) {
            cache.xdbl_scale.resize(T, 3);
            StridedMap xdbl = view(cache.xdbl);
            normalize_dt_b_c(xdbl, cache.xdbl_scale.data());
        } else {
            cache.xdbl_scale.resize(0, 3);
        }
        cache.dt_in.resize(T, E_);
        dt_proj_.forward(ConstStridedMap(cache.xdbl.data(), T, R_, Eigen::OuterStride<>(R_ + 2 * N_)), view(cache.dt_in));
        cache.dt = cache.dt_in;
        parallel_for(T, 64, [&](index b, index e) { softplus_inplace(cache.dt.data() + b * E_, (e - b) * E_); });
        cache.y.resize(T, E_);
        const SelectiveScanArgs args = train_scan_args(cache);
        selective_scan_forward_train<ScanT, Disc>(args, cache.scan);
        out_proj_.forward(cview(cache.y), out, accumulate);
    }

    /// Backward from dout (T, D), the gradient of the mixer's output: every parameter
    /// gradient accumulates (dA_log = dA ⊙ A); dh (T, D) is written (added with
    /// `accumulate`). dh must not alias dout.
    void backward(ConstStridedMap dout, const Cache& cache, StridedMap dh, bool accumulate = false) {
        const index T = cache.h.rows();
        require(dout.rows() == T && dout.cols() == D_ && dh.rows() == T && dh.cols() == D_,
                "MambaMixer::backward: gradients do not fit the cached (", T, ", ", D_, ") input");
        const index W = R_ + 2 * N_;
        Matrix dy(T, E_);
        out_proj_.backward(cview(cache.y), dout, view(dy));
        Matrix du(T, E_), ddt(T, E_), dxdbl(T, W), dxz(T, 2 * E_);
        std::vector<float> dA(static_cast<std::size_t>(E_ * N_)), dD(static_cast<std::size_t>(E_));
        SelectiveScanGrads g;
        g.dy = dy.data();
        g.ld_dy = E_;
        g.du = du.data();
        g.ld_du = E_;
        g.ddt = ddt.data();
        g.ld_ddt = E_;
        g.dB = dxdbl.data() + R_;
        g.ld_dB = W;
        g.dC = dxdbl.data() + R_ + N_;
        g.ld_dC = W;
        g.dz = dxz.data() + E_;
        g.ld_dz = 2 * E_;
        g.dA = dA.data();
        g.dD = dD.data();
        selective_scan_backward<ScanT, Disc>(train_scan_args(cache), cache.scan, g);
        float* gA = A_log_grad_.mutable_data();
        for (index i = 0; i < E_ * N_; ++i) gA[i] += dA[static_cast<std::size_t>(i)] * A_.data()[i];
        float* gD = D_grad_.mutable_data();
        for (index e = 0; e < E_; ++e) gD[e] += dD[static_cast<std::size_t>(e)];
        // Δ = softplus(v): dv = dΔ·sigmoid(v), and dΔ itself where softplus is the identity (v > 20).
        // σ(v) in vector form a row at a time, then the branch as a plain loop (blends).
        parallel_for(T, 64, [&](index b, index e) {
            Eigen::ArrayXf sig(E_);
            for (index t = b; t < e; ++t) {
                const float* v = cache.dt_in.data() + t * E_;
                float* d = ddt.data() + t * E_;
                sig = (1.0f + (-Eigen::Map<const Eigen::ArrayXf>(v, E_)).exp()).inverse();
                for (index c = 0; c < E_; ++c)
                    if (v[c] <= 20.0f) d[c] *= sig[c];
            }
        });
        dt_proj_.backward(ConstStridedMap(cache.xdbl.data(), T, R_, Eigen::OuterStride<>(W)), cview(ddt),
                          StridedMap(dxdbl.data(), T, R_, Eigen::OuterStride<>(W)));
        if (dt_bc_rms_eps_ > 0) normalize_dt_b_c_backward(cache, dxdbl);
        x_proj_.backward(cview(cache.u), cview(dxdbl), view(du), true);
        conv_.backward(ConstStridedMap(cache.xz.data(), T, E_, Eigen::OuterStride<>(2 * E_)), cache.offsets, cview(du),
                       cache.conv, StridedMap(dxz.data(), T, E_, Eigen::OuterStride<>(2 * E_)));
        in_proj_.backward(cview(cache.h), cview(dxz), dh, accumulate);
    }

private:
    /// The scan's operands in a training cache (y written into cache.y).
    [[nodiscard]] SelectiveScanArgs train_scan_args(const Cache& c) const {
        const index T = c.h.rows(), W = R_ + 2 * N_;
        SelectiveScanArgs a;
        a.T = T;
        a.E = E_;
        a.N = N_;
        a.u = c.u.data();
        a.ld_u = E_;
        a.dt = c.dt.data();
        a.ld_dt = E_;
        a.A = A_.data();
        a.B = c.xdbl.data() + R_;
        a.ld_B = W;
        a.C = c.xdbl.data() + R_ + N_;
        a.ld_C = W;
        a.D = Dskip_.data();
        a.z = c.xz.data() + E_;
        a.ld_z = 2 * E_;
        a.y = const_cast<float*>(c.y.data());  // written by the training forward only
        a.ld_y = E_;
        a.offsets = c.offsets;
        return a;
    }

    SelectiveScanArgs scan_args(index T, const StridedMap& u, const StridedMap& dt,
                                const StridedMap& xdbl, const float* z, StridedMap& y) const {
        SelectiveScanArgs a;
        a.T = T;
        a.E = E_;
        a.N = N_;
        a.u = u.data();
        a.ld_u = E_;
        a.dt = dt.data();
        a.ld_dt = E_;
        a.A = A_.data();
        a.B = xdbl.data() + R_;
        a.ld_B = R_ + 2 * N_;
        a.C = xdbl.data() + R_ + N_;
        a.ld_C = R_ + 2 * N_;
        a.D = Dskip_.data();
        a.z = z;
        a.ld_z = 2 * E_;
        a.y = y.data();
        a.ld_y = E_;
        return a;
    }

    /// Falcon-Mamba: each of dt_low (R), B (N) and C (N) in every row of x_proj's output
    /// becomes x / sqrt(mean(x²) + eps), as transformers' `FalconMambaMixer` does; the
    /// three scales of each row go to `scales` (rows × 3) when given.
    void normalize_dt_b_c(StridedMap& xdbl, float* scales = nullptr) const {
        const index rows = xdbl.rows();
        const index starts[] = {0, R_, R_ + N_}, widths[] = {R_, N_, N_};
        parallel_for(rows, 64, [&](index b, index e) {
            for (index t = b; t < e; ++t) {
                float* row = xdbl.data() + t * xdbl.outerStride();
                for (int part = 0; part < 3; ++part) {
                    float* v = row + starts[part];
                    double sum = 0.0;
                    for (index i = 0; i < widths[part]; ++i) sum += static_cast<double>(v[i]) * v[i];
                    const auto scale = static_cast<float>(
                        1.0 / std::sqrt(sum / static_cast<double>(widths[part]) + dt_bc_rms_eps_));
                    for (index i = 0; i < widths[part]; ++i) v[i] *= scale;
                    if (scales) scales[t * 3 + part] = scale;
                }
            }
        });
    }

    /// Backward of `normalize_dt_b_c`, in place on dxdbl (T, R+2N): with y = s·x and
    /// s = (mean(x²) + eps)^(-1/2) over one part of a row, dx = s·(dy − y·mean(dy ⊙ y)).
    void normalize_dt_b_c_backward(const Cache& cache, Matrix& dxdbl) const {
        const index W = R_ + 2 * N_;
        require(cache.xdbl_scale.rows() == cache.xdbl.rows(),
                "MambaMixer::backward: the cache has no Falcon-Mamba scales (not from this mixer's training forward)");
        const index starts[] = {0, R_, R_ + N_}, widths[] = {R_, N_, N_};
        parallel_for(dxdbl.rows(), 64, [&](index b, index e) {
            for (index t = b; t < e; ++t) {
                const float* y = cache.xdbl.data() + t * W;
                float* d = dxdbl.data() + t * W;
                for (int part = 0; part < 3; ++part) {
                    const index at = starts[part], n = widths[part];
                    double dot = 0.0;
                    for (index i = 0; i < n; ++i) dot += static_cast<double>(d[at + i]) * y[at + i];
                    const auto m = static_cast<float>(dot / static_cast<double>(n));
                    const float s = cache.xdbl_scale(t, part);
                    for (index i = 0; i < n; ++i) d[at + i] = s * (d[at + i] - y[at + i] * m);
                }
            }
        });
    }

    void check_state(const MambaLayerState* s, index batch) const {
        if (!s) return;
        require(s->batch == batch && s->conv.size() == static_cast<std::size_t>(batch * conv_.state_size()) &&
                    s->ssm.size() == static_cast<std::size_t>(batch * E_ * N_),
                "MambaMixer: recurrent state is for ", s->batch, " sequences, the batch has ", batch);
    }

    index D_ = 0, E_ = 0, N_ = 0, K_ = 0, R_ = 0;
    Linear in_proj_;       // (2E, D)
    CausalConv1d conv_;    // (E, 1, K)
    Linear x_proj_;        // (R+2N, E)
    Linear dt_proj_;       // (E, R) + bias (E)
    Linear out_proj_;      // (D, E)
    Tensor A_;             // (E, N) = −exp(A_log)
    Tensor Dskip_;         // (E)
    double dt_bc_rms_eps_ = 0.0;  // Falcon-Mamba's mixer_rms_eps; 0 for Mamba-1

    Tensor A_log_;         // (E, N) as loaded; the float32 master once trainable
    Tensor A_log_grad_;    // (E, N), once trainable
    Tensor D_grad_;        // (E), once trainable
};

}  // namespace ssm
