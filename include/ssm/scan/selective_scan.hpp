// ssm/scan/selective_scan.hpp — the selective scan over packed sequences: a sequential
// reference, a parallel one (channels across threads, and time chunks combined with the
// associative operator), and the one-token decoding update.
//
// Per sequence, channel e, state n, time t:
//   (Ā, β) = Disc(Δ[t,e], A[e,n]);  s[e,n] ← Ā·s[e,n] + β·B[t,n]·u[t,e]
//   y[t,e] = Σ_n s[e,n]·C[t,n] + D[e]·u[t,e];  y *= silu(z[t,e])  (when z is given)
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <concepts>
#include <cstring>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/scan/discretization.hpp"
#include "ssm/scan/scan_operator.hpp"

namespace ssm {

/// Inputs and outputs of one selective scan. Row strides (`ld_*`) let the operands be
/// column slices of wider matrices (x_proj's output holds [dt_low | B | C]).
struct SelectiveScanArgs {
    index T = 0, E = 0, N = 0;         // packed tokens, channels, state size
    const float* u = nullptr;          // (T, E) conv output after SiLU
    index ld_u = 0;
    const float* dt = nullptr;         // (T, E) Δ after softplus
    index ld_dt = 0;
    const float* A = nullptr;          // (E, N) A = −exp(A_log)
    const float* B = nullptr;          // (T, N)
    index ld_B = 0;
    const float* C = nullptr;          // (T, N)
    index ld_C = 0;
    const float* D = nullptr;          // (E) skip, optional
    const float* z = nullptr;          // (T, E) gate, optional: y *= silu(z)
    index ld_z = 0;
    float* y = nullptr;                // (T, E) output
    index ld_y = 0;
    std::span<const index> offsets;    // nseq+1 boundaries: 0 = o₀ ≤ … ≤ o_nseq = T
    const float* initial_state = nullptr;  // (nseq, E, N), nullptr: zeros
    float* final_state = nullptr;          // (nseq, E, N), written when non-null
};

/// Throws `ssm::Error` when the arguments are inconsistent.
inline void validate(const SelectiveScanArgs& a) {
    require(a.T >= 0 && a.E > 0 && a.N > 0, "selective scan: bad sizes T ", a.T, ", E ", a.E, ", N ", a.N);
    require(a.u && a.dt && a.A && a.B && a.C && a.y, "selective scan: a required operand is null");
    require(a.ld_u >= a.E && a.ld_dt >= a.E && a.ld_y >= a.E && a.ld_B >= a.N && a.ld_C >= a.N &&
                (!a.z || a.ld_z >= a.E),
            "selective scan: a row stride is smaller than the row");
    require(a.offsets.size() >= 2, "selective scan: offsets need at least 2 entries, got ", a.offsets.size());
    require(a.offsets.front() == 0, "selective scan: offsets must start at 0, got ", a.offsets.front());
    require(a.offsets.back() == a.T, "selective scan: offsets must end at T = ", a.T, ", got ", a.offsets.back());
    for (std::size_t i = 1; i < a.offsets.size(); ++i)
        require(a.offsets[i] >= a.offsets[i - 1], "selective scan: offsets decrease at entry ", i, " (",
                a.offsets[i - 1], " then ", a.offsets[i], ")");
}

namespace detail {

/// Channels per vector block: one AVX-512 register of floats.
inline constexpr int kScanLanes = 16;
/// Rows per time tile: keeps a thread's column stripe of u, Δ, z, y hot in cache.
inline constexpr index kScanTile = 64;

/// Scans channels [e0, e0 + W) over rows [t0, t1) from the block state `s` ((N, W),
/// updated in place). With `prod`, multiplies it by every Ā (the chunk's ∏Ā).
/// With `write_y`, writes y for those rows.
template <Discretization Disc, int W>
void scan_rows(const SelectiveScanArgs& a, const float* AT, index e0, index t0, index t1, float* s,
               float* prod, bool write_y) {
    using V = Eigen::Array<float, W, 1>;
    using CMap = Eigen::Map<const V>;
    using MMap = Eigen::Map<V>;
    const index N = a.N;
    for (index t = t0; t < t1; ++t) {
        const V dt = CMap(a.dt + t * a.ld_dt + e0);
        const V u = CMap(a.u + t * a.ld_u + e0);
        const float* Bt = a.B + t * a.ld_B;
        const float* Ct = a.C + t * a.ld_C;
        V y = V::Zero();
        V a_bar, beta;
        for (index n = 0; n < N; ++n) {
            Disc::discretize(dt, V(CMap(AT + n * a.E + e0)), a_bar, beta);
            MMap st(s + n * W);
            st = ScanOp::advance(V(st), a_bar, V(beta * u * Bt[n]));
            if (prod) MMap(prod + n * W) *= a_bar;
            y += st * Ct[n];
        }
        if (write_y) {
            if (a.D) y += CMap(a.D + e0) * u;
            if (a.z) {
                const V z = CMap(a.z + t * a.ld_z + e0);
                y *= z / (1.0f + (-z).exp());
            }
            MMap(a.y + t * a.ld_y + e0) = y;
        }
    }
}

/// Channel blocks: full blocks of kScanLanes, then single channels for the rest.
struct Blocks {
    index E, full, count;
    explicit Blocks(index e) : E(e), full(e / kScanLanes), count(full + e % kScanLanes) {}
    [[nodiscard]] index begin(index b) const { return b < full ? b * kScanLanes : full * kScanLanes + (b - full); }
    [[nodiscard]] index width(index b) const { return b < full ? kScanLanes : 1; }
};

/// Block state (N, w) <-> (E, N) layout of one sequence.
inline void load_state(const float* src, index N, index e0, index w, float* s) {
    for (index n = 0; n < N; ++n)
        for (index j = 0; j < w; ++j) s[n * w + j] = src ? src[(e0 + j) * N + n] : 0.0f;
}
inline void store_state(const float* s, index N, index e0, index w, float* dst) {
    for (index n = 0; n < N; ++n)
        for (index j = 0; j < w; ++j) dst[(e0 + j) * N + n] = s[n * w + j];
}

template <Discretization Disc>
void scan_block_rows(const SelectiveScanArgs& a, const float* AT, const Blocks& blocks, index b, index t0,
                     index t1, float* s, float* prod, bool write_y) {
    if (blocks.width(b) == kScanLanes)
        scan_rows<Disc, kScanLanes>(a, AT, blocks.begin(b), t0, t1, s, prod, write_y);
    else
        scan_rows<Disc, 1>(a, AT, blocks.begin(b), t0, t1, s, prod, write_y);
}

/// A transposed to (N, E), so each state index n is a contiguous row over channels.
inline std::vector<float> transpose_A(const SelectiveScanArgs& a) {
    std::vector<float> AT(static_cast<std::size_t>(a.N * a.E));
    for (index e = 0; e < a.E; ++e)
        for (index n = 0; n < a.N; ++n) AT[static_cast<std::size_t>(n * a.E + e)] = a.A[e * a.N + n];
    return AT;
}

/// Scans the (sequence, channel block) items [item_begin, item_end) over their whole
/// sequences, tiling time so a thread's stripe of every block stays in cache.
template <Discretization Disc>
void scan_items(const SelectiveScanArgs& a, const float* AT, const Blocks& blocks, index item_begin,
                index item_end) {
    const index N = a.N, nblk = blocks.count;
    std::vector<float> states;
    for (index i = item_begin; i < item_end;) {
        const index seq = i / nblk;
        const index b0 = i % nblk;
        const index b1 = std::min(nblk, b0 + (item_end - i));
        const index start = a.offsets[static_cast<std::size_t>(seq)];
        const index end = a.offsets[static_cast<std::size_t>(seq) + 1];
        states.assign(static_cast<std::size_t>((b1 - b0) * N * kScanLanes), 0.0f);
        const float* init = a.initial_state ? a.initial_state + seq * a.E * N : nullptr;
        for (index b = b0; b < b1; ++b)
            load_state(init, N, blocks.begin(b), blocks.width(b), states.data() + (b - b0) * N * kScanLanes);
        for (index t0 = start; t0 < end; t0 += kScanTile) {
            const index t1 = std::min(end, t0 + kScanTile);
            for (index b = b0; b < b1; ++b)
                scan_block_rows<Disc>(a, AT, blocks, b, t0, t1, states.data() + (b - b0) * N * kScanLanes, nullptr,
                                      true);
        }
        if (a.final_state)
            for (index b = b0; b < b1; ++b)
                store_state(states.data() + (b - b0) * N * kScanLanes, N, blocks.begin(b), blocks.width(b),
                            a.final_state + seq * a.E * N);
        i += b1 - b0;
    }
}

/// One sequence split into `chunks` time chunks scanned in parallel: (1) each chunk from
/// a zero state, recording its summary (∏Ā, s_end) per (e, n); (2) the summaries combined
/// in order with the operator give each chunk's carried-in state; (3) each chunk again
/// from its carried-in state, writing y.
template <Discretization Disc>
void scan_time_chunked(const SelectiveScanArgs& a, const float* AT, const Blocks& blocks, index seq,
                       index chunks) {
    const index N = a.N, E = a.E, nblk = blocks.count;
    const index start = a.offsets[static_cast<std::size_t>(seq)];
    const index len = a.offsets[static_cast<std::size_t>(seq) + 1] - start;
    const auto bound = [&](index c) { return start + len * c / chunks; };
    // Per chunk and block: state and product, (N, kScanLanes) each.
    const index slot = N * kScanLanes;
    std::vector<float> h(static_cast<std::size_t>(chunks * nblk * slot), 0.0f);
    std::vector<float> p(h.size(), 1.0f);
    parallel_for(chunks * nblk, 1, [&](index i0, index i1) {
        for (index i = i0; i < i1; ++i) {
            const index c = i / nblk, b = i % nblk;
            scan_block_rows<Disc>(a, AT, blocks, b, bound(c), bound(c + 1), h.data() + i * slot, p.data() + i * slot,
                                  false);
        }
    });
    // Combine: carry_0 = initial; carry_{c+1} = carry_c ∘ (∏Ā_c, s_end_c). h becomes carry-in.
    const float* init = a.initial_state ? a.initial_state + seq * E * N : nullptr;
    std::vector<float> running(static_cast<std::size_t>(slot));
    for (index b = 0; b < nblk; ++b) {
        load_state(init, N, blocks.begin(b), blocks.width(b), running.data());
        const index w = blocks.width(b);
        for (index c = 0; c < chunks; ++c) {
            float* hc = h.data() + (c * nblk + b) * slot;
            const float* pc = p.data() + (c * nblk + b) * slot;
            for (index k = 0; k < N * w; ++k) {
                const float carry_in = running[static_cast<std::size_t>(k)];
                running[static_cast<std::size_t>(k)] =
                    ScanOp{}(ScanElement<float>{1.0f, carry_in}, ScanElement<float>{pc[k], hc[k]}).b;
                hc[k] = carry_in;
            }
        }
        if (a.final_state) store_state(running.data(), N, blocks.begin(b), w, a.final_state + seq * E * N);
    }
    parallel_for(chunks * nblk, 1, [&](index i0, index i1) {
        for (index i = i0; i < i1; ++i) {
            const index c = i / nblk, b = i % nblk;
            scan_block_rows<Disc>(a, AT, blocks, b, bound(c), bound(c + 1), h.data() + i * slot, nullptr, true);
        }
    });
}

}  // namespace detail

/// A scan policy: runs a selective scan for a given discretization.
template <class S>
concept Scan = requires(const SelectiveScanArgs& args) { S::template run<MambaDiscretization>(args); };

/// The reference scan: one thread, sequences one after another, channels vectorised.
struct SequentialScan {
    template <Discretization Disc>
    static void run(const SelectiveScanArgs& args) {
        validate(args);
        const auto AT = detail::transpose_A(args);
        const detail::Blocks blocks(args.E);
        const index nseq = static_cast<index>(args.offsets.size()) - 1;
        detail::scan_items<Disc>(args, AT.data(), blocks, 0, nseq * blocks.count);
    }
};

/// The parallel scan. Work items are (sequence, channel block) pairs spread over the
/// threads; when those are too few to feed every thread and a sequence is long, that
/// sequence is split into time chunks combined with the associative operator (twice
/// the arithmetic, so only worth it when threads would otherwise idle).
/// `ForceTimeChunks` always splits time (used by tests to exercise the combine).
template <bool ForceTimeChunks = false>
struct BasicParallelScan {
    static constexpr index kMinChunkRows = 256;

