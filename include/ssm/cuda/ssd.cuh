// ssm/cuda/ssd.cuh — the Mamba-2 scan (state space duality, SSD) on the device over packed
// sequences (ssm::ChunkedSsd), and its one-token decoding update (ssm::ssd_state_update).
//
// Per sequence, head h (scalar A_h < 0), group g = h / (H / G), with the state S_h a (P, N)
// matrix: S_h ← exp(Δ·A_h)·S_h + Δ·x Bᵀ, y = S_h C. Each sequence is cut into chunks of Q
// tokens counted from its own start, as the CPU's chunked scan does, and every chunk of
// every sequence runs side by side:
//   1. cumulative log-decays c_i = Σ_{k≤i} Δ_k·A_h per (chunk, head), in double;
//   2. each chunk's end state from zero, Xᵀ·diag(exp(c_last − c_j)·Δ_j)·B, a (P × L)·(L × N)
//      product tiled through shared memory;
//   3. the states passed along each sequence's chunks, h ← exp(c_last)·h + end, from the
//      initial state, leaving every chunk's start state (and each sequence's final state);
//   4. each chunk's output, Y = (C Bᵀ ⊙ W)·X + diag(exp(c))·C·S₀ᵀ with
//      W[i,j] = exp(c_i − c_j)·Δ_j for j ≤ i, as tiles of 32 rows × 64 head channels.
// The products run in fp32 on the CUDA cores (the CPU's numerics, compared at 1e-5), or,
// with `SsdParams::math = SsdMath::Tf32x3` on a device of compute capability 8.0 or later,
// on the tensor cores in TF32 with error compensation: each fp32 operand is split into a
// TF32 value and a TF32 remainder and three products (hi·hi + hi·lo + lo·hi) are summed in
// fp32, which keeps about fp32's precision.
#pragma once

#include <mma.h>

#include "ssm/cuda/common.cuh"

namespace ssm::cuda {

/// Where the SSD's chunk products run: fp32 on the CUDA cores, or the tensor cores in TF32
/// with error compensation (three TF32 products a step, fp32 accumulation; compute
/// capability 8.0 or later).
enum class SsdMath { Fp32, Tf32x3 };

/// Device operands of one SSD scan, as `ssm::SsdArgs` (row strides let x, B and C be column
/// slices of the conv output [x | B | C]).
struct SsdParams {
    dindex H = 0, P = 0, N = 0, G = 1;  // heads, head dim, state size, groups
    const float* x = nullptr;           // (T, H·P)
    dindex ld_x = 0;
    const float* dt = nullptr;  // (T, H) Δ after softplus and clamping
    dindex ld_dt = 0;
    const float* A = nullptr;  // (H) = −exp(A_log)
    const float* B = nullptr;  // (T, G·N)
    dindex ld_B = 0;
    const float* C = nullptr;  // (T, G·N)
    dindex ld_C = 0;
    float* y = nullptr;  // (T, H·P) output
    dindex ld_y = 0;
    const float* initial_state = nullptr;  // (nseq, H, P, N); nullptr: zeros
    float* final_state = nullptr;  // (nseq, H, P, N), written when non-null; may be initial_state
    dindex chunk = 0;              // chunk length Q (0: 64, as ssm::ChunkedSsd)
    SsdMath math = SsdMath::Fp32;  // where the chunk products run (the decoding update: fp32)
};

/// Throws `ssm::Error` naming `what` when the operands are inconsistent.
inline void validate(const SsdParams& p, const char* what) {
    require(p.H > 0 && p.P > 0 && p.N > 0 && p.G > 0 && p.H % p.G == 0, what, ": bad sizes H ",
            p.H, ", P ", p.P, ", N ", p.N, ", G ", p.G);
    require(p.x && p.dt && p.A && p.B && p.C && p.y, what, ": a required operand is null");
    require(p.ld_x >= p.H * p.P && p.ld_y >= p.H * p.P && p.ld_dt >= p.H && p.ld_B >= p.G * p.N &&
                p.ld_C >= p.G * p.N,
            what, ": a row stride is smaller than the row");
    require(p.chunk >= 0, what, ": chunk length must be >= 0, got ", p.chunk);
}

/// The chunk table and scratch of `ssd_scan`, kept between calls so a scan of the same
/// shape allocates nothing: per chunk its first row and length, per sequence its
/// first chunk; the cumulative log-decays (T·H doubles); the chunks' states (chunks·H·P·N
/// floats). The table is rebuilt and uploaded only when the batch's offsets or the chunk
/// length differ from the last call's: the layers of one forward share it.
class SsdWorkspace {
public:
    /// Builds the table for `offsets` cut into chunks of Q rows and sizes the scratch.
    void prepare(const DeviceOffsets& offsets, dindex Q, dindex H, dindex P, dindex N,
                 cudaStream_t stream) {
        require(Q > 0, "cuda::ssd_scan: chunk length must be positive, got ", Q);
        const auto o = offsets.host();
        const bool same_table = Q == table_chunk_ && std::equal(o.begin(), o.end(), table_offsets_.begin(),
                                                                table_offsets_.end());
        if (!same_table) build_table(o, Q, stream);
        cum_.reserve(static_cast<std::size_t>(std::max<dindex>(offsets.tokens() * H, 1)));
        states_.reserve(static_cast<std::size_t>(std::max<dindex>(chunks_ * H * P * N, 1)));
    }

