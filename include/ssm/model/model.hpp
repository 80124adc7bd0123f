// ssm/model/model.hpp — embedding → backbone → final norm → head, with prefill over
// packed batches and recurrent decoding.
#pragma once

#include <concepts>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/embedding.hpp"
#include "ssm/model/batch.hpp"
#include "ssm/model/state.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// A head that maps hidden states to vocabulary logits (`LmHead`).
template <class H>
concept LanguageModelHead = requires(const H& h, ConstStridedMap x, StridedMap y) {
    h.forward(x, y);
    { h.vocab_size() } -> std::convertible_to<index>;
};

/// A head that maps each sequence of a packed batch to one output row
/// (`BiEncoderHead`: an embedding; `RerankerHead`: a score).
template <class H>
concept SequenceHead = requires(const H& h, ConstStridedMap x, std::span<const index> offsets) {
    { h.apply(x, offsets) } -> std::same_as<Matrix>;
};

/// Which positions `Model::forward` computes logits for.
enum class Logits { None, Last, All };

struct ForwardOptions {
    Logits logits = Logits::All;
    bool layer_outputs = false;  // keep the residual stream after every layer
};

struct ForwardResult {
    Matrix hidden;                     // (T, D): final hidden states, after the final norm
    std::vector<Matrix> layer_outputs; // num_layers × (T, D): residual stream after layer j
    Matrix logits;                     // (T, vocab) for All, (nseq, vocab) for Last, empty for None
};

/// A whole model: `Backbone` (e.g. `Stack<Residual<RMSNorm, MambaMixer<>>>`) and a `Head`.
///
/// Thread safety: a model is read-only after `load`; each call uses its own workspace
/// unless one is passed in, so concurrent calls on one model are safe.
template <class Backbone, class Head>
class Model {
public:
    using backbone_type = Backbone;
    using head_type = Head;
    using norm_type = typename Backbone::norm_type;
    using state_type = State<typename Backbone::state_type>;

    /// Loads `config.json` and the weights from a checkpoint folder.
    [[nodiscard]] static Model load(const std::filesystem::path& dir) {
        const MambaConfig config = MambaConfig::load(dir);
        return load(Checkpoint::open(dir), config);
    }

    [[nodiscard]] static Model load(const Checkpoint& ckpt, const MambaConfig& config) {
        if (config.norm != norm_type::kind)
            fail(ckpt.source(), ": config asks for ",
                 config.norm == NormKind::RMSNorm ? "RMSNorm" : "LayerNorm",
                 " but this model type is built with ",
                 norm_type::kind == NormKind::RMSNorm ? "RMSNorm" : "LayerNorm",
                 " (use ssm::MambaLM for RMSNorm checkpoints, ssm::MambaLMLayerNorm for rms_norm: false)");
        Model m;
        m.config_ = config;
        m.embedding_ = Embedding::load(ckpt, "backbone.embeddings.weight", config.vocab_size,
                                       config.hidden_size);
        m.backbone_ = Backbone::load(ckpt, config);
        m.norm_f_ = norm_type::load(ckpt, "backbone.norm_f", config.hidden_size,
                                    config.layer_norm_epsilon);
        m.head_ = Head::load(ckpt, config, m.embedding_);
        return m;
    }

    [[nodiscard]] const MambaConfig& config() const noexcept { return config_; }
    [[nodiscard]] const Backbone& backbone() const noexcept { return backbone_; }
    [[nodiscard]] const Embedding& embedding() const noexcept { return embedding_; }
    [[nodiscard]] const Head& head() const noexcept { return head_; }
    /// The final norm (`backbone.norm_f`).
    [[nodiscard]] const norm_type& norm_f() const noexcept { return norm_f_; }
    [[nodiscard]] Head& head() noexcept { return head_; }
    [[nodiscard]] index vocab_size() const noexcept { return config_.vocab_size; }
    [[nodiscard]] index hidden_size() const noexcept { return config_.hidden_size; }

