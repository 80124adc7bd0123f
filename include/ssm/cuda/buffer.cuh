// ssm/cuda/buffer.cuh — device memory that frees itself (`DeviceBuffer<T>`), a stream that
// destroys itself (`Stream`), and copies between host and device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/cuda/error.cuh"

namespace ssm::cuda {

/// A CUDA stream, created non-blocking (it does not synchronise with the legacy default
/// stream). Move-only.
class Stream {
public:
    Stream() { SSM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
    ~Stream() {
        if (stream_) (void)cudaStreamDestroy(stream_);  // no throw from a destructor
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    Stream(Stream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}
    Stream& operator=(Stream&& o) noexcept {
        if (this != &o) {
            if (stream_) (void)cudaStreamDestroy(stream_);
            stream_ = std::exchange(o.stream_, nullptr);
        }
        return *this;
    }

    [[nodiscard]] cudaStream_t get() const noexcept { return stream_; }
    operator cudaStream_t() const noexcept { return stream_; }  // NOLINT: used as a handle

    /// Waits for all work queued on the stream; throws when any of it failed.
    void synchronize() const { SSM_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

private:
    cudaStream_t stream_ = nullptr;
};

/// `count` elements of T in device memory (cudaMalloc; never managed memory). Move-only;
/// contents are unspecified after construction and after `resize`.
template <class T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(std::size_t count) { allocate(count); }
    ~DeviceBuffer() { release(); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            release();
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }

    /// A buffer holding a copy of `host` (synchronous).
    [[nodiscard]] static DeviceBuffer from(std::span<const T> host) {
        DeviceBuffer b(host.size());
        b.upload(host);
        return b;
    }

    [[nodiscard]] T* data() noexcept { return data_; }
    [[nodiscard]] const T* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] std::size_t bytes() const noexcept { return size_ * sizeof(T); }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

    /// Makes room for at least `count` elements; reallocates (dropping the contents) only
    /// when the buffer is smaller, so a workspace reused for the same shape never allocates.
    void reserve(std::size_t count) {
        if (count <= size_) return;
        release();
        allocate(count);
    }

    /// Copies `host` into the first host.size() elements; stream-ordered on `stream`
    /// and waits for it (pageable host memory).
    void upload(std::span<const T> host, cudaStream_t stream = nullptr) {
        require(host.size() <= size_, "DeviceBuffer::upload: ", host.size(),
                " elements into a buffer of ", size_);
        if (host.empty()) return;
        SSM_CUDA_CHECK(
            cudaMemcpyAsync(data_, host.data(), host.size_bytes(), cudaMemcpyHostToDevice, stream));
        SSM_CUDA_CHECK(cudaStreamSynchronize(stream));
    }

    /// Copies the first host.size() elements into `host`, after the work queued on `stream`.
    void download(std::span<T> host, cudaStream_t stream = nullptr) const {
        require(host.size() <= size_, "DeviceBuffer::download: ", host.size(),
                " elements from a buffer of ", size_);
        if (host.empty()) return;
        SSM_CUDA_CHECK(
            cudaMemcpyAsync(host.data(), data_, host.size_bytes(), cudaMemcpyDeviceToHost, stream));
        SSM_CUDA_CHECK(cudaStreamSynchronize(stream));
    }

    /// The whole buffer as a host vector.
    [[nodiscard]] std::vector<T> to_host(cudaStream_t stream = nullptr) const {
        std::vector<T> v(size_);
        download(v, stream);
        return v;
    }

    /// Sets every byte to 0xFF: for floats that is a NaN, so a test sees any element a
    /// kernel forgot to write.
    void poison(cudaStream_t stream = nullptr) {
        if (size_) SSM_CUDA_CHECK(cudaMemsetAsync(data_, 0xFF, bytes(), stream));
    }

    /// Sets every byte to 0.
    void zero(cudaStream_t stream = nullptr) {
        if (size_) SSM_CUDA_CHECK(cudaMemsetAsync(data_, 0, bytes(), stream));
    }

private:
    void allocate(std::size_t count) {
        if (count == 0) return;
        void* p = nullptr;
        const cudaError_t status = cudaMalloc(&p, count * sizeof(T));
        if (status != cudaSuccess) {
            (void)cudaGetLastError();
            fail("DeviceBuffer: cudaMalloc of ", count * sizeof(T),
                 " bytes failed: ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                 ")");
        }
        data_ = static_cast<T*>(p);
        size_ = count;
    }
    void release() noexcept {
        if (data_) (void)cudaFree(data_);
        data_ = nullptr;
        size_ = 0;
    }

    T* data_ = nullptr;
    std::size_t size_ = 0;
};

/// A device copy of `host` (synchronous).
template <class T>
[[nodiscard]] DeviceBuffer<T> upload(std::span<const T> host) {
    return DeviceBuffer<T>::from(host);
}
template <class T>
[[nodiscard]] DeviceBuffer<T> upload(const std::vector<T>& host) {
    return DeviceBuffer<T>::from(std::span<const T>(host));
}

/// A host copy of the first `count` elements at device pointer `src`, after the work
/// queued on `stream`.
template <class T>
[[nodiscard]] std::vector<T> download(const T* src, std::size_t count,
                                      cudaStream_t stream = nullptr) {
    std::vector<T> v(count);
    if (count) {
        SSM_CUDA_CHECK(
            cudaMemcpyAsync(v.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
        SSM_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    return v;
}

/// The number of CUDA devices; 0 when there is none or no usable driver (never throws).
[[nodiscard]] inline int device_count() noexcept {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

}  // namespace ssm::cuda