    [[nodiscard]] dindex chunks() const noexcept { return chunks_; }
    [[nodiscard]] const dindex* chunk_t0() const noexcept { return table_.data(); }
    [[nodiscard]] const dindex* chunk_len() const noexcept { return table_.data() + chunks_; }
    [[nodiscard]] const dindex* seq_first_chunk() const noexcept {
        return table_.data() + 2 * chunks_;
    }
    [[nodiscard]] double* cum() noexcept { return cum_.data(); }
    [[nodiscard]] float* states() noexcept { return states_.data(); }

private:
    /// The table for offsets `o` in chunks of Q rows, uploaded (which waits for the stream).
    void build_table(std::span<const dindex> o, dindex Q, cudaStream_t stream) {
        table_offsets_.clear();  // describes no table until the upload has succeeded
        table_chunk_ = 0;
        const std::size_t nseq = o.size() - 1;
        std::vector<dindex> t0, len, first{0};
        for (std::size_t s = 0; s < nseq; ++s) {
            for (dindex t = o[s]; t < o[s + 1]; t += Q) {
                t0.push_back(t);
                len.push_back(std::min(Q, o[s + 1] - t));
            }
            first.push_back(static_cast<dindex>(t0.size()));
        }
        chunks_ = static_cast<dindex>(t0.size());
        std::vector<dindex> table;
        table.reserve(2 * t0.size() + first.size());
        for (const auto* part : {&t0, &len, &first}) table.insert(table.end(), part->begin(), part->end());
        table_.reserve(table.size());
        table_.upload(table, stream);
        table_offsets_.assign(o.begin(), o.end());
        table_chunk_ = Q;
    }

    DeviceBuffer<dindex> table_;
    std::vector<dindex> table_offsets_;  // what table_ was built for
    dindex table_chunk_ = 0;
    DeviceBuffer<double> cum_;
    DeviceBuffer<float> states_;
    dindex chunks_ = 0;
};

namespace detail {

inline constexpr int kSsdThreads = 256;   // block size of the chunk kernels
inline constexpr int kSsdTile = 32;       // rows of a chunk staged in shared memory at a time
inline constexpr int kSsdStateOut = 8;    // state elements per thread (chunk state kernel)
inline constexpr int kSsdRows = 32;       // output rows per block (chunk output kernel)
inline constexpr int kSsdCols = 64;       // head channels per block (chunk output kernel)
inline constexpr int kSsdOut = kSsdRows * kSsdCols / kSsdThreads;  // outputs per thread

// The kernels are templates on their block size only so that the header can be included by
// several translation units.

/// One thread per (chunk, head): c_i = Σ_{k≤i} Δ_k·A_h over the chunk, in double as the
/// CPU sums it, stored at the row's own index (t·H + h).
template <int kThreads>
__global__ void __launch_bounds__(kThreads) ssd_cumsum_kernel(const dindex* __restrict__ chunk_t0,
                                  const dindex* __restrict__ chunk_len, dindex chunks, dindex H,
                                  const float* __restrict__ dt, dindex ld_dt,
                                  const float* __restrict__ A, double* __restrict__ cum) {
    for (dindex i = global_thread(); i < chunks * H; i += grid_threads()) {
        const dindex c = i / H, h = i - c * H;
        const double a = A[h];
        double run = 0.0;
        for (dindex t = chunk_t0[c], end = t + chunk_len[c]; t < end; ++t) {
            run += static_cast<double>(dt[t * ld_dt + h]) * a;
            cum[t * H + h] = run;
        }
    }
}

/// Block (chunk, head, slice of kSsdThreads·kSsdStateOut state elements): the chunk's end
/// state from zero, end[p,n] = Σ_j x[j,p]·w_j·B[j,n], w_j = exp(c_last − c_j)·Δ_j, with
/// kSsdTile rows of x, B and w staged in shared memory at a time.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_state_kernel(SsdParams p, const dindex* __restrict__ chunk_t0,
                           const dindex* __restrict__ chunk_len, const double* __restrict__ cum,
                           float* __restrict__ states) {
    extern __shared__ float smem[];
    float* xs = smem;                  // (kSsdTile, P)
    float* bs = xs + kSsdTile * p.P;   // (kSsdTile, N)
    float* ws = bs + kSsdTile * p.N;   // (kSsdTile)
    const dindex c = blockIdx.x, h = blockIdx.y, g = h / (p.H / p.G);
    const dindex t0 = chunk_t0[c], len = chunk_len[c], PN = p.P * p.N;
    const double last = cum[(t0 + len - 1) * p.H + h];
    const dindex base = static_cast<dindex>(blockIdx.z) * kThreads * kSsdStateOut + threadIdx.x;
    float acc[kSsdStateOut];
#pragma unroll
    for (int k = 0; k < kSsdStateOut; ++k) acc[k] = 0.0f;
    for (dindex j0 = 0; j0 < len; j0 += kSsdTile) {
        const dindex m = len - j0 < kSsdTile ? len - j0 : kSsdTile;
        for (dindex i = threadIdx.x; i < m; i += blockDim.x) {
            const dindex t = t0 + j0 + i;
            ws[i] = static_cast<float>(exp(last - cum[t * p.H + h])) * p.dt[t * p.ld_dt + h];
        }
        for (dindex i = threadIdx.x; i < m * p.P; i += blockDim.x) {
            const dindex j = i / p.P, q = i - j * p.P;
            xs[i] = p.x[(t0 + j0 + j) * p.ld_x + h * p.P + q];
        }
        for (dindex i = threadIdx.x; i < m * p.N; i += blockDim.x) {
            const dindex j = i / p.N, n = i - j * p.N;
            bs[i] = p.B[(t0 + j0 + j) * p.ld_B + g * p.N + n];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kSsdStateOut; ++k) {
            const dindex o = base + static_cast<dindex>(k) * kThreads;
            if (o >= PN) break;
            const dindex q = o / p.N, n = o - q * p.N;
            float s = 0.0f;
            for (dindex j = 0; j < m; ++j) s += xs[j * p.P + q] * (bs[j * p.N + n] * ws[j]);
            acc[k] += s;
        }
        __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < kSsdStateOut; ++k) {
        const dindex o = base + static_cast<dindex>(k) * kThreads;
        if (o < PN) states[(c * p.H + h) * PN + o] = acc[k];
    }
}

/// One thread per (sequence, head, state element): walks the sequence's chunks in order,
/// replacing each chunk's end state with its start state, h ← exp(c_last)·h + end, from the
/// initial state (or zero); writes the final state. Each thread reads its element of the
/// initial state before writing the same element of the final one, so they may alias.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) ssd_state_passing_kernel(const dindex* __restrict__ chunk_t0,
                                         const dindex* __restrict__ chunk_len,
                                         const dindex* __restrict__ seq_first_chunk, dindex nseq,
                                         dindex H, dindex PN, const double* __restrict__ cum,
                                         float* __restrict__ states, const float* initial,
                                         float* final_state) {
    for (dindex i = global_thread(); i < nseq * H * PN; i += grid_threads()) {
        const dindex sh = i / PN, e = i - sh * PN, s = sh / H, h = sh - s * H;
        float S = initial ? initial[i] : 0.0f;
        for (dindex c = seq_first_chunk[s]; c < seq_first_chunk[s + 1]; ++c) {
            float* slot = states + (c * H + h) * PN + e;
            const float end = *slot;
            *slot = S;
            const dindex last = chunk_t0[c] + chunk_len[c] - 1;
            S = static_cast<float>(exp(cum[last * H + h])) * S + end;
        }
        if (final_state) final_state[i] = S;
    }
}

