// ssm/scan/ssd_backward.hpp — the backward pass of the Mamba-2 (SSD) scan.
//
// Per sequence and head h (scalar A_h < 0, group g), with a_t = exp(Δ_t·A_h) and the
// (P, N) state S_t = a_t·S_{t−1} + Δ_t·x_t B_tᵀ, y_t = S_t C_t, the adjoint dS of the
// state runs backward from the sequence's end (dS = 0 after its last token):
//   dS   += dy_t C_tᵀ
//   dC_t += S_tᵀ dy_t                      (summed over the group's heads)
//   dx_t  = Δ_t · dS B_t
//   dB_t += Δ_t · dSᵀ x_t                   (summed over the group's heads)
//   dΔ_t  = x_tᵀ dS B_t + ⟨dS, S_{t−1}⟩·a_t·A_h
//   dA_h += ⟨dS, S_{t−1}⟩·a_t·Δ_t
//   dS   ← a_t · dS
// The states are not kept by the forward: each (sequence, head) task re-runs its
// recurrence once, keeping S every `checkpoint_every` tokens (16: a stretch's states stay
// in a core's L2 cache at P·N = 64·128), then walks the stretches from the last,
// recomputing a stretch's states from its checkpoint before going back through it. Scratch memory per task is O((L / Q + Q)·P·N) for a sequence of L tokens and
// Q = checkpoint_every; dB and dC take O(T·H·N) more, so that heads sharing a group
// run in parallel and are summed after.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/scan/ssd.hpp"

