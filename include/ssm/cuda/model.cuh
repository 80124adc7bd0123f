// ssm/cuda/model.cuh — a whole Mamba-1, Falcon-Mamba or Mamba-2 language model on the GPU: weights
// uploaded once (fp32, or the large matrices in bf16), prefill over packed batches, and
// recurrent decoding with a device-resident state.
// The API mirrors `ssm::Model` (`forward`, `make_state`, `step`) and returns the same
// host types (`ForwardResult`, `Matrix`), so a test can compare the two directly.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cuda/buffer.cuh"
#include "ssm/cuda/error.cuh"
#include "ssm/cuda/gemm.cuh"
#include "ssm/cuda/kernels.cuh"
#include "ssm/cuda/mamba2_mixer.cuh"
#include "ssm/cuda/upload.cuh"
#include "ssm/cuda/weight.cuh"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/mamba_mixer.hpp"
#include "ssm/model/mamba.hpp"
#include "ssm/model/batch.hpp"
#include "ssm/model/model.hpp"
#include "ssm/model/state.hpp"

namespace ssm::cuda {

static_assert(std::is_same_v<dindex, ssm::index>, "device and host index types must agree");

/// The recurrent state of every layer for `batch` sequences, on the device. Same layouts
/// as the CPU's `MambaLayerState`: conv (batch, K−1, conv width) oldest first — the width
/// is E for Mamba-1, d_ssm + 2·G·N for Mamba-2 — and ssm (batch, E, N) for Mamba-1,
/// (batch, H, P, N) for Mamba-2.
class MambaState {
public:
    MambaState() = default;

    [[nodiscard]] index batch() const noexcept { return batch_; }
    [[nodiscard]] index num_layers() const noexcept { return static_cast<index>(conv_.size()); }
    [[nodiscard]] float* conv(index layer) {
        return conv_.at(static_cast<std::size_t>(layer)).data();
    }
    [[nodiscard]] float* ssm(index layer) {
        return ssm_.at(static_cast<std::size_t>(layer)).data();
    }

    /// Back to the all-zero state (a fresh start for every sequence).
    void reset() {
        for (auto& b : conv_) b.zero();
        for (auto& b : ssm_) b.zero();
        SSM_CUDA_CHECK(cudaDeviceSynchronize());
    }

    /// A host copy in the CPU model's form (`ssm::MambaLM::state_type`).
    [[nodiscard]] State<MambaLayerState> to_host() const {
        State<MambaLayerState> s;
        s.batch = batch_;
        for (std::size_t l = 0; l < conv_.size(); ++l) {
            MambaLayerState ls;
            ls.batch = batch_;
            ls.conv = conv_[l].to_host();
            ls.ssm = ssm_[l].to_host();
            s.layers.push_back(std::move(ls));
        }
        return s;
    }

    /// Overwrites this state with a host one of the same shape.
    void upload(const State<MambaLayerState>& s) {
        require(s.batch == batch_ && s.layers.size() == conv_.size(),
                "cuda::MambaState::upload: host state is for ", s.batch, " sequences and ",
                s.layers.size(), " layers, this one for ", batch_, " and ", conv_.size());
        for (std::size_t l = 0; l < conv_.size(); ++l) {
            require(s.layers[l].conv.size() == conv_[l].size() &&
                        s.layers[l].ssm.size() == ssm_[l].size(),
                    "cuda::MambaState::upload: layer ", l, " has the wrong size");
            conv_[l].upload(s.layers[l].conv);
            ssm_[l].upload(s.layers[l].ssm);
        }
    }

private:
    friend class MambaModel;
    index batch_ = 0;
    std::vector<DeviceBuffer<float>> conv_;  // per layer (batch, K−1, conv width)
    std::vector<DeviceBuffer<float>> ssm_;   // per layer (batch, E, N) or (batch, H, P, N)
};

namespace detail {
template <class Mixer>
inline constexpr bool is_mamba2_mixer = false;
template <class Scan>
inline constexpr bool is_mamba2_mixer<ssm::Mamba2Mixer<Scan>> = true;
}  // namespace detail

/// A Mamba-1 LM (RMSNorm or LayerNorm, tied or untied head; Falcon-Mamba's normalisation of
/// dt_low, B and C where the config says so) or a Mamba-2 LM (its layers
/// `cuda::Mamba2Mixer`s) on one GPU.
///
/// Weights are fp32 until `store_weights_bf16()`, which keeps the large matrices in bf16.
/// Not thread-safe: a model owns one stream, one cuBLAS handle and one activation
/// workspace (grown to the largest batch seen, never shrunk), so calls on one model must
/// not overlap. Results are copied back to the host before each call returns.
class MambaModel {
public:
    /// `config.json` and the weights of a checkpoint folder.
    [[nodiscard]] static MambaModel load(const std::filesystem::path& dir) {
        const MambaConfig config = MambaConfig::load(dir);
        return load(Checkpoint::open(dir), config);
    }

