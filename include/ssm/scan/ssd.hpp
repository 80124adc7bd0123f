// ssm/scan/ssd.hpp — the Mamba-2 scan (state space duality, SSD) over packed sequences:
// a sequential reference, the chunked form (within a chunk, the masked decay matrix as
// small GEMMs; between chunks, the state passed along), and the one-token decoding update.
//
// Per sequence, head h (scalar A_h < 0), group g = h / (H / G), time t, with the state
// S_h a (P, N) matrix:
//   S_h ← exp(Δ[t,h]·A_h)·S_h + Δ[t,h] · x[t,h,:] B[t,g,:]ᵀ
//   y[t,h,:] = S_h C[t,g,:]
// (the skip D·x and the gate are the mixer's).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"

namespace ssm {

/// Inputs and outputs of one SSD scan. Row strides (`ld_*`) let the operands be column
/// slices of wider matrices (the conv output holds [x | B | C]).
struct SsdArgs {
    index T = 0, H = 0, P = 0, N = 0, G = 1;  // packed tokens, heads, head dim, state size, groups
    const float* x = nullptr;   // (T, H·P)
    index ld_x = 0;
    const float* dt = nullptr;  // (T, H) Δ after softplus and clamping
    index ld_dt = 0;
    const float* A = nullptr;   // (H) A = −exp(A_log)
    const float* B = nullptr;   // (T, G·N)
    index ld_B = 0;
    const float* C = nullptr;   // (T, G·N)
    index ld_C = 0;
    float* y = nullptr;         // (T, H·P) output
    index ld_y = 0;
    std::span<const index> offsets;        // nseq+1 boundaries: 0 = o₀ ≤ … ≤ o_nseq = T
    const float* initial_state = nullptr;  // (nseq, H, P, N), nullptr: zeros
    float* final_state = nullptr;          // (nseq, H, P, N), written when non-null
    index chunk = 0;                       // chunk length of the chunked scan (0: its default)
};

/// Throws `ssm::Error` when the arguments are inconsistent.
inline void validate(const SsdArgs& a) {
    require(a.T >= 0 && a.H > 0 && a.P > 0 && a.N > 0 && a.G > 0 && a.H % a.G == 0, "SSD scan: bad sizes T ", a.T,
            ", H ", a.H, ", P ", a.P, ", N ", a.N, ", G ", a.G);
    require(a.x && a.dt && a.A && a.B && a.C && a.y, "SSD scan: a required operand is null");
    require(a.ld_x >= a.H * a.P && a.ld_y >= a.H * a.P && a.ld_dt >= a.H && a.ld_B >= a.G * a.N &&
                a.ld_C >= a.G * a.N,
            "SSD scan: a row stride is smaller than the row");
    require(a.chunk >= 0, "SSD scan: chunk length must be >= 0, got ", a.chunk);
    require(a.offsets.size() >= 2 && a.offsets.front() == 0 && a.offsets.back() == a.T,
            "SSD scan: offsets must run from 0 to T = ", a.T);
    for (std::size_t i = 1; i < a.offsets.size(); ++i)
        require(a.offsets[i] >= a.offsets[i - 1], "SSD scan: offsets decrease at entry ", i);
}

/// A Mamba-2 scan: `S::run(args)` computes y (and the final states) for a packed batch.
template <class S>
concept SsdScan = requires(const SsdArgs& args) { S::run(args); };

namespace detail {

using SsdRowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using SsdConstMap = Eigen::Map<const SsdRowMajor, 0, Eigen::OuterStride<>>;
using SsdMap = Eigen::Map<SsdRowMajor, 0, Eigen::OuterStride<>>;

/// Runs `body(s, h, S)` for every (sequence, head) pair in parallel, with S the head's
/// (P, N) state loaded from `initial_state` (or zero) and stored to `final_state` after.
template <class Body>
void for_each_sequence_head(const SsdArgs& a, Body&& body) {
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    const index PN = a.P * a.N;
    parallel_for(nseq * a.H, 1, [&](index begin, index end) {
        SsdRowMajor S(a.P, a.N);
        for (index task = begin; task < end; ++task) {
            const index s = task / a.H, h = task % a.H;
            const index state_at = (s * a.H + h) * PN;
            if (a.initial_state)
                std::memcpy(S.data(), a.initial_state + state_at, sizeof(float) * static_cast<std::size_t>(PN));
            else
                S.setZero();
            body(s, h, S);
            if (a.final_state)
                std::memcpy(a.final_state + state_at, S.data(), sizeof(float) * static_cast<std::size_t>(PN));
        }
    });
}

/// The longest chunk a chunked SSD forms: its Q × Q matrices are a few MiB at this length.
inline constexpr index kMaxSsdChunk = 1024;

/// The chunk length a chunked scan uses for `requested` tokens: at most kMaxSsdChunk and
/// the longest sequence of the batch (a longer chunk would only allocate more; the result
/// is the same up to rounding whatever the length).
[[nodiscard]] inline index chunk_length(index requested, std::span<const index> offsets) {
    index longest = 1;
    for (std::size_t i = 1; i < offsets.size(); ++i) longest = std::max(longest, offsets[i] - offsets[i - 1]);
    return std::min({requested, kMaxSsdChunk, longest});
}

/// Head h's Δ over the L tokens from t0, their cumulative log-decays c_i = Σ_{k≤i} Δ_k·A_h
/// (in double, so that differences of large sums stay exact) and exp(c_i).
inline void chunk_decays(const SsdArgs& a, index h, index t0, index L, std::vector<float>& dts,
                         std::vector<double>& cum, std::vector<float>& decay) {
    const double A = a.A[h];
    double run = 0.0;
    for (index i = 0; i < L; ++i) {
        const auto u = static_cast<std::size_t>(i);
        dts[u] = a.dt[(t0 + i) * a.ld_dt + h];
        run += static_cast<double>(dts[u]) * A;
        cum[u] = run;
        decay[u] = static_cast<float>(std::exp(run));
    }
}

}  // namespace detail

/// The recurrence token by token: the reference the chunked scan is checked against.
struct SequentialSsd {
    static void run(const SsdArgs& a) {
        validate(a);
        const index heads_per_group = a.H / a.G;
        detail::for_each_sequence_head(a, [&](index s, index h, detail::SsdRowMajor& S) {
            const index g = h / heads_per_group;
            for (index t = a.offsets[static_cast<std::size_t>(s)]; t < a.offsets[static_cast<std::size_t>(s) + 1]; ++t) {
                const float dt = a.dt[t * a.ld_dt + h];
                const float decay = std::exp(dt * a.A[h]);
                const float* x = a.x + t * a.ld_x + h * a.P;
                const float* B = a.B + t * a.ld_B + g * a.N;
                const float* C = a.C + t * a.ld_C + g * a.N;
                float* y = a.y + t * a.ld_y + h * a.P;
                for (index p = 0; p < a.P; ++p) {
                    float* row = S.data() + p * a.N;
                    const float dx = dt * x[p];
                    float acc = 0.0f;
                    for (index n = 0; n < a.N; ++n) {
                        row[n] = decay * row[n] + dx * B[n];
                        acc += row[n] * C[n];
                    }
                    y[p] = acc;
                }
            }
        });
    }
};

/// The chunked SSD. Each sequence is cut into chunks of `Chunk` tokens — with `Chunk` = 0,
/// of `args.chunk` tokens (the mixer passes its config's `chunk_size`), or 64 when that is
/// 0 too; never more than 1024 (`detail::kMaxSsdChunk`) nor than the batch's longest
/// sequence — counted from the sequence's own start, so sequence boundaries may fall anywhere
/// in the packed batch. For a chunk of L tokens with cumulative log-decays
/// c_i = Σ_{k≤i} Δ_k·A_h (in double, so differences of large sums stay exact):
///   Y = (C Bᵀ ⊙ W) X + diag(exp(c)) C Sᵀ,   W[i,j] = exp(c_i − c_j)·Δ_j for j ≤ i, else 0
///   S ← exp(c_{L−1})·S + Xᵀ diag(exp(c_{L−1} − c_j)·Δ_j) B
/// Tasks are (sequence, group, block of the group's heads), in parallel; each walks its
/// sequence chunk by chunk, makes C Bᵀ (L × L) once per chunk for its heads, and passes
/// their states along. Heads are split into blocks only as far as needed to give every
/// thread work, since each block makes its own C Bᵀ. Scratch memory is O(L² + heads·P·N)
/// per task, whatever the batch's length.
template <index Chunk = 0>
struct ChunkedSsd {
    static_assert(Chunk >= 0);