/// Where a block of either chunk-output kernel works: chunk c, head h (group g), rows
/// i0 … i0 + mi − 1 of the chunk (t0, len) and head channels q0 … q0 + mq − 1, from the block
/// index over (chunks, heads, row tiles × col_tiles column tiles of kSsdRows × kSsdCols).
/// i0 ≥ len: the chunk is shorter than this row tile (mi is then not meaningful).
struct SsdOutputTile {
    dindex c, h, g, q0, t0, len, i0, mi, mq;
};
__device__ __forceinline__ SsdOutputTile ssd_output_tile(const SsdParams& p, const dindex* chunk_t0,
                                                         const dindex* chunk_len, dindex col_tiles) {
    SsdOutputTile t;
    t.c = blockIdx.x;
    t.h = blockIdx.y;
    t.g = t.h / (p.H / p.G);
    const dindex row_tile = blockIdx.z / col_tiles;
    t.q0 = (blockIdx.z - row_tile * col_tiles) * kSsdCols;
    t.t0 = chunk_t0[t.c];
    t.len = chunk_len[t.c];
    t.i0 = row_tile * kSsdRows;
    t.mi = t.len - t.i0 < kSsdRows ? t.len - t.i0 : kSsdRows;
    t.mq = p.P - t.q0 < kSsdCols ? p.P - t.q0 : kSsdCols;
    return t;
}