    /// Loads the checkpoint with the CPU loader (`ssm::MambaLM` for Mamba-1 and Falcon-Mamba,
    /// `ssm::MambaLMLayerNorm` for a LayerNorm config, `ssm::Mamba2LM` for a Mamba-2 one),
    /// which reads and checks every tensor, then uploads it.
    [[nodiscard]] static MambaModel load(const Checkpoint& ckpt, const MambaConfig& config) {
        check_supported(config);
        if (config.family == ModelFamily::Mamba2) return upload(Mamba2LM::load(ckpt, config));
        if (config.norm == NormKind::LayerNorm) return upload(MambaLMLayerNorm::load(ckpt, config));
        return upload(MambaLM::load(ckpt, config));
    }

    /// Takes over a loaded CPU LM — Mamba-1 or Falcon-Mamba (`ssm::MambaLMWith<RMSNorm or LayerNorm>`) or
    /// Mamba-2 (`ssm::Mamba2LMWith<any scan>`), float32 weights: upload before
    /// `store_weights_bf16` — its tensors as the CPU layers hold them (the conv taps already
    /// (K, width), A = −exp(A_log) already computed), uploaded once.
    template <class CpuModel>
    [[nodiscard]] static MambaModel upload(const CpuModel& cpu) {
        const MambaConfig& config = cpu.config();
        check_supported(config);
        MambaModel m;
        m.config_ = config;
        auto norm = [](const auto& cpu_norm, Norm& n) {
            n.weight = upload_tensor(cpu_norm.weight());
            if constexpr (requires { cpu_norm.bias(); })
                if (cpu_norm.bias()) n.bias = upload_tensor(*cpu_norm.bias());
        };
        m.embedding_ = DeviceWeight(upload_matrix(cpu.embedding().table(), "the embedding"));
        for (const auto& layer : cpu.backbone()) {
            const auto& x = layer.mixer();
            Layer L;
            norm(layer.norm(), L.norm);
            if constexpr (detail::is_mamba2_mixer<std::decay_t<decltype(x)>>)
                L.mamba2 = Mamba2Mixer::upload(x);
            else
                upload_mamba1(x, L);
            m.layers_.push_back(std::move(L));
        }
        norm(cpu.norm_f(), m.norm_f_);
        if (!config.tie_word_embeddings)
            m.lm_head_ = DeviceWeight(upload_matrix(cpu.head().projection().weight(), "lm_head"));
        SSM_CUDA_CHECK(cudaDeviceSynchronize());
        return m;
    }

    /// Keeps the large weight matrices — the embedding (and a tied head), in_proj, x_proj,
    /// dt_proj, out_proj (in a Mamba-2 layer in_proj and out_proj) and an untied head — in
    /// bf16 on the device from now on, as `ssm::Model::store_weights_bf16` does on the CPU:
    /// half the memory, and half the weight bytes every decoding step reads. Weights from a
    /// bf16 checkpoint lose nothing; fp32 ones are rounded to nearest even. The norms, the
    /// conv, A, D, biases, the residual stream, the scan and the recurrent state stay fp32.
    ///
    /// cuBLAS multiplies bf16 only by bf16, so each GEMM's fp32 activation is rounded to bf16
    /// first (`convert_rows`) and the products are summed in fp32. That rounding (2⁻⁹
    /// relative per element) is where this differs from the CPU's bf16 model, which widens
    /// the weights and keeps its activations fp32: expect agreement to ~1e-3 relative, not
    /// ~1e-6. The decoding step's x_proj and dt_proj run inside `mamba_decode_step`, which
    /// widens the bf16 weights and keeps the activations fp32, as the CPU does.
    void store_weights_bf16() {
        graph_.forget();  // it points at the fp32 weights, which are freed one by one below
        embedding_.to_bf16(stream_);
        lm_head_.to_bf16(stream_);
        for (Layer& L : layers_)
            if (L.mamba2)
                L.mamba2->store_weights_bf16(stream_);
            else
                for (DeviceWeight* w : {&L.in_proj_w, &L.x_proj_w, &L.dt_proj_w, &L.out_proj_w})
                    w->to_bf16(stream_);
        weights_bf16_ = true;
    }

    /// Decoding steps run as one CUDA graph (on by default): the second step with the same
    /// batch size, state and workspace is captured, later ones replay it — one launch per
    /// step instead of several per layer, which is most of a small batch's step time. Off,
    /// every step launches its kernels one by one. The results are the same either way.
    void use_decode_graph(bool on) {
        graph_.forget();
        graph_.enabled = on;
    }
    /// Whether the last decoding step replayed (or was captured into) the graph. False
    /// after a failed capture too: the model then launches directly and says why in
    /// `decode_graph_error()`.
    [[nodiscard]] bool decode_graph_used() const noexcept { return graph_.used; }
    [[nodiscard]] const std::string& decode_graph_error() const noexcept { return graph_.error; }

