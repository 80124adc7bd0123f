// bench_retrieval: exact top-k search (`ssm::exact_top_k`) over a corpus of unit-norm
// embeddings, beside a plain baseline in the same run (the whole score matrix as one Eigen
// product, then std::partial_sort of every row) and the machine's ceilings.
//
//   FLOP/s  = 2 · queries · docs · dim / time   (against BM_PeakFma)
//   bytes/s = docs · dim · 4 / time            (the corpus read once; against BM_MemoryRead)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "machine_limits.hpp"
#include "ssm/retrieval/top_k.hpp"

namespace {

constexpr ssm::index kDim = 768;  // mamba-130m's hidden size
constexpr ssm::index kTopK = 100;

ssm::Matrix unit_rows(ssm::index rows, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    ssm::Matrix m(rows, kDim);
    for (ssm::index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
    ssm::normalize_rows(m);
    return m;
}

const ssm::Matrix& corpus(ssm::index docs) {
    static ssm::index cached_docs = -1;
    static ssm::Matrix m;
    if (cached_docs != docs) {
        m = unit_rows(docs, 7);
        cached_docs = docs;
    }
    return m;
}

void report(benchmark::State& state, ssm::index nq, ssm::index nd) {
    const double iters = static_cast<double>(state.iterations());
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(nq * nd * kDim) * iters,
                                                  benchmark::Counter::kIsRate);
    state.counters["corpus_bytes/s"] = benchmark::Counter(
        static_cast<double>(nd * kDim) * sizeof(float) * iters, benchmark::Counter::kIsRate);
    state.counters["queries/s"] = benchmark::Counter(static_cast<double>(nq) * iters, benchmark::Counter::kIsRate);
}

void BM_ExactTopK(benchmark::State& state) {
    const ssm::index nq = state.range(0), nd = state.range(1);
    const ssm::Matrix queries = unit_rows(nq, 11);
    const ssm::Matrix& docs = corpus(nd);
    for (auto _ : state) {
        ssm::TopK hits = ssm::exact_top_k(queries, docs, kTopK);
        benchmark::DoNotOptimize(hits.ids.data());
    }
    report(state, nq, nd);
}

// The baseline: every score at once, then a partial sort of each row's document indices.
void BM_FullMatrixPartialSort(benchmark::State& state) {
    const ssm::index nq = state.range(0), nd = state.range(1);
    const ssm::Matrix queries = unit_rows(nq, 11);
    const ssm::Matrix& docs = corpus(nd);
    ssm::Matrix scores(nq, nd);
    std::vector<ssm::index> order(static_cast<std::size_t>(nd));
    for (auto _ : state) {
        scores.noalias() = queries * docs.transpose();
        for (ssm::index q = 0; q < nq; ++q) {
            std::iota(order.begin(), order.end(), ssm::index{0});
            const float* row = &scores(q, 0);
            std::partial_sort(order.begin(), order.begin() + kTopK, order.end(),
                              [row](ssm::index a, ssm::index b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
            benchmark::DoNotOptimize(order.data());
        }
    }
    report(state, nq, nd);
}

void shapes(benchmark::internal::Benchmark* b) {
    for (const ssm::index nq : {8, 256, 1024}) b->Args({nq, 100'000});
    b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(ssm::bench::BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(BM_ExactTopK)->Apply(shapes);
BENCHMARK(BM_FullMatrixPartialSort)->Apply(shapes);

BENCHMARK_MAIN();