    /// Keeps the large weight matrices — the embedding (and a tied LM head), every
    /// projection, an untied LM head — in bfloat16 from now on: half the memory, and half
    /// the bytes each decoding step reads. Arithmetic, norms, the conv, A, D, biases, the
    /// residual stream and the recurrent state stay float32. Weights that came from a BF16
    /// checkpoint lose nothing; float32 ones are rounded to bfloat16's 8 significant bits
    /// (a relative change of at most 2⁻⁸ per weight). Layers or heads of your own convert
    /// when they have a `store_weights(WeightFormat)` member. Call it before sharing the model.
    void store_weights_bf16() { store_weights(WeightFormat::BF16); }

    /// Keeps the same weight matrices as `store_weights_bf16` as 8-bit integers with one
    /// float32 scale per block of 32 values along a row (symmetric, as llama.cpp's Q8_0):
    /// about a quarter of float32's bytes, so decoding, which reads every weight once a
    /// token, reads a quarter as much. Each weight moves by at most half a step of its
    /// block (max |w| / 254); what that costs in logits and greedy agreement is measured in
    /// docs/benchmarks.md. Everything else stays float32, as with bfloat16.
    void store_weights_int8() { store_weights(WeightFormat::Int8); }

    /// Keeps the large weight matrices in `format` (see the two functions above).
    /// `WeightFormat::Int8Activations` stores the int8 blocks of `store_weights_int8` and
    /// also rounds decoding's activations (fewer than 32 rows a product) to int8 blocks, so
    /// each block's 32 products are one exact integer sum: faster on CPUs that widen int8 to
    /// float slowly (AVX2 without AVX-512), with logits about 1.4 times further from
    /// float32's than with int8 weights alone (docs/benchmarks.md). Prefill is unchanged.
    void store_weights(WeightFormat format) {
        embedding_.store_weights(format);
        if constexpr (requires(Backbone& b) { b.store_weights(format); }) backbone_.store_weights(format);
        if constexpr (requires(Head& h) { h.store_weights(format, embedding_); })
            head_.store_weights(format, embedding_);
        else if constexpr (requires(Head& h) { h.store_weights(format); })
            head_.store_weights(format);
    }

    /// An all-zero recurrent state for `batch` sequences.
    [[nodiscard]] state_type make_state(index batch) const {
        state_type s;
        s.batch = batch;
        for (const auto& layer : backbone_) s.layers.push_back(layer.make_state(batch));
        return s;
    }

    /// Prefill over a packed batch. With `state`, each sequence continues from it (a
    /// fresh state starts from zero) and it is left holding the state after each
    /// sequence's last token, ready for `step`.
    [[nodiscard]] ForwardResult forward(const Batch& batch, const ForwardOptions& opt = {},
                                        state_type* state = nullptr) const {
        Workspace ws;
        return forward(batch, opt, state, ws);
    }

    [[nodiscard]] ForwardResult forward(const Batch& batch, const ForwardOptions& opt,
                                        state_type* state, Workspace& ws) const {
        require(!batch.empty(), "Model::forward: the batch holds no sequence");
        if (state) {
            require(state->batch == batch.size(), "Model::forward: state is for ", state->batch,
                    " sequences, the batch has ", batch.size());
            check_state_layers(*state, "Model::forward");
        }
        const index T = batch.total_tokens(), D = hidden_size();
        ForwardResult r;
        r.hidden.resize(T, D);
        StridedMap residual(r.hidden.data(), T, D, Eigen::OuterStride<>(D));
        embedding_.forward(batch.tokens(), residual);
        const auto offsets = batch.offsets();
        index j = 0;
        for (const auto& layer : backbone_) {
            ws.reset();
            auto* ls = state ? &state->layers[static_cast<std::size_t>(j)] : nullptr;
            layer.forward(residual, offsets, ws, ls, ls);
            if (opt.layer_outputs) r.layer_outputs.push_back(r.hidden);
            ++j;
        }
        norm_f_.forward(cview(residual), residual);
        if constexpr (!LanguageModelHead<Head>) {
            require(opt.logits == Logits::None,
                    "Model::forward: this model's head gives no logits; ask for Logits::None");
            return r;
        } else if (opt.logits == Logits::All) {
            r.logits.resize(T, vocab_size());
            head_.forward(cview(residual), StridedMap(r.logits.data(), T, vocab_size(), Eigen::OuterStride<>(vocab_size())));
        } else if (opt.logits == Logits::Last) {
            Matrix last(batch.size(), D);
            for (index s = 0; s < batch.size(); ++s) last.row(s) = r.hidden.row(offsets[static_cast<std::size_t>(s) + 1] - 1);
            r.logits.resize(batch.size(), vocab_size());
            head_.forward(ConstStridedMap(last.data(), last.rows(), D, Eigen::OuterStride<>(D)),
                          StridedMap(r.logits.data(), r.logits.rows(), vocab_size(), Eigen::OuterStride<>(vocab_size())));
        }
        return r;
    }