    /// Where the Mamba-2 layers' SSD runs its chunk products in prefill (`SsdMath::Fp32` on
    /// the CUDA cores by default; `SsdMath::Tf32x3` on the tensor cores, compute capability
    /// 8.0 or later). A Mamba-1 model has no SSD and ignores it.
    void set_ssd_math(SsdMath math) {
        for (Layer& L : layers_)
            if (L.mamba2) L.mamba2->set_ssd_math(math);
        ssd_math_ = math;
    }
    [[nodiscard]] SsdMath ssd_math() const noexcept { return ssd_math_; }

    /// Whether `store_weights_bf16()` has been called.
    [[nodiscard]] bool weights_bf16() const noexcept { return weights_bf16_; }

    /// Bytes of weights on the device.
    [[nodiscard]] std::size_t weight_bytes() const noexcept {
        std::size_t n =
            embedding_.bytes() + lm_head_.bytes() + norm_f_.weight.bytes() + norm_f_.bias.bytes();
        for (const Layer& L : layers_)
            n += L.norm.weight.bytes() + L.norm.bias.bytes() + L.in_proj_w.bytes() +
                 L.in_proj_b.bytes() + L.conv_taps.bytes() + L.conv_b.bytes() + L.x_proj_w.bytes() +
                 L.dt_proj_w.bytes() + L.dt_proj_b.bytes() + L.A.bytes() + L.D.bytes() +
                 L.out_proj_w.bytes() + L.out_proj_b.bytes() +
                 (L.mamba2 ? L.mamba2->weight_bytes() : 0);
        return n;
    }

    [[nodiscard]] const MambaConfig& config() const noexcept { return config_; }
    [[nodiscard]] index vocab_size() const noexcept { return config_.vocab_size; }
    [[nodiscard]] index hidden_size() const noexcept { return config_.hidden_size; }
    [[nodiscard]] index num_layers() const noexcept { return static_cast<index>(layers_.size()); }
    [[nodiscard]] cudaStream_t stream() const noexcept { return stream_.get(); }

    /// An all-zero recurrent state for `batch` sequences, on the device.
    [[nodiscard]] MambaState make_state(index batch) const {
        require(batch >= 0, "cuda::MambaModel::make_state: negative batch");
        MambaState s;
        s.batch_ = batch;
        const index E = config_.intermediate_size, N = config_.state_size, K = config_.conv_kernel;
        for (const Layer& L : layers_) {
            const index conv = L.mamba2 ? L.mamba2->conv_state_floats() : (K - 1) * E;
            const index ssm = L.mamba2 ? L.mamba2->ssm_state_floats() : E * N;
            s.conv_.emplace_back(static_cast<std::size_t>(batch * conv));
            s.ssm_.emplace_back(static_cast<std::size_t>(batch * ssm));
        }
        s.reset();
        return s;
    }

    /// Prefill over a packed batch, as `ssm::Model::forward`: hidden (after the final
    /// norm), optionally the residual stream after every layer, and logits for all or the
    /// last positions. With `state`, each sequence continues from it and it is left
    /// holding the state after each sequence's last token, ready for `step`.
    [[nodiscard]] ForwardResult forward(const Batch& batch, const ForwardOptions& opt = {},
                                        MambaState* state = nullptr) {
        ForwardResult r;
        const index T = prefill(batch, state, opt.layer_outputs ? &r.layer_outputs : nullptr);
        const index D = hidden_size(), V = vocab_size();
        r.hidden.resize(T, D);
        ws_.h.download({r.hidden.data(), static_cast<std::size_t>(T * D)}, stream_);
        if (opt.logits == Logits::All) {
            ws_.logits.reserve(static_cast<std::size_t>(T * V));
            project(T, V, D, ws_.h.data(), D, head(), ws_.logits.data(), V, nullptr);
            r.logits.resize(T, V);
            ws_.logits.download({r.logits.data(), static_cast<std::size_t>(T * V)}, stream_);
        } else if (opt.logits == Logits::Last) {
            const index S = batch.size();
            last_logits(S);
            r.logits.resize(S, V);
            ws_.logits.download({r.logits.data(), static_cast<std::size_t>(S * V)}, stream_);
        }
        return r;
    }

    /// The final hidden state (after the final norm) at the last token of every sequence,
    /// (nseq, D): what a bi-encoder or reranker reads, without copying all T rows back.
    [[nodiscard]] Matrix last_hidden(const Batch& batch, MambaState* state = nullptr) {
        (void)prefill(batch, state, nullptr);
        const index S = batch.size(), D = hidden_size();
        ws_.last.reserve(static_cast<std::size_t>(S * D));
        gather_last_rows<float>(ws_.h.data(), D, D, offsets_, ws_.last.data(), D, stream_);
        Matrix out(S, D);
        ws_.last.download({out.data(), static_cast<std::size_t>(S * D)}, stream_);
        return out;
    }

