// ssm/scan/selective_scan_backward.hpp — the selective scan for training: a forward that
// keeps the state only at chunk boundaries, and the reverse-time backward that recomputes
// the states inside each chunk from them.
//
// Per sequence, channel e, state n (REFERENCE.md, "Selective scan backward"), with
// a_t = exp(Δ_t·A), h_t = a_t·h_{t−1} + Δ_t·B_t·u_t, y_t = Σ_n h_t·C_t + D·u_t, out = y·silu(z):
//   dy_t = dout_t·silu(z_t);  dz_t = dout_t·y_t·silu'(z_t)
//   g_t  = dy_t·C_t + a_{t+1}·g_{t+1}        (∂/∂h_t: a reverse scan with the same operator)
//   dΔ_t = Σ_n g_t·(A·a_t·h_{t−1} + B_t·u_t);  dA += Σ_t g_t·Δ_t·a_t·h_{t−1}
//   dB_t = Σ_e g_t·Δ_t·u_t;  dC_t = Σ_e dy_t·h_t;  du_t = Σ_n g_t·Δ_t·B_t + D·dy_t;  dD = Σ_t dy_t·u_t
//   ∂/∂h_0 = a_1·g_1  (the gradient of an initial state)
// Both scans stop at sequence boundaries, so no gradient crosses from one packed sequence
// into another. Memory: the forward keeps (E, N) floats per `chunk` rows (E·N/chunk per
// token, O(E) for chunk ≥ N) instead of every state; the backward holds one chunk of
// states and their Ā for one block of channels at a time, and the chunk's per-lane dB and
// dC sums (four (chunk, N, 16) buffers per thread: 256 KiB at the default chunk of 64
// rows and N 16).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/scan/discretization.hpp"
#include "ssm/scan/scan_operator.hpp"
#include "ssm/scan/selective_scan.hpp"

namespace ssm {

/// What the training forward keeps for the backward: each sequence's state at the start
/// of each of its chunks of `chunk` rows.
struct ScanCheckpoints {
    index chunk = 0;             // rows per chunk
    index E = 0, N = 0;
    std::vector<index> first;    // nseq+1: sequence s's chunks are [first[s], first[s+1])
    std::vector<float> states;   // (chunks, E, N): the state before each chunk's first row

    /// Floats kept (what the backward needs beyond the scan's inputs).
    [[nodiscard]] std::size_t floats() const noexcept { return states.size(); }
};

/// The gradients of one selective scan. All are written (=): the scan has no parameters
/// of its own; the caller adds dA and dD into the parameters' gradients.
struct SelectiveScanGrads {
    const float* dy = nullptr;   // (T, E) gradient of the scan's output (after the gate when z is given)
    index ld_dy = 0;
    float* du = nullptr;         // (T, E)
    index ld_du = 0;
    float* ddt = nullptr;        // (T, E) w.r.t. Δ (after softplus)
    index ld_ddt = 0;
    float* dB = nullptr;         // (T, N)
    index ld_dB = 0;
    float* dC = nullptr;         // (T, N)
    index ld_dC = 0;
    float* dz = nullptr;         // (T, E); required when the scan has a gate z
    index ld_dz = 0;
    float* dA = nullptr;         // (E, N) w.r.t. A (dA_log = dA ⊙ A)
    float* dD = nullptr;         // (E); required when the scan has D
    float* d_initial_state = nullptr;  // (nseq, E, N), written when non-null
};

namespace detail {

/// Rows between kept states: the backward's four (chunk, N, 16) buffers then stay in L2
/// (256 KiB at N 16). With 256 rows (1 MiB) bench_scan's BM_ScanTrain ran 10–15% slower in
/// median over three interleaved rounds on a Zen 3 (512 KiB of L2 a core).
inline constexpr index kScanCheckpointRows = 64;

template <Discretization Disc>
constexpr void require_mamba_discretization() {
    static_assert(std::is_same_v<Disc, MambaDiscretization>,
                  "the selective scan backward is implemented for MambaDiscretization (what every "
                  "Mamba checkpoint was trained with)");
}

/// Training forward over channel blocks [b0, b1): y as `scan_rows` writes it, and the state
/// before each chunk into the checkpoints.
template <Discretization Disc>
void scan_forward_blocks(const SelectiveScanArgs& a, const float* AT, const Blocks& blocks, ScanCheckpoints& ck,
                         index b0, index b1) {
    const index N = a.N, E = a.E;
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    std::vector<float> s(static_cast<std::size_t>(N * kScanLanes));
    for (index b = b0; b < b1; ++b) {
        const index e0 = blocks.begin(b), w = blocks.width(b);
        for (index seq = 0; seq < nseq; ++seq) {
            const index start = a.offsets[static_cast<std::size_t>(seq)];
            const index end = a.offsets[static_cast<std::size_t>(seq) + 1];
            load_state(a.initial_state ? a.initial_state + seq * E * N : nullptr, N, e0, w, s.data());
            index c = ck.first[static_cast<std::size_t>(seq)];
            for (index t0 = start; t0 < end; t0 += ck.chunk, ++c) {
                store_state(s.data(), N, e0, w, ck.states.data() + c * E * N);
                scan_block_rows<Disc>(a, AT, blocks, b, t0, std::min(end, t0 + ck.chunk), s.data(), nullptr, true);
            }
            if (a.final_state) store_state(s.data(), N, e0, w, a.final_state + seq * E * N);
        }
    }
}

/// One thread's work space for the backward over its range of channel blocks.
struct ScanBackwardWork {
    index chunk = 0, N = 0, blocks = 0;
    std::vector<float> H, Abar;   // (chunk, N, kScanLanes): one block's recomputed states and Ā
    std::vector<float> dBl, dCl;  // (chunk, N, kScanLanes): dB and dC per lane, summed over the range's blocks
    std::vector<float> carry;     // (blocks, N, kScanLanes): ∂/∂h after each block's next row
    std::vector<float> dA;        // (blocks, N, kScanLanes)
    std::vector<float> dD;        // (blocks, kScanLanes)
    std::vector<float> dB, dC;    // (T, N): the range's sums

