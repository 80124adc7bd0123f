// ssm/cuda/selective_scan.cuh — the selective scan on the device (ssm::SequentialScan /
// ParallelScan, with softplus(Δ + bias), the D skip and the silu(z) gate fused):
// `ScanParams`, `mixer_scan_params`, the chunked and the BlockScan algorithms, and the
// one-token state update (ssm::selective_state_update).
#pragma once

#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <climits>
#include <cstddef>

#include "ssm/cuda/common.cuh"
#include "ssm/scan/scan_operator.hpp"

namespace ssm::cuda {

namespace detail {

// ---- selective scan ----------------------------------------------------------------------------

/// `M` states side by side, so one BlockScan advances M of a channel's N states at once
/// (fewer block-wide barriers). Element-wise * and +, as `ssm::ScanOp` needs.
template <int M>
struct StateLanes {
    float v[M];
    __host__ __device__ friend StateLanes operator*(const StateLanes& x, const StateLanes& y) {
        StateLanes
            r;  // (no #pragma unroll: the host compiler sees this too; M is small and constant)
        for (int m = 0; m < M; ++m) r.v[m] = x.v[m] * y.v[m];
        return r;
    }
    __host__ __device__ friend StateLanes operator+(const StateLanes& x, const StateLanes& y) {
        StateLanes r;
        for (int m = 0; m < M; ++m) r.v[m] = x.v[m] + y.v[m];
        return r;
    }
};

/// The prefix callback that carries a channel's M states from one time chunk to the next.
/// BlockScan calls it from warp 0 with the chunk's aggregate (∏Ā, s_end-from-zero) and
/// applies lane 0's return value as the prefix of every element: (1, h) where h is the
/// state before the chunk. Only thread 0 touches the shared carry (h ← ((1,h) ∘ agg).b =
/// agg.a·h + agg.b); the other lanes' return values are ignored by CUB.
template <int M>
struct CarryPrefix {
    float* carry;  // shared memory, M floats
    __device__ ScanElement<StateLanes<M>> operator()(
        const ScanElement<StateLanes<M>>& aggregate) const {
        ScanElement<StateLanes<M>> prefix;
#pragma unroll
        for (int m = 0; m < M; ++m) {
            prefix.a.v[m] = 1.0f;
            prefix.b.v[m] = 0.0f;
        }
        if (threadIdx.x == 0) {
#pragma unroll
            for (int m = 0; m < M; ++m) {
                const float h = carry[m];
                prefix.b.v[m] = h;
                carry[m] = ScanOp::advance(h, aggregate.a.v[m], aggregate.b.v[m]);
            }
        }
        return prefix;
    }
};

}  // namespace detail

/// The operands of a selective scan on the device (the CUDA twin of `SelectiveScanArgs`).
/// Rows are tokens; `ld_*` are row strides in elements.
template <class In = float>
struct ScanParams {
    dindex T = 0, E = 0;
    int N = 0;
    const In* u = nullptr;  // (T, E) conv output after SiLU
    dindex ld_u = 0;
    const In* dt = nullptr;  // (T, E) Δ: raw dt_proj output when dt_softplus, else final
    dindex ld_dt = 0;
    const float* dt_bias = nullptr;  // (E) added to Δ first, optional
    bool dt_softplus = false;        // Δ ← softplus(Δ + bias), threshold 20
    const float* A = nullptr;        // (E, N) = −exp(A_log)
    const In* B = nullptr;           // (T, N)
    dindex ld_B = 0;
    const In* C = nullptr;  // (T, N)
    dindex ld_C = 0;
    const float* D = nullptr;  // (E) skip, optional
    const In* z = nullptr;     // (T, E) gate, optional: y *= silu(z)
    dindex ld_z = 0;
    In* y = nullptr;  // (T, E) output
    dindex ld_y = 0;
    const dindex* offsets = nullptr;  // device, nseq + 1 (prefill); unused by the state update
    int nseq = 0;
    const float* initial_state = nullptr;  // (nseq, E, N), nullptr: zeros
    float* final_state = nullptr;          // (nseq, E, N), optional; may equal initial_state
};

/// The scan's operands as a Mamba-1 mixer lays them out for T rows: u, Δ and y (T, E), Δ
/// raw (`dt_bias` and softplus applied inside), B and C inside xdbl (T, R + 2N) =
/// [dt_low | B | C], the gate z the second half of xz (T, 2E) = [x | z]. No states.
template <class In>
ScanParams<In> mixer_scan_params(dindex T, dindex E, dindex N, dindex R, const In* u, const In* dt,
                                 const float* dt_bias, const float* A, const In* xdbl,
                                 const float* D, const In* xz, In* y) {
    ScanParams<In> p;
    p.T = T;
    p.E = E;
    p.N = static_cast<int>(N);
    p.u = u;
    p.ld_u = E;
    p.dt = dt;
    p.ld_dt = E;
    p.dt_bias = dt_bias;
    p.dt_softplus = true;
    p.A = A;
    p.B = xdbl + R;
    p.ld_B = R + 2 * N;
    p.C = xdbl + R + N;
    p.ld_C = R + 2 * N;
    p.D = D;
    p.z = xz + E;
    p.ld_z = 2 * E;
    p.y = y;
    p.ld_y = E;
    return p;
}

namespace detail {

template <class In>
void validate(const ScanParams<In>& p, const char* what) {
    require(p.T >= 0 && p.E > 0 && p.N > 0, what, ": bad sizes T ", p.T, ", E ", p.E, ", N ", p.N);
    require(p.u && p.dt && p.A && p.B && p.C && p.y, what, ": a required operand is null");
    require(p.ld_u >= p.E && p.ld_dt >= p.E && p.ld_y >= p.E && p.ld_B >= p.N && p.ld_C >= p.N &&
                (!p.z || p.ld_z >= p.E),
            what, ": a row stride is smaller than the row");
}

/// Chunked parallel scan. Block (sequence, group of kGroup channels); 1-D, kThreads threads.
/// Time is walked in chunks of kChunk = kThreads·kItems rows. Per chunk:
///  1. the chunk's u, Δ (kGroup columns) and B, C (N columns) are staged in shared memory
///     (coalesced: consecutive threads read consecutive columns of a row), Δ finished
///     (+ bias, softplus) on the way in;
///  2. for each channel g and each block of kLanes states: every thread builds its kItems
///     consecutive elements (Ā, Δ·u·B) — rows past the sequence end are the identity
///     (1, 0) — and one BlockScan over the operator, seeded by `CarryPrefix` with the
///     state carried from the previous chunk, gives the state at every row; y += h·C;
///  3. y (+ D·u) replaces u in shared memory; after all channels it is gated by silu(z)
///     and written out coalesced.
/// Shared rows are stored at slot(r) = (r mod kItems)·kThreads + r / kItems, so that the
/// thread that owns row r = tid·kItems + j in the scan's blocked arrangement reads slot
/// j·kThreads + tid: consecutive threads, consecutive words, no bank conflicts.
template <class In, int kThreads, int kItems, int kGroup, int kLanes>
__global__ void __launch_bounds__(kThreads) selective_scan_kernel(const ScanParams<In> p) {
    constexpr int kChunk = kThreads * kItems;
    constexpr int kStride = kChunk + 4;  // padded shared row (bank spread of the staging writes)
    using Element = ScanElement<StateLanes<kLanes>>;
    using Scan = cub::BlockScan<Element, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;
    __shared__ typename Scan::TempStorage scan_storage;
    extern __shared__ float smem[];
    const int N = p.N;
    float* s_u = smem;                     // (kGroup, kStride): u, then y
    float* s_dt = s_u + kGroup * kStride;  // (kGroup, kStride): Δ after bias + softplus
    float* s_B = s_dt + kGroup * kStride;  // (N, kStride)
    float* s_C = s_B + N * kStride;        // (N, kStride)
    float* s_carry = s_C + N * kStride;    // (kGroup, N): state before the current chunk

    const int tid = threadIdx.x;
    const dindex seq = blockIdx.x;
    const dindex e0 = static_cast<dindex>(blockIdx.y) * kGroup;
    const dindex start = p.offsets[seq], end = p.offsets[seq + 1];
    const auto slot = [](int r) { return (r % kItems) * kThreads + r / kItems; };

    for (int i = tid; i < kGroup * N; i += kThreads) {
        const int g = i / N, n = i - g * N;
        const dindex e = e0 + g;
        s_carry[i] = (e < p.E && p.initial_state) ? p.initial_state[(seq * p.E + e) * N + n] : 0.0f;
    }

    for (dindex t0 = start; t0 < end; t0 += kChunk) {
        const int len = static_cast<int>(end - t0 < kChunk ? end - t0 : kChunk);
        __syncthreads();  // the previous chunk's epilogue is done with s_u; the carry is written

        // 1. Stage the chunk.
        for (int i = tid; i < kChunk * kGroup; i += kThreads) {
            const int r = i / kGroup, g = i - r * kGroup;
            const dindex e = e0 + g, t = t0 + r;
            float uv = 0.0f, dv = 0.0f;
            if (r < len && e < p.E) {
                uv = to_float(p.u[t * p.ld_u + e]);
                dv = to_float(p.dt[t * p.ld_dt + e]);
                if (p.dt_bias) dv += p.dt_bias[e];
                if (p.dt_softplus) dv = softplus(dv);
            }
            s_u[g * kStride + slot(r)] = uv;
            s_dt[g * kStride + slot(r)] = dv;
        }
        for (int i = tid; i < kChunk * N; i += kThreads) {
            const int r = i / N, n = i - r * N;
            const dindex t = t0 + r;
            const bool valid = r < len;
            s_B[n * kStride + slot(r)] = valid ? to_float(p.B[t * p.ld_B + n]) : 0.0f;
            s_C[n * kStride + slot(r)] = valid ? to_float(p.C[t * p.ld_C + n]) : 0.0f;
        }
        __syncthreads();

        // 2. Scan every (channel, block of states) of the group.
        for (int g = 0; g < kGroup; ++g) {
            const dindex e = e0 + g;
            if (e >= p.E) break;  // the same for every thread of the block
            float u[kItems], dt[kItems], y[kItems];
            bool valid[kItems];
#pragma unroll
            for (int j = 0; j < kItems; ++j) {
                const int at = g * kStride + j * kThreads + tid;
                u[j] = s_u[at];
                dt[j] = s_dt[at];
                y[j] = 0.0f;
                valid[j] = tid * kItems + j < len;
            }
            for (int n0 = 0; n0 < N; n0 += kLanes) {
                float a[kLanes];
#pragma unroll
                for (int m = 0; m < kLanes; ++m) a[m] = p.A[e * N + n0 + m];
                Element el[kItems];
#pragma unroll
                for (int j = 0; j < kItems; ++j) {
                    const int at = j * kThreads + tid;
#pragma unroll
                    for (int m = 0; m < kLanes; ++m) {
                        if (valid[j]) {
                            el[j].a.v[m] = expf(dt[j] * a[m]);
                            el[j].b.v[m] = dt[j] * u[j] * s_B[(n0 + m) * kStride + at];
                        } else {  // identity: leaves the carried state as it is
                            el[j].a.v[m] = 1.0f;
                            el[j].b.v[m] = 0.0f;
                        }
                    }
                }
                CarryPrefix<kLanes> prefix{s_carry + g * N + n0};
                Scan(scan_storage).InclusiveScan(el, el, ScanOp{}, prefix);
                __syncthreads();  // scan_storage is reused by the next scan
#pragma unroll
                for (int j = 0; j < kItems; ++j) {
                    const int at = j * kThreads + tid;
#pragma unroll
                    for (int m = 0; m < kLanes; ++m)
                        y[j] += el[j].b.v[m] * s_C[(n0 + m) * kStride + at];
                }
            }
            // 3. y + D·u over u's slots (each slot is read and written by its owner only).
#pragma unroll
            for (int j = 0; j < kItems; ++j) {
                float v = y[j];
                if (p.D) v += p.D[e] * u[j];
                s_u[g * kStride + j * kThreads + tid] = v;
            }
        }
        __syncthreads();

        // Epilogue: gate and write y for the chunk's rows.
        for (int i = tid; i < kChunk * kGroup; i += kThreads) {
            const int r = i / kGroup, g = i - r * kGroup;
            const dindex e = e0 + g, t = t0 + r;
            if (r < len && e < p.E) {
                float v = s_u[g * kStride + slot(r)];
                if (p.z) v *= silu(to_float(p.z[t * p.ld_z + e]));
                p.y[t * p.ld_y + e] = from_float<In>(v);
            }
        }
    }
    __syncthreads();  // the last carry update (thread 0, inside the scan) is visible
    if (p.final_state)
        for (int i = tid; i < kGroup * N; i += kThreads) {
            const int g = i / N, n = i - g * N;
            const dindex e = e0 + g;
            if (e < p.E) p.final_state[(seq * p.E + e) * N + n] = s_carry[i];
        }
}

/// Threads per block of the chunked scan's passes 1 and 3: one channel each.
inline constexpr int kScanThreads = 128;

/// 2^x by the hardware's approximation (ex2.approx.ftz: relative error about 2⁻²², results
/// below 2⁻¹²⁶ flushed to 0), one instruction where exp2f adds range handling around it.
/// The scan evaluates one per (row, channel, state), which is most of its instructions.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/// The chunked scan, passes 1 and 3 (see `ScanAlgorithm::Chunked`). Block (chunk, channel
/// block) — grid x: the chunks of all sequences; grid y: blocks of kScanThreads channels;
/// thread e of the block owns channel e of the chunk and holds its kN states in registers
/// (kN ≥ N, a multiple of 4; states N..kN−1 have A = 0 and B = C = 0, so they stay 0 and add
/// nothing). The chunk's B (and C) rows are staged in shared memory kStage rows at a time,
/// read by every thread as broadcasts. Chunks are `chunk_rows` long.
///  - kOutput false (pass 1): walks the chunk from a zero state and writes the chunk's
///    aggregate: its end state from zero (N values) and ΣΔ (∏Ā = exp(A·ΣΔ)). The last chunk
///    of each sequence is skipped: no later chunk needs it.
///  - kOutput true (pass 3): starts from the state pass 2 left for the chunk and writes
///    y = (h·C + D·u)·silu(z) for every row; the last chunk of each sequence writes the
///    final state too.
/// Aggregates and start states live in `agg`, (chunks, N + 1, E): [chunk][n][e], so that
/// consecutive threads touch consecutive words.
template <class In, int kN, bool kOutput>
__global__ void __launch_bounds__(kScanThreads)
    scan_chunk_kernel(const ScanParams<In> p, const dindex* __restrict__ chunk_offsets,
                      dindex chunk_rows, float* __restrict__ agg) {
    constexpr int kStage = 64;
    constexpr int kCols = kOutput ? 2 * kN : kN;  // [B | C] or B
    __shared__ __align__(16) float s_bc[kStage * kCols];
    const int N = p.N;
    const dindex chunk = blockIdx.x;
    const int seq = find_sequence(chunk_offsets, p.nseq, chunk);
    const bool last = chunk + 1 == chunk_offsets[seq + 1];
    if (!kOutput && last) return;  // the whole block: no barrier is left waiting
    const dindex t0 = p.offsets[seq] + (chunk - chunk_offsets[seq]) * chunk_rows;
    const dindex t1 = min(t0 + chunk_rows, p.offsets[seq + 1]);
    const dindex e = static_cast<dindex>(blockIdx.y) * kScanThreads + threadIdx.x;
    const bool active = e < p.E;
    const dindex E = p.E;
    float* chunk_agg = agg + chunk * (N + 1) * E;

    float a[kN], h[kN];  // a = A·log2(e): Ā = 2^(Δ·a)
#pragma unroll
    for (int n = 0; n < kN; ++n) {
        a[n] = active && n < N ? p.A[e * N + n] * 1.4426950408889634f : 0.0f;
        h[n] = kOutput && active && n < N ? chunk_agg[n * E + e] : 0.0f;
    }
    float dt_sum = 0.0f;
    const float d_skip = kOutput && active && p.D ? p.D[e] : 0.0f;
    const float dt_bias = active && p.dt_bias ? p.dt_bias[e] : 0.0f;

    for (dindex r0 = t0; r0 < t1; r0 += kStage) {
        const int rows = static_cast<int>(min(static_cast<dindex>(kStage), t1 - r0));
        __syncthreads();  // the previous stage is read
        for (int i = threadIdx.x; i < rows * kCols; i += kScanThreads) {
            const int r = i / kCols, c = i - r * kCols;
            const dindex t = r0 + r;
            float v = 0.0f;
            if (c < kN) {
                if (c < N) v = to_float(p.B[t * p.ld_B + c]);
            } else if (c - kN < N) {
                v = to_float(p.C[t * p.ld_C + (c - kN)]);
            }
            s_bc[i] = v;
        }
        __syncthreads();
        if (!active) continue;
        // Row r + 1's inputs are loaded before row r is computed, so that their latency
        // overlaps the arithmetic (y may alias u, so the compiler cannot hoist them itself).
        float dt_next = to_float(p.dt[r0 * p.ld_dt + e]);
        float u_next = to_float(p.u[r0 * p.ld_u + e]);
        float z_next = kOutput && p.z ? to_float(p.z[r0 * p.ld_z + e]) : 0.0f;
        for (int r = 0; r < rows; ++r) {
            const dindex t = r0 + r;
            float dt = dt_next;
            const float u = u_next, zv = z_next;
            if (r + 1 < rows) {
                dt_next = to_float(p.dt[(t + 1) * p.ld_dt + e]);
                u_next = to_float(p.u[(t + 1) * p.ld_u + e]);
                if (kOutput && p.z) z_next = to_float(p.z[(t + 1) * p.ld_z + e]);
            }
            if (p.dt_bias) dt += dt_bias;
            if (p.dt_softplus) dt = softplus(dt);
            const float du = dt * u;
            const float4* bc = reinterpret_cast<const float4*>(s_bc + r * kCols);
            float y = 0.0f;
#pragma unroll
            for (int q = 0; q < kN / 4; ++q) {
                const float4 b = bc[q];
                h[4 * q + 0] = fast_exp2(dt * a[4 * q + 0]) * h[4 * q + 0] + du * b.x;
                h[4 * q + 1] = fast_exp2(dt * a[4 * q + 1]) * h[4 * q + 1] + du * b.y;
                h[4 * q + 2] = fast_exp2(dt * a[4 * q + 2]) * h[4 * q + 2] + du * b.z;
                h[4 * q + 3] = fast_exp2(dt * a[4 * q + 3]) * h[4 * q + 3] + du * b.w;
                if constexpr (kOutput) {
                    const float4 c = bc[kN / 4 + q];
                    y += h[4 * q + 0] * c.x + h[4 * q + 1] * c.y + h[4 * q + 2] * c.z +
                         h[4 * q + 3] * c.w;
                }
            }
            if constexpr (kOutput) {
                y += d_skip * u;
                if (p.z) y *= silu(zv);
                p.y[t * p.ld_y + e] = from_float<In>(y);
            } else {
                dt_sum += dt;
            }
        }
    }
    if (!active) return;
    if constexpr (kOutput) {
        if (last && p.final_state) {
            float* out = p.final_state + (static_cast<dindex>(seq) * E + e) * N;
#pragma unroll
            for (int n = 0; n < kN; ++n)
                if (n < N) out[n] = h[n];
        }
    } else {
#pragma unroll
        for (int n = 0; n < kN; ++n)
            if (n < N) chunk_agg[n * E + e] = h[n];
        chunk_agg[N * E + e] = dt_sum;
    }
}

/// The chunked scan, pass 2: one thread per (sequence, state n, channel e) walks the
/// sequence's chunks in order from the initial state, writing into each chunk's slot n of
/// `agg` the state before the chunk, and advancing over every chunk but the last by its
/// aggregate: h ← exp(A·ΣΔ)·h + (end state from zero). An empty sequence's final state is
/// its initial state; the others' are written by pass 3.
template <class In>
__global__ void scan_chunk_carry_kernel(const ScanParams<In> p,
                                        const dindex* __restrict__ chunk_offsets,
                                        float* __restrict__ agg) {
    const dindex E = p.E;
    const int N = p.N;
    const dindex total = static_cast<dindex>(p.nseq) * N * E;
    for (dindex i = global_thread(); i < total; i += grid_threads()) {
        const dindex e = i % E;
        const int n = static_cast<int>((i / E) % N);
        const int seq = static_cast<int>(i / (E * N));
        const float a = p.A[e * N + n];
        const dindex state_at = (static_cast<dindex>(seq) * E + e) * N + n;
        float h = p.initial_state ? p.initial_state[state_at] : 0.0f;
        const dindex c0 = chunk_offsets[seq], c1 = chunk_offsets[seq + 1];
        if (c0 == c1) {
            if (p.final_state) p.final_state[state_at] = h;
            continue;
        }
        // Chunk c's aggregate is read before its slot n takes the start state; the next
        // chunk's is loaded a step ahead, so the loads overlap the chain of updates.
        float end = 0.0f, sum = 0.0f;
        if (c0 + 1 < c1) {
            end = agg[(c0 * (N + 1) + n) * E + e];
            sum = agg[(c0 * (N + 1) + N) * E + e];
        }
        for (dindex c = c0; c < c1; ++c) {
            float next_end = 0.0f, next_sum = 0.0f;
            if (c + 2 < c1) {
                next_end = agg[((c + 1) * (N + 1) + n) * E + e];
                next_sum = agg[((c + 1) * (N + 1) + N) * E + e];
            }
            agg[(c * (N + 1) + n) * E + e] = h;
            h = expf(sum * a) * h + end;  // past the last chunk h is unused: pass 3 has it
            end = next_end;
            sum = next_sum;
        }
    }
}

/// Decoding: one thread per (b, e) walks the N states of the channel once.
template <class In>
__global__ void selective_state_update_kernel(const ScanParams<In> p, dindex batch,
                                              float* __restrict__ state) {
    const int N = p.N;
    for (dindex i = global_thread(); i < batch * p.E; i += grid_threads()) {
        const dindex b = i / p.E, e = i - b * p.E;
        float dt = to_float(p.dt[b * p.ld_dt + e]);
        if (p.dt_bias) dt += p.dt_bias[e];
        if (p.dt_softplus) dt = softplus(dt);
        const float u = to_float(p.u[b * p.ld_u + e]);
        float* s = state + (b * p.E + e) * N;
        float y = 0.0f;
        for (int n = 0; n < N; ++n) {
            const float h = ScanOp::advance(s[n], expf(dt * p.A[e * N + n]),
                                            dt * u * to_float(p.B[b * p.ld_B + n]));
            s[n] = h;
            y += h * to_float(p.C[b * p.ld_C + n]);
        }
        if (p.D) y += p.D[e] * u;
        if (p.z) y *= silu(to_float(p.z[b * p.ld_z + e]));
        p.y[b * p.ld_y + e] = from_float<In>(y);
    }
}

}  // namespace detail

namespace detail {

template <class In, int kLanes>
void launch_selective_scan(const ScanParams<In>& p, cudaStream_t stream) {
    constexpr int kThreads = 128, kItems = 2, kGroup = 8;
    constexpr int kStride = kThreads * kItems + 4;
    const std::size_t floats = static_cast<std::size_t>(2 * kGroup + 2 * p.N) * kStride +
                               static_cast<std::size_t>(kGroup) * p.N;
    const std::size_t bytes = floats * sizeof(float);
    constexpr std::size_t static_bytes =
        sizeof(typename cub::BlockScan<ScanElement<StateLanes<kLanes>>, kThreads,
                                       cub::BLOCK_SCAN_WARP_SCANS>::TempStorage);
    auto kernel = selective_scan_kernel<In, kThreads, kItems, kGroup, kLanes>;
    // N = 16 needs ~50 KB: past the default 48 KB, so opt in (up to the device's limit).
    const int limit =
        allow_shared_memory(reinterpret_cast<const void*>(kernel), bytes, static_bytes);
    require(bytes + static_bytes <= static_cast<std::size_t>(limit),
            "cuda::selective_scan: state size N = ", p.N, " needs ", bytes + static_bytes,
            " bytes of shared memory per block, the device allows ", limit);
    const dindex groups = (p.E + kGroup - 1) / kGroup;
    require(groups <= 65535, "cuda::selective_scan: E = ", p.E, " is too many channels");
    const dim3 grid(static_cast<unsigned>(p.nseq), static_cast<unsigned>(groups));
    kernel<<<grid, kThreads, bytes, stream>>>(p);
    SSM_CUDA_CHECK_LAUNCH("selective_scan_kernel");
}

}  // namespace detail

/// How `selective_scan` walks time.
enum class ScanAlgorithm {
    /// `Chunked` when N ≤ 64, else `BlockScan`.
    Automatic,
    /// Up to three passes over chunks of every sequence (`kScanChunkRows`), all chunks side
    /// by side: (1) each chunk but a sequence's last from a zero state, keeping its end state
    /// and ΣΔ; (2) one thread per (sequence, state, channel) carries the state across the
    /// sequence's chunks; (3) each chunk again from its true start state, writing y (and,
    /// for the last chunk, the final state). Each thread holds one channel's states in
    /// registers and walks its chunk's rows in order: no barrier per row, no shuffle, and a
    /// sequence that fits in one chunk is read once. Needs N ≤ 64 and a workspace
    /// (`selective_scan_workspace`).
    Chunked,
    /// One pass: a block per (sequence, 8 channels) walks 256-row chunks, one CUB BlockScan
    /// per 4 states and chunk. Any N; no workspace.
    BlockScan,
};

/// At most how many floats of workspace `selective_scan` needs with `ScanAlgorithm::Chunked`:
/// for every chunk of the shortest length and every channel, N states and ΣΔ.
[[nodiscard]] inline std::size_t selective_scan_workspace(const DeviceOffsets& offsets, dindex E,
                                                          int N) {
    return static_cast<std::size_t>(offsets.scan_chunks(0)) * static_cast<std::size_t>(N + 1) *
           static_cast<std::size_t>(E);
}

namespace detail {

inline constexpr int kScanMaxChunkedN = 64;

/// Which of `kScanChunkRows` the chunked scan uses: the longest whose chunks give every
/// multiprocessor at least 1024 threads (a channel of a chunk each), else the shortest.
inline std::size_t scan_chunk_choice(const DeviceOffsets& offsets, dindex E) {
    const dindex channels = (E + kScanThreads - 1) / kScanThreads * kScanThreads;
    const dindex wanted =
        static_cast<dindex>(device_attribute(cudaDevAttrMultiProcessorCount)) * 1024;
    for (std::size_t k = kScanChunkRows.size(); k-- > 1;)
        if (offsets.scan_chunks(k) * channels >= wanted) return k;
    return 0;
}

template <class In, int kN>
void launch_chunked_scan(const ScanParams<In>& p, const DeviceOffsets& offsets, std::size_t k,
                         float* agg, cudaStream_t stream) {
    const dindex chunks = offsets.scan_chunks(k);
    const dindex* chunk_offsets = offsets.scan_chunk_offsets(k);
    const dindex channel_blocks = (p.E + kScanThreads - 1) / kScanThreads;
    require(channel_blocks <= 65535 && chunks <= INT_MAX, "cuda::selective_scan: E = ", p.E,
            " channels, ", chunks, " chunks: too many for one launch");
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(channel_blocks));
    // (Pass 1's blocks for a sequence's last chunk return at once.)
    if (chunks > 0) {
        scan_chunk_kernel<In, kN, false>
            <<<grid, kScanThreads, 0, stream>>>(p, chunk_offsets, kScanChunkRows[k], agg);
        SSM_CUDA_CHECK_LAUNCH("scan_chunk_kernel (pass 1)");
    }
    scan_chunk_carry_kernel<In><<<grid_for(static_cast<dindex>(p.nseq) * p.N * p.E, kBlockThreads),
                                  kBlockThreads, 0, stream>>>(p, chunk_offsets, agg);
    SSM_CUDA_CHECK_LAUNCH("scan_chunk_carry_kernel (pass 2)");
    if (chunks > 0) {
        scan_chunk_kernel<In, kN, true>
            <<<grid, kScanThreads, 0, stream>>>(p, chunk_offsets, kScanChunkRows[k], agg);
        SSM_CUDA_CHECK_LAUNCH("scan_chunk_kernel (pass 3)");
    }
}

}  // namespace detail