namespace ssm {

/// The gradients one SSD scan backward reads and writes (row strides as in `SsdArgs`).
/// `dx`, `ddt`, `dB`, `dC` and `dA` are overwritten, not accumulated. The initial state,
/// when the forward had one, is read but gets no gradient.
struct SsdGrads {
    const float* dy = nullptr;  // (T, H·P) gradient of the scan's output y
    index ld_dy = 0;
    float* dx = nullptr;        // (T, H·P)
    index ld_dx = 0;
    float* ddt = nullptr;       // (T, H)
    index ld_ddt = 0;
    float* dB = nullptr;        // (T, G·N)
    index ld_dB = 0;
    float* dC = nullptr;        // (T, G·N)
    index ld_dC = 0;
    float* dA = nullptr;        // (H) gradient of A (not of A_log)
};

namespace detail {

/// Σ a[i]·b[i] over n floats, summed in 8 fixed lanes (so the compiler vectorises it, and
/// the order is the same on every machine), the lanes then added in double.
inline double lane_dot(const float* __restrict a, const float* __restrict b, index n) {
    constexpr index kLanes = 8;
    float lane[kLanes] = {};
    index i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (index l = 0; l < kLanes; ++l) lane[l] += a[i + l] * b[i + l];
    for (; i < n; ++i) lane[0] += a[i] * b[i];
    double sum = 0.0;
    for (index l = 0; l < kLanes; ++l) sum += lane[l];
    return sum;
}

/// y[i] += x[i]·s over n floats (y and x do not overlap).
inline void add_scaled(float* __restrict y, const float* __restrict x, float s, index n) {
    for (index i = 0; i < n; ++i) y[i] += x[i] * s;
}

inline void validate_backward(const SsdArgs& a, const SsdGrads& g) {
    validate(a);
    require(g.dy && g.dx && g.ddt && g.dB && g.dC && g.dA, "SSD scan backward: a gradient operand is null");
    require(g.ld_dy >= a.H * a.P && g.ld_dx >= a.H * a.P && g.ld_ddt >= a.H && g.ld_dB >= a.G * a.N &&
                g.ld_dC >= a.G * a.N,
            "SSD scan backward: a gradient's row stride is smaller than its row");
}

/// Writes dB and dC as the sums of their per-head parts `dBh`, `dCh` over each group's
/// heads, and dA as the sum of `dA_task` (nseq, H) over the sequences. The part of token t
/// and head h starts at t·`row_stride` + h·`head_stride` (N floats).
inline void sum_over_heads(const SsdArgs& a, const SsdGrads& g, const float* dBh, const float* dCh,
                           index row_stride, index head_stride, const std::vector<double>& dA_task) {
    const index H = a.H, N = a.N, heads_per_group = a.H / a.G;
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    parallel_for(a.T, 64, [&](index begin, index end) {
        for (index t = begin; t < end; ++t)
            for (index grp = 0; grp < a.G; ++grp) {
                float* dB = g.dB + t * g.ld_dB + grp * N;
                float* dC = g.dC + t * g.ld_dC + grp * N;
                std::fill(dB, dB + N, 0.0f);
                std::fill(dC, dC + N, 0.0f);
                for (index h = grp * heads_per_group; h < (grp + 1) * heads_per_group; ++h) {
                    const float* b = dBh + t * row_stride + h * head_stride;
                    const float* c = dCh + t * row_stride + h * head_stride;
                    for (index n = 0; n < N; ++n) {
                        dB[n] += b[n];
                        dC[n] += c[n];
                    }
                }
            }
    });
    for (index h = 0; h < H; ++h) {
        double sum = 0.0;
        for (index s = 0; s < nseq; ++s) sum += dA_task[static_cast<std::size_t>(s * H + h)];
        g.dA[h] = static_cast<float>(sum);
    }
}

}  // namespace detail

/// Backward of the SSD scan `a` (whose `y` and `final_state` are not touched) for the
/// output gradient `g.dy`. Exact for every `SsdScan` policy, since they all compute the
/// same recurrence.
inline void ssd_scan_backward(const SsdArgs& a, const SsdGrads& g, index checkpoint_every = 16) {
    detail::validate_backward(a, g);
    require(checkpoint_every > 0, "SSD scan backward: checkpoint_every must be > 0, got ", checkpoint_every);
    const index T = a.T, H = a.H, P = a.P, N = a.N, G = a.G, PN = P * N;
    const index heads_per_group = H / G;
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    const index Q = checkpoint_every;
    // Per head: dB and dC contributions (T, H, N), summed over each group's heads below.
    std::vector<float> dBh(static_cast<std::size_t>(T * H * N), 0.0f), dCh(dBh.size(), 0.0f);
    std::vector<double> dA_task(static_cast<std::size_t>(nseq * H), 0.0);

    parallel_for(nseq * H, 1, [&](index begin, index end) {
        std::vector<float> checkpoints, states(static_cast<std::size_t>(Q * PN)), dS(static_cast<std::size_t>(PN));
        std::vector<float> u(static_cast<std::size_t>(P));
        for (index task = begin; task < end; ++task) {
            const index s = task / H, h = task % H, grp = h / heads_per_group;
            const index t0 = a.offsets[static_cast<std::size_t>(s)], t1 = a.offsets[static_cast<std::size_t>(s) + 1];
            const index L = t1 - t0;
            if (L == 0) continue;
            const float A = a.A[h];
            const auto step = [&](index t, const float* prev, float* next) {
                const float dt = a.dt[t * a.ld_dt + h];
                const float decay = std::exp(dt * A);
                const float* x = a.x + t * a.ld_x + h * P;
                const float* B = a.B + t * a.ld_B + grp * N;
                for (index p = 0; p < P; ++p) {
                    const float dx = dt * x[p];
                    for (index n = 0; n < N; ++n) next[p * N + n] = decay * prev[p * N + n] + dx * B[n];
                }
            };
            // Forward: the state before each chunk of Q tokens.
            const index chunks = (L + Q - 1) / Q;
            checkpoints.assign(static_cast<std::size_t>(chunks * PN), 0.0f);
            if (a.initial_state)
                std::memcpy(checkpoints.data(), a.initial_state + (s * H + h) * PN, sizeof(float) * static_cast<std::size_t>(PN));
            for (index c = 0; c + 1 < chunks; ++c) {
                const float* prev = checkpoints.data() + c * PN;
                for (index t = t0 + c * Q; t < t0 + (c + 1) * Q; ++t) {
                    float* next = states.data();  // scratch: one state at a time
                    step(t, prev, next);
                    prev = next;
                }
                std::memcpy(checkpoints.data() + (c + 1) * PN, prev, sizeof(float) * static_cast<std::size_t>(PN));
            }
            // Backward, chunk by chunk from the last.
            std::fill(dS.begin(), dS.end(), 0.0f);
            double dA = 0.0;
            for (index c = chunks - 1; c >= 0; --c) {
                const index cb = t0 + c * Q, ce = std::min(t1, cb + Q);
                const float* before = checkpoints.data() + c * PN;
                for (index t = cb; t < ce; ++t) step(t, t == cb ? before : states.data() + (t - cb - 1) * PN,
                                                     states.data() + (t - cb) * PN);
                for (index t = ce - 1; t >= cb; --t) {
                    const float* St = states.data() + (t - cb) * PN;
                    const float* Sprev = t == cb ? before : states.data() + (t - cb - 1) * PN;
                    const float dt = a.dt[t * a.ld_dt + h];
                    const float decay = std::exp(dt * A);
                    const float* x = a.x + t * a.ld_x + h * P;
                    const float* B = a.B + t * a.ld_B + grp * N;
                    const float* C = a.C + t * a.ld_C + grp * N;
                    const float* dy = g.dy + t * g.ld_dy + h * P;
                    float* dBt = dBh.data() + (t * H + h) * N;
                    float* dCt = dCh.data() + (t * H + h) * N;
                    double ddt = 0.0, da = 0.0;
                    for (index p = 0; p < P; ++p) {
                        float* dSp = dS.data() + p * N;
                        const float dyp = dy[p], xp = x[p];
                        for (index n = 0; n < N; ++n) dSp[n] += dyp * C[n];
                        detail::add_scaled(dCt, St + p * N, dyp, N);
                        detail::add_scaled(dBt, dSp, xp, N);
                        const double up = detail::lane_dot(dSp, B, N);
                        da += detail::lane_dot(dSp, Sprev + p * N, N);
                        u[static_cast<std::size_t>(p)] = static_cast<float>(up);
                        ddt += static_cast<double>(xp) * up;
                    }
                    float* dx = g.dx + t * g.ld_dx + h * P;
                    for (index p = 0; p < P; ++p) dx[p] = dt * u[static_cast<std::size_t>(p)];
                    for (index n = 0; n < N; ++n) dBt[n] *= dt;
                    da *= decay;
                    g.ddt[t * g.ld_ddt + h] = static_cast<float>(ddt + da * A);
                    dA += da * dt;
                    for (float& v : dS) v *= decay;
                }
            }
            dA_task[static_cast<std::size_t>(task)] = dA;
        }
    });
    detail::sum_over_heads(a, g, dBh.data(), dCh.data(), H * N, N, dA_task);
}

/// Backward of the SSD scan in its chunked form: the same gradients as `ssd_scan_backward`,
/// made of small GEMMs instead of per-token recurrences over the (P, N) states. For one
/// head and a chunk of L tokens starting from the state S₀, with c_i = Σ_{k≤i} Δ_k·A_h,
/// e_i = exp(c_i), l_j = exp(c_{L−1} − c_j), X̃ = diag(Δ) X, the decay matrix
/// Dm[i,j] = exp(c_i − c_j) (j ≤ i) and M = C Bᵀ ⊙ Dm, the forward is
///   Y = M X̃ + diag(e) C S₀ᵀ,    S_end = e_{L−1}·S₀ + X̃ᵀ diag(l) B
/// and, for dY and the adjoint dS of S_end (zero after a sequence's last chunk),
///   dX̃ = Mᵀ dY + diag(l) B dSᵀ            dx = diag(Δ) dX̃
///   dM = dY X̃ᵀ,  Ĝ = dM ⊙ Dm (lower)
///   dC = Ĝ B + diag(e) dY S₀               dB = Ĝᵀ C + diag(l) X̃ dS
///   dS₀ = e_{L−1}·dS + dYᵀ diag(e) C       (the previous chunk's dS)
///   dc_i = Σ_{j<i} dM⊙M[i,j] − Σ_{k>i} dM⊙M[k,i] + e_i⟨(dY S₀)_i, C_i⟩ − r_i,
///   dc_{L−1} += Σ_j r_j + e_{L−1}⟨dS, S₀⟩,   r_j = l_j⟨(X̃ dS)_j, B_j⟩
///   dΔ_k = ⟨x_k, dX̃_k⟩ + A_h·Σ_{i≥k} dc_i,   dA_h += Σ_k Δ_k·Σ_{i≥k} dc_i
/// Tasks are (sequence, head) pairs in parallel. Each first walks its sequence forward,
/// keeping the state at every chunk's start (O(L/Q · P·N) floats), then goes back chunk by
/// chunk. `chunk` is Q (64 when 0; the Q × Q work per token grows with Q, so a CPU wants
/// it short whatever chunk the forward used; cut as the forward's, `detail::chunk_length`);
/// it changes rounding only.
inline void ssd_scan_backward_chunked(const SsdArgs& a, const SsdGrads& g, index chunk = 0) {
    detail::validate_backward(a, g);
    require(chunk >= 0, "SSD scan backward: chunk length must be >= 0, got ", chunk);
    const index Q = detail::chunk_length(chunk > 0 ? chunk : 64, a.offsets);
    const index T = a.T, H = a.H, P = a.P, N = a.N, PN = P * N;
    const index heads_per_group = H / a.G;
    const index nseq = static_cast<index>(a.offsets.size()) - 1;
    using detail::SsdConstMap;
    using detail::SsdMap;
    using detail::SsdRowMajor;
    using Stride = Eigen::OuterStride<>;
    // Per head (H, T, N), so that a task writes one contiguous block; every row is written
    // below, so no zeros first. Eigen's own (aligned) storage, as every buffer an Eigen
    // expression here writes or reads: a product or `exp` over an unaligned buffer peels
    // its first elements off the vector path, so its rounding would depend on the address
    // the heap gave (and an exactly resumed training run would not repeat itself).
    SsdRowMajor dBh(H * T, N), dCh(H * T, N);
    std::vector<double> dA_task(static_cast<std::size_t>(nseq * H), 0.0);

    parallel_for(nseq * H, 1, [&](index begin, index end) {
        const auto q = static_cast<std::size_t>(Q);
        std::vector<double> cum(q), dc(q), rowq(q), colq(q);
        std::vector<float> dts(q), e(q), l(q);
        std::vector<float, Eigen::aligned_allocator<float>> arg(q);  // read by Eigen's vector exp
        SsdRowMajor CB(Q, Q), DM(Q, Q), M(Q, Q), GM(Q, Q), Xd(Q, P), dXd(Q, P), BdS(Q, P), E(Q, N), F(Q, N),
            Cw(Q, N), Bw(Q, N), dS(P, N);
        std::vector<float, Eigen::aligned_allocator<float>> starts;
        for (index task = begin; task < end; ++task) {
            const index s = task / H, h = task % H, grp = h / heads_per_group;
            const index t0 = a.offsets[static_cast<std::size_t>(s)], t1 = a.offsets[static_cast<std::size_t>(s) + 1];
            if (t1 == t0) continue;
            const double A = a.A[h];
            const index chunks = (t1 - t0 + Q - 1) / Q;
            // Δ, the cumulative log-decays (in double, as the forward), e and l of a chunk.
            const auto prepare = [&](index c0, index L) {
                detail::chunk_decays(a, h, c0, L, dts, cum, e);
                const double run = cum[static_cast<std::size_t>(L - 1)];
                for (index j = 0; j < L; ++j)
                    l[static_cast<std::size_t>(j)] = static_cast<float>(std::exp(run - cum[static_cast<std::size_t>(j)]));
            };
            // Forward: the state at each chunk's start.
            if (starts.size() < static_cast<std::size_t>(chunks * PN)) starts.resize(static_cast<std::size_t>(chunks * PN));
            if (a.initial_state)
                std::memcpy(starts.data(), a.initial_state + (s * H + h) * PN, sizeof(float) * static_cast<std::size_t>(PN));
            else
                std::fill(starts.begin(), starts.begin() + PN, 0.0f);
            for (index k = 0; k + 1 < chunks; ++k) {
                const index c0 = t0 + k * Q;
                prepare(c0, Q);
                const SsdConstMap X(a.x + c0 * a.ld_x + h * P, Q, P, Stride(a.ld_x));
                const SsdConstMap Bm(a.B + c0 * a.ld_B + grp * N, Q, N, Stride(a.ld_B));
                for (index j = 0; j < Q; ++j)
                    Bw.row(j) = Bm.row(j) * (l[static_cast<std::size_t>(j)] * dts[static_cast<std::size_t>(j)]);
                const SsdMap S0(starts.data() + k * PN, P, N, Stride(N));
                SsdMap S1(starts.data() + (k + 1) * PN, P, N, Stride(N));
                S1 = S0 * e[q - 1];
                serial_product(S1, X, true, Bw, false, true);
            }
            // Backward, chunk by chunk from the last.
            dS.setZero();
            double dA = 0.0;
            for (index k = chunks - 1; k >= 0; --k) {
                const index c0 = t0 + k * Q, L = std::min(Q, t1 - c0);
                const auto last = static_cast<std::size_t>(L - 1);
                prepare(c0, L);
                const SsdConstMap X(a.x + c0 * a.ld_x + h * P, L, P, Stride(a.ld_x));
                const SsdConstMap Bm(a.B + c0 * a.ld_B + grp * N, L, N, Stride(a.ld_B));
                const SsdConstMap Cm(a.C + c0 * a.ld_C + grp * N, L, N, Stride(a.ld_C));
                const SsdConstMap dY(g.dy + c0 * g.ld_dy + h * P, L, P, Stride(g.ld_dy));
                const SsdMap S0(starts.data() + k * PN, P, N, Stride(N));
                auto xd = Xd.topRows(L);
                for (index j = 0; j < L; ++j) xd.row(j) = X.row(j) * dts[static_cast<std::size_t>(j)];
                auto cb = CB.topLeftCorner(L, L);
                auto dm = DM.topLeftCorner(L, L);
                auto m = M.topLeftCorner(L, L);
                auto gm = GM.topLeftCorner(L, L);
                serial_product(cb, Cm, false, Bm, true, false);
                serial_product(dm, dY, false, xd, true, false);
                // M = C Bᵀ ⊙ Dm and Ĝ = dM ⊙ Dm, zero above the diagonal; the decay
                // exponents' gradient as row and column sums of dM ⊙ M off the diagonal.
                std::fill(rowq.begin(), rowq.end(), 0.0);
                std::fill(colq.begin(), colq.end(), 0.0);
                for (index i = 0; i < L; ++i) {
                    const double ci = cum[static_cast<std::size_t>(i)];
                    for (index j = 0; j <= i; ++j) arg[static_cast<std::size_t>(j)] = static_cast<float>(cum[static_cast<std::size_t>(j)] - ci);
                    // exp(c_i − c_j) = exp(−(c_j − c_i)), with c_j − c_i ≥ 0 for j ≤ i.
                    Eigen::Map<Eigen::ArrayXf> decay(arg.data(), i + 1);
                    decay = (-decay).exp();
                    double row_sum = 0.0;
                    for (index j = 0; j <= i; ++j) {
                        const float d = arg[static_cast<std::size_t>(j)];
                        m(i, j) = cb(i, j) * d;
                        gm(i, j) = dm(i, j) * d;
                        if (j < i) {
                            const double qij = static_cast<double>(dm(i, j)) * m(i, j);
                            row_sum += qij;
                            colq[static_cast<std::size_t>(j)] += qij;
                        }
                    }
                    rowq[static_cast<std::size_t>(i)] = row_sum;
                    for (index j = i + 1; j < L; ++j) {
                        m(i, j) = 0.0f;
                        gm(i, j) = 0.0f;
                    }
                }
                // dX̃, then dx and Δ's direct part.
                auto dxd = dXd.topRows(L);
                auto bds = BdS.topRows(L);
                serial_product(dxd, m, true, dY, false, false);
                serial_product(bds, Bm, false, dS, true, false);
                for (index j = 0; j < L; ++j) {
                    const auto u = static_cast<std::size_t>(j);
                    dxd.row(j) += l[u] * bds.row(j);
                    float* dx = g.dx + (c0 + j) * g.ld_dx + h * P;
                    for (index p = 0; p < P; ++p) dx[p] = dts[u] * dxd(j, p);
                }
                // dC and dB of this head.
                auto eS = E.topRows(L);
                auto fS = F.topRows(L);
                serial_product(eS, dY, false, S0, false, false);
                serial_product(fS, xd, false, dS, false, false);
                SsdMap dC(dCh.data() + (h * T + c0) * N, L, N, Stride(N));
                SsdMap dB(dBh.data() + (h * T + c0) * N, L, N, Stride(N));
                serial_product(dC, gm, false, Bm, false, false);
                serial_product(dB, gm, true, Cm, false, false);
                double r_total = 0.0;
                for (index i = 0; i < L; ++i) {
                    const auto u = static_cast<std::size_t>(i);
                    const double from_start = static_cast<double>(e[u]) * eS.row(i).dot(Cm.row(i));
                    const double r = static_cast<double>(l[u]) * fS.row(i).dot(Bm.row(i));
                    dC.row(i) += e[u] * eS.row(i);
                    dB.row(i) += l[u] * fS.row(i);
                    dc[u] = rowq[u] - colq[u] + from_start - r;
                    r_total += r;
                }
                dc[last] += r_total + static_cast<double>(e[last]) * static_cast<double>((dS.array() * S0.array()).sum());
                // Δ's part through the decays, and A's.
                double tail = 0.0;
                for (index i = L - 1; i >= 0; --i) {
                    const auto u = static_cast<std::size_t>(i);
                    tail += dc[u];
                    const float* x = a.x + (c0 + i) * a.ld_x + h * P;
                    double direct = 0.0;
                    for (index p = 0; p < P; ++p) direct += static_cast<double>(x[p]) * dxd(i, p);
                    g.ddt[(c0 + i) * g.ld_ddt + h] = static_cast<float>(direct + A * tail);
                    dA += static_cast<double>(dts[u]) * tail;
                }
                // The adjoint of the chunk's start state.
                auto cw = Cw.topRows(L);
                for (index i = 0; i < L; ++i) cw.row(i) = Cm.row(i) * e[static_cast<std::size_t>(i)];
                dS *= e[last];
                serial_product(dS, dY, true, cw, false, true);
            }
            dA_task[static_cast<std::size_t>(task)] = dA;
        }
    });
    detail::sum_over_heads(a, g, dBh.data(), dCh.data(), N, T * N, dA_task);
}

}  // namespace ssm