/// Block (chunk, head, tile of kSsdRows rows × kSsdCols head channels): the tile of
///   y[i,q] = Σ_{j≤i} (C_i·B_j)·exp(c_i − c_j)·Δ_j·x[j,q] + exp(c_i)·Σ_n C[i,n]·S₀[q,n],
/// S₀ the chunk's start state. The tile's rows of C stay in shared memory; S₀ and then B, x
/// are staged kSsdTile columns or rows at a time (in the same space), and the masked
/// (kSsdRows × kSsdTile) block of C Bᵀ ⊙ W is formed in shared memory before it multiplies x.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_output_kernel(SsdParams p, const dindex* __restrict__ chunk_t0,
                            const dindex* __restrict__ chunk_len, const double* __restrict__ cum,
                            const float* __restrict__ states, dindex col_tiles) {
    // Rows of B and of the S₀ stage are padded by one float, so the lanes of a warp, which
    // read one row each, fall in different banks.
    extern __shared__ double smem_d[];
    double* cj = smem_d;                                    // (kSsdTile) c_j of the staged rows
    double* ci = cj + kSsdTile;                             // (kSsdRows) c_i of the tile's rows
    float* cs = reinterpret_cast<float*>(ci + kSsdRows);    // (kSsdRows, N) the tile's rows of C
    float* stage = cs + kSsdRows * p.N;                     // S₀ (kSsdCols, kSsdTile + 1), or B then x
    const dindex ldb = p.N + 1;
    float* bs = stage;                                      // (kSsdTile, N + 1)
    float* xs = bs + kSsdTile * ldb;                        // (kSsdTile, kSsdCols)
    float* mw = xs + kSsdTile * kSsdCols;                   // (kSsdRows, kSsdTile)
    float* dts = mw + kSsdRows * kSsdTile;                  // (kSsdTile) Δ_j
    const SsdOutputTile tile = ssd_output_tile(p, chunk_t0, chunk_len, col_tiles);
    if (tile.i0 >= tile.len) return;  // the whole block: the chunk is shorter than this row tile
    const auto [c, h, g, q0, t0, len, i0, mi, mq] = tile;
    const float* S0 = states + (c * p.H + h) * p.P * p.N;

    for (dindex i = threadIdx.x; i < mi * p.N; i += blockDim.x) {
        const dindex r = i / p.N, n = i - r * p.N;
        cs[i] = p.C[(t0 + i0 + r) * p.ld_C + g * p.N + n];
    }
    for (dindex r = threadIdx.x; r < mi; r += blockDim.x) ci[r] = cum[(t0 + i0 + r) * p.H + h];
    // Thread k-th output: row (threadIdx.x + k·kSsdThreads) / kSsdCols of the tile, column
    // (threadIdx.x % kSsdCols) — the same column for every k.
    const int col = static_cast<int>(threadIdx.x) % kSsdCols;
    const int row0 = static_cast<int>(threadIdx.x) / kSsdCols;
    static_assert(kThreads % kSsdCols == 0 && kSsdRows * kSsdCols == kThreads * kSsdOut);
    constexpr int kRowStep = kThreads / kSsdCols;
    float carried[kSsdOut], within[kSsdOut];
#pragma unroll
    for (int k = 0; k < kSsdOut; ++k) carried[k] = within[k] = 0.0f;

    // The carried state: C·S₀ᵀ, kSsdTile state columns at a time.
    for (dindex n0 = 0; n0 < p.N; n0 += kSsdTile) {
        const dindex mn = p.N - n0 < kSsdTile ? p.N - n0 : kSsdTile;
        __syncthreads();  // cs is complete; the previous tile's readers are done
        for (dindex i = threadIdx.x; i < mq * mn; i += blockDim.x) {
            const dindex q = i / mn, n = i - q * mn;
            stage[q * (kSsdTile + 1) + n] = S0[(q0 + q) * p.N + n0 + n];
        }
        __syncthreads();
        if (col < mq) {
#pragma unroll
            for (int k = 0; k < kSsdOut; ++k) {
                const int r = row0 + k * kRowStep;
                if (r >= mi) break;
                float s = 0.0f;
                for (dindex n = 0; n < mn; ++n) s += cs[r * p.N + n0 + n] * stage[col * (kSsdTile + 1) + n];
                carried[k] += s;
            }
        }
    }

    // Within the chunk: rows j ≤ i, kSsdTile at a time.
    const dindex j_end = i0 + mi;  // rows past the tile's last row do not reach it
    for (dindex j0 = 0; j0 < j_end; j0 += kSsdTile) {
        const dindex mj = j_end - j0 < kSsdTile ? j_end - j0 : kSsdTile;
        __syncthreads();  // the previous stage's readers are done
        for (dindex i = threadIdx.x; i < mj * p.N; i += blockDim.x) {
            const dindex j = i / p.N, n = i - j * p.N;
            bs[j * ldb + n] = p.B[(t0 + j0 + j) * p.ld_B + g * p.N + n];
        }
        for (dindex i = threadIdx.x; i < mj * mq; i += blockDim.x) {
            const dindex j = i / mq, q = i - j * mq;
            xs[j * kSsdCols + q] = p.x[(t0 + j0 + j) * p.ld_x + h * p.P + q0 + q];
        }
        for (dindex j = threadIdx.x; j < mj; j += blockDim.x) {
            const dindex t = t0 + j0 + j;
            cj[j] = cum[t * p.H + h];
            dts[j] = p.dt[t * p.ld_dt + h];
        }
        __syncthreads();
        for (dindex e = threadIdx.x; e < kSsdRows * kSsdTile; e += blockDim.x) {
            const dindex r = e / kSsdTile, j = e - r * kSsdTile;
            float w = 0.0f;
            if (r < mi && j < mj && j0 + j <= i0 + r) {
                float dot = 0.0f;
                for (dindex n = 0; n < p.N; ++n) dot += cs[r * p.N + n] * bs[j * ldb + n];
                w = dot * static_cast<float>(exp(ci[r] - cj[j])) * dts[j];
            }
            mw[e] = w;
        }
        __syncthreads();
        if (col < mq) {
#pragma unroll
            for (int k = 0; k < kSsdOut; ++k) {
                const int r = row0 + k * kRowStep;
                if (r >= mi) break;
                float s = 0.0f;
                for (dindex j = 0; j < mj; ++j) s += mw[r * kSsdTile + j] * xs[j * kSsdCols + col];
                within[k] += s;
            }
        }
    }
    if (col < mq) {
#pragma unroll
        for (int k = 0; k < kSsdOut; ++k) {
            const int r = row0 + k * kRowStep;
            if (r >= mi) break;
            const dindex t = t0 + i0 + r;
            const float decay = static_cast<float>(exp(ci[r]));
            p.y[t * p.ld_y + h * p.P + q0 + col] = within[k] + decay * carried[k];
        }
    }
}

/// Shared memory of ssd_chunk_output_kernel for state size N.
inline std::size_t ssd_output_shared_bytes(dindex N) {
    const dindex stage = std::max<dindex>(kSsdCols * (kSsdTile + 1), kSsdTile * (N + 1) + kSsdTile * kSsdCols +
                                                                         kSsdRows * kSsdTile + kSsdTile);
    return sizeof(double) * (kSsdTile + kSsdRows) + sizeof(float) * static_cast<std::size_t>(kSsdRows * N + stage);
}

// ---- the chunk products on the tensor cores (SsdMath::Tf32x3) --------------------------------
//
// Both kernels tile their output in 32 × 64 blocks of 8 warps, each warp one 16 × 16 WMMA
// accumulator (warp w: rows 16·(w / 4), columns 16·(w % 4)); the operands are staged in
// shared memory, zero-padded to whole fragments, with row strides that are multiples of 4
// floats and every fragment's first element 32-byte aligned, as `wmma::load_matrix_sync`
// requires. The accumulators go back through shared memory, so partial tiles and any row
// stride of y or the state are written element by element.

inline constexpr int kTcRows = kSsdRows;    // output rows of a block (ssd_output_tile)
inline constexpr int kTcCols = kSsdCols;    // output columns of a block
inline constexpr int kTcK = 32;             // rows of the inner dimension staged at a time
inline constexpr int kTcLd32 = kTcK + 4;    // row stride of a staged 32-column tile
inline constexpr int kTcLd64 = kTcCols + 4; // row stride of a staged 64-column tile

/// n rounded up to whole k-steps of 8 (a fragment's inner dimension).
__host__ __device__ constexpr dindex tc_k(dindex n) { return (n + 7) / 8 * 8; }
/// Row stride of a staged tile of n columns: tc_k(n) plus 4 (a multiple of 4 floats, and
/// rows that do not all start in the same bank).
__host__ __device__ constexpr dindex tc_ld(dindex n) { return tc_k(n) + 4; }

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
namespace wmma = nvcuda::wmma;
using TcAcc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

