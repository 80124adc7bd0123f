// ssm/layers/sliding_window_attention.hpp — causal multi-head attention over a sliding
// window with RoPE (SAMBA's attention layers), prefill over packed sequences and a
// one-token step over a bounded key/value cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/linear.hpp"
#include "ssm/layers/rotary.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// The key/value cache one attention layer carries for a batch of sequences: per
/// sequence, the rotated keys and the values of its last `window − 1` tokens (all of
/// them for full attention) in a ring indexed by position, and how many tokens it has
/// seen. Memory per sequence stops growing once the window is full.
struct AttentionLayerState {
    index batch = 0;
    index width = 0;                // floats per cached token in k (and in v): kv heads × head dim
    index capacity = 0;             // tokens kept per sequence: window − 1
    std::vector<std::int64_t> pos;  // (batch): tokens seen so far
    std::vector<std::vector<float>> k, v;  // (batch) × (min(pos, capacity), width)

    AttentionLayerState() = default;
    AttentionLayerState(index b, index w, index cap)
        : batch(b),
          width(w),
          capacity(cap),
          pos(static_cast<std::size_t>(b), 0),
          k(static_cast<std::size_t>(b)),
          v(static_cast<std::size_t>(b)) {}

    /// Cached tokens of sequence `s` (the most recent min(pos, capacity)).
    [[nodiscard]] index cached(index s) const {
        return static_cast<index>(
            std::min<std::int64_t>(pos[static_cast<std::size_t>(s)], capacity));
    }
    /// Ring slot of absolute position `p`. A cache of capacity 0 (window 1: each token
    /// sees itself only) keeps nothing and has no slots.
    [[nodiscard]] index slot(std::int64_t p) const {
        require(capacity > 0, "AttentionLayerState: a key/value cache of capacity 0 has no slots");
        return static_cast<index>(p % capacity);
    }

    /// Stores the key and value of sequence `s` at absolute position `p` (the next one).
    void put(index s, std::int64_t p, const float* key, const float* value) {
        if (capacity == 0) return;
        auto& ks = k[static_cast<std::size_t>(s)];
        auto& vs = v[static_cast<std::size_t>(s)];
        const index need = std::min<index>(static_cast<index>(p) + 1, capacity) * width;
        if (static_cast<index>(ks.size()) < need) {
            ks.resize(static_cast<std::size_t>(need));
            vs.resize(static_cast<std::size_t>(need));
        }
        std::copy(key, key + width, ks.data() + slot(p) * width);
        std::copy(value, value + width, vs.data() + slot(p) * width);
    }
};

/// Causal attention in which each token sees itself and the `window − 1` tokens before it
/// in its own sequence (window 0: every earlier token). `H` query heads share `G` key/value
/// heads (G = H: multi-head; G < H: grouped-query), head size `hd`, scale 1/√hd, RoPE on
/// the first `rotary_dim` features of queries and keys at the token's absolute position.
///
/// Weights: `qkv_proj` in the grouped layout SAMBA checkpoints store — for each of the G
/// groups, its H/G query heads, then its key head, then its value head, each hd rows — or
/// separate `q_proj`, `k_proj`, `v_proj`; and `o_proj` (D, H·hd). No biases.
///
/// Prefill costs O(T · window) per head — linear in sequence length, like the Mamba
/// layers — as query blocks of 64 rows against only the keys their window reaches.
class SlidingWindowAttention {
public:
    /// The attention's sizes: query heads, key/value heads, head size, window (0: none),
    /// features RoPE rotates, RoPE base.
    struct Shape {
        index heads = 0, kv_heads = 0, head_dim = 0, window = 0, rotary_dim = 0;
        double rope_theta = 10000.0;
    };

    SlidingWindowAttention() = default;

