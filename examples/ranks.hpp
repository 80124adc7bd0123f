// examples/ranks.hpp — the processes a program runs as: the ranks of an MPI job when the
// program was built with MPI (SSM_WITH_MPI) and started by mpirun / mpiexec / srun, or
// else one process. Both have the interface of `ssm::MpiRanks`, so a program has one code
// path; with one process every call is trivial and the program behaves as a plain one.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "cli.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/retrieval/shard.hpp"
#include "ssm/retrieval/top_k.hpp"
#if SSM_WITH_MPI
#include "ssm/retrieval/mpi.hpp"
#endif

namespace ssm::cli {

#if SSM_WITH_MPI
using Ranks = ssm::MpiRanks;
#else
/// A job of one process, with the interface of `ssm::MpiRanks`.
class Ranks {
public:
    Ranks(int&, char**&) {}
    [[nodiscard]] int rank() const noexcept { return 0; }
    [[nodiscard]] int size() const noexcept { return 1; }
    [[nodiscard]] bool root() const noexcept { return true; }
    [[nodiscard]] std::string name() const { return {}; }
    template <class F>
    decltype(auto) phase(F&& f) {
        return f();
    }
    [[nodiscard]] Matrix gather_rows(const Matrix& local) const { return local; }
    [[nodiscard]] Matrix allgather_rows(const Matrix& local) const { return local; }
    [[nodiscard]] TopK gather_top_k(const TopK& local, index k) const {
        return merge_top_k(std::span<const TopK>(&local, 1), k);
    }
    template <class T>
    void sum_everywhere(std::span<T>) const {}
    void barrier() const {}
    [[nodiscard]] int finish(int status, bool = false) const { return status; }
};
#endif

/// For tests of the failure path: when the environment variable SSM_TEST_FAIL_RANK is
/// "R" or "R@POINT" and this is rank R, throws as if its work had failed at the injection
/// point `point` (any point for "R"; inside a phase, so the other ranks stop too).
inline void injected_failure(const Ranks& ranks, std::string_view point) {
    const char* v = std::getenv("SSM_TEST_FAIL_RANK");
    if (v == nullptr) return;
    const std::string_view s(v);
    const std::string rank = std::to_string(ranks.rank());
    if (s == rank || s == rank + "@" + std::string(point))
        fail("failure injected by SSM_TEST_FAIL_RANK at '", point, "'");
}

/// `run_main` for a program that may run as several ranks: only the root prints its report
/// and errors; a failure the ranks agreed on (or a bad command line, the same everywhere)
/// exits quietly on the others; any other failure aborts the job so no rank hangs.
template <class Body>
int run_ranks(const Ranks& ranks, std::string_view program, Body&& body) {
    if (!ranks.root()) (void)std::freopen("/dev/null", "w", stdout);
    bool same_everywhere = false;
    const int status = run_main(program, [&]() -> int {
        try {
            return body();
        } catch (const UsageError&) {
            same_everywhere = true;
            if (ranks.root()) throw;
            return 2;
        } catch (const PeerFailure&) {
            same_everywhere = true;
            if (ranks.root()) throw;
            return 1;
        }
    });
    return ranks.finish(status, same_everywhere);
}

}  // namespace ssm::cli