    static void run(const SsdArgs& a) {
        validate(a);
        const index Q = detail::chunk_length(Chunk > 0 ? Chunk : a.chunk > 0 ? a.chunk : 64, a.offsets);
        const index nseq = static_cast<index>(a.offsets.size()) - 1;
        const index per_group = a.H / a.G;
        const index want = (num_threads() + nseq * a.G - 1) / (nseq * a.G);
        const index blocks = std::clamp<index>(want, 1, per_group);
        const index PN = a.P * a.N;
        parallel_for(nseq * a.G * blocks, 1, [&](index begin, index end) {
            std::vector<double> cum(static_cast<std::size_t>(Q));
            std::vector<float> dts(static_cast<std::size_t>(Q)), out_decay(static_cast<std::size_t>(Q));
            detail::SsdRowMajor CB(Q, Q), W(Q, Q), CS(Q, a.P), Bw(Q, a.N);
            // Aligned as Eigen's own buffers: Eigen's products over the states then take
            // the same path whatever address the heap gives, so results never depend on it
            // (an exactly resumed training run relies on that).
            std::vector<float, Eigen::aligned_allocator<float>> states;
            for (index task = begin; task < end; ++task) {
                const index s = task / (a.G * blocks), g = task / blocks % a.G, blk = task % blocks;
                const index h0 = g * per_group + per_group * blk / blocks;
                const index h1 = g * per_group + per_group * (blk + 1) / blocks;
                states.assign(static_cast<std::size_t>((h1 - h0) * PN), 0.0f);
                for (index h = h0; h < h1; ++h)
                    if (a.initial_state)
                        std::memcpy(states.data() + (h - h0) * PN, a.initial_state + (s * a.H + h) * PN,
                                    sizeof(float) * static_cast<std::size_t>(PN));
                const index seq_end = a.offsets[static_cast<std::size_t>(s) + 1];
                for (index t0 = a.offsets[static_cast<std::size_t>(s)]; t0 < seq_end; t0 += Q) {
                    const index L = std::min(Q, seq_end - t0);
                    const detail::SsdConstMap Cm(a.C + t0 * a.ld_C + g * a.N, L, a.N, Eigen::OuterStride<>(a.ld_C));
                    const detail::SsdConstMap Bm(a.B + t0 * a.ld_B + g * a.N, L, a.N, Eigen::OuterStride<>(a.ld_B));
                    auto cb = CB.topLeftCorner(L, L);
                    serial_product(cb, Cm, false, Bm, true, false);
                    for (index h = h0; h < h1; ++h) {
                        detail::SsdMap S(states.data() + (h - h0) * PN, a.P, a.N, Eigen::OuterStride<>(a.N));
                        chunk(a, h, t0, L, cb, Cm, Bm, S, cum, dts, out_decay, W, CS, Bw);
                    }
                }
                if (a.final_state)
                    for (index h = h0; h < h1; ++h)
                        std::memcpy(a.final_state + (s * a.H + h) * PN, states.data() + (h - h0) * PN,
                                    sizeof(float) * static_cast<std::size_t>(PN));
            }
        });
    }

private:
    /// One head over one chunk of L tokens from t0: writes y, advances S.
    template <class CBBlock>
    static void chunk(const SsdArgs& a, index h, index t0, index L, const CBBlock& cb, const detail::SsdConstMap& Cm,
                      const detail::SsdConstMap& Bm, detail::SsdMap& S, std::vector<double>& cum,
                      std::vector<float>& dts, std::vector<float>& out_decay, detail::SsdRowMajor& W,
                      detail::SsdRowMajor& CS, detail::SsdRowMajor& Bw) {
        detail::chunk_decays(a, h, t0, L, dts, cum, out_decay);
        auto w = W.topLeftCorner(L, L);
        for (index i = 0; i < L; ++i) {
            const double ci = cum[static_cast<std::size_t>(i)];
            for (index j = 0; j <= i; ++j)
                w(i, j) = cb(i, j) * static_cast<float>(std::exp(ci - cum[static_cast<std::size_t>(j)])) *
                          dts[static_cast<std::size_t>(j)];
            for (index j = i + 1; j < L; ++j) w(i, j) = 0.0f;
        }
        const detail::SsdConstMap X(a.x + t0 * a.ld_x + h * a.P, L, a.P, Eigen::OuterStride<>(a.ld_x));
        detail::SsdMap Y(a.y + t0 * a.ld_y + h * a.P, L, a.P, Eigen::OuterStride<>(a.ld_y));
        // Within the chunk, then the carried state's contribution.
        Y.noalias() = w.template triangularView<Eigen::Lower>() * X;
        auto cs = CS.topRows(L);
        serial_product(cs, Cm, false, S, true, false);
        for (index i = 0; i < L; ++i) Y.row(i) += out_decay[static_cast<std::size_t>(i)] * cs.row(i);
        // The state at the chunk's end.
        const double last = cum[static_cast<std::size_t>(L - 1)];
        auto bw = Bw.topRows(L);
        for (index j = 0; j < L; ++j)
            bw.row(j) = Bm.row(j) * (static_cast<float>(std::exp(last - cum[static_cast<std::size_t>(j)])) *
                                     dts[static_cast<std::size_t>(j)]);
        S *= out_decay[static_cast<std::size_t>(L - 1)];
        serial_product(S, X, true, bw, false, true);
    }
};

static_assert(SsdScan<SequentialSsd>);
static_assert(SsdScan<ChunkedSsd<>>);

/// Decoding: one token per sequence (args.T = batch, offsets unused). `state`
/// (batch, H, P, N) advances in place; y receives S C.
inline void ssd_state_update(const SsdArgs& a, float* state) {
    require(a.H > 0 && a.P > 0 && a.N > 0 && a.G > 0 && a.H % a.G == 0 && a.T >= 0,
            "SSD state update: bad sizes");
    require(state != nullptr, "SSD state update: no state");
    const index heads_per_group = a.H / a.G;
    parallel_for(a.T * a.H, 4, [&](index begin, index end) {
        for (index task = begin; task < end; ++task) {
            const index b = task / a.H, h = task % a.H, g = h / heads_per_group;
            const float dt = a.dt[b * a.ld_dt + h];
            const float decay = std::exp(dt * a.A[h]);
            const float* x = a.x + b * a.ld_x + h * a.P;
            const float* B = a.B + b * a.ld_B + g * a.N;
            const float* C = a.C + b * a.ld_C + g * a.N;
            float* y = a.y + b * a.ld_y + h * a.P;
            float* S = state + (b * a.H + h) * a.P * a.N;
            for (index p = 0; p < a.P; ++p) {
                float* row = S + p * a.N;
                const float dx = dt * x[p];
                float acc = 0.0f;
                for (index n = 0; n < a.N; ++n) {
                    row[n] = decay * row[n] + dx * B[n];
                    acc += row[n] * C[n];
                }
                y[p] = acc;
            }
        }
    });
}

}  // namespace ssm