    /// From separate projections, PyTorch `[out, in]` layout: `wq` (H·hd, D), `wk` and `wv`
    /// (G·hd, D), `wo` (D, H·hd).
    SlidingWindowAttention(const Shape& shape, const Tensor& wq, const Tensor& wk, const Tensor& wv,
                           Tensor wo)
        : H_(shape.heads), G_(shape.kv_heads), hd_(shape.head_dim), window_(shape.window) {
        require(H_ > 0 && G_ > 0 && hd_ > 0 && H_ % G_ == 0 && window_ >= 0,
                "SlidingWindowAttention: needs heads > 0, key/value heads dividing them, head size "
                "> 0 and "
                "window >= 0 (got ",
                H_, ", ", G_, ", ", hd_, ", ", window_, ")");
        require(shape.rotary_dim >= 0 && shape.rotary_dim <= hd_ && shape.rotary_dim % 2 == 0,
                "SlidingWindowAttention: rotary dimension ", shape.rotary_dim,
                " must be even and at most the head size ", hd_);
        rope_ = RotaryEmbedding(shape.rotary_dim, shape.rope_theta);
        require(wq.rank() == 2 && wq.dim(0) == H_ * hd_, "SlidingWindowAttention: q weight is ",
                shape_string(wq.shape()), ", expected [", H_ * hd_, ", D]");
        D_ = wq.dim(1);
        for (const Tensor* w : {&wk, &wv})
            require(w->rank() == 2 && w->dim(0) == G_ * hd_ && w->dim(1) == D_,
                    "SlidingWindowAttention: k/v weight is ", shape_string(w->shape()),
                    ", expected [", G_ * hd_, ", ", D_, "]");
        require(wo.rank() == 2 && wo.dim(0) == D_ && wo.dim(1) == H_ * hd_,
                "SlidingWindowAttention: output weight is ", shape_string(wo.shape()),
                ", expected [", D_, ", ", H_ * hd_, "]");
        std::vector<float> w;
        w.reserve(static_cast<std::size_t>((H_ + 2 * G_) * hd_ * D_));
        for (const Tensor* t : {&wq, &wk, &wv})
            w.insert(w.end(), t->values().begin(), t->values().end());
        qkv_ = Linear(Tensor::from({(H_ + 2 * G_) * hd_, D_}, std::move(w)), std::nullopt);
        o_proj_ = Linear(std::move(wo), std::nullopt);
    }

    /// Loads `prefix.qkv_proj.weight` (grouped layout) or `prefix.{q,k,v}_proj.weight`, and
    /// `prefix.o_proj.weight`, sizes from `config`.
    [[nodiscard]] static SlidingWindowAttention load(const Checkpoint& ckpt,
                                                     const MambaConfig& config,
                                                     const std::string& prefix) {
        const Shape shape{
            config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.sliding_window,      config.rotary_dim,          config.rope_theta};
        const index D = config.hidden_size, H = shape.heads, G = shape.kv_heads,
                    hd = shape.head_dim;
        require(
            H > 0 && G > 0 && hd > 0 && H % G == 0, ckpt.source().string(), ": ", prefix,
            ": attention needs heads > 0, key/value heads dividing them and head size > 0 (got ", H,
            ", ", G, ", ", hd, ")");
        const index o_shape[] = {D, H * hd};
        Tensor wo = ckpt.load_f32(prefix + ".o_proj.weight", o_shape);
        if (!ckpt.contains(prefix + ".qkv_proj.weight")) {
            const index q_shape[] = {H * hd, D}, kv_shape[] = {G * hd, D};
            return SlidingWindowAttention(shape, ckpt.load_f32(prefix + ".q_proj.weight", q_shape),
                                          ckpt.load_f32(prefix + ".k_proj.weight", kv_shape),
                                          ckpt.load_f32(prefix + ".v_proj.weight", kv_shape),
                                          std::move(wo));
        }
        // Grouped: for each group g, its H/G query heads, its key head, its value head.
        const index qkv_shape[] = {(H + 2 * G) * hd, D};
        const Tensor qkv = ckpt.load_f32(prefix + ".qkv_proj.weight", qkv_shape);
        const index per_group = H / G, group_rows = (per_group + 2) * hd;
        Tensor wq = Tensor::zeros({H * hd, D}), wk = Tensor::zeros({G * hd, D}),
               wv = Tensor::zeros({G * hd, D});
        const auto copy_rows = [&](index src_row, Tensor& dst, index dst_row, index rows) {
            std::copy(qkv.data() + src_row * D, qkv.data() + (src_row + rows) * D,
                      dst.mutable_data() + dst_row * D);
        };
        for (index g = 0; g < G; ++g) {
            copy_rows(g * group_rows, wq, g * per_group * hd, per_group * hd);
            copy_rows(g * group_rows + per_group * hd, wk, g * hd, hd);
            copy_rows(g * group_rows + (per_group + 1) * hd, wv, g * hd, hd);
        }
        return SlidingWindowAttention(shape, wq, wk, wv, std::move(wo));
    }