/// A loaded fp32 fragment into its TF32 value (`hi`) and the TF32 value of what is left (`lo`).
template <class Frag>
__device__ __forceinline__ void tc_split(Frag& hi, Frag& lo) {
#pragma unroll
    for (int i = 0; i < hi.num_elements; ++i) {
        const float v = hi.x[i];
        hi.x[i] = wmma::__float_to_tf32(v);
        lo.x[i] = wmma::__float_to_tf32(v - hi.x[i]);
    }
}

/// acc += A (16 × 8 at a, stride lda) · B (8 × 16 at b, stride ldb) in TF32 with error
/// compensation: lo·hi + hi·lo + hi·hi, the small terms first.
template <class LayoutA, class LayoutB>
__device__ __forceinline__ void tc_mma(TcAcc& acc, const float* a, unsigned lda, const float* b,
                                       unsigned ldb) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LayoutA> a_hi, a_lo;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LayoutB> b_hi, b_lo;
    wmma::load_matrix_sync(a_hi, a, lda);
    wmma::load_matrix_sync(b_hi, b, ldb);
    tc_split(a_hi, a_lo);
    tc_split(b_hi, b_lo);
    wmma::mma_sync(acc, a_lo, b_hi, acc);
    wmma::mma_sync(acc, a_hi, b_lo, acc);
    wmma::mma_sync(acc, a_hi, b_hi, acc);
}
#endif

/// Block (chunk, head, tile of 32 head channels p × 64 state columns n): the chunk's end
/// state from zero, end[p,n] = Σ_j x[j,p]·(w_j·B[j,n]), w_j = exp(c_last − c_j)·Δ_j, as
/// ssd_chunk_state_kernel, on the tensor cores: Xᵀ is read column-major from the staged
/// rows of x, and the staged rows of B carry w_j.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_state_tc_kernel(SsdParams p, const dindex* __restrict__ chunk_t0,
                              const dindex* __restrict__ chunk_len, const double* __restrict__ cum,
                              float* __restrict__ states, dindex n_tiles) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    static_assert(kThreads == 256, "8 warps: a 32 × 64 tile of 16 × 16 fragments");
    extern __shared__ __align__(128) float tc_smem[];
    float* xs = tc_smem;               // (kTcK, kTcLd32): x[j, p0 + pp]
    float* bs = xs + kTcK * kTcLd32;   // (kTcK, kTcLd64): w_j · B[j, n0 + nn]
    float* ws = bs + kTcK * kTcLd64;   // (kTcK) w_j
    float* out = tc_smem;              // (kTcRows, kTcLd64), after the products
    const dindex c = blockIdx.x, h = blockIdx.y, g = h / (p.H / p.G);
    const dindex p_tile = blockIdx.z / n_tiles, p0 = p_tile * kTcRows,
                 n0 = (blockIdx.z - p_tile * n_tiles) * kTcCols;
    const dindex mp = p.P - p0 < kTcRows ? p.P - p0 : kTcRows;
    const dindex mn = p.N - n0 < kTcCols ? p.N - n0 : kTcCols;
    const dindex t0 = chunk_t0[c], len = chunk_len[c], PN = p.P * p.N;
    const double last = cum[(t0 + len - 1) * p.H + h];
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int fr = warp / 4, fc = warp % 4;
    TcAcc acc;
    wmma::fill_fragment(acc, 0.0f);
    for (dindex j0 = 0; j0 < len; j0 += kTcK) {
        const dindex m = len - j0 < kTcK ? len - j0 : kTcK;
        __syncthreads();  // the previous stage's readers are done
        for (dindex j = threadIdx.x; j < m; j += kThreads) {
            const dindex t = t0 + j0 + j;
            ws[j] = static_cast<float>(exp(last - cum[t * p.H + h])) * p.dt[t * p.ld_dt + h];
        }
        for (dindex i = threadIdx.x; i < kTcK * kTcRows; i += kThreads) {
            const dindex j = i / kTcRows, pp = i - j * kTcRows;
            xs[j * kTcLd32 + pp] =
                j < m && pp < mp ? p.x[(t0 + j0 + j) * p.ld_x + h * p.P + p0 + pp] : 0.0f;
        }
        __syncthreads();  // ws is complete
        for (dindex i = threadIdx.x; i < kTcK * kTcCols; i += kThreads) {
            const dindex j = i / kTcCols, nn = i - j * kTcCols;
            bs[j * kTcLd64 + nn] =
                j < m && nn < mn ? p.B[(t0 + j0 + j) * p.ld_B + g * p.N + n0 + nn] * ws[j] : 0.0f;
        }
        __syncthreads();
        for (dindex k = 0; k < m; k += 8)
            tc_mma<wmma::col_major, wmma::row_major>(acc, xs + k * kTcLd32 + 16 * fr, kTcLd32,
                                                     bs + k * kTcLd64 + 16 * fc, kTcLd64);
    }
    __syncthreads();  // out aliases the stages
    wmma::store_matrix_sync(out + 16 * fr * kTcLd64 + 16 * fc, acc, kTcLd64, wmma::mem_row_major);
    __syncthreads();
    for (dindex i = threadIdx.x; i < kTcRows * kTcCols; i += kThreads) {
        const dindex pp = i / kTcCols, nn = i - pp * kTcCols;
        if (pp < mp && nn < mn)
            states[(c * p.H + h) * PN + (p0 + pp) * p.N + n0 + nn] = out[pp * kTcLd64 + nn];
    }
#else
    __trap();  // never launched: ssd_scan refuses Tf32x3 below compute capability 8.0
#endif
}

/// Shared memory of ssd_chunk_state_tc_kernel: fixed, and under the 48 KB every device
/// grants without opting in.
inline constexpr std::size_t kSsdStateTcSharedBytes =
    sizeof(float) * static_cast<std::size_t>(std::max(kTcK * (kTcLd32 + kTcLd64) + kTcK, kTcRows * kTcLd64));