    ScanBackwardWork(index chunk_rows, index n, index block_count, index T)
        : chunk(chunk_rows), N(n), blocks(block_count),
          H(static_cast<std::size_t>(chunk_rows * n * kScanLanes)), Abar(H.size()), dBl(H.size()), dCl(H.size()),
          carry(static_cast<std::size_t>(block_count * n * kScanLanes)), dA(carry.size(), 0.0f),
          dD(static_cast<std::size_t>(block_count * kScanLanes), 0.0f), dB(static_cast<std::size_t>(T * n), 0.0f),
          dC(dB.size(), 0.0f) {}
};

/// Backward through rows [t0, t1) (one checkpoint chunk of one sequence) for the channels
/// [e0, e0 + W), from the state `s0` ((N, W)) before row t0. `carry` ((N, W)) holds
/// ∂/∂h_{t1−1} from the rows after the chunk on entry and ∂/∂h_{t0−1} on return; dA and dD
/// are accumulated; dB and dC are added per lane into the work space's (chunk, N, lanes)
/// buffers, lane j for channel e0 + j. The chunk's states and Ā are recomputed once, forward,
/// and read back in reverse, so each (t, e, n) costs one exp. Per row, with
/// gB = Σ_n g_n·B_n: ∂Δ = Σ_n g_n·h_{t−1}·Ā_n·A_n + u·gB and ∂u = Δ·gB (+ D·dy).
template <int W>
void scan_backward_chunk(const SelectiveScanArgs& a, const float* AT, const SelectiveScanGrads& g, index e0, index t0,
                         index t1, const float* s0, float* carry, float* dA, float* dD, ScanBackwardWork& w) {
    using V = Eigen::Array<float, W, 1>;
    using CMap = Eigen::Map<const V>;
    using MMap = Eigen::Map<V>;
    constexpr index L = kScanLanes;
    const index N = a.N, E = a.E;
    float* H = w.H.data();
    float* Abar = w.Abar.data();
    // Recompute the chunk's states from the one kept before it (as the forward did).
    {
        float running[L * 64];
        std::copy(s0, s0 + N * W, running);
        for (index t = t0; t < t1; ++t) {
            const V dt = CMap(a.dt + t * a.ld_dt + e0);
            const V bu = dt * CMap(a.u + t * a.ld_u + e0);
            const float* Bt = a.B + t * a.ld_B;
            float* Ht = H + (t - t0) * N * W;
            float* At = Abar + (t - t0) * N * W;
            for (index n = 0; n < N; ++n) {
                const V a_bar = (dt * CMap(AT + n * E + e0)).exp();
                MMap st(running + n * W);
                st = ScanOp::advance(V(st), a_bar, V(bu * Bt[n]));
                MMap(Ht + n * W) = st;
                MMap(At + n * W) = a_bar;
            }
        }
    }
    const V D = a.D ? V(CMap(a.D + e0)) : V::Zero();
    V dD_acc = V::Zero();
    // Reverse time through the chunk.
    for (index t = t1 - 1; t >= t0; --t) {
        const V dt = CMap(a.dt + t * a.ld_dt + e0);
        const V u = CMap(a.u + t * a.ld_u + e0);
        const V dout = CMap(g.dy + t * g.ld_dy + e0);
        const float* Bt = a.B + t * a.ld_B;
        const float* Ct = a.C + t * a.ld_C;
        const float* Ht = H + (t - t0) * N * W;
        const float* Hprev = t > t0 ? Ht - N * W : s0;
        const float* At = Abar + (t - t0) * N * W;
        float* dBt = w.dBl.data() + (t - t0) * N * L;
        float* dCt = w.dCl.data() + (t - t0) * N * L;
        V dy = dout;
        if (a.z) {
            V y = V::Zero();
            for (index n = 0; n < N; ++n) y += CMap(Ht + n * W) * Ct[n];
            if (a.D) y += D * u;
            const V z = CMap(a.z + t * a.ld_z + e0);
            const V sig = 1.0f / (1.0f + (-z).exp());
            MMap(g.dz + t * g.ld_dz + e0) = dout * y * sig * (1.0f + z * (1.0f - sig));
            dy = dout * z * sig;
        }
        V ddtA = V::Zero(), gB = V::Zero();
        const V dtu = dt * u;
        for (index n = 0; n < N; ++n) {
            const V a_bar = CMap(At + n * W);
            MMap c(carry + n * W);
            const V gn = c + dy * Ct[n];
            const V q = gn * CMap(Hprev + n * W) * a_bar;
            ddtA += q * CMap(AT + n * E + e0);
            MMap(dA + n * W) += q * dt;
            gB += gn * Bt[n];
            MMap(dBt + n * L) += gn * dtu;
            MMap(dCt + n * L) += dy * CMap(Ht + n * W);
            c = a_bar * gn;
        }
        MMap(g.ddt + t * g.ld_ddt + e0) = ddtA + u * gB;
        V du = dt * gB;
        if (a.D) {
            dD_acc += dy * u;
            du += D * dy;
        }
        MMap(g.du + t * g.ld_du + e0) = du;
    }
    if (a.D) MMap(dD) += dD_acc;
}

/// Backward over the channel blocks [b0, b1) of every sequence: chunk by chunk in reverse,
/// every block of the range inside each chunk, so dB and dC are summed over the range's
/// channels lane by lane and reduced across lanes once per chunk row.
inline void scan_backward_range(const SelectiveScanArgs& a, const float* AT, const ScanCheckpoints& ck,
                                const SelectiveScanGrads& g, const Blocks& blocks, index b0, index b1,
                                ScanBackwardWork& w) {
    constexpr index L = kScanLanes;
    const index N = a.N, E = a.E;
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    float s0[L * 64];  // (N, W) state before a chunk, N ≤ 64
    for (index seq = 0; seq < nseq; ++seq) {
        const index start = a.offsets[static_cast<std::size_t>(seq)];
        const index end = a.offsets[static_cast<std::size_t>(seq) + 1];
        std::fill(w.carry.begin(), w.carry.end(), 0.0f);
        const index c_first = ck.first[static_cast<std::size_t>(seq)];
        const index c_last = ck.first[static_cast<std::size_t>(seq) + 1];
        for (index c = c_last - 1; c >= c_first; --c) {
            const index t0 = start + (c - c_first) * ck.chunk;
            const index t1 = std::min(end, t0 + ck.chunk);
            const auto rows = static_cast<std::size_t>((t1 - t0) * N * L);
            std::fill_n(w.dBl.begin(), rows, 0.0f);
            std::fill_n(w.dCl.begin(), rows, 0.0f);
            for (index b = b0; b < b1; ++b) {
                const index e0 = blocks.begin(b), width = blocks.width(b);
                const auto slot = static_cast<std::size_t>((b - b0) * N * L);
                load_state(ck.states.data() + c * E * N, N, e0, width, s0);
                if (width == L)
                    scan_backward_chunk<kScanLanes>(a, AT, g, e0, t0, t1, s0, w.carry.data() + slot, w.dA.data() + slot,
                                                    w.dD.data() + (b - b0) * L, w);
                else
                    scan_backward_chunk<1>(a, AT, g, e0, t0, t1, s0, w.carry.data() + slot, w.dA.data() + slot,
                                           w.dD.data() + (b - b0) * L, w);
            }
            for (index t = t0; t < t1; ++t)
                for (index n = 0; n < N; ++n) {
                    const float* lb = w.dBl.data() + ((t - t0) * N + n) * L;
                    const float* lc = w.dCl.data() + ((t - t0) * N + n) * L;
                    float sb = 0.0f, sc = 0.0f;
                    for (index j = 0; j < L; ++j) {
                        sb += lb[j];
                        sc += lc[j];
                    }
                    w.dB[static_cast<std::size_t>(t * N + n)] += sb;
                    w.dC[static_cast<std::size_t>(t * N + n)] += sc;
                }
        }
        if (g.d_initial_state) {
            float* dst = g.d_initial_state + seq * E * N;
            for (index b = b0; b < b1; ++b) {
                const index e0 = blocks.begin(b), width = blocks.width(b);
                const float* cb = w.carry.data() + (b - b0) * N * L;
                for (index n = 0; n < N; ++n)
                    for (index j = 0; j < width; ++j) dst[(e0 + j) * N + n] = cb[n * width + j];
            }
        }
    }
    for (index b = b0; b < b1; ++b) {
        const index e0 = blocks.begin(b), width = blocks.width(b);
        const float* da = w.dA.data() + (b - b0) * N * L;
        for (index n = 0; n < N; ++n)
            for (index j = 0; j < width; ++j) g.dA[(e0 + j) * N + n] = da[n * width + j];
        if (a.D)
            for (index j = 0; j < width; ++j) g.dD[e0 + j] = w.dD[static_cast<std::size_t>((b - b0) * L + j)];
    }
}

template <Discretization Disc>
void scan_forward_train(const SelectiveScanArgs& a, ScanCheckpoints& ck, index chunk, bool parallel) {
    require_mamba_discretization<Disc>();
    validate(a);
    require(chunk > 0, "selective scan: checkpoint chunk must be positive, got ", chunk);
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    ck.chunk = chunk;
    ck.E = a.E;
    ck.N = a.N;
    ck.first.assign(static_cast<std::size_t>(nseq) + 1, 0);
    for (index s = 0; s < nseq; ++s) {
        const index len = a.offsets[static_cast<std::size_t>(s) + 1] - a.offsets[static_cast<std::size_t>(s)];
        ck.first[static_cast<std::size_t>(s) + 1] = ck.first[static_cast<std::size_t>(s)] + (len + chunk - 1) / chunk;
    }
    ck.states.resize(static_cast<std::size_t>(ck.first.back() * a.E * a.N));
    const auto AT = transpose_A(a);
    const Blocks blocks(a.E);
    if (parallel)
        parallel_for(blocks.count, 1, [&](index b0, index b1) { scan_forward_blocks<Disc>(a, AT.data(), blocks, ck, b0, b1); });
    else
        scan_forward_blocks<Disc>(a, AT.data(), blocks, ck, 0, blocks.count);
}

template <Discretization Disc>
void scan_backward(const SelectiveScanArgs& a, const ScanCheckpoints& ck, const SelectiveScanGrads& g, bool parallel) {
    require_mamba_discretization<Disc>();
    validate(a);
    require(ck.chunk > 0 && ck.E == a.E && ck.N == a.N && ck.first.size() == a.offsets.size() &&
                ck.states.size() == static_cast<std::size_t>(ck.first.back() * a.E * a.N),
            "selective scan backward: the checkpoints are not from a forward of this shape");
    require(g.dy && g.du && g.ddt && g.dB && g.dC && g.dA && (!a.z || g.dz) && (!a.D || g.dD),
            "selective scan backward: a required gradient buffer is null");
    require(g.ld_dy >= a.E && g.ld_du >= a.E && g.ld_ddt >= a.E && g.ld_dB >= a.N && g.ld_dC >= a.N &&
                (!a.z || g.ld_dz >= a.E),
            "selective scan backward: a gradient's row stride is smaller than the row");
    require(a.N <= 64, "selective scan backward: state size ", a.N, " above 64");
    for (std::size_t s = 0; s + 1 < a.offsets.size(); ++s) {
        const index len = a.offsets[s + 1] - a.offsets[s];
        require(ck.first[s] >= 0 && ck.first[s + 1] - ck.first[s] == (len + ck.chunk - 1) / ck.chunk,
                "selective scan backward: the checkpoints are not from a forward of these sequences (sequence ", s,
                " has ", len, " rows, ", ck.first[s + 1] - ck.first[s], " checkpoint chunks of ", ck.chunk, ")");
    }
    const index T = a.T, N = a.N;
    const auto AT = transpose_A(a);
    const Blocks blocks(a.E);
    const index rows = std::min(ck.chunk, std::max<index>(T, 1));
    // dB and dC sum over channels: each thread sums its range of blocks, and the ranges'
    // sums are added in the order of their blocks, so at a given thread count the result
    // does not depend on which thread finished first.
    struct Part {
        index b0;
        std::vector<float> dB, dC;
    };
    std::vector<Part> parts;
    std::mutex parts_mutex;
    const auto run = [&](index b0, index b1) {
        ScanBackwardWork w(rows, N, b1 - b0, T);
        scan_backward_range(a, AT.data(), ck, g, blocks, b0, b1, w);
        std::lock_guard lock(parts_mutex);
        parts.push_back(Part{b0, std::move(w.dB), std::move(w.dC)});
    };
    if (parallel)
        parallel_for(blocks.count, 1, run);
    else
        run(0, blocks.count);
    std::sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) { return x.b0 < y.b0; });
    for (index t = 0; t < T; ++t)
        for (index n = 0; n < N; ++n) {
            float sb = 0.0f, sc = 0.0f;
            for (const Part& p : parts) {
                sb += p.dB[static_cast<std::size_t>(t * N + n)];
                sc += p.dC[static_cast<std::size_t>(t * N + n)];
            }
            g.dB[t * g.ld_dB + n] = sb;
            g.dC[t * g.ld_dC + n] = sc;
        }
}

}  // namespace detail