    [[nodiscard]] index hidden_size() const noexcept { return D_; }
    [[nodiscard]] index num_heads() const noexcept { return H_; }
    [[nodiscard]] index num_kv_heads() const noexcept { return G_; }
    [[nodiscard]] index head_dim() const noexcept { return hd_; }
    [[nodiscard]] index window() const noexcept { return window_; }

    /// An empty key/value cache for `batch` sequences.
    [[nodiscard]] AttentionLayerState make_state(index batch) const {
        return AttentionLayerState(batch, G_ * hd_, cache_capacity());
    }

    /// Tokens a sequence's cache keeps: window − 1 (all of them without a window).
    [[nodiscard]] index cache_capacity() const noexcept {
        return window_ > 0 ? window_ - 1 : std::numeric_limits<index>::max();
    }

    /// Prefill over packed sequences: out (T, D) (+)= attention(h (T, D)). With
    /// `state_in`, each sequence continues after its cached tokens (positions and keys);
    /// `state_out` receives the cache after each sequence's last token. Both may be the
    /// same object.
    void forward(ConstStridedMap h, std::span<const index> offsets, StridedMap out, bool accumulate,
                 Workspace& ws, const AttentionLayerState* state_in = nullptr,
                 AttentionLayerState* state_out = nullptr) const {
        const index T = h.rows(), nseq = static_cast<index>(offsets.size()) - 1;
        require(nseq >= 0 && offsets.front() == 0 && offsets.back() == T,
                "SlidingWindowAttention: sequence offsets must run from 0 to the ", T, " rows");
        check_state(state_in, nseq);
        check_state(state_out, nseq);
        const index qw = H_ * hd_, kw = G_ * hd_, ld = qw + 2 * kw;
        StridedMap qkv = ws.matrix(T, ld);  // [Q | K | V]
        qkv_.forward(h, qkv);

        // Cached tokens ahead of each sequence's new ones, and where each sequence's
        // keys begin in the context matrices (cached first, then new, in position order).
        std::vector<index> cached(static_cast<std::size_t>(nseq), 0),
            ctx_begin(static_cast<std::size_t>(nseq) + 1, 0);
        std::vector<std::int64_t> pos0(static_cast<std::size_t>(nseq), 0);
        for (index s = 0; s < nseq; ++s) {
            const auto us = static_cast<std::size_t>(s);
            if (state_in) {
                cached[us] = state_in->cached(s);
                pos0[us] = state_in->pos[us];
            }
            ctx_begin[us + 1] = ctx_begin[us] + cached[us] + (offsets[us + 1] - offsets[us]);
        }
        const index ctx_rows = ctx_begin.back();
        StridedMap K = ws.matrix(ctx_rows, kw), V = ws.matrix(ctx_rows, kw);

        // RoPE on queries and keys; keys and values gathered into the context matrices.
        for (index s = 0; s < nseq; ++s) {
            const auto us = static_cast<std::size_t>(s);
            const index b = offsets[us], n = offsets[us + 1] - b, c = cached[us];
            for (index j = 0; j < c; ++j) {
                const std::int64_t p = pos0[us] - c + j;
                const index sl = state_in->slot(p);
                const float* ks = state_in->k[us].data() + sl * kw;
                const float* vs = state_in->v[us].data() + sl * kw;
                std::copy(ks, ks + kw, K.data() + (ctx_begin[us] + j) * kw);
                std::copy(vs, vs + kw, V.data() + (ctx_begin[us] + j) * kw);
            }
            parallel_for(n, 16, [&](index i0, index i1) {
                std::vector<float> cs(static_cast<std::size_t>(rope_.rotary_dim()));
                for (index i = i0; i < i1; ++i) {
                    float* row = qkv.data() + (b + i) * ld;
                    rotate(row, pos0[us] + i, cs.data());
                    const index r = ctx_begin[us] + c + i;
                    std::copy(row + qw, row + qw + kw, K.data() + r * kw);
                    std::copy(row + qw + kw, row + qw + 2 * kw, V.data() + r * kw);
                }
            });
        }

        // One task per (sequence, head, block of 64 queries).
        struct Task {
            index seq, head, i0, i1;
        };
        std::vector<Task> tasks;
        for (index s = 0; s < nseq; ++s) {
            const index n =
                offsets[static_cast<std::size_t>(s) + 1] - offsets[static_cast<std::size_t>(s)];
            for (index hh = 0; hh < H_; ++hh)
                for (index i0 = 0; i0 < n; i0 += kQueryBlock)
                    tasks.push_back({s, hh, i0, std::min(n, i0 + kQueryBlock)});
        }
        StridedMap attn = ws.matrix(T, qw);
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
        const index per_group = H_ / G_;
        parallel_for(static_cast<index>(tasks.size()), 1, [&](index t0, index t1) {
            Matrix S;
            for (index t = t0; t < t1; ++t) {
                const Task& task = tasks[static_cast<std::size_t>(t)];
                const auto us = static_cast<std::size_t>(task.seq);
                const index c = cached[us], cb = ctx_begin[us], row0 = offsets[us];
                const index g = task.head / per_group;
                // Context indices (within the sequence) the block reaches: [kb, ke).
                const index kb = first_key(c + task.i0), ke = c + task.i1;
                const index nq = task.i1 - task.i0, nk = ke - kb;
                const ConstStridedMap q(qkv.data() + (row0 + task.i0) * ld + task.head * hd_, nq,
                                        hd_, Eigen::OuterStride<>(ld));
                const ConstStridedMap k(K.data() + (cb + kb) * kw + g * hd_, nk, hd_,
                                        Eigen::OuterStride<>(kw));
                const ConstStridedMap v(V.data() + (cb + kb) * kw + g * hd_, nk, hd_,
                                        Eigen::OuterStride<>(kw));
                S.resize(nq, nk);
                serial_product(S, q, false, k, true, false);
                for (index r = 0; r < nq; ++r) {
                    const index self = c + task.i0 + r;  // this query's own context index
                    const index lo = first_key(self) - kb, hi = self - kb + 1;  // allowed [lo, hi)
                    float* srow = S.data() + r * nk;
                    std::fill(srow, srow + lo, 0.0f);
                    std::fill(srow + hi, srow + nk, 0.0f);
                    softmax_inplace(srow + lo, hi - lo, scale);
                }
                StridedMap o(attn.data() + (row0 + task.i0) * qw + task.head * hd_, nq, hd_,
                             Eigen::OuterStride<>(qw));
                serial_product(o, S, false, v, false, false);
            }
        });

        if (state_out) {
            for (index s = 0; s < nseq; ++s) {
                const auto us = static_cast<std::size_t>(s);
                const index n = offsets[us + 1] - offsets[us], total = cached[us] + n;
                const std::int64_t first =
                    pos0[us] + n - static_cast<std::int64_t>(std::min(total, state_out->capacity));
                for (std::int64_t p = first; p < pos0[us] + n; ++p) {
                    const index r = ctx_begin[us] + cached[us] + static_cast<index>(p - pos0[us]);
                    state_out->put(s, p, K.data() + r * kw, V.data() + r * kw);
                }
                state_out->pos[us] = pos0[us] + n;
            }
        }
        o_proj_.forward(cview(attn), out, accumulate);
    }

