// bench_sharded_search: what sharding the exact search over MPI ranks costs against one
// process at equal work — the same corpus, queries and k, the same cores:
//
//   bench_sharded_search --threads 2 [--docs 200000] [--dim 768] [--queries 1000] [--k 100]
//   mpirun -np 2 bench_sharded_search --threads 1 [...]
//
// One process searches the whole corpus; under mpirun each rank makes and searches only
// its shard (a contiguous run of rows), and the ranks' top-k lists are merged on rank 0
// (MpiRanks::gather_top_k). Reported: the best of 3 timed searches (from a barrier to the
// merged result on rank 0), queries/s, and the merge's share.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "seeded_vectors.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/retrieval/mpi.hpp"
#include "ssm/retrieval/shard.hpp"
#include "ssm/retrieval/vector_index.hpp"

int main(int argc, char** argv) {
    ssm::MpiRanks ranks(argc, argv);
    ssm::index docs = 200000, queries = 1000, k = 100;
    ssm::bench::VectorSpec spec;
    int threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        const long long v = std::stoll(argv[i + 1]);
        if (a == "--docs") docs = v;
        else if (a == "--dim") spec.dim = v;
        else if (a == "--queries") queries = v;
        else if (a == "--k") k = v;
        else if (a == "--threads") threads = static_cast<int>(v);
        else {
            std::fprintf(stderr, "bench_sharded_search: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    ssm::set_num_threads(threads);
    const ssm::index begin = docs * ranks.rank() / ranks.size(), end = docs * (ranks.rank() + 1) / ranks.size();
    const ssm::ExactIndex shard(ssm::bench::seeded_vectors(spec, begin, end, 7));
    const ssm::Matrix q = ssm::bench::seeded_vectors(spec, 0, queries, 11);
    std::vector<ssm::index> rows(static_cast<std::size_t>(end - begin));
    for (ssm::index i = 0; i < end - begin; ++i) rows[static_cast<std::size_t>(i)] = begin + i;

    double best = 1e300, best_merge = 0;
    for (int run = 0; run < 3; ++run) {
        ranks.barrier();
        const auto t0 = std::chrono::steady_clock::now();
        ssm::TopK local = shard.search(q, k);
        ssm::to_global_ids(local, rows);
        ranks.barrier();  // the slowest shard
        const auto t1 = std::chrono::steady_clock::now();
        const ssm::TopK merged = ranks.gather_top_k(local, k);
        const auto t2 = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(t2 - t0).count();
        if (s < best) {
            best = s;
            best_merge = std::chrono::duration<double>(t2 - t1).count();
        }
        if (ranks.root() && merged.ids.rows() != queries) std::fprintf(stderr, "bench_sharded_search: bad merge\n");
    }
    if (ranks.root())
        std::printf("sharded exact search: %lld docs × %lld dims, %lld queries, k %lld, %d rank(s) × %d thread(s): "
                    "%.3f s (%.1f queries/s), of which merging %.4f s\n",
                    static_cast<long long>(docs), static_cast<long long>(spec.dim), static_cast<long long>(queries),
                    static_cast<long long>(k), ranks.size(), ssm::num_threads(), best,
                    static_cast<double>(queries) / best, best_merge);
    return 0;
}