/// The training side of a scan policy: `forward` runs the scan (writing y and the final
/// state like `run`) and keeps the checkpoints; `backward` gives every gradient from
/// them. `SequentialScan` runs on the calling thread; the parallel scans spread ranges of
/// channel blocks over the threads (each block walks every sequence, so dA and dD need no
/// reduction; dB and dC are summed per range, then added in the ranges' order, so at a
/// given thread count the bits do not depend on the order the threads finish in).
template <class S>
struct ScanTraining;

template <>
struct ScanTraining<SequentialScan> {
    static constexpr bool parallel = false;
};

template <bool ForceTimeChunks>
struct ScanTraining<BasicParallelScan<ForceTimeChunks>> {
    static constexpr bool parallel = true;
};

/// A scan policy that can be trained through.
template <class S>
concept TrainableScan = Scan<S> && requires { ScanTraining<S>::parallel; };

/// Training forward of `args` with scan policy `S`: y (and `final_state` when asked),
/// and the state before every `chunk` rows of each sequence in `ck`.
template <TrainableScan S, Discretization Disc = MambaDiscretization>
void selective_scan_forward_train(const SelectiveScanArgs& args, ScanCheckpoints& ck,
                                  index chunk = detail::kScanCheckpointRows) {
    detail::scan_forward_train<Disc>(args, ck, chunk, ScanTraining<S>::parallel);
}

/// Backward of the scan `args` (the same operands as its training forward) from the
/// checkpoints that forward kept: every gradient in `grads` is written.
template <TrainableScan S, Discretization Disc = MambaDiscretization>
void selective_scan_backward(const SelectiveScanArgs& args, const ScanCheckpoints& ck, const SelectiveScanGrads& grads) {
    detail::scan_backward<Disc>(args, ck, grads, ScanTraining<S>::parallel);
}

static_assert(TrainableScan<SequentialScan>);
static_assert(TrainableScan<ParallelScan>);

}  // namespace ssm