    /// Decoding: one token per sequence. out (B, D) (+)= attention(h (B, D)); the token's
    /// key and value join the cache, whose size stays below the window.
    void step(ConstStridedMap h, AttentionLayerState& state, StridedMap out, bool accumulate,
              Workspace& ws) const {
        const index B = h.rows();
        check_state(&state, B);
        const index qw = H_ * hd_, kw = G_ * hd_, ld = qw + 2 * kw;
        StridedMap qkv = ws.matrix(B, ld);
        qkv_.forward(h, qkv);
        StridedMap attn = ws.matrix(B, qw);
        std::vector<float> cs(static_cast<std::size_t>(rope_.rotary_dim()));
        for (index b = 0; b < B; ++b)
            rotate(qkv.data() + b * ld, state.pos[static_cast<std::size_t>(b)], cs.data());
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
        const index per_group = H_ / G_;
        parallel_for(B * H_, 1, [&](index t0, index t1) {
            std::vector<float> p;
            for (index t = t0; t < t1; ++t) {
                const index b = t / H_, hh = t % H_, g = hh / per_group;
                const auto ub = static_cast<std::size_t>(b);
                const index c = state.cached(b);
                const std::int64_t pos = state.pos[ub];
                const float* q = qkv.data() + b * ld + hh * hd_;
                const float* self_k = qkv.data() + b * ld + qw + g * hd_;
                const float* self_v = qkv.data() + b * ld + qw + kw + g * hd_;
                // Scores over the cached tokens in position order, then the token itself.
                p.resize(static_cast<std::size_t>(c + 1));
                const auto key = [&](index j) {  // j-th cached token, oldest first
                    return state.k[ub].data() + state.slot(pos - c + j) * kw + g * hd_;
                };
                const auto value = [&](index j) {
                    return state.v[ub].data() + state.slot(pos - c + j) * kw + g * hd_;
                };
                for (index j = 0; j <= c; ++j)
                    p[static_cast<std::size_t>(j)] =
                        ConstVectorMap(q, hd_).dot(ConstVectorMap(j < c ? key(j) : self_k, hd_));
                softmax_inplace(p.data(), c + 1, scale);
                VectorMap o(attn.data() + b * qw + hh * hd_, hd_);
                o.setZero();
                for (index j = 0; j <= c; ++j)
                    o += p[static_cast<std::size_t>(j)] *
                         ConstVectorMap(j < c ? value(j) : self_v, hd_);
            }
        });
        for (index b = 0; b < B; ++b) {
            const auto ub = static_cast<std::size_t>(b);
            const float* row = qkv.data() + b * ld;
            state.put(b, state.pos[ub], row + qw, row + qw + kw);
            ++state.pos[ub];
        }
        o_proj_.forward(cview(attn), out, accumulate);
    }