    /// One output row per sequence from a `SequenceHead`: embeddings for a bi-encoder,
    /// scores for a reranker. Runs the backbone over the packed batch (no logits).
    [[nodiscard]] Matrix encode(const Batch& batch) const requires SequenceHead<Head> {
        Workspace ws;
        return encode(batch, ws);
    }

    [[nodiscard]] Matrix encode(const Batch& batch, Workspace& ws) const requires SequenceHead<Head> {
        const ForwardResult r = forward(batch, {Logits::None, false}, nullptr, ws);
        return head_.apply(cview(r.hidden), batch.offsets());
    }

    /// Decoding: one new token per sequence; returns logits (batch, vocab) and
    /// advances `state`. Cost is independent of how many tokens came before.
    [[nodiscard]] Matrix step(std::span<const std::int32_t> tokens, state_type& state) const
        requires LanguageModelHead<Head> {
        Workspace ws;
        return step(tokens, state, ws);
    }

    [[nodiscard]] Matrix step(std::span<const std::int32_t> tokens, state_type& state, Workspace& ws) const
        requires LanguageModelHead<Head> {
        const index B = static_cast<index>(tokens.size()), D = hidden_size();
        require(B == state.batch, "Model::step: ", B, " tokens given for a state of ", state.batch,
                " sequences");
        check_state_layers(state, "Model::step");
        Matrix x(B, D);
        StridedMap residual(x.data(), B, D, Eigen::OuterStride<>(D));
        embedding_.forward(tokens, residual);
        index j = 0;
        for (const auto& layer : backbone_) {
            ws.reset();
            layer.step(residual, state.layers[static_cast<std::size_t>(j++)], ws);
        }
        norm_f_.forward(cview(residual), residual);
        Matrix logits(B, vocab_size());
        head_.forward(cview(residual), StridedMap(logits.data(), B, vocab_size(), Eigen::OuterStride<>(vocab_size())));
        return logits;
    }

    // ---- Training ----------------------------------------------------------------------
    // A model becomes trainable with `register_parameters`: every weight is then an owned
    // float32 master (mapped or bfloat16 weights are copied or widened) with a gradient,
    // listed in one registry under its checkpoint name. From then on the model is no
    // longer read-only: `forward_train` refreshes derived copies of the weights and
    // `backward` adds into the gradients, so one model trains on one thread of control.
    // Inference (`forward`, `step`, `encode`) keeps working on the masters; after an
    // optimizer step call `refresh_derived()` (or run a training forward) before inference.
    // Call `store_weights_bf16` only before `register_parameters`, never after.

    /// Everything `backward` needs from one training forward.
    struct TrainCache {
        typename Backbone::Cache backbone;
        typename norm_type::Cache norm_f;
        std::vector<std::int32_t> tokens;
        std::vector<index> offsets;
        Matrix hidden;  // (T, D) final hidden states, after the final norm
    };

    /// Registers every parameter in checkpoint order: `backbone.embeddings.weight`, each
    /// layer's, `backbone.norm_f.*`, then the head's (`lm_head.weight` when untied; a tied
    /// head shares the embedding's master and gradient and is not listed on its own;
    /// `score.*` for a reranker). The registry views buffers the model owns: keep the
    /// model alive (and in place or moved, not destroyed) while the registry is used.
    void register_parameters(train::Parameters& params) {
        embedding_.register_parameters(params, "backbone.embeddings.weight");
        backbone_.register_parameters(params);
        norm_f_.register_parameters(params, "backbone.norm_f");
        if constexpr (requires(Head& h) { h.register_parameters(params, embedding_); })
            head_.register_parameters(params, embedding_);
        else if constexpr (requires(Head& h) { h.register_parameters(params); })
            head_.register_parameters(params);
    }