    /// Prefill, then the greedy next token of every sequence (argmax of its last logits,
    /// on the device).
    [[nodiscard]] std::vector<std::int32_t> prefill_greedy(const Batch& batch, MambaState& state) {
        (void)prefill(batch, &state, nullptr);
        const index S = batch.size();
        last_logits(S);
        return argmax_of_logits(S);
    }

    /// Decoding, as `ssm::Model::step`: one token per sequence; returns logits (batch, vocab)
    /// and advances `state`.
    [[nodiscard]] Matrix step(std::span<const std::int32_t> tokens, MambaState& state) {
        const index B = decode(tokens, state);
        Matrix logits(B, vocab_size());
        ws_.logits.download({logits.data(), static_cast<std::size_t>(B * vocab_size())}, stream_);
        return logits;
    }

    /// Decoding with greedy sampling on the device: only the chosen ids come back.
    [[nodiscard]] std::vector<std::int32_t> step_greedy(std::span<const std::int32_t> tokens,
                                                        MambaState& state) {
        const index B = decode(tokens, state);
        return argmax_of_logits(B);
    }

    /// Greedy generation: `prompt` followed by `new_tokens` tokens, decoded through the
    /// recurrent state (the CPU's `generate` with a greedy sampler).
    [[nodiscard]] std::vector<std::int32_t> generate_greedy(std::span<const std::int32_t> prompt,
                                                            index new_tokens) {
        require(!prompt.empty(), "cuda::MambaModel::generate_greedy: empty prompt");
        std::vector<std::int32_t> out(prompt.begin(), prompt.end());
        if (new_tokens <= 0) return out;
        MambaState state = make_state(1);
        Batch b;
        b.add(prompt);
        std::vector<std::int32_t> next = prefill_greedy(b, state);
        for (index i = 0; i < new_tokens; ++i) {
            out.push_back(next[0]);
            if (i + 1 < new_tokens) next = step_greedy(next, state);
        }
        return out;
    }

private:
    /// What the device model runs: Mamba-1 (RMSNorm or LayerNorm), Falcon-Mamba and Mamba-2,
    /// not a SAMBA hybrid.
    static void check_supported(const MambaConfig& config) {
        if (config.is_hybrid())
            fail(
                "cuda::MambaModel: the config describes a SAMBA hybrid (attention and MLP "
                "layers), which the CUDA backend does not run yet; use ssm::Samba on the CPU");
        if (config.family != ModelFamily::Mamba1 && config.family != ModelFamily::FalconMamba &&
            config.family != ModelFamily::Mamba2)
            fail("cuda::MambaModel: the config describes a ", family_name(config.family),
                 " model, which the CUDA model does not run (it runs mamba, falcon_mamba and "
                 "mamba2); use ssm::with_mamba on the CPU");
    }

    struct Layer;

    static DeviceBuffer<float> upload_optional(const std::optional<Tensor>& t) {
        return t ? upload_tensor(*t) : DeviceBuffer<float>();
    }

    /// A Mamba-1 mixer's tensors into L.
    template <class Mixer>
    static void upload_mamba1(const Mixer& x, Layer& L) {
        L.in_proj_w = DeviceWeight(upload_matrix(x.in_proj().weight(), "in_proj"));
        L.in_proj_b = upload_optional(x.in_proj().bias());
        L.conv_taps = upload_tensor(x.conv().taps());
        L.conv_b = upload_optional(x.conv().bias());
        L.x_proj_w = DeviceWeight(upload_matrix(x.x_proj().weight(), "x_proj"));
        L.dt_proj_w = DeviceWeight(upload_matrix(x.dt_proj().weight(), "dt_proj"));
        require(x.dt_proj().bias().has_value(), "cuda::MambaModel: dt_proj has no bias");
        L.dt_proj_b = upload_tensor(*x.dt_proj().bias());
        L.A = upload_tensor(x.A());
        L.D = upload_tensor(x.skip());
        L.out_proj_w = DeviceWeight(upload_matrix(x.out_proj().weight(), "out_proj"));
        L.out_proj_b = upload_optional(x.out_proj().bias());
        L.dt_bc_rms_eps = x.dt_bc_rms_eps();
    }