    /// Keeps the projections' weights in `format` (see `WeightFormat`).
    void store_weights(WeightFormat format) {
        qkv_.store_weights(format);
        o_proj_.store_weights(format);
    }

    // ---- Training ----------------------------------------------------------------------
    // Training runs every sequence from position 0 without a key/value cache. Backward
    // takes the forward's input h again (the caller keeps it). The cache holds the
    // projections (Q and K rotated), the attention output before o_proj and the log-sum-exp
    // of every softmax, so backward recomputes the probabilities block by block (as
    // FlashAttention does): extra memory O(T·H), not O(T·window·H).

    struct Cache {
        Matrix qkv;                  // (T, (H + 2G)·hd) [Q | K | V], Q and K rotated
        Matrix attn;                 // (T, H·hd) attention output before o_proj
        Matrix lse;                  // (T, H) log Σ exp(scale·q·k) over each query's window
        std::vector<index> offsets;  // the batch's sequence offsets
    };

    /// Makes the weights owned float32 masters with gradients, registered as
    /// `prefix.q_proj.weight` (H·hd, D), `prefix.k_proj.weight` and `prefix.v_proj.weight`
    /// (G·hd, D), `prefix.o_proj.weight` (D, H·hd), all with weight decay. (A checkpoint
    /// that stores the fused, grouped `qkv_proj` has its gradient reported as these three
    /// parts.) Q, K and V stay one matrix; the registry views its three row blocks.
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        train::Parameters fused;
        qkv_.register_parameters(fused, prefix + ".qkv");
        const train::Parameter& w = fused.at(prefix + ".qkv.weight");
        const auto qn = static_cast<std::size_t>(H_ * hd_ * D_);
        const auto kn = static_cast<std::size_t>(G_ * hd_ * D_);
        params.add(prefix + ".q_proj.weight", {H_ * hd_, D_}, w.value.subspan(0, qn),
                   w.grad.subspan(0, qn), true);
        params.add(prefix + ".k_proj.weight", {G_ * hd_, D_}, w.value.subspan(qn, kn),
                   w.grad.subspan(qn, kn), true);
        params.add(prefix + ".v_proj.weight", {G_ * hd_, D_}, w.value.subspan(qn + kn, kn),
                   w.grad.subspan(qn + kn, kn), true);
        o_proj_.register_parameters(params, prefix + ".o_proj", true);
    }

    /// Training forward over packed sequences, each from position 0: out (T, D) (+)=
    /// attention(h (T, D)), as `forward` without a cache, keeping what backward needs.
    void forward(ConstStridedMap h, std::span<const index> offsets, StridedMap out, bool accumulate,
                 Cache& cache) const {
        const index T = h.rows(), nseq = static_cast<index>(offsets.size()) - 1;
        require(nseq >= 0 && offsets.front() == 0 && offsets.back() == T,
                "SlidingWindowAttention: sequence offsets must run from 0 to the ", T, " rows");
        const index qw = H_ * hd_, kw = G_ * hd_, ld = qw + 2 * kw;
        cache.offsets.assign(offsets.begin(), offsets.end());
        cache.qkv.resize(T, ld);
        qkv_.forward(h, view(cache.qkv));
        for (index s = 0; s < nseq; ++s) {
            const index b = offsets[static_cast<std::size_t>(s)];
            parallel_for(offsets[static_cast<std::size_t>(s) + 1] - b, 16, [&](index i0, index i1) {
                std::vector<float> cs(static_cast<std::size_t>(rope_.rotary_dim()));
                for (index i = i0; i < i1; ++i)
                    rotate(cache.qkv.data() + (b + i) * ld, i, cs.data());
            });
        }
        cache.attn.resize(T, qw);
        cache.lse.resize(T, H_);
        const auto tasks = query_blocks(offsets);
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
        parallel_for(static_cast<index>(tasks.size()), 1, [&](index t0, index t1) {
            Matrix S;
            for (index t = t0; t < t1; ++t) {
                const QueryBlock& task = tasks[static_cast<std::size_t>(t)];
                const index row0 = offsets[static_cast<std::size_t>(task.seq)];
                const index g = task.head / (H_ / G_);
                const index kb = first_key(task.i0), nq = task.i1 - task.i0, nk = task.i1 - kb;
                const ConstStridedMap q(cache.qkv.data() + (row0 + task.i0) * ld + task.head * hd_,
                                        nq, hd_, Eigen::OuterStride<>(ld));
                const ConstStridedMap k(cache.qkv.data() + (row0 + kb) * ld + qw + g * hd_, nk, hd_,
                                        Eigen::OuterStride<>(ld));
                const ConstStridedMap v(cache.qkv.data() + (row0 + kb) * ld + qw + kw + g * hd_, nk,
                                        hd_, Eigen::OuterStride<>(ld));
                S.resize(nq, nk);
                serial_product(S, q, false, k, true, false);
                for (index r = 0; r < nq; ++r) {
                    const index self = task.i0 + r;
                    const index lo = first_key(self) - kb, hi = self - kb + 1;  // allowed [lo, hi)
                    float* srow = S.data() + r * nk;
                    std::fill(srow, srow + lo, 0.0f);
                    std::fill(srow + hi, srow + nk, 0.0f);
                    auto a = Eigen::Map<Eigen::ArrayXf>(srow + lo, hi - lo);
                    a *= scale;
                    const float m = a.maxCoeff();
                    a = (a - m).exp();
                    const float sum = a.sum();
                    a *= 1.0f / sum;
                    cache.lse(row0 + self, task.head) = m + std::log(sum);
                }
                StridedMap o(cache.attn.data() + (row0 + task.i0) * qw + task.head * hd_, nq, hd_,
                             Eigen::OuterStride<>(qw));
                serial_product(o, S, false, v, false, false);
            }
        });
        o_proj_.forward(cview(cache.attn), out, accumulate);
    }

    /// Backward of the training forward. With P the softmax of scale·q·kᵀ over each
    /// query's window and O = P·V: dW_o += doutᵀ·O; dO = dout·W_o; dV = Pᵀ·dO;
    /// dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = scale·dS·K; dK = scale·dSᵀ·Q (the
    /// row sum equals rowsum(dO ⊙ O), but taken over dP itself it cancels dP exactly where a
    /// query's window holds the query alone, whatever order the products summed in); then
    /// RoPE's transpose on dQ and dK, and the projection's backward: dW_qkv += [dQ|dK|dV]ᵀ·h,
    /// dh = [dQ|dK|dV]·W_qkv, written (added with `accumulate`). Work is split by
    /// (sequence, key/value head), so each task alone writes its keys' and values' rows.
    void backward(ConstStridedMap h, ConstStridedMap dout, const Cache& cache, StridedMap dh,
                  bool accumulate = false) {
        const index T = h.rows(), qw = H_ * hd_, kw = G_ * hd_, ld = qw + 2 * kw;
        require(cache.qkv.rows() == T && cache.qkv.cols() == ld && cache.attn.rows() == T &&
                    cache.lse.rows() == T && !cache.offsets.empty() && cache.offsets.back() == T &&
                    dout.rows() == T && dout.cols() == D_ && h.cols() == D_,
                "SlidingWindowAttention::backward: input (", T, ", ", h.cols(),
                "), output gradient (", dout.rows(), ", ", dout.cols(),
                ") and cache do not fit (T, ", D_, ")");
        const std::span<const index> offsets = cache.offsets;
        const index nseq = static_cast<index>(offsets.size()) - 1;
        Matrix dattn(T, qw);  // dO
        o_proj_.backward(cview(cache.attn), dout, view(dattn));
        Matrix dqkv = Matrix::Zero(T, ld);
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
        const index per_group = H_ / G_;
        parallel_for(nseq * G_, 1, [&](index t0, index t1) {
            Matrix P, dP;
            Vector delta;
            for (index t = t0; t < t1; ++t) {
                const index s = t / G_, g = t % G_;
                const index row0 = offsets[static_cast<std::size_t>(s)];
                const index n = offsets[static_cast<std::size_t>(s) + 1] - row0;
                for (index hh = g * per_group; hh < (g + 1) * per_group; ++hh)
                    for (index i0 = 0; i0 < n; i0 += kQueryBlock) {
                        const index i1 = std::min(n, i0 + kQueryBlock);
                        const index kb = first_key(i0), nq = i1 - i0, nk = i1 - kb;
                        const auto at = [&](const float* base, index row, index col, index rows,
                                            index stride) {
                            return ConstStridedMap(base + row * stride + col, rows, hd_,
                                                   Eigen::OuterStride<>(stride));
                        };
                        const float* qkv = cache.qkv.data();
                        const auto q = at(qkv, row0 + i0, hh * hd_, nq, ld);
                        const auto k = at(qkv, row0 + kb, qw + g * hd_, nk, ld);
                        const auto v = at(qkv, row0 + kb, qw + kw + g * hd_, nk, ld);
                        const auto d_o = at(dattn.data(), row0 + i0, hh * hd_, nq, qw);
                        // P recomputed from the stored log-sum-exp; zero outside each window
                        P.resize(nq, nk);
                        serial_product(P, q, false, k, true, false);
                        for (index r = 0; r < nq; ++r) {
                            const index self = i0 + r;
                            const index lo = first_key(self) - kb, hi = self - kb + 1;
                            const float lse = cache.lse(row0 + self, hh);
                            float* prow = P.data() + r * nk;
                            std::fill(prow, prow + lo, 0.0f);
                            std::fill(prow + hi, prow + nk, 0.0f);
                            auto a = Eigen::Map<Eigen::ArrayXf>(prow + lo, hi - lo);
                            a = (a * scale - lse).exp();
                        }
                        StridedMap dv(dqkv.data() + (row0 + kb) * ld + qw + kw + g * hd_, nk, hd_,
                                      Eigen::OuterStride<>(ld));
                        serial_product(dv, P, true, d_o, false, true);
                        dP.resize(nq, nk);
                        serial_product(dP, d_o, false, v, true, false);
                        delta = (P.array() * dP.array()).rowwise().sum();  // (nq) rowsum(P ⊙ dP)
                        dP = (P.array() * (dP.colwise() - delta).array()) * scale;  // dS·scale
                        StridedMap dq(dqkv.data() + (row0 + i0) * ld + hh * hd_, nq, hd_,
                                      Eigen::OuterStride<>(ld));
                        serial_product(dq, dP, false, k, false, true);
                        StridedMap dk(dqkv.data() + (row0 + kb) * ld + qw + g * hd_, nk, hd_,
                                      Eigen::OuterStride<>(ld));
                        serial_product(dk, dP, true, q, false, true);
                    }
            }
        });
        // RoPE's transpose: gradients w.r.t. the unrotated queries and keys
        if (rope_.rotary_dim() > 0)
            for (index s = 0; s < nseq; ++s) {
                const index b = offsets[static_cast<std::size_t>(s)];
                parallel_for(
                    offsets[static_cast<std::size_t>(s) + 1] - b, 16, [&](index i0, index i1) {
                        std::vector<float> cs(static_cast<std::size_t>(rope_.rotary_dim()));
                        for (index i = i0; i < i1; ++i) {
                            float* row = dqkv.data() + (b + i) * ld;
                            rope_.angles(i, cs.data());
                            rope_.apply_transposed(row, H_, hd_, cs.data());
                            rope_.apply_transposed(row + qw, G_, hd_, cs.data());
                        }
                    });
            }
        qkv_.backward(h, cview(dqkv), dh, accumulate);
    }