    /// Re-derives the weights layers compute with from their masters (A = −exp(A_log),
    /// the conv taps) after the masters changed.
    void refresh_derived() { backbone_.refresh_derived(); }

    /// Training forward over a packed batch (every sequence from zero state): returns the
    /// final hidden states (T, D), after the final norm, kept in `cache.hidden`.
    const Matrix& forward_train(const Batch& batch, TrainCache& cache) {
        require(!batch.empty(), "Model::forward_train: the batch holds no sequence");
        const index T = batch.total_tokens(), D = hidden_size();
        cache.tokens.assign(batch.tokens().begin(), batch.tokens().end());
        cache.offsets.assign(batch.offsets().begin(), batch.offsets().end());
        cache.hidden.resize(T, D);
        StridedMap residual = view(cache.hidden);
        embedding_.forward(cache.tokens, residual);
        backbone_.forward(residual, cache.offsets, cache.backbone);
        norm_f_.forward(cview(residual), residual, cache.norm_f);
        return cache.hidden;
    }

    /// Logits (T, vocab) of a training forward's hidden states.
    [[nodiscard]] Matrix logits_train(const TrainCache& cache) const requires LanguageModelHead<Head> {
        Matrix logits(cache.hidden.rows(), vocab_size());
        head_.forward(cview(cache.hidden), view(logits));
        return logits;
    }

    /// Backward from the gradient of the final hidden states (T, D): every parameter's
    /// gradient accumulates (+=).
    void backward(const TrainCache& cache, ConstStridedMap d_hidden) {
        const index T = cache.hidden.rows(), D = hidden_size();
        require(d_hidden.rows() == T && d_hidden.cols() == D, "Model::backward: gradient is (", d_hidden.rows(),
                ", ", d_hidden.cols(), "), the training forward gave (", T, ", ", D, ")");
        Matrix d_residual(T, D);
        norm_f_.backward(d_hidden, cache.norm_f, view(d_residual));
        backbone_.backward(view(d_residual), cache.backbone);
        embedding_.backward(cache.tokens, cview(d_residual));
    }

    /// Backward from the gradient of the logits (T, vocab) of `logits_train`: the head's
    /// gradient, then `backward` from the hidden states' gradient.
    void backward_logits(const TrainCache& cache, ConstStridedMap d_logits) requires LanguageModelHead<Head> {
        Matrix d_hidden(cache.hidden.rows(), hidden_size());
        head_.backward(cview(cache.hidden), d_logits, view(d_hidden));
        backward(cache, cview(d_hidden));
    }

    /// Training forward through a `SequenceHead`: one output row per sequence (an
    /// embedding, a score) from the final hidden states kept in `cache`.
    [[nodiscard]] Matrix encode_train(const Batch& batch, TrainCache& cache) requires SequenceHead<Head> {
        forward_train(batch, cache);
        return head_.apply(cview(cache.hidden), cache.offsets);
    }

    /// Backward from the gradient of `encode_train`'s output (sequences, width): the
    /// head's parameters' gradients (a reranker's), then `backward`.
    void backward_encoded(const TrainCache& cache, const Matrix& d_out) requires SequenceHead<Head> {
        Matrix d_hidden = Matrix::Zero(cache.hidden.rows(), hidden_size());
        head_.backward(cview(cache.hidden), cache.offsets, d_out, view(d_hidden));
        backward(cache, cview(d_hidden));
    }

private:
    void check_state_layers(const state_type& state, const char* who) const {
        require(state.layers.size() == static_cast<std::size_t>(backbone_.size()), who, ": state has ",
                state.layers.size(), " layers, the model ", backbone_.size());
    }

    MambaConfig config_;
    Embedding embedding_;
    Backbone backbone_;
    norm_type norm_f_;
    Head head_;
};

}  // namespace ssm
