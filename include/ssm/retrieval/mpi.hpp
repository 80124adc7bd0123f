// ssm/retrieval/mpi.hpp — the processes of an MPI job (`mpirun -np N`, `srun`) as one
// program sees them: who am I, how many are we, move embeddings and top-k lists between
// us, and stop together when one of us fails.
//
// Only code that links MPI includes this header (CMake: `SSM_WITH_MPI`). A program that
// is not started by an MPI launcher runs as one process without initialising MPI, so
// the same binary behaves as a plain one. `ssm/retrieval/shard.hpp` holds the planning
// and merging that need no communication.
//
// Failure: every step that can fail on one rank runs inside `phase(what, f)`. The ranks
// then agree: if any rank threw, every rank throws `ssm::PeerFailure` carrying the
// lowest failing rank's message, so all stop at the same point with the same clear
// message, and nothing is written under a final name by a job that did not finish.
// A failure outside a phase aborts the whole job (`finish`), so no rank waits forever.
#pragma once

// Only MPI's C interface is used; keep the deprecated C++ bindings out.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/retrieval/shard.hpp"
#include "ssm/retrieval/top_k.hpp"

namespace ssm {

class MpiRanks {
public:
    /// Initialises MPI when the process was started by an MPI launcher (mpirun, mpiexec,
    /// srun with PMI); otherwise the job is this one process and MPI is never touched.
    MpiRanks(int& argc, char**& argv) {
        if (!launched_by_mpi()) return;
        int provided = 0;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
        initialized_ = true;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
    }
    MpiRanks(const MpiRanks&) = delete;
    MpiRanks& operator=(const MpiRanks&) = delete;
    ~MpiRanks() {
        if (initialized_) MPI_Finalize();
    }

    /// True when an MPI launcher started this process (Open MPI, MPICH / Hydra, PMIx, Slurm's PMI).
    [[nodiscard]] static bool launched_by_mpi() noexcept {
        for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_SIZE"})
            if (std::getenv(v) != nullptr) return true;
        return false;
    }

    [[nodiscard]] int rank() const noexcept { return rank_; }
    [[nodiscard]] int size() const noexcept { return size_; }
    [[nodiscard]] bool root() const noexcept { return rank_ == 0; }
    /// "rank R of N" (R from 0, as MPI counts), empty for a single process.
    [[nodiscard]] std::string name() const {
        return size_ > 1 ? "rank " + std::to_string(rank_) + " of " + std::to_string(size_) : std::string();
    }

    /// Runs `f()` on every rank, then agrees: if it threw anywhere, every rank throws a
    /// `PeerFailure` with the lowest failing rank's message ("rank R of N: ..."). Returns
    /// `f()`'s result. Collective: every rank must call the same phases in the same order.
    template <class F>
    decltype(auto) phase(F&& f) {
        if (size_ == 1) return f();
        std::string message;
        try {
            if constexpr (std::is_void_v<decltype(f())>) {
                f();
                agree(message);
                return;
            } else {
                decltype(auto) result = f();
                agree(message);
                return result;
            }
        } catch (const PeerFailure&) {
            throw;
        } catch (const std::exception& e) {
            message = e.what();
            if (message.empty()) message = "unknown error";
        }
        agree(message);
        throw PeerFailure("unreachable");  // agree() throws when a message is given
    }

    /// Every rank's `local` rows (same number of columns), one after another in rank order,
    /// on the root; an empty matrix elsewhere.
    [[nodiscard]] Matrix gather_rows(const Matrix& local) const { return collect_rows(local, false); }
    /// Every rank's `local` rows, one after another in rank order, on every rank.
    [[nodiscard]] Matrix allgather_rows(const Matrix& local) const { return collect_rows(local, true); }