private:
    static constexpr index kQueryBlock = 64;

    /// p ← softmax(scale · p) over `n` > 0 scores, vectorised.
    static void softmax_inplace(float* p, index n, float scale) {
        auto a = Eigen::Map<Eigen::ArrayXf>(p, n);
        a *= scale;
        a = (a - a.maxCoeff()).exp();
        a *= 1.0f / a.sum();
    }

    /// RoPE at position `pos` on the query heads and the key heads of one [Q | K | V] row;
    /// `cs` is scratch for rotary_dim floats.
    void rotate(float* row, std::int64_t pos, float* cs) const {
        if (rope_.rotary_dim() == 0) return;
        rope_.angles(pos, cs);
        rope_.apply(row, H_, hd_, cs);
        rope_.apply(row + H_ * hd_, G_, hd_, cs);
    }

    /// One piece of attention work: a block of a sequence's queries for one head.
    struct QueryBlock {
        index seq, head, i0, i1;
    };

    /// Blocks of kQueryBlock queries per (sequence, head), over sequences from position 0.
    [[nodiscard]] std::vector<QueryBlock> query_blocks(std::span<const index> offsets) const {
        std::vector<QueryBlock> tasks;
        for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
            const index n = offsets[s + 1] - offsets[s];
            for (index hh = 0; hh < H_; ++hh)
                for (index i0 = 0; i0 < n; i0 += kQueryBlock)
                    tasks.push_back({static_cast<index>(s), hh, i0, std::min(n, i0 + kQueryBlock)});
        }
        return tasks;
    }

    /// The first context index a query at context index `self` may see.
    [[nodiscard]] index first_key(index self) const {
        return window_ > 0 ? std::max<index>(0, self - window_ + 1) : 0;
    }

    void check_state(const AttentionLayerState* s, index batch) const {
        if (!s) return;
        require(s->batch == batch && s->width == G_ * hd_ &&
                    s->pos.size() == static_cast<std::size_t>(batch) &&
                    s->k.size() == static_cast<std::size_t>(batch) &&
                    s->v.size() == static_cast<std::size_t>(batch),
                "SlidingWindowAttention: key/value cache is for ", s->batch, " sequences of width ",
                s->width, ", the batch has ", batch, " of width ", G_ * hd_);
        require(s->capacity == cache_capacity(), "SlidingWindowAttention: key/value cache keeps ",
                s->capacity, " tokens, this layer's window needs ", cache_capacity());
    }

    index D_ = 0, H_ = 0, G_ = 0, hd_ = 0, window_ = 0;
    RotaryEmbedding rope_;
    Linear qkv_;     // (H·hd + 2·G·hd, D): rows [Q | K | V]
    Linear o_proj_;  // (D, H·hd)
};

}  // namespace ssm