/// The selective scan over packed sequences (the CUDA `Scan` of `SelectiveScanArgs`), with
/// Δ finished inside (`dt_bias`, `dt_softplus`). `p.offsets` / `p.nseq` are set from
/// `offsets`. Writes y for every row and, when asked, the final state of every sequence
/// (which may be the initial state's buffer). y may be u's buffer (same row stride).
/// `workspace` is grown to what the chunked algorithm needs (at most
/// `selective_scan_workspace` floats); reused across calls it stops allocating.
///
/// `chunk_rows` (chunked algorithm only): 0 lets the scan choose from `kScanChunkRows`;
/// one of those lengths forces it (the results agree to rounding; tests use this).
template <class In>
void selective_scan(ScanParams<In> p, const DeviceOffsets& offsets, DeviceBuffer<float>& workspace,
                    cudaStream_t stream, ScanAlgorithm algorithm = ScanAlgorithm::Automatic,
                    dindex chunk_rows = 0) {
    p.offsets = offsets.data();
    p.nseq = offsets.sequences();
    require(p.T == offsets.tokens(), "cuda::selective_scan: offsets end at ", offsets.tokens(),
            ", T is ", p.T);
    detail::validate(p, "cuda::selective_scan");
    if (p.nseq == 0) return;
    if (algorithm == ScanAlgorithm::Automatic)
        algorithm =
            p.N <= detail::kScanMaxChunkedN ? ScanAlgorithm::Chunked : ScanAlgorithm::BlockScan;
    if (algorithm == ScanAlgorithm::BlockScan) {
        if (p.N % 4 == 0)
            detail::launch_selective_scan<In, 4>(p, stream);
        else
            detail::launch_selective_scan<In, 1>(p, stream);
        return;
    }
    require(p.N <= detail::kScanMaxChunkedN,
            "cuda::selective_scan: the chunked algorithm takes N ≤ ", detail::kScanMaxChunkedN,
            ", N is ", p.N, " (use ScanAlgorithm::BlockScan)");
    std::size_t k = detail::scan_chunk_choice(offsets, p.E);
    if (chunk_rows != 0) {
        const auto it = std::find(kScanChunkRows.begin(), kScanChunkRows.end(), chunk_rows);
        require(it != kScanChunkRows.end(), "cuda::selective_scan: chunk_rows ", chunk_rows,
                " is not one of 256, 512, 1024, 2048 (or 0: chosen by the scan)");
        k = static_cast<std::size_t>(it - kScanChunkRows.begin());
    }
    workspace.reserve(static_cast<std::size_t>(offsets.scan_chunks(k)) *
                      static_cast<std::size_t>(p.N + 1) * static_cast<std::size_t>(p.E));
    float* agg = workspace.data();
    if (p.N <= 4)
        detail::launch_chunked_scan<In, 4>(p, offsets, k, agg, stream);
    else if (p.N <= 8)
        detail::launch_chunked_scan<In, 8>(p, offsets, k, agg, stream);
    else if (p.N <= 16)
        detail::launch_chunked_scan<In, 16>(p, offsets, k, agg, stream);
    else if (p.N <= 32)
        detail::launch_chunked_scan<In, 32>(p, offsets, k, agg, stream);
    else
        detail::launch_chunked_scan<In, 64>(p, offsets, k, agg, stream);
}

/// `selective_scan` with a workspace of its own, freed before returning: waits for
/// `stream`. For repeated calls pass a workspace instead.
template <class In>
void selective_scan(const ScanParams<In>& p, const DeviceOffsets& offsets, cudaStream_t stream,
                    ScanAlgorithm algorithm = ScanAlgorithm::Automatic) {
    DeviceBuffer<float> workspace;
    selective_scan(p, offsets, workspace, stream, algorithm);
    SSM_CUDA_CHECK(cudaStreamSynchronize(stream));
}

/// Decoding (`ssm::selective_state_update`): one token for each of `p.T` sequences (row b
/// is sequence b; offsets are not used); `state` (p.T, E, N) is read and advanced.
template <class In>
void selective_state_update(const ScanParams<In>& p, float* state, cudaStream_t stream) {
    detail::validate(p, "cuda::selective_state_update");
    require(state != nullptr, "cuda::selective_state_update: state is null");
    if (p.T == 0) return;
    detail::selective_state_update_kernel<In>
        <<<detail::grid_for(p.T * p.E, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            p, p.T, state);
    SSM_CUDA_CHECK_LAUNCH("selective_state_update_kernel");
}

}  // namespace ssm::cuda