    /// Merges every rank's top-k list (ids already global document indices; see
    /// `merge_top_k`) into the global top-k on the root; an empty result elsewhere.
    [[nodiscard]] TopK gather_top_k(const TopK& local, index k) const {
        if (size_ == 1) return merge_top_k(std::span<const TopK>(&local, 1), k);
        const index nq = local.ids.rows();
        // Pad every rank's list to the same width so the messages have one shape.
        index width = local.ids.cols(), offered = local.ids.cols();
        MPI_Allreduce(MPI_IN_PLACE, &width, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &offered, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        std::vector<std::int64_t> ids(static_cast<std::size_t>(nq * width), -1);
        std::vector<float> scores(static_cast<std::size_t>(nq * width), -std::numeric_limits<float>::infinity());
        for (index q = 0; q < nq; ++q)
            for (index j = 0; j < local.ids.cols(); ++j) {
                ids[static_cast<std::size_t>(q * width + j)] = local.ids(q, j);
                scores[static_cast<std::size_t>(q * width + j)] = local.scores(q, j);
            }
        const std::size_t total = root() ? static_cast<std::size_t>(nq * width * size_) : 0;
        std::vector<std::int64_t> all_ids(total);
        std::vector<float> all_scores(total);
        const int count = checked_count(nq * width, "gather_top_k");
        MPI_Gather(ids.data(), count, MPI_INT64_T, all_ids.data(), count, MPI_INT64_T, 0, MPI_COMM_WORLD);
        MPI_Gather(scores.data(), count, MPI_FLOAT, all_scores.data(), count, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (!root()) return {};
        std::vector<TopK> parts(static_cast<std::size_t>(size_));
        for (int r = 0; r < size_; ++r) {
            auto& p = parts[static_cast<std::size_t>(r)];
            p.ids.resize(nq, width);
            p.scores.resize(nq, width);
            const std::size_t at = static_cast<std::size_t>(r) * static_cast<std::size_t>(nq * width);
            std::copy_n(all_ids.begin() + static_cast<std::ptrdiff_t>(at), nq * width, p.ids.data());
            std::copy_n(all_scores.begin() + static_cast<std::ptrdiff_t>(at), nq * width, p.scores.data());
        }
        return merge_top_k(parts, std::min(k, offered));  // the padding offers nothing
    }

    /// Replaces `values` on every rank by their sum over the ranks, element by element
    /// (data-parallel training's gradient allreduce). The sum is formed once, on the root,
    /// and broadcast, so every rank holds the same bits (an allreduce may round differently
    /// on different ranks, and the replicas' weights would then drift apart).
    void sum_everywhere(std::span<float> values) const { sum_everywhere_impl(values.data(), values.size(), MPI_FLOAT); }
    void sum_everywhere(std::span<double> values) const { sum_everywhere_impl(values.data(), values.size(), MPI_DOUBLE); }
    void sum_everywhere(std::span<std::int64_t> values) const {
        sum_everywhere_impl(values.data(), values.size(), MPI_INT64_T);
    }

    /// Blocks until every rank has arrived.
    void barrier() const {
        if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
    }

    /// The exit status for `status`: a failure the ranks did not agree on (one outside a
    /// phase, unless `same_on_every_rank`, like a bad command line) aborts the whole job,
    /// so that no other rank waits forever in a collective.
    [[nodiscard]] int finish(int status, bool same_on_every_rank = false) const {
        if (status != 0 && size_ > 1 && !agreed_failure_ && !same_on_every_rank) MPI_Abort(MPI_COMM_WORLD, status);
        return status;
    }

private:
    /// The collective half of `phase`: throws `PeerFailure` on every rank when any rank
    /// brings a non-empty `message`.
    void agree(const std::string& message) {
        int failed = message.empty() ? size_ : rank_;  // lowest failing rank, or size_ for none
        MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (failed == size_) return;
        int length = rank_ == failed ? static_cast<int>(std::min<std::size_t>(message.size(), 4096)) : 0;
        MPI_Bcast(&length, 1, MPI_INT, failed, MPI_COMM_WORLD);
        std::string text = rank_ == failed ? message.substr(0, static_cast<std::size_t>(length))
                                           : std::string(static_cast<std::size_t>(length), '\0');
        MPI_Bcast(text.data(), length, MPI_CHAR, failed, MPI_COMM_WORLD);
        agreed_failure_ = true;
        throw PeerFailure("rank " + std::to_string(failed) + " of " + std::to_string(size_) + ": " + text +
                          " (all ranks stopped)");
    }

    template <class T>
    void sum_everywhere_impl(T* data, std::size_t n, MPI_Datatype type) const {
        if (size_ == 1) return;
        constexpr std::size_t chunk = std::size_t{1} << 26;  // a message's count is an int
        for (std::size_t at = 0; at < n; at += chunk) {
            const int count = static_cast<int>(std::min(chunk, n - at));
            if (rank_ == 0) MPI_Reduce(MPI_IN_PLACE, data + at, count, type, MPI_SUM, 0, MPI_COMM_WORLD);
            else MPI_Reduce(data + at, nullptr, count, type, MPI_SUM, 0, MPI_COMM_WORLD);
            MPI_Bcast(data + at, count, type, 0, MPI_COMM_WORLD);
        }
    }

    [[nodiscard]] static int checked_count(index n, const char* what) {
        require(n >= 0 && n <= INT_MAX, "MpiRanks::", what, ": ", n, " items in one message (limit ", INT_MAX, ")");
        return static_cast<int>(n);
    }

    [[nodiscard]] Matrix collect_rows(const Matrix& local, bool everywhere) const {
        if (size_ == 1) return local;
        // Ranks without rows may not know the width: take the widest, and insist on one.
        index cols[2] = {local.rows() > 0 ? local.cols() : 0, local.rows() > 0 ? -local.cols() : -kNoRows};
        MPI_Allreduce(MPI_IN_PLACE, cols, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
        const index width = cols[0];
        require(cols[1] == -kNoRows || -cols[1] == width,
                "MpiRanks: the ranks' embeddings have different widths (", -cols[1], " and ", width, ")");
        const int rows = checked_count(local.rows(), "collect_rows");
        std::vector<int> counts(static_cast<std::size_t>(size_)), offsets(static_cast<std::size_t>(size_));
        MPI_Allgather(&rows, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
        index total = 0;
        for (int r = 0; r < size_; ++r) {
            offsets[static_cast<std::size_t>(r)] = checked_count(total, "collect_rows");
            total += counts[static_cast<std::size_t>(r)];
        }
        (void)checked_count(total, "collect_rows");
        Matrix out;
        if (everywhere || root()) out.resize(total, width);
        if (width == 0) return out;
        // One datatype per row, so counts are rows (a corpus of 8.8 M × 768 floats has more
        // than INT_MAX floats, but far fewer rows).
        MPI_Datatype row;
        MPI_Type_contiguous(checked_count(width, "collect_rows"), MPI_FLOAT, &row);
        MPI_Type_commit(&row);
        const float* send = local.rows() > 0 ? local.data() : nullptr;
        if (everywhere)
            MPI_Allgatherv(send, rows, row, out.data(), counts.data(), offsets.data(), row, MPI_COMM_WORLD);
        else
            MPI_Gatherv(send, rows, row, out.data(), counts.data(), offsets.data(), row, 0, MPI_COMM_WORLD);
        MPI_Type_free(&row);
        return out;
    }

    static constexpr index kNoRows = index{1} << 40;  // a rank without rows, in collect_rows' width check

    bool initialized_ = false;
    bool agreed_failure_ = false;
    int rank_ = 0;
    int size_ = 1;
};

}  // namespace ssm