    template <Discretization Disc>
    static void run(const SelectiveScanArgs& args) {
        validate(args);
        const auto AT = detail::transpose_A(args);
        const detail::Blocks blocks(args.E);
        const index nseq = static_cast<index>(args.offsets.size()) - 1;
        const index threads = num_threads();
        const index items = nseq * blocks.count;
        if (!ForceTimeChunks && (items >= 4 * threads || threads == 1 || args.T < 2 * kMinChunkRows)) {
            parallel_for(items, 1, [&](index b, index e) { detail::scan_items<Disc>(args, AT.data(), blocks, b, e); });
            return;
        }
        for (index s = 0; s < nseq; ++s) {
            const index len = args.offsets[static_cast<std::size_t>(s) + 1] - args.offsets[static_cast<std::size_t>(s)];
            index chunks = ForceTimeChunks ? std::max<index>(1, std::min<index>(len, 2 * threads + 1))
                                           : std::min<index>(4 * threads, len / kMinChunkRows);
            if (chunks <= 1) {
                const index i0 = s * blocks.count;
                parallel_for(blocks.count, 1, [&](index b, index e) {
                    detail::scan_items<Disc>(args, AT.data(), blocks, i0 + b, i0 + e);
                });
            } else {
                detail::scan_time_chunked<Disc>(args, AT.data(), blocks, s, chunks);
            }
        }
    }
};

using ParallelScan = BasicParallelScan<false>;

static_assert(Scan<SequentialScan>);
static_assert(Scan<ParallelScan>);

namespace detail {

/// State elements [n0, n1) of one channel advanced by one token, W at a time as vector lanes
/// ((n1 − n0) a multiple of W), the arithmetic element for element the scan's (`scan_rows`);
/// returns their part of y, Σ_n s[n]·C[n].
template <Discretization Disc, int W>
[[gnu::always_inline]] inline float step_lanes(float dt, float u, const float* A, const float* B, const float* C,
                                               float* s, index n0, index n1) {
    using V = Eigen::Array<float, W, 1>;
    const V dt_v = V::Constant(dt);
    V acc = V::Zero(), a_bar, beta;
    for (index n = n0; n < n1; n += W) {
        Disc::discretize(dt_v, V(Eigen::Map<const V>(A + n)), a_bar, beta);
        Eigen::Map<V> st(s + n);
        st = ScanOp::advance(V(st), a_bar, V(beta * u * Eigen::Map<const V>(B + n)));
        acc += st * Eigen::Map<const V>(C + n);
    }
    return acc.sum();
}

/// One token of channels [e0, e0 + count) of sequence t (count ≤ kStepChannels), in the
/// state's own (E, N) layout; `s` is channel e0's state. The N state elements of a channel
/// are contiguous, so they are the vector lanes (16 at a time, the rest one by one), and
/// nothing is transposed. Each channel's Σ_n s·C is formed as before; then the block's
/// D·u and gate y·silu(z) run as vectors over its channels, with the scan's vector exp.
/// Several channels in one loop without calls keep several exponentials in flight: one
/// channel at a time, each waited on the last one's sums (about 150 cycles a channel on
/// Zen 3). Only the order of y's sum over n differs from the scan's.
inline constexpr index kStepChannels = 8;

template <Discretization Disc>
void step_channels(const SelectiveScanArgs& a, index t, index e0, index count, float* s) {
    constexpr int kLanes = 16;
    using V = Eigen::Array<float, kStepChannels, 1>;
    const index N = a.N, vector_end = N - N % kLanes;
    const float* Bt = a.B + t * a.ld_B;
    const float* Ct = a.C + t * a.ld_C;
    const float* ut = a.u + t * a.ld_u + e0;
    const float* dtt = a.dt + t * a.ld_dt + e0;
    V y = V::Zero(), u = V::Zero();
    for (index c = 0; c < count; ++c) {
        const float dt = dtt[c];
        u[c] = ut[c];
        const float* A = a.A + (e0 + c) * N;
        float* sc = s + c * N;
        y[c] = step_lanes<Disc, kLanes>(dt, u[c], A, Bt, Ct, sc, 0, vector_end) +
               step_lanes<Disc, 1>(dt, u[c], A, Bt, Ct, sc, vector_end, N);
    }
    if (a.D) {
        V D = V::Zero();
        for (index c = 0; c < count; ++c) D[c] = a.D[e0 + c];
        y += D * u;
    }
    if (a.z) {
        V z = V::Zero();
        for (index c = 0; c < count; ++c) z[c] = a.z[t * a.ld_z + e0 + c];
        y *= z / (1.0f + (-z).exp());
    }
    for (index c = 0; c < count; ++c) a.y[t * a.ld_y + e0 + c] = y[c];
}

}  // namespace detail

/// Decoding: one token for each of `args.T` sequences (row b of u, Δ, B, C, z, y is
/// sequence b; `args.offsets` is ignored). `state` (T, E, N) is read and advanced in place,
/// eight channels at a time (`detail::step_channels`), split over the threads.
template <Discretization Disc>
void selective_state_update(const SelectiveScanArgs& args, float* state) {
    require(state != nullptr, "selective_state_update: state is null");
    std::vector<index> offsets(static_cast<std::size_t>(args.T) + 1);
    for (index i = 0; i <= args.T; ++i) offsets[static_cast<std::size_t>(i)] = i;
    SelectiveScanArgs a = args;
    a.offsets = offsets;
    validate(a);
    const index E = args.E, N = args.N, blocks = (E + detail::kStepChannels - 1) / detail::kStepChannels;
    parallel_for(args.T * blocks, 64 / detail::kStepChannels, [&](index begin, index end) {
        for (index i = begin; i < end; ++i) {
            const index t = i / blocks, e0 = i % blocks * detail::kStepChannels;
            detail::step_channels<Disc>(args, t, e0, std::min(detail::kStepChannels, E - e0),
                                        state + (t * E + e0) * N);
        }
    });
}

}  // namespace ssm