    struct Norm {
        DeviceBuffer<float> weight;  // (D)
        DeviceBuffer<float> bias;    // (D), LayerNorm only, optional
    };
    struct Layer {
        Norm norm;
        DeviceWeight in_proj_w;                 // (2E, D)
        DeviceBuffer<float> in_proj_b;          // (2E) optional
        DeviceBuffer<float> conv_taps, conv_b;  // (K, E), (E) optional
        DeviceWeight x_proj_w;                  // (R+2N, E)
        DeviceWeight dt_proj_w;                 // (E, R)
        DeviceBuffer<float> dt_proj_b;          // (E)
        DeviceBuffer<float> A, D;               // (E, N) = −exp(A_log), (E)
        DeviceWeight out_proj_w;                // (D, E)
        DeviceBuffer<float> out_proj_b;         // (D) optional
        double dt_bc_rms_eps = 0.0;  // Falcon-Mamba: dt_low, B and C normalised with this eps; 0: Mamba-1
        std::optional<Mamba2Mixer> mamba2;      // a Mamba-2 layer's mixer (the fields above empty)
    };
    /// Activations, sized for the largest batch so far (rows = tokens, or sequences when decoding).
    struct Workspace {
        DeviceBuffer<float> residual;  // (T, D) the residual stream, fp32
        DeviceBuffer<float> delta;     // (T, D) a layer's out_proj output, added by the next norm
        DeviceBuffer<float> h;   // (T, D) normed input of a layer; after the last, the hidden state
        DeviceBuffer<float> xz;  // (T, 2E) [x | z]
        DeviceBuffer<float> u;   // (T, E) silu(conv(x))
        DeviceBuffer<float> xdbl;         // (T, R+2N) [dt_low | B | C]
        DeviceBuffer<float> dt;           // (T, E) dt_proj output before bias + softplus
        DeviceBuffer<float> y;            // (T, E) scan output, gated
        DeviceBuffer<float> scan;         // the chunked scan's (chunks, N + 1, E)
        DeviceBuffer<float> last;         // (nseq, D) last hidden row of every sequence
        DeviceBuffer<float> logits;       // (rows, V)
        DeviceBuffer<__nv_bfloat16> x16;  // (rows, ≤ max(D, E)) a GEMM input rounded to bf16
        DeviceBuffer<std::int32_t> ids;
        DeviceBuffer<std::int32_t> next;
        Mamba2Workspace m2;  // the Mamba-2 layers' scratch, shared by all of them
    };

    MambaModel() = default;

    [[nodiscard]] const DeviceWeight& head() const {
        return config_.tie_word_embeddings ? embedding_ : lm_head_;
    }

    /// y (rows, out; ldy) = x (rows, in; ldx) · Wᵀ + bias (`cuda::project`; bf16 weights
    /// round x to bf16 in the workspace first).
    void project(index rows, index out, index in, const float* x, index ldx, const DeviceWeight& w,
                 float* y, index ldy, const float* bias) {
        cuda::project(blas_, rows, out, in, x, ldx, w, y, ldy, bias, ws_.x16);
    }

    /// out (rows, D) = the embedding rows of the ids in ws_.ids.
    void embed(index rows, float* out) {
        const index V = vocab_size(), D = hidden_size();
        if (embedding_.is_bf16())
            embedding<__nv_bfloat16>(embedding_.bf16(), V, D, ws_.ids.data(), rows, out, D,
                                     stream_);
        else
            embedding<float>(embedding_.f32(), V, D, ws_.ids.data(), rows, out, D, stream_);
    }
    [[nodiscard]] NormType norm_type() const {
        return config_.norm == NormKind::LayerNorm ? NormType::LayerNorm : NormType::RMSNorm;
    }
    [[nodiscard]] float eps() const { return static_cast<float>(config_.layer_norm_epsilon); }

    void reserve(index rows) {
        const auto n = [rows](index cols) { return static_cast<std::size_t>(rows * cols); };
        const index D = hidden_size(), E = config_.intermediate_size, R = config_.time_step_rank,
                    N = config_.state_size;
        ws_.residual.reserve(n(D));
        ws_.delta.reserve(n(D));
        ws_.h.reserve(n(D));
        ws_.ids.reserve(static_cast<std::size_t>(rows));
        if (is_mamba2()) {
            if (weights_bf16_) ws_.x16.reserve(n(D));  // the head's input
            for (const Layer& L : layers_) L.mamba2->reserve(ws_.m2, rows);
            return;
        }
        ws_.xz.reserve(n(2 * E));
        ws_.u.reserve(n(E));
        ws_.xdbl.reserve(n(R + 2 * N));
        ws_.dt.reserve(n(E));
        ws_.y.reserve(n(E));
        if (weights_bf16_) ws_.x16.reserve(n(std::max(D, E)));
    }

    [[nodiscard]] bool is_mamba2() const noexcept { return config_.family == ModelFamily::Mamba2; }

    void check_ids(std::span<const std::int32_t> ids) const {
        for (std::size_t i = 0; i < ids.size(); ++i)
            if (ids[i] < 0 || ids[i] >= vocab_size())
                fail("token id ", ids[i], " at position ", i, " is outside the vocabulary [0, ",
                     vocab_size(), ")");
    }