static_assert(kSsdStateTcSharedBytes <= 48 * 1024);

/// Block (chunk, head, tile of 32 rows × 64 head channels): the tile of
///   y[i,q] = Σ_{j≤i} (C_i·B_j)·exp(c_i − c_j)·Δ_j·x[j,q] + exp(c_i)·Σ_n C[i,n]·S₀[q,n],
/// as ssd_chunk_output_kernel, every product on the tensor cores: C·S₀ᵀ, 32 state columns
/// at a time; then per 32 rows j of the chunk, C·Bᵀ (four warps, one 16 × 16 block each),
/// masked and weighted in shared memory, times x. The carried and the within-chunk parts
/// keep separate accumulators and meet as the CPU adds them: within + exp(c_i)·carried.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_output_tc_kernel(SsdParams p, const dindex* __restrict__ chunk_t0,
                               const dindex* __restrict__ chunk_len, const double* __restrict__ cum,
                               const float* __restrict__ states, dindex col_tiles) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    static_assert(kThreads == 256, "8 warps: a 32 × 64 tile of 16 × 16 fragments");
    extern __shared__ __align__(128) double tc_smem_d[];
    double* cj = tc_smem_d;                                  // (kTcK) c_j of the staged rows
    double* ci = cj + kTcK;                                  // (kTcRows) c_i of the tile's rows
    const dindex ldn = tc_ld(p.N);
    float* cs = reinterpret_cast<float*>(ci + kTcRows);      // (kTcRows, ldn) the tile's rows of C
    float* region = cs + kTcRows * ldn;
    float* s0 = region;                                      // (kTcCols, kTcLd32): S₀[q0 + q, n0 + nn]
    float* bs = region;                                      // (kTcK, ldn): B[j0 + j, :]
    float* xs = bs + kTcK * ldn;                             // (kTcK, kTcLd64): x[j0 + j, q0 + q]
    float* mw = xs + kTcK * kTcLd64;                         // (kTcRows, kTcLd32): (C Bᵀ ⊙ W) block
    float* dts = mw + kTcRows * kTcLd32;                     // (kTcK) Δ_j
    float* o_carried = region;                               // (kTcRows, kTcLd64), at the end
    float* o_within = region + kTcRows * kTcLd64;            // (kTcRows, kTcLd64), at the end
    const SsdOutputTile tile = ssd_output_tile(p, chunk_t0, chunk_len, col_tiles);
    if (tile.i0 >= tile.len) return;  // the whole block: the chunk is shorter than this row tile
    const auto [c, h, g, q0, t0, len, i0, mi, mq] = tile;
    const dindex kn = tc_k(p.N);  // the state dimension in whole k-steps
    const float* S0 = states + (c * p.H + h) * p.P * p.N;
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int fr = warp / 4, fc = warp % 4;

    for (dindex i = threadIdx.x; i < kTcRows * ldn; i += kThreads) {
        const dindex r = i / ldn, n = i - r * ldn;
        cs[i] = r < mi && n < p.N ? p.C[(t0 + i0 + r) * p.ld_C + g * p.N + n] : 0.0f;
    }
    for (dindex r = threadIdx.x; r < mi; r += kThreads) ci[r] = cum[(t0 + i0 + r) * p.H + h];

    // The carried state: C·S₀ᵀ, kTcK state columns at a time.
    TcAcc carried, within;
    wmma::fill_fragment(carried, 0.0f);
    wmma::fill_fragment(within, 0.0f);
    for (dindex n0 = 0; n0 < kn; n0 += kTcK) {
        const dindex mn = kn - n0 < kTcK ? kn - n0 : kTcK;  // a multiple of 8
        __syncthreads();  // cs is complete; the previous stage's readers are done
        for (dindex i = threadIdx.x; i < kTcCols * kTcK; i += kThreads) {
            const dindex q = i / kTcK, nn = i - q * kTcK;
            s0[q * kTcLd32 + nn] =
                q < mq && n0 + nn < p.N ? S0[(q0 + q) * p.N + n0 + nn] : 0.0f;
        }
        __syncthreads();
        for (dindex k = 0; k < mn; k += 8)
            tc_mma<wmma::row_major, wmma::col_major>(carried, cs + 16 * fr * ldn + n0 + k, ldn,
                                                     s0 + 16 * fc * kTcLd32 + k, kTcLd32);
    }

    // Within the chunk: rows j ≤ i, kTcK at a time.
    const dindex j_end = i0 + mi;  // rows past the tile's last row do not reach it
    for (dindex j0 = 0; j0 < j_end; j0 += kTcK) {
        const dindex mj = j_end - j0 < kTcK ? j_end - j0 : kTcK;
        __syncthreads();  // the previous stage's readers are done
        for (dindex i = threadIdx.x; i < kTcK * ldn; i += kThreads) {
            const dindex j = i / ldn, n = i - j * ldn;
            bs[i] = j < mj && n < p.N ? p.B[(t0 + j0 + j) * p.ld_B + g * p.N + n] : 0.0f;
        }
        for (dindex i = threadIdx.x; i < kTcK * kTcCols; i += kThreads) {
            const dindex j = i / kTcCols, q = i - j * kTcCols;
            xs[j * kTcLd64 + q] = j < mj && q < mq ? p.x[(t0 + j0 + j) * p.ld_x + h * p.P + q0 + q] : 0.0f;
        }
        for (dindex j = threadIdx.x; j < mj; j += kThreads) {
            const dindex t = t0 + j0 + j;
            cj[j] = cum[t * p.H + h];
            dts[j] = p.dt[t * p.ld_dt + h];
        }
        __syncthreads();
        if (warp < 4) {  // C·Bᵀ, a 32 × 32 block: warp w its 16 × 16 part (w / 2, w % 2)
            TcAcc cb;
            wmma::fill_fragment(cb, 0.0f);
            const int br = warp / 2, bc = warp % 2;
            for (dindex k = 0; k < kn; k += 8)
                tc_mma<wmma::row_major, wmma::col_major>(cb, cs + 16 * br * ldn + k, ldn,
                                                         bs + 16 * bc * ldn + k, ldn);
            wmma::store_matrix_sync(mw + 16 * br * kTcLd32 + 16 * bc, cb, kTcLd32, wmma::mem_row_major);
        }
        __syncthreads();
        for (dindex e = threadIdx.x; e < kTcRows * kTcK; e += kThreads) {
            const dindex r = e / kTcK, j = e - r * kTcK;
            float& w = mw[r * kTcLd32 + j];
            w = r < mi && j < mj && j0 + j <= i0 + r
                    ? w * static_cast<float>(exp(ci[r] - cj[j])) * dts[j]
                    : 0.0f;
        }
        __syncthreads();
        for (dindex k = 0; k < mj; k += 8)
            tc_mma<wmma::row_major, wmma::row_major>(within, mw + 16 * fr * kTcLd32 + k, kTcLd32,
                                                     xs + k * kTcLd64 + 16 * fc, kTcLd64);
    }
    __syncthreads();  // the outputs alias the stages
    wmma::store_matrix_sync(o_carried + 16 * fr * kTcLd64 + 16 * fc, carried, kTcLd64, wmma::mem_row_major);
    wmma::store_matrix_sync(o_within + 16 * fr * kTcLd64 + 16 * fc, within, kTcLd64, wmma::mem_row_major);
    __syncthreads();
    for (dindex i = threadIdx.x; i < kTcRows * kTcCols; i += kThreads) {
        const dindex r = i / kTcCols, q = i - r * kTcCols;
        if (r < mi && q < mq) {
            const float decay = static_cast<float>(exp(ci[r]));
            p.y[(t0 + i0 + r) * p.ld_y + h * p.P + q0 + q] =
                o_within[r * kTcLd64 + q] + decay * o_carried[r * kTcLd64 + q];
        }
    }
