// ssm/cuda/kernels.cuh — the Mamba-1 kernels on the device, each the counterpart of a CPU
// layer and checked against it (tests/cuda/test_cuda_ops.cu):
//
//   embedding              ssm::Embedding::forward
//   add_norm               residual += delta, then ssm::RMSNorm / ssm::LayerNorm::forward
//   causal_conv1d          ssm::CausalConv1d::forward (packed sequences, carried state)
//   causal_conv1d_step     ssm::CausalConv1d::step
//   selective_scan         ssm::SequentialScan / ParallelScan (+ softplus(Δ + bias))
//   selective_state_update ssm::selective_state_update
//   mamba_decode_step      ssm::MambaMixer::step between in_proj and out_proj (conv step,
//                          x_proj, dt_proj + softplus, state update), fused in two kernels
//   argmax_rows            greedy sampling (Eigen's maxCoeff: the first largest)
//   gather_last_rows       the last token of every packed sequence
//   convert, convert_rows  fp32 ↔ bf16 (the bf16 operand of a bf16 GEMM)
//
// Layouts are the CPU's: activations row-major (tokens, features) with a row stride so an
// operand can be a column slice of a wider matrix (xz = [x | z], x_proj's [dt | B | C]);
// conv state (nseq, K−1, E) oldest first; SSM state (nseq, E, N); A (E, N) = −exp(A_log).
// Arithmetic is fp32 throughout; the scan's activations and the decoding step's x_proj and
// dt_proj weights may be bf16 in memory.
//
// Every function takes device pointers, checks its sizes on the host, queues its kernel on
// `stream` and checks the launch. Packed-sequence offsets live on the device
// (`DeviceOffsets`, validated when made).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/cuda/buffer.cuh"
#include "ssm/cuda/error.cuh"
#include "ssm/scan/scan_operator.hpp"

namespace ssm::cuda {

/// Device-side index type: 64-bit (the same type as `ssm::index`), so T · vocab and
/// nseq · E · N never overflow.
using dindex = std::ptrdiff_t;

/// The chunk lengths, in rows, the chunked selective scan (`ScanAlgorithm::Chunked`) picks
/// from: every sequence is cut into chunks of one of these lengths (its last chunk shorter),
/// and all chunks are scanned side by side. Longer chunks mean less work (a sequence in one
/// chunk is scanned in a single pass), shorter ones more parallel threads; `selective_scan`
/// takes the longest that still fills the device.
inline constexpr std::array<dindex, 4> kScanChunkRows = {256, 512, 1024, 2048};

/// Sequence boundaries of a packed batch on the device: nseq + 1 entries
/// 0 = o₀ ≤ o₁ ≤ … ≤ o_nseq = T, checked on the host before upload. Beside them, for the
/// chunked scan, the running count of each sequence's chunks for every length in
/// `kScanChunkRows`.
class DeviceOffsets {
public:
    DeviceOffsets() = default;
    explicit DeviceOffsets(std::span<const dindex> offsets) { assign(offsets); }

    /// Validates and uploads (reusing the device buffer when it is large enough).
    void assign(std::span<const dindex> offsets, cudaStream_t stream = nullptr) {
        require(offsets.size() >= 2, "cuda offsets: need at least 2 entries, got ", offsets.size());
        require(offsets.front() == 0, "cuda offsets: must start at 0, got ", offsets.front());
        for (std::size_t i = 1; i < offsets.size(); ++i)
            require(offsets[i] >= offsets[i - 1], "cuda offsets: decrease at entry ", i, " (",
                    offsets[i - 1], " then ", offsets[i], ")");
        require(offsets.size() - 1 <= static_cast<std::size_t>(INT_MAX),
                "cuda offsets: too many sequences");
        // One upload: the offsets, then for each chunk length the running chunk counts.
        const std::size_t n = offsets.size();
        std::vector<dindex> all(n * (1 + kScanChunkRows.size()));
        std::copy(offsets.begin(), offsets.end(), all.begin());
        std::array<dindex, kScanChunkRows.size()> totals{};
        for (std::size_t k = 0; k < kScanChunkRows.size(); ++k) {
            dindex* chunks = all.data() + n * (1 + k);
            const dindex rows = kScanChunkRows[k];
            chunks[0] = 0;
            for (std::size_t i = 1; i < n; ++i)
                chunks[i] = chunks[i - 1] + (offsets[i] - offsets[i - 1] + rows - 1) / rows;
            totals[k] = chunks[n - 1];
        }
        // Until the upload has succeeded this describes no batch (a scan given it does
        // nothing), never the previous batch over a buffer that reserve() may have freed.
        host_.clear();
        nseq_ = 0;
        tokens_ = 0;
        scan_chunks_ = {};
        buffer_.reserve(all.size());
        buffer_.upload(all, stream);
        host_.assign(offsets.begin(), offsets.end());
        nseq_ = static_cast<int>(n - 1);
        tokens_ = offsets.back();
        scan_chunks_ = totals;
    }