    /// Embedding and every layer over the packed batch; leaves the final hidden state
    /// (after the final norm) in ws_.h and the offsets in offsets_. Returns T.
    index prefill(const Batch& batch, MambaState* state, std::vector<Matrix>* layer_outputs) {
        require(!batch.empty(), "cuda::MambaModel::forward: the batch holds no sequence");
        if (state)
            require(state->batch_ == batch.size() && state->num_layers() == num_layers(),
                    "cuda::MambaModel::forward: state is for ", state->batch_,
                    " sequences, the batch has ", batch.size());
        check_ids(batch.tokens());
        const index T = batch.total_tokens(), D = hidden_size(), E = config_.intermediate_size,
                    N = config_.state_size, K = config_.conv_kernel, R = config_.time_step_rank;
        const index ldx = R + 2 * N;
        reserve(T);
        offsets_.assign(batch.offsets(), stream_);
        ws_.ids.upload(batch.tokens(), stream_);
        embed(T, ws_.residual.data());
        for (index l = 0; l < num_layers(); ++l) {
            const Layer& L = layers_[static_cast<std::size_t>(l)];
            add_norm(norm_type(), ws_.residual.data(), D, l > 0 ? ws_.delta.data() : nullptr, D,
                     L.norm.weight.data(), L.norm.bias.data(), T, D, eps(), ws_.h.data(), D,
                     stream_);
            if (layer_outputs && l > 0) layer_outputs->push_back(download_rows(ws_.residual, T, D));
            if (L.mamba2) {  // its states in and out are the same memory, as the mixer allows
                float* conv_state = state ? state->conv(l) : nullptr;
                float* ssm_state = state ? state->ssm(l) : nullptr;
                L.mamba2->forward(blas_, ws_.h.data(), D, offsets_, ws_.delta.data(), D, false, ws_.m2,
                                  conv_state, ssm_state, conv_state, ssm_state);
                continue;
            }
            project(T, 2 * E, D, ws_.h.data(), D, L.in_proj_w, ws_.xz.data(), 2 * E,
                    L.in_proj_b.data());
            float* conv_state = state ? state->conv(l) : nullptr;
            causal_conv1d<float>(ws_.xz.data(), 2 * E, E, static_cast<int>(K), L.conv_taps.data(),
                                 L.conv_b.data(), offsets_, conv_state, conv_state, true,
                                 ws_.u.data(), E, stream_);
            project(T, ldx, E, ws_.u.data(), E, L.x_proj_w, ws_.xdbl.data(), ldx, nullptr);
            if (L.dt_bc_rms_eps > 0.0)
                normalize_dt_b_c(ws_.xdbl.data(), T, ldx, static_cast<int>(R),
                                 static_cast<int>(config_.state_size), L.dt_bc_rms_eps, stream_);
            project(T, E, R, ws_.xdbl.data(), ldx, L.dt_proj_w, ws_.dt.data(), E, nullptr);
            ScanParams<float> p = scan_params(L, T);
            p.initial_state = state ? state->ssm(l) : nullptr;
            p.final_state = state ? state->ssm(l) : nullptr;
            selective_scan(p, offsets_, ws_.scan, stream_);
            project(T, D, E, ws_.y.data(), E, L.out_proj_w, ws_.delta.data(), D,
                    L.out_proj_b.data());
        }
        add_norm(norm_type(), ws_.residual.data(), D, ws_.delta.data(), D, norm_f_.weight.data(),
                 norm_f_.bias.data(), T, D, eps(), ws_.h.data(), D, stream_);
        if (layer_outputs) layer_outputs->push_back(download_rows(ws_.residual, T, D));
        return T;
    }

    /// One token per sequence through every layer and the head: logits (B, V) in ws_.logits.
    /// Per Mamba-1 layer: norm, in_proj, the fused step (`mamba_decode_step`: conv, x_proj,
    /// dt_proj, state update), out_proj; per Mamba-2 layer: norm, `Mamba2Mixer::step`.
    index decode(std::span<const std::int32_t> tokens, MambaState& state) {
        const index B = static_cast<index>(tokens.size());
        require(B == state.batch_ && state.num_layers() == num_layers(),
                "cuda::MambaModel::step: ", B, " tokens given for a state of ", state.batch_,
                " sequences");
        check_ids(tokens);
        const index V = vocab_size();
        reserve(B);
        ws_.logits.reserve(static_cast<std::size_t>(B * V));
        ws_.ids.upload(tokens, stream_);
        graph_.used = false;
        if (!graph_.enabled) {
            decode_layers(B, state);
            return B;
        }
        std::vector<const void*> key = decode_key(B, state);
        if (graph_.exec && key == graph_.key) {
            SSM_CUDA_CHECK(cudaGraphLaunch(graph_.exec, stream_));
            graph_.used = true;
            return B;
        }
        // Captured on the second call with these buffers: the first has sized every
        // workspace and set every kernel attribute, so nothing is allocated while capturing.
        if (key == graph_.seen && capture_decode(B, state)) {
            graph_.key = std::move(key);
            SSM_CUDA_CHECK(cudaGraphLaunch(graph_.exec, stream_));
            graph_.used = true;
            return B;
        }
        decode_layers(B, state);
        graph_.seen = std::move(key);
        return B;
    }