#else
    __trap();  // never launched: ssd_scan refuses Tf32x3 below compute capability 8.0
#endif
}

/// Shared memory of ssd_chunk_output_tc_kernel for state size N.
inline std::size_t ssd_output_tc_shared_bytes(dindex N) {
    const dindex ldn = tc_ld(N);
    const dindex region = std::max<dindex>({kTcCols * kTcLd32,
                                            kTcK * ldn + kTcK * kTcLd64 + kTcRows * kTcLd32 + kTcK,
                                            2 * kTcRows * kTcLd64});
    return sizeof(double) * (kTcK + kTcRows) +
           sizeof(float) * static_cast<std::size_t>(kTcRows * ldn + region);
}

/// One warp per (b, h, q): S[q,:] ← exp(Δ·A_h)·S[q,:] + Δ·x[q]·B, y[q] = S[q,:]·C, the
/// lanes over the state, summed by shuffles.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) ssd_state_update_kernel(SsdParams p, dindex batch, float* __restrict__ state) {
    const dindex warps = batch * p.H * p.P;
    const int lane = static_cast<int>(threadIdx.x) & 31;
    for (dindex w = global_thread() / 32; w < warps; w += grid_threads() / 32) {
        const dindex b = w / (p.H * p.P), hq = w - b * p.H * p.P, h = hq / p.P, q = hq - h * p.P;
        const dindex g = h / (p.H / p.G);
        const float dt = p.dt[b * p.ld_dt + h];
        const float decay = expf(dt * p.A[h]);
        const float dx = dt * p.x[b * p.ld_x + h * p.P + q];
        float* row = state + ((b * p.H + h) * p.P + q) * p.N;
        const float* B = p.B + b * p.ld_B + g * p.N;
        const float* C = p.C + b * p.ld_C + g * p.N;
        float acc = 0.0f;
        for (dindex n = lane; n < p.N; n += 32) {
            const float v = decay * row[n] + dx * B[n];
            row[n] = v;
            acc += v * C[n];
        }
        acc = warp_sum(acc);
        if (lane == 0) p.y[b * p.ld_y + h * p.P + q] = acc;
    }
}

}  // namespace detail

