// ssm/cuda/common.cuh — what every CUDA op shares: the device index type, packed-sequence
// offsets on the device (`DeviceOffsets`), cached device attributes and the shared-memory
// opt-in, fp32 ↔ bf16 loads and stores, softplus and SiLU as the CPU computes them, the
// sequence of a packed row, and grid sizing for grid-stride loops.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

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

/// The sum of `v` over the 32 lanes of a warp, in every lane: a butterfly of xor shuffles,
/// so every run adds in the same order. Every lane of the warp must call it.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

inline constexpr int kBlockThreads = 256;  // block size of the elementwise kernels

}  // namespace detail

}  // namespace ssm::cuda