    /// Every buffer (and the batch size) a decoding step's kernels are given: a graph
    /// captured for one key replays only for the same key.
    std::vector<const void*> decode_key(index B, MambaState& state) {
        std::vector<const void*> k = {reinterpret_cast<const void*>(static_cast<std::uintptr_t>(B)),
                                      ws_.residual.data(),
                                      ws_.delta.data(),
                                      ws_.h.data(),
                                      ws_.xz.data(),
                                      ws_.u.data(),
                                      ws_.xdbl.data(),
                                      ws_.y.data(),
                                      ws_.logits.data(),
                                      ws_.x16.data(),
                                      ws_.ids.data(),
                                      ws_.m2.zx.data(),
                                      ws_.m2.xbc.data(),
                                      ws_.m2.dt.data(),
                                      ws_.m2.y.data(),
                                      ws_.m2.x16.data()};
        for (index l = 0; l < num_layers(); ++l) {
            k.push_back(state.conv(l));
            k.push_back(state.ssm(l));
        }
        return k;
    }

    /// Records one decoding step into graph_.exec without running it. On any failure the
    /// capture is ended and dropped, graphs are switched off for this model (the reason is
    /// kept in graph_.error), and false is returned: the caller launches directly.
    bool capture_decode(index B, MambaState& state) {
        graph_.forget();
        const auto give_up = [this](const std::string& why) {
            cudaGraph_t partial = nullptr;
            cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
            if (cudaStreamIsCapturing(stream_, &capturing) == cudaSuccess &&
                capturing != cudaStreamCaptureStatusNone)
                (void)cudaStreamEndCapture(stream_, &partial);
            if (partial) (void)cudaGraphDestroy(partial);
            (void)cudaGetLastError();
            graph_.enabled = false;
            graph_.error = why;
            return false;
        };
        if (const cudaError_t st =
                cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
            st != cudaSuccess)
            return give_up(std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(st));
        try {
            decode_layers(B, state);
        } catch (const std::exception& e) {
            return give_up(e.what());
        }
        cudaGraph_t graph = nullptr;
        if (const cudaError_t st = cudaStreamEndCapture(stream_, &graph); st != cudaSuccess)
            return give_up(std::string("cudaStreamEndCapture: ") + cudaGetErrorString(st));
        cudaGraphExec_t exec = nullptr;
        const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0);
        (void)cudaGraphDestroy(graph);
        if (st != cudaSuccess)
            return give_up(std::string("cudaGraphInstantiate: ") + cudaGetErrorString(st));
        graph_.exec = exec;
        return true;
    }

    /// The kernels of one decoding step (ids already in ws_.ids): logits (B, V) in ws_.logits.
    void decode_layers(index B, MambaState& state) {
        const index D = hidden_size(), E = config_.intermediate_size, V = vocab_size();
        embed(B, ws_.residual.data());
        for (index l = 0; l < num_layers(); ++l) {
            const Layer& L = layers_[static_cast<std::size_t>(l)];
            add_norm(norm_type(), ws_.residual.data(), D, l > 0 ? ws_.delta.data() : nullptr, D,
                     L.norm.weight.data(), L.norm.bias.data(), B, D, eps(), ws_.h.data(), D,
                     stream_);
            if (L.mamba2) {
                L.mamba2->step(blas_, ws_.h.data(), D, B, state.conv(l), state.ssm(l), ws_.delta.data(), D,
                               false, ws_.m2);
                continue;
            }
            project(B, 2 * E, D, ws_.h.data(), D, L.in_proj_w, ws_.xz.data(), 2 * E,
                    L.in_proj_b.data());
            if (L.x_proj_w.is_bf16())
                decode_step<__nv_bfloat16>(L, B, state.conv(l), state.ssm(l));
            else
                decode_step<float>(L, B, state.conv(l), state.ssm(l));
            project(B, D, E, ws_.y.data(), E, L.out_proj_w, ws_.delta.data(), D,
                    L.out_proj_b.data());
        }
        add_norm(norm_type(), ws_.residual.data(), D, ws_.delta.data(), D, norm_f_.weight.data(),
                 norm_f_.bias.data(), B, D, eps(), ws_.h.data(), D, stream_);
        project(B, V, D, ws_.h.data(), D, head(), ws_.logits.data(), V, nullptr);
    }