/// The chunked SSD over the packed sequences of `offsets` (`ssm::ChunkedSsd` with
/// Q = p.chunk, or 64): y, and each sequence's final state when `p.final_state` is set.
/// `p.math` picks where the chunk products run (`SsdMath`; Tf32x3 is refused on a device
/// without TF32 tensor cores).
/// `ws` keeps the chunk table and scratch between calls. Queued on `stream`. The chunk table
/// is built on the host and uploaded, which waits for the stream, only when the offsets or
/// the chunk length changed since the workspace's last call (so the layers of a forward
/// after the first queue without waiting; one workspace serves one stream).
inline void ssd_scan(const SsdParams& p, const DeviceOffsets& offsets, SsdWorkspace& ws,
                     cudaStream_t stream) {
    validate(p, "cuda::ssd_scan");
    if (offsets.sequences() == 0) return;  // offsets describing no batch (never assigned)
    const dindex Q = p.chunk > 0 ? p.chunk : 64;
    const dindex nseq = offsets.sequences(), PN = p.P * p.N;
    const bool tc = p.math == SsdMath::Tf32x3;
    if (tc) {
        const int major = detail::device_attribute(cudaDevAttrComputeCapabilityMajor);
        require(major >= 8,
                "cuda::ssd_scan: SsdMath::Tf32x3 needs tensor cores with TF32 (compute capability "
                "8.0 or later); this device has ",
                major, ".", detail::device_attribute(cudaDevAttrComputeCapabilityMinor));
    }
    ws.prepare(offsets, Q, p.H, p.P, p.N, stream);
    const dindex chunks = ws.chunks();
    if (chunks > 0) {
        require(chunks <= INT_MAX && p.H <= 65535, "cuda::ssd_scan: ", chunks, " chunks of ", p.H,
                " heads exceed the grid");
        detail::ssd_cumsum_kernel<detail::kBlockThreads><<<detail::grid_for(chunks * p.H, detail::kBlockThreads),
                                    detail::kBlockThreads, 0, stream>>>(
            ws.chunk_t0(), ws.chunk_len(), chunks, p.H, p.dt, p.ld_dt, p.A, ws.cum());
        SSM_CUDA_CHECK_LAUNCH("ssd_cumsum_kernel");
    }
    if (chunks > 0 && tc) {
        const dindex p_tiles = (p.P + detail::kTcRows - 1) / detail::kTcRows;
        const dindex n_tiles = (p.N + detail::kTcCols - 1) / detail::kTcCols;
        require(p_tiles * n_tiles <= 65535, "cuda::ssd_scan: a (", p.P, ", ", p.N, ") state is too large");
        detail::ssd_chunk_state_tc_kernel<detail::kSsdThreads>
            <<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(p.H),
                    static_cast<unsigned>(p_tiles * n_tiles)),
               detail::kSsdThreads, detail::kSsdStateTcSharedBytes, stream>>>(
                p, ws.chunk_t0(), ws.chunk_len(), ws.cum(), ws.states(), n_tiles);
        SSM_CUDA_CHECK_LAUNCH("ssd_chunk_state_tc_kernel");
    } else if (chunks > 0) {
        const std::size_t state_bytes =
            sizeof(float) * static_cast<std::size_t>(detail::kSsdTile * (p.P + p.N + 1));
        const int limit = detail::allow_shared_memory(
            reinterpret_cast<const void*>(&detail::ssd_chunk_state_kernel<detail::kSsdThreads>), state_bytes);
        require(state_bytes <= static_cast<std::size_t>(limit), "cuda::ssd_scan: head dim ", p.P,
                " and state size ", p.N, " need ", state_bytes, " bytes of shared memory, the device has ",
                limit);
        const dindex slices = (PN + detail::kSsdThreads * detail::kSsdStateOut - 1) /
                              (detail::kSsdThreads * detail::kSsdStateOut);
        require(slices <= 65535, "cuda::ssd_scan: a (", p.P, ", ", p.N, ") state is too large");
        detail::ssd_chunk_state_kernel<detail::kSsdThreads><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(p.H),
                                              static_cast<unsigned>(slices)),
                                         detail::kSsdThreads, state_bytes, stream>>>(
            p, ws.chunk_t0(), ws.chunk_len(), ws.cum(), ws.states());
        SSM_CUDA_CHECK_LAUNCH("ssd_chunk_state_kernel");
    }
    if (nseq > 0 && (chunks > 0 || p.final_state)) {
        detail::ssd_state_passing_kernel<detail::kBlockThreads><<<detail::grid_for(nseq * p.H * PN, detail::kBlockThreads),
                                           detail::kBlockThreads, 0, stream>>>(
            ws.chunk_t0(), ws.chunk_len(), ws.seq_first_chunk(), nseq, p.H, PN, ws.cum(),
            ws.states(), p.initial_state, p.final_state);
        SSM_CUDA_CHECK_LAUNCH("ssd_state_passing_kernel");
    }
    if (chunks > 0) {
        // Both output kernels tile kSsdRows × kSsdCols (ssd_output_tile) and take the same operands.
        const auto kernel = tc ? &detail::ssd_chunk_output_tc_kernel<detail::kSsdThreads>
                               : &detail::ssd_chunk_output_kernel<detail::kSsdThreads>;
        const std::size_t out_bytes =
            tc ? detail::ssd_output_tc_shared_bytes(p.N) : detail::ssd_output_shared_bytes(p.N);
        const int limit = detail::allow_shared_memory(reinterpret_cast<const void*>(kernel), out_bytes);
        require(out_bytes <= static_cast<std::size_t>(limit), "cuda::ssd_scan: state size ", p.N,
                " needs ", out_bytes, " bytes of shared memory", tc ? " on the tensor-core path" : "",
                ", the device has ", limit);
        const dindex col_tiles = (p.P + detail::kSsdCols - 1) / detail::kSsdCols;
        const dindex row_tiles = (Q + detail::kSsdRows - 1) / detail::kSsdRows;
        require(col_tiles * row_tiles <= 65535, "cuda::ssd_scan: chunk length ", Q, " and head dim ",
                p.P, " exceed the grid");
        kernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(p.H),
                      static_cast<unsigned>(col_tiles * row_tiles)),
                 detail::kSsdThreads, out_bytes, stream>>>(p, ws.chunk_t0(), ws.chunk_len(), ws.cum(),
                                                           ws.states(), col_tiles);
        SSM_CUDA_CHECK_LAUNCH("ssd_chunk_output_kernel (fp32 or tensor cores)");
    }
}

/// Decoding (`ssm::ssd_state_update`): one token for each of `batch` sequences; `state`
/// (batch, H, P, N) advances in place and y receives S·C.
inline void ssd_state_update(const SsdParams& p, dindex batch, float* state, cudaStream_t stream) {
    validate(p, "cuda::ssd_state_update");
    require(batch >= 0 && state, "cuda::ssd_state_update: no state, or a negative batch");
    if (batch == 0) return;
    detail::ssd_state_update_kernel<detail::kBlockThreads><<<detail::grid_for(batch * p.H * p.P * 32, detail::kBlockThreads),
                                      detail::kBlockThreads, 0, stream>>>(p, batch, state);
    SSM_CUDA_CHECK_LAUNCH("ssd_state_update_kernel");
}

}  // namespace ssm::cuda
