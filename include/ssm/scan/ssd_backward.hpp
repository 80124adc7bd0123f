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

#include <algorithm>
#include <cstring>
#include <vector>

#include "ssm/core/error.hpp"
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

}  // namespace detail

/// Backward of the SSD scan `a` (whose `y` and `final_state` are not touched) for the
/// output gradient `g.dy`. Exact for every `SsdScan` policy, since they all compute the
/// same recurrence.
inline void ssd_scan_backward(const SsdArgs& a, const SsdGrads& g, index checkpoint_every = 16) {
    validate(a);
    require(g.dy && g.dx && g.ddt && g.dB && g.dC && g.dA, "SSD scan backward: a gradient operand is null");
    require(g.ld_dy >= a.H * a.P && g.ld_dx >= a.H * a.P && g.ld_ddt >= a.H && g.ld_dB >= a.G * a.N &&
                g.ld_dC >= a.G * a.N,
            "SSD scan backward: a gradient's row stride is smaller than its row");
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
    parallel_for(T, 64, [&](index begin, index end) {
        for (index t = begin; t < end; ++t)
            for (index grp = 0; grp < G; ++grp) {
                float* dB = g.dB + t * g.ld_dB + grp * N;
                float* dC = g.dC + t * g.ld_dC + grp * N;
                std::fill(dB, dB + N, 0.0f);
                std::fill(dC, dC + N, 0.0f);
                for (index h = grp * heads_per_group; h < (grp + 1) * heads_per_group; ++h) {
                    const float* b = dBh.data() + (t * H + h) * N;
                    const float* c = dCh.data() + (t * H + h) * N;
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

}  // namespace ssm