    /// The fused step of layer L (`mamba_decode_step`) on the workspace: xz in, u, xdbl and
    /// y out, both states advanced. W: how x_proj and dt_proj are stored.
    template <class W>
    void decode_step(const Layer& L, index B, float* conv_state, float* ssm_state) {
        const index E = config_.intermediate_size;
        MambaStepParams<W> p;
        p.batch = B;
        p.E = E;
        p.N = static_cast<int>(config_.state_size);
        p.K = static_cast<int>(config_.conv_kernel);
        p.R = static_cast<int>(config_.time_step_rank);
        p.xz = ws_.xz.data();
        p.ld_xz = 2 * E;
        p.conv_taps = L.conv_taps.data();
        p.conv_bias = L.conv_b.data();
        p.conv_state = conv_state;
        p.x_proj = L.x_proj_w.as<W>();
        p.dt_proj = L.dt_proj_w.as<W>();
        p.dt_bias = L.dt_proj_b.data();
        p.A = L.A.data();
        p.D = L.D.data();
        p.ssm_state = ssm_state;
        p.u = ws_.u.data();
        p.xdbl = ws_.xdbl.data();
        p.y = ws_.y.data();
        p.ld_y = E;
        p.dt_bc_rms_eps = L.dt_bc_rms_eps;
        mamba_decode_step(p, stream_);
    }

    /// The scan's operands in the workspace for `rows` rows of layer L.
    ScanParams<float> scan_params(const Layer& L, index rows) {
        return mixer_scan_params<float>(rows, config_.intermediate_size, config_.state_size,
                                        config_.time_step_rank, ws_.u.data(), ws_.dt.data(),
                                        L.dt_proj_b.data(), L.A.data(), ws_.xdbl.data(), L.D.data(),
                                        ws_.xz.data(), ws_.y.data());
    }

    /// Logits (S, V) of the last token of each of the S sequences, in ws_.logits.
    void last_logits(index S) {
        const index D = hidden_size(), V = vocab_size();
        ws_.last.reserve(static_cast<std::size_t>(S * D));
        ws_.logits.reserve(static_cast<std::size_t>(S * V));
        gather_last_rows<float>(ws_.h.data(), D, D, offsets_, ws_.last.data(), D, stream_);
        project(S, V, D, ws_.last.data(), D, head(), ws_.logits.data(), V, nullptr);
    }

    std::vector<std::int32_t> argmax_of_logits(index rows) {
        ws_.next.reserve(static_cast<std::size_t>(rows));
        argmax_rows(ws_.logits.data(), rows, vocab_size(), vocab_size(), ws_.next.data(), stream_);
        std::vector<std::int32_t> ids(static_cast<std::size_t>(rows));
        ws_.next.download(ids, stream_);
        return ids;
    }

    Matrix download_rows(const DeviceBuffer<float>& buf, index rows, index cols) {
        Matrix m(rows, cols);
        buf.download({m.data(), static_cast<std::size_t>(rows * cols)}, stream_);
        return m;
    }

    MambaConfig config_;
    DeviceWeight embedding_;  // (V, D); also the head when tied
    std::vector<Layer> layers_;
    Norm norm_f_;
    DeviceWeight lm_head_;  // (V, D) when untied
    bool weights_bf16_ = false;
    SsdMath ssd_math_ = SsdMath::Fp32;
    Stream stream_;
    Cublas blas_{stream_.get()};
    Workspace ws_;
    DeviceOffsets offsets_;
    /// The captured decoding step (see `use_decode_graph`). Move-only; declared after the
    /// stream so that it is destroyed first.
    struct DecodeGraph {
        bool enabled = true;
        bool used = false;
        std::string error;
        std::vector<const void*> seen;  // the last direct step's key
        std::vector<const void*> key;   // exec's key
        cudaGraphExec_t exec = nullptr;

        DecodeGraph() = default;
        DecodeGraph(const DecodeGraph&) = delete;
        DecodeGraph& operator=(const DecodeGraph&) = delete;
        DecodeGraph(DecodeGraph&& o) noexcept
            : enabled(o.enabled),
              used(o.used),
              error(std::move(o.error)),
              seen(std::move(o.seen)),
              key(std::move(o.key)),
              exec(std::exchange(o.exec, nullptr)) {}
        DecodeGraph& operator=(DecodeGraph&& o) noexcept {
            if (this != &o) {
                forget();
                enabled = o.enabled;
                used = o.used;
                error = std::move(o.error);
                seen = std::move(o.seen);
                key = std::move(o.key);
                exec = std::exchange(o.exec, nullptr);
            }
            return *this;
        }
        ~DecodeGraph() { forget(); }
        /// Drops the graph and the keys (buffers or weights changed).
        void forget() noexcept {
            if (exec) (void)cudaGraphExecDestroy(exec);
            exec = nullptr;
            seen.clear();
            key.clear();
            used = false;
        }
    };
    DecodeGraph graph_;
};

}  // namespace ssm::cuda
