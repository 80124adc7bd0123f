// ssm/core/threads.hpp — the library's thread count and a parallel loop.
//
// Parallel work uses OpenMP when the consumer compiles with it (the installed
// `ssm::ssm` target links OpenMP when it was found); without it every loop runs on the
// calling thread and results are identical.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "ssm/core/tensor.hpp"

namespace ssm {

namespace detail {
inline std::atomic<int>& thread_setting() {
    static std::atomic<int> n{0};  // 0 = all hardware threads
    return n;
}

/// How many times `parallel_for` has run a loop on two or more threads (the tests read it
/// to know that a multi-thread check did not silently run on one).
inline std::atomic<std::int64_t>& parallel_loops_run() {
    static std::atomic<std::int64_t> n{0};
    return n;
}
}  // namespace detail

/// Threads used by the library's parallel loops and by Eigen's matrix products.
[[nodiscard]] inline int num_threads() noexcept {
#if defined(_OPENMP)
    const int n = detail::thread_setting().load();
    if (n > 0) return n;
    // Asked once: omp_get_num_procs reads the affinity mask with a system call, and decoding
    // asks before each of its ~150 parallel loops a token.
    static const int procs = omp_get_num_procs();
    return procs;
#else
    return 1;
#endif
}

/// Sets the thread count; 0 restores the default (all hardware threads).
inline void set_num_threads(int n) {
    require(n >= 0, "set_num_threads: thread count must be >= 0, got ", n);
    detail::thread_setting().store(n);
    Eigen::setNbThreads(num_threads());
}

/// Calls `body(begin, end)` over contiguous pieces of [0, count), in parallel where
/// the work is worth it (`min_per_thread` items at least per thread). Exceptions thrown
/// by `body` are rethrown on the calling thread.
template <class Body>
void parallel_for(index count, index min_per_thread, Body&& body) {
    if (count <= 0) return;
    const index max_threads = std::max<index>(1, count / std::max<index>(1, min_per_thread));
    const int threads = static_cast<int>(std::min<index>(num_threads(), max_threads));
    if (threads <= 1) {
        body(index{0}, count);
        return;
    }
#if defined(_OPENMP)
    std::exception_ptr error;
    std::mutex error_mutex;
#pragma omp parallel num_threads(threads)
    {
        const index t = omp_get_thread_num();
        const index nt = omp_get_num_threads();
        if (t == 0 && nt > 1) detail::parallel_loops_run().fetch_add(1, std::memory_order_relaxed);
        const index begin = count * t / nt;
        const index end = count * (t + 1) / nt;
        try {
            if (begin < end) body(begin, end);
        } catch (...) {
            std::lock_guard lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
#else
    body(index{0}, count);
#endif
}

}  // namespace ssm