    /// True when no sequence is empty (every sequence has a last token).
    [[nodiscard]] bool all_nonempty() const noexcept {
        for (std::size_t i = 1; i < host_.size(); ++i)
            if (host_[i] == host_[i - 1]) return false;
        return true;
    }

    [[nodiscard]] const dindex* data() const noexcept { return buffer_.data(); }
    [[nodiscard]] std::span<const dindex> host() const noexcept { return host_; }
    [[nodiscard]] int sequences() const noexcept { return nseq_; }
    [[nodiscard]] dindex tokens() const noexcept { return tokens_; }
    /// On the device, nseq + 1 entries: how many chunks of `kScanChunkRows[k]` rows the
    /// sequences before each one hold (the last entry is their total, `scan_chunks(k)`).
    [[nodiscard]] const dindex* scan_chunk_offsets(std::size_t k) const noexcept {
        return buffer_.data() +
               (static_cast<std::ptrdiff_t>(nseq_) + 1) * static_cast<std::ptrdiff_t>(1 + k);
    }
    [[nodiscard]] dindex scan_chunks(std::size_t k) const noexcept { return scan_chunks_[k]; }

private:
    DeviceBuffer<dindex>
        buffer_;                // [offsets | chunk offsets for each kScanChunkRows], nseq + 1 each
    std::vector<dindex> host_;  // the offsets
    int nseq_ = 0;
    dindex tokens_ = 0;
    std::array<dindex, kScanChunkRows.size()> scan_chunks_{};
};

namespace detail {

/// `attribute` of the current device, queried once per (device, attribute): callers ask
/// for every layer of every step, and the answer does not change.
inline int device_attribute(cudaDeviceAttr attribute) {
    static std::mutex mutex;
    static std::map<std::pair<int, int>, int> values;  // (device, attribute) -> value
    int device = 0;
    SSM_CUDA_CHECK(cudaGetDevice(&device));
    const std::lock_guard lock(mutex);
    const auto key = std::make_pair(device, static_cast<int>(attribute));
    auto it = values.find(key);
    if (it == values.end()) {
        int value = 0;
        SSM_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
        it = values.emplace(key, value).first;
    }
    return it->second;
}

/// Lets `kernel`, which has `static_bytes` of static shared memory, use `bytes` of dynamic
/// shared memory on the current device, opting in past the default 48 KB; returns the
/// device's opt-in limit per block. The device query and `cudaFuncSetAttribute` run once
/// per (kernel, device) and size: a decoding step calls this for every layer, and the
/// answer does not change. A request past the limit sets nothing: the caller's check
/// reports it. (After `cudaDeviceReset`, which clears function attributes, the cache would
/// be stale; the library never resets a device.)
inline int allow_shared_memory(const void* kernel, std::size_t bytes,
                               std::size_t static_bytes = 0) {
    struct Key {
        const void* kernel;
        int device;
        bool operator<(const Key& o) const {
            return kernel != o.kernel ? kernel < o.kernel : device < o.device;
        }
    };
    static std::mutex mutex;
    static std::map<Key, std::size_t> granted;  // bytes already allowed
    const int limit = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
    if (bytes + static_bytes > static_cast<std::size_t>(limit)) return limit;
    int device = 0;
    SSM_CUDA_CHECK(cudaGetDevice(&device));
    const std::lock_guard lock(mutex);
    std::size_t& done = granted[Key{kernel, device}];
    if (bytes > done) {
        SSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
        done = bytes;
    }
    return limit;
}

__device__ __forceinline__ float to_float(float v) {
    return v;
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

template <class T>
__device__ __forceinline__ T from_float(float v) {
    if constexpr (std::is_same_v<T, float>)
        return v;
    else
        return __float2bfloat16_rn(v);
}

/// softplus as the CPU and PyTorch compute it: x > 20 ? x : log1p(exp(x)).
__device__ __forceinline__ float softplus(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}

/// x · sigmoid(x), in the CPU's form x / (1 + exp(−x)).
__device__ __forceinline__ float silu(float x) {
    return x / (1.0f + expf(-x));
}

/// The sequence s holding packed row t: the largest s with offsets[s] ≤ t (so empty
/// sequences, whose start equals the next one's, are skipped). Needs 0 ≤ t < offsets[nseq].
__device__ __forceinline__ int find_sequence(const dindex* __restrict__ offsets, int nseq,
                                             dindex t) {
    int lo = 0, hi = nseq - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (offsets[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/// Grid size for a grid-stride loop over `work` items.
inline unsigned grid_for(dindex work, int threads) {
    const dindex blocks = (work + threads - 1) / threads;
    constexpr dindex kMaxBlocks = 65536LL * 8;  // enough to fill any device; the loop does the rest
    return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

__device__ __forceinline__ dindex global_thread() {
    return static_cast<dindex>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ dindex grid_threads() {
    return static_cast<dindex>(gridDim.x) * blockDim.x;
}

// ---- embedding ---------------------------------------------------------------------------

template <class T>
__global__ void embedding_kernel(const T* __restrict__ table, dindex vocab, dindex dim,
                                 const std::int32_t* __restrict__ ids, dindex rows,
                                 float* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < rows * dim; i += grid_threads()) {
        const dindex r = i / dim, c = i - r * dim;
        const std::int32_t id = ids[r];
        // Ids are checked on the host; an id that slipped through gives NaN, not a bad read.
        out[r * ld_out + c] =
            (id >= 0 && id < vocab) ? to_float(table[id * dim + c]) : __int_as_float(0x7fffffff);
    }
}

// ---- residual add + norm -------------------------------------------------------------------

/// One block per row: residual += delta (when given), then out = Norm(residual).
/// RMSNorm: x · (1/sqrt(mean(x²) + eps)) · w. LayerNorm: (x − mean) · (1/sqrt(var + eps)) · w + b.
template <int kThreads, bool kLayerNorm>
__global__ void __launch_bounds__(kThreads)
    add_norm_kernel(float* __restrict__ residual, dindex ld_res, const float* __restrict__ delta,
                    dindex ld_delta, const float* __restrict__ weight,
                    const float* __restrict__ bias, dindex dim, float eps, float* out,
                    dindex ld_out) {
    using Reduce = cub::BlockReduce<float, kThreads>;
    __shared__ typename Reduce::TempStorage reduce_storage;
    __shared__ float s_mean, s_scale;
    const dindex row = blockIdx.x;
    float* r = residual + row * ld_res;
    const float n = static_cast<float>(dim);

    float sum = 0.0f;
    for (dindex c = threadIdx.x; c < dim; c += kThreads) {
        float v = r[c];
        if (delta) {
            v += delta[row * ld_delta + c];
            r[c] = v;
        }
        sum += kLayerNorm ? v : v * v;
    }
    sum = Reduce(reduce_storage).Sum(sum);  // valid in thread 0
    float mean = 0.0f;
    if constexpr (kLayerNorm) {
        if (threadIdx.x == 0) s_mean = sum / n;
        __syncthreads();
        mean = s_mean;
        float sq = 0.0f;
        for (dindex c = threadIdx.x; c < dim; c += kThreads) {
            const float d = r[c] - mean;
            sq += d * d;
        }
        sq = Reduce(reduce_storage)
                 .Sum(sq);  // storage reuse is safe: the barrier above separates the two
        if (threadIdx.x == 0) s_scale = 1.0f / sqrtf(sq / n + eps);
    } else {
        if (threadIdx.x == 0) s_scale = 1.0f / sqrtf(sum / n + eps);
    }
    __syncthreads();
    const float scale = s_scale;
    // Each thread reads back only the columns it wrote, so `out` may alias `residual`.
    for (dindex c = threadIdx.x; c < dim; c += kThreads) {
        if constexpr (kLayerNorm) {
            float v = ((r[c] - mean) * scale) * weight[c];
            if (bias) v += bias[c];
            out[row * ld_out + c] = v;
        } else {
            out[row * ld_out + c] = (r[c] * scale) * weight[c];
        }
    }
}

// ---- causal conv1d ---------------------------------------------------------------------------

/// One thread per (t, e): out[t,e] = act(b[e] + Σ_k w[k,e] · x[t−(K−1)+k, e]) with the
/// inputs before the sequence's start taken from `state_in` or zero.
template <class T>
__global__ void causal_conv1d_kernel(const T* __restrict__ x, dindex ld_x, dindex rows, dindex E,
                                     int K, const float* __restrict__ taps,
                                     const float* __restrict__ bias,
                                     const dindex* __restrict__ offsets, int nseq,
                                     const float* __restrict__ state_in, bool silu_out,
                                     float* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < rows * E; i += grid_threads()) {
        const dindex t = i / E, e = i - t * E;
        const int s = find_sequence(offsets, nseq, t);
        const dindex start = offsets[s];
        float acc = bias ? bias[e] : 0.0f;
        for (int k = 0; k < K; ++k) {
            const dindex src = t - (K - 1) + k;
            float v;
            if (src >= start)
                v = to_float(x[src * ld_x + e]);
            else if (state_in)  // slot K−1 + (src − start) ∈ [0, K−1) of this sequence's state
                v = state_in[(static_cast<dindex>(s) * (K - 1) + (K - 1) + (src - start)) * E + e];
            else
                continue;
            acc += taps[static_cast<dindex>(k) * E + e] * v;
        }
        out[t * ld_out + e] = silu_out ? silu(acc) : acc;
    }
}

/// One thread per (sequence, e): the last K−1 inputs of the sequence, oldest first,
/// reaching back into `state_in` (or zeros) for a sequence shorter than K−1. Slot j reads
/// state slot j + len ≥ j, and each thread walks j upwards, so state_out may alias state_in.
template <class T>
__global__ void conv_final_state_kernel(const T* __restrict__ x, dindex ld_x, dindex E, int K,
                                        const dindex* __restrict__ offsets, int nseq,
                                        const float* state_in, float* state_out) {
    for (dindex i = global_thread(); i < nseq * E; i += grid_threads()) {
        const dindex s = i / E, e = i - s * E;
        const dindex start = offsets[s], end = offsets[s + 1];
        for (int j = 0; j < K - 1; ++j) {
            const dindex src = end - (K - 1) + j;
            float v = 0.0f;
            if (src >= start)
                v = to_float(x[src * ld_x + e]);
            else if (state_in)
                v = state_in[(s * (K - 1) + (K - 1) + (src - start)) * E + e];
            state_out[(s * (K - 1) + j) * E + e] = v;
        }
    }
}

/// One thread per (b, e): dot the window [state (K−1 oldest first), x] with the taps, then
/// shift x into the state.
template <class T>
__global__ void causal_conv1d_step_kernel(const T* __restrict__ x, dindex ld_x, dindex batch,
                                          dindex E, int K, const float* __restrict__ taps,
                                          const float* __restrict__ bias, float* __restrict__ state,
                                          bool silu_out, float* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < batch * E; i += grid_threads()) {
        const dindex b = i / E, e = i - b * E;
        float* st = state + b * (K - 1) * E;
        const float xv = to_float(x[b * ld_x + e]);
        float acc = bias ? bias[e] : 0.0f;
        for (int k = 0; k < K - 1; ++k) acc += taps[static_cast<dindex>(k) * E + e] * st[k * E + e];
        acc += taps[static_cast<dindex>(K - 1) * E + e] * xv;
        for (int k = 0; k + 1 < K - 1; ++k) st[k * E + e] = st[(k + 1) * E + e];
        if (K > 1) st[static_cast<dindex>(K - 2) * E + e] = xv;
        out[b * ld_out + e] = silu_out ? silu(acc) : acc;
    }
}

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

/// The operands of one decoding step of a Mamba-1 mixer between its two big projections
/// (`ssm::MambaMixer::step` after in_proj and before out_proj), for `batch` sequences, one
/// token each: the conv window update, x_proj, dt_proj + softplus and the selective state
/// update. The two small projections' weights are fp32 or bf16 (`W`); activations, the
/// states and all arithmetic are fp32. Row b of every activation is sequence b.
template <class W = float>
struct MambaStepParams {
    dindex batch = 0, E = 0;
    int N = 0, K = 0, R = 0;    // state size, conv width, dt rank
    const float* xz = nullptr;  // (batch, 2E) in_proj output [x | z]
    dindex ld_xz = 0;
    const float* conv_taps = nullptr;  // (K, E): tap k of channel e at k·E + e
    const float* conv_bias = nullptr;  // (E) optional
    float* conv_state = nullptr;       // (batch, K−1, E) oldest first; shifted to take x
    const W* x_proj = nullptr;         // (R+2N, E)
    const W* dt_proj = nullptr;        // (E, R)
    const float* dt_bias = nullptr;    // (E) optional, added before softplus
    const float* A = nullptr;          // (E, N) = −exp(A_log)
    const float* D = nullptr;          // (E) skip, optional
    float* ssm_state = nullptr;        // (batch, E, N), advanced by one token
    float* u = nullptr;                // (batch, E) out: silu(conv(x)), row stride E
    float* xdbl = nullptr;             // (batch, R+2N) out: [dt_low | B | C], row stride R+2N
    float* y = nullptr;                // (batch, E) out: the gated SSM output, input of out_proj
    dindex ld_y = 0;
};

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

// ---- fused decoding step ------------------------------------------------------------------------

/// Decoding, first half: block (group of kSeqs sequences, group of kThreads/32 rows of
/// x_proj). Every block computes u = silu(bias + Σ_k w_k · window_k) for all E channels of
/// its sequences into shared memory — the window is the conv state (read, not yet
/// shifted) followed by x — and the blocks of row group 0 also write u out. Then one warp
/// per x_proj row j: xdbl[b, j] = Σ_e x_proj[j, e] · u[b, e], lanes striding over e and a
/// fixed butterfly sum (the same order every run). The conv state is shifted by the
/// second half, after every block here has read it.
template <class W, int kThreads, int kSeqs>
__global__ void __launch_bounds__(kThreads) mamba_step_project_kernel(const MambaStepParams<W> p) {
    extern __shared__ float s_u[];  // (kSeqs, E)
    const dindex E = p.E;
    const int K = p.K, J = p.R + 2 * p.N;
    const dindex b0 = static_cast<dindex>(blockIdx.x) * kSeqs;
    for (dindex i = threadIdx.x; i < kSeqs * E; i += kThreads) {
        const dindex s = i / E, e = i - s * E, b = b0 + s;
        float v = 0.0f;  // sequences past the batch: zeros, never written out
        if (b < p.batch) {
            const float* st = p.conv_state + b * (K - 1) * E;
            float acc = p.conv_bias ? p.conv_bias[e] : 0.0f;
            for (int k = 0; k < K - 1; ++k)
                acc += p.conv_taps[static_cast<dindex>(k) * E + e] *
                       st[static_cast<dindex>(k) * E + e];
            acc += p.conv_taps[static_cast<dindex>(K - 1) * E + e] * p.xz[b * p.ld_xz + e];
            v = silu(acc);
            if (blockIdx.y == 0) p.u[b * E + e] = v;
        }
        s_u[i] = v;  // i = s·E + e
    }
    __syncthreads();

    constexpr int kWarps = kThreads / 32;
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int j = static_cast<int>(blockIdx.y) * kWarps + warp;
    if (j >= J) return;  // whole warps only, and no barrier follows
    const W* w = p.x_proj + static_cast<dindex>(j) * E;
    float acc[kSeqs];
#pragma unroll
    for (int s = 0; s < kSeqs; ++s) acc[s] = 0.0f;
    for (dindex e = lane; e < E; e += 32) {
        const float wv = to_float(w[e]);
#pragma unroll
        for (int s = 0; s < kSeqs; ++s) acc[s] += wv * s_u[s * E + e];
    }
#pragma unroll
    for (int s = 0; s < kSeqs; ++s)
        for (int offset = 16; offset > 0; offset /= 2)
            acc[s] += __shfl_xor_sync(0xffffffffu, acc[s], offset);
    if (lane == 0)
#pragma unroll
        for (int s = 0; s < kSeqs; ++s)
            if (b0 + s < p.batch) p.xdbl[(b0 + s) * J + j] = acc[s];
}

/// Decoding, second half: one thread per (b, e). Δ = softplus(dt_proj[e] · dt_low[b] +
/// bias[e]); for each state n: s ← exp(Δ·A[e,n])·s + Δ·u·B[b,n], y += s·C[b,n]; then
/// y += D[e]·u, y *= silu(z); finally the conv window of (b, e) moves on by one: the oldest
/// input drops out and x[b, e] comes in. Each thread touches only its own (b, e) entries.
template <class W>
__global__ void mamba_step_update_kernel(const MambaStepParams<W> p) {
    const dindex E = p.E;
    const int N = p.N, K = p.K, R = p.R, J = R + 2 * N;
    for (dindex i = global_thread(); i < p.batch * E; i += grid_threads()) {
        const dindex b = i / E, e = i - b * E;
        const float* xd = p.xdbl + b * J;  // [dt_low | B | C] of sequence b
        const W* wr = p.dt_proj + e * R;
        float dt = 0.0f;
        for (int r = 0; r < R; ++r) dt += to_float(wr[r]) * xd[r];
        if (p.dt_bias) dt += p.dt_bias[e];
        dt = softplus(dt);
        const float u = p.u[b * E + e];
        float* s = p.ssm_state + (b * E + e) * N;
        float y = 0.0f;
        for (int n = 0; n < N; ++n) {
            const float h = ScanOp::advance(s[n], expf(dt * p.A[e * N + n]), dt * u * xd[R + n]);
            s[n] = h;
            y += h * xd[R + N + n];
        }
        if (p.D) y += p.D[e] * u;
        y *= silu(p.xz[b * p.ld_xz + E + e]);
        p.y[b * p.ld_y + e] = y;
        float* st = p.conv_state + b * (K - 1) * E;
        for (int k = 0; k + 1 < K - 1; ++k)
            st[static_cast<dindex>(k) * E + e] = st[static_cast<dindex>(k + 1) * E + e];
        if (K > 1) st[static_cast<dindex>(K - 2) * E + e] = p.xz[b * p.ld_xz + e];
    }
}

// ---- heads -------------------------------------------------------------------------------------

/// One block per row: the index of the largest value, the first one on ties (as Eigen's
/// maxCoeff); NaNs are skipped; -1 for a row of only NaNs.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    argmax_rows_kernel(const float* __restrict__ x, dindex cols, dindex ld,
                       std::int32_t* __restrict__ out) {
    struct Best {
        float value;
        dindex index;  // -1: none yet
    };
    struct Larger {
        __device__ Best operator()(const Best& l, const Best& r) const {
            if (r.index < 0) return l;
            if (l.index < 0) return r;
            if (r.value > l.value || (r.value == l.value && r.index < l.index)) return r;
            return l;
        }
    };
    using Reduce = cub::BlockReduce<Best, kThreads>;
    __shared__ typename Reduce::TempStorage storage;
    const dindex row = blockIdx.x;
    Best best{0.0f, -1};
    for (dindex c = threadIdx.x; c < cols; c += kThreads) {
        const float v = x[row * ld + c];
        if (v == v && (best.index < 0 || v > best.value))
            best = {v, c};  // columns ascend: first max kept
    }
    best = Reduce(storage).Reduce(best, Larger{});
    if (threadIdx.x == 0) out[row] = static_cast<std::int32_t>(best.index);
}

/// out (nseq, D) = rows offsets[s+1] − 1 of x: the last token of every sequence.
template <class T>
__global__ void gather_last_rows_kernel(const T* __restrict__ x, dindex ld_x, dindex D,
                                        const dindex* __restrict__ offsets, int nseq,
                                        T* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < nseq * D; i += grid_threads()) {
        const dindex s = i / D, c = i - s * D;
        out[s * ld_out + c] = x[(offsets[s + 1] - 1) * ld_x + c];
    }
}

template <class From, class To>
__global__ void convert_kernel(const From* __restrict__ src, To* __restrict__ dst, dindex n) {
    for (dindex i = global_thread(); i < n; i += grid_threads())
        dst[i] = from_float<To>(to_float(src[i]));
}

/// dst (rows, cols; ld_dst) = src (rows, cols; ld_src) converted: a column slice of a wider
/// matrix becomes a packed operand.
template <class From, class To>
__global__ void convert_rows_kernel(const From* __restrict__ src, dindex ld_src, dindex rows,
                                    dindex cols, To* __restrict__ dst, dindex ld_dst) {
    for (dindex i = global_thread(); i < rows * cols; i += grid_threads()) {
        const dindex r = i / cols, c = i - r * cols;
        dst[r * ld_dst + c] = from_float<To>(to_float(src[r * ld_src + c]));
    }
}

inline constexpr int kBlockThreads = 256;  // block size of the elementwise kernels

}  // namespace detail

// ==== host entry points ==========================================================================

/// out (rows, dim; ld_out) = table (vocab, dim)[ids]. `ids` (rows) on the device, already
/// checked to lie in [0, vocab).
template <class T>
void embedding(const T* table, dindex vocab, dindex dim, const std::int32_t* ids, dindex rows,
               float* out, dindex ld_out, cudaStream_t stream) {
    require(vocab > 0 && dim > 0 && rows >= 0 && ld_out >= dim, "cuda::embedding: bad sizes");
    if (rows == 0) return;
    detail::embedding_kernel<T>
        <<<detail::grid_for(rows * dim, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            table, vocab, dim, ids, rows, out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("embedding_kernel");
}

/// Which normalisation `add_norm` applies.
enum class NormType { RMSNorm, LayerNorm };

/// For each of `rows` rows: residual += delta (skipped when delta is null), then
/// out = Norm(residual) · weight (+ bias for LayerNorm). `out` may equal `residual`.
inline void add_norm(NormType type, float* residual, dindex ld_res, const float* delta,
                     dindex ld_delta, const float* weight, const float* bias, dindex rows,
                     dindex dim, float eps, float* out, dindex ld_out, cudaStream_t stream) {
    require(rows >= 0 && dim > 0 && ld_res >= dim && ld_out >= dim && (!delta || ld_delta >= dim) &&
                weight,
            "cuda::add_norm: bad sizes or missing weight");
    require(rows <= INT_MAX, "cuda::add_norm: too many rows");
    if (rows == 0) return;
    constexpr int threads = 256;
    const unsigned grid = static_cast<unsigned>(rows);
    if (type == NormType::RMSNorm)
        detail::add_norm_kernel<threads, false><<<grid, threads, 0, stream>>>(
            residual, ld_res, delta, ld_delta, weight, nullptr, dim, eps, out, ld_out);
    else
        detail::add_norm_kernel<threads, true><<<grid, threads, 0, stream>>>(
            residual, ld_res, delta, ld_delta, weight, bias, dim, eps, out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("add_norm_kernel");
}

/// Causal depthwise conv over packed sequences (`ssm::CausalConv1d::forward`).
/// x (T, E; ld_x) → out (T, E; ld_out), taps (K, E) (tap k of channel e at k·E + e; the
/// newest input meets tap K−1), bias (E) optional. `state_in` (nseq, K−1, E) gives the
/// inputs before each sequence (nullptr: zeros); `state_out` (nseq, K−1, E) receives each
/// sequence's last K−1 inputs and may be the same memory as `state_in`.
template <class T>
void causal_conv1d(const T* x, dindex ld_x, dindex E, int K, const float* taps, const float* bias,
                   const DeviceOffsets& offsets, const float* state_in, float* state_out, bool silu,
                   float* out, dindex ld_out, cudaStream_t stream) {
    const dindex rows = offsets.tokens();
    require(E > 0 && K > 0 && ld_x >= E && ld_out >= E && taps, "cuda::causal_conv1d: bad sizes");
    if (rows > 0) {
        detail::causal_conv1d_kernel<T>
            <<<detail::grid_for(rows * E, detail::kBlockThreads), detail::kBlockThreads, 0,
               stream>>>(x, ld_x, rows, E, K, taps, bias, offsets.data(), offsets.sequences(),
                         state_in, silu, out, ld_out);
        SSM_CUDA_CHECK_LAUNCH("causal_conv1d_kernel");
    }
    if (state_out && K > 1) {  // after the conv: it reads state_in, which this may overwrite
        const dindex work = static_cast<dindex>(offsets.sequences()) * E;
        detail::conv_final_state_kernel<T>
            <<<detail::grid_for(work, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
                x, ld_x, E, K, offsets.data(), offsets.sequences(), state_in, state_out);
        SSM_CUDA_CHECK_LAUNCH("conv_final_state_kernel");
    }
}

/// One new input per sequence (`ssm::CausalConv1d::step`): x (batch, E; ld_x) → out;
/// `state` (batch, K−1, E) is shifted to include x.
template <class T>
void causal_conv1d_step(const T* x, dindex ld_x, dindex batch, dindex E, int K, const float* taps,
                        const float* bias, float* state, bool silu, float* out, dindex ld_out,
                        cudaStream_t stream) {
    require(batch >= 0 && E > 0 && K > 0 && ld_x >= E && ld_out >= E && taps && (K == 1 || state),
            "cuda::causal_conv1d_step: bad sizes");
    if (batch == 0) return;
    detail::causal_conv1d_step_kernel<T>
        <<<detail::grid_for(batch * E, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            x, ld_x, batch, E, K, taps, bias, state, silu, out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("causal_conv1d_step_kernel");
}

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

/// One decoding step of a Mamba-1 mixer between in_proj and out_proj, fused into two
/// kernels (see `MambaStepParams`): the first computes the conv output u and x_proj's
/// [dt_low | B | C], the second dt_proj + softplus, the state update, the skip and the
/// gate, and shifts the conv window. Two, not one, because every channel's Δ, B and C are
/// sums over all E channels of u: the split is the one grid-wide barrier the step needs.
/// Replaces `causal_conv1d_step`, the x_proj and dt_proj GEMMs and `selective_state_update`
/// (four launches and the Δ buffer); the numbers are the same up to fp32 summation order.
template <class W>
void mamba_decode_step(const MambaStepParams<W>& p, cudaStream_t stream) {
    static_assert(std::is_same_v<W, float> || std::is_same_v<W, __nv_bfloat16>,
                  "cuda::mamba_decode_step: weights are fp32 or bf16");
    require(p.batch >= 0 && p.E > 0 && p.N > 0 && p.K > 0 && p.R > 0 && p.ld_xz >= 2 * p.E &&
                p.ld_y >= p.E,
            "cuda::mamba_decode_step: bad sizes batch ", p.batch, ", E ", p.E, ", N ", p.N, ", K ",
            p.K, ", R ", p.R);
    require(p.xz && p.conv_taps && (p.K == 1 || p.conv_state) && p.x_proj && p.dt_proj && p.A &&
                p.ssm_state && p.u && p.xdbl && p.y,
            "cuda::mamba_decode_step: a required operand is null");
    if (p.batch == 0) return;
    constexpr int kThreads = 256, kSeqs = 4, kRows = kThreads / 32;
    const dindex J = p.R + 2 * static_cast<dindex>(p.N);
    require((J + kRows - 1) / kRows <= 65535, "cuda::mamba_decode_step: R + 2N = ", J,
            " is too many x_proj rows");
    auto project = detail::mamba_step_project_kernel<W, kThreads, kSeqs>;
    const std::size_t bytes =
        static_cast<std::size_t>(kSeqs) * static_cast<std::size_t>(p.E) * sizeof(float);
    if (bytes > 48 * 1024) {  // past the default limit: opt in, up to the device's
        const int limit =
            detail::allow_shared_memory(reinterpret_cast<const void*>(project), bytes);
        require(bytes <= static_cast<std::size_t>(limit), "cuda::mamba_decode_step: E = ", p.E,
                " needs ", bytes, " bytes of shared memory per block, the device allows ", limit);
    }
    const dim3 grid(static_cast<unsigned>((p.batch + kSeqs - 1) / kSeqs),
                    static_cast<unsigned>((J + kRows - 1) / kRows));
    project<<<grid, kThreads, bytes, stream>>>(p);
    SSM_CUDA_CHECK_LAUNCH("mamba_step_project_kernel");
    detail::mamba_step_update_kernel<W><<<detail::grid_for(p.batch * p.E, detail::kBlockThreads),
                                          detail::kBlockThreads, 0, stream>>>(p);
    SSM_CUDA_CHECK_LAUNCH("mamba_step_update_kernel");
}

/// out (rows) = argmax of each row of x (rows, cols; ld), on the device.
inline void argmax_rows(const float* x, dindex rows, dindex cols, dindex ld, std::int32_t* out,
                        cudaStream_t stream) {
    require(rows >= 0 && rows <= INT_MAX && cols > 0 && cols <= INT_MAX && ld >= cols,
            "cuda::argmax_rows: bad sizes");
    if (rows == 0) return;
    constexpr int threads = 256;
    detail::argmax_rows_kernel<threads>
        <<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, cols, ld, out);
    SSM_CUDA_CHECK_LAUNCH("argmax_rows_kernel");
}

/// out (nseq, D; ld_out) = the last row of every sequence of x (T, D; ld_x).
template <class T>
void gather_last_rows(const T* x, dindex ld_x, dindex D, const DeviceOffsets& offsets, T* out,
                      dindex ld_out, cudaStream_t stream) {
    require(D > 0 && ld_x >= D && ld_out >= D, "cuda::gather_last_rows: bad sizes");
    require(offsets.all_nonempty(),
            "cuda::gather_last_rows: a sequence is empty (it has no last row)");
    const dindex work = static_cast<dindex>(offsets.sequences()) * D;
    if (work == 0) return;
    detail::gather_last_rows_kernel<T>
        <<<detail::grid_for(work, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            x, ld_x, D, offsets.data(), offsets.sequences(), out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("gather_last_rows_kernel");
}

/// dst[i] = src[i] converted (fp32 ↔ bf16, round to nearest even).
template <class From, class To>
void convert(const From* src, To* dst, dindex n, cudaStream_t stream) {
    if (n <= 0) return;
    detail::convert_kernel<From, To>
        <<<detail::grid_for(n, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(src, dst,
                                                                                           n);
    SSM_CUDA_CHECK_LAUNCH("convert_kernel");
}

/// dst (rows, cols; ld_dst) = src (rows, cols; ld_src) converted (fp32 ↔ bf16, round to
/// nearest even): how an fp32 activation becomes the bf16 operand of a bf16 GEMM.
template <class From, class To>
void convert_rows(const From* src, dindex ld_src, dindex rows, dindex cols, To* dst, dindex ld_dst,
                  cudaStream_t stream) {
    require(rows >= 0 && cols > 0 && ld_src >= cols && ld_dst >= cols,
            "cuda::convert_rows: bad sizes");
    if (rows == 0) return;
    detail::convert_rows_kernel<From, To>
        <<<detail::grid_for(rows * cols, detail::kBlockThreads), detail::kBlockThreads, 0,
           stream>>>(src, ld_src, rows, cols, dst, ld_dst);
    SSM_CUDA_CHECK_LAUNCH("convert_rows_kernel");
}

}  // namespace ssm::cuda
