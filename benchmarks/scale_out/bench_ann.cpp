// bench_ann: search speed and recall of the exact search (ssm::ExactIndex) and of FAISS
// indexes (flat, HNSW, IVF-PQ) at several settings, on seeded unit vectors: queries/s,
// recall@10 and recall@100 against the exact answer, build time and bytes per vector.
// The size is a flag (docs/scale-out.md reports `--docs 1000000 --dim 768`).
//
//   bench_ann [--docs 100000] [--dim 768] [--queries 1000] [--clusters 1000]
//             [--noise 1.0] [--csv FILE] [--only exact,flat,hnsw,ivfpq]
//   bench_ann --vectors DOCS.npy --query-vectors QUERIES.npy [--csv FILE] [--only ...]
//
// The vectors: seeded_vectors.hpp (clustered unit vectors); queries come from the same
// distribution with another seed. Or real embeddings: two float32 .npy files of one width
// (what ssm-embed writes for a corpus and its queries), rows L2-normalised here.
//
// Exact search runs on ssm's threads, FAISS on its OpenMP threads: the same cores.
// Recall@k = |returned top-k ∩ exact top-k| / k, averaged over queries. QPS at k = 10 and
// k = 100 are measured separately (an HNSW search explores at least k candidates).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include "seeded_vectors.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/retrieval/faiss_index.hpp"
#include "ssm/retrieval/npy.hpp"
#include "ssm/retrieval/vector_index.hpp"

namespace {

struct Options {
    ssm::index docs = 100000, dim = 768, queries = 1000, clusters = 1000;
    double noise = 1.0;
    std::string csv, only = "exact,flat,hnsw,ivfpq", vectors, query_vectors;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench_ann: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--docs") o.docs = std::stoll(value());
        else if (a == "--dim") o.dim = std::stoll(value());
        else if (a == "--queries") o.queries = std::stoll(value());
        else if (a == "--clusters") o.clusters = std::stoll(value());
        else if (a == "--noise") o.noise = std::stod(value());
        else if (a == "--csv") o.csv = value();
        else if (a == "--only") o.only = value();
        else if (a == "--vectors") o.vectors = value();
        else if (a == "--query-vectors") o.query_vectors = value();
        else {
            std::fprintf(stderr, "bench_ann: unknown argument %s (see the comment at the top of bench_ann.cpp)\n",
                         a.c_str());
            std::exit(2);
        }
    }
    if (o.vectors.empty() != o.query_vectors.empty()) {
        std::fprintf(stderr, "bench_ann: give --vectors and --query-vectors together\n");
        std::exit(2);
    }
    return o;
}

ssm::Matrix vectors(const Options& o, ssm::index rows, std::uint64_t seed) {
    return ssm::bench::seeded_vectors({o.dim, o.clusters, o.noise}, 0, rows, seed);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double recall(const ssm::TopK& found, const ssm::TopK& exact, ssm::index k) {
    double sum = 0;
    for (ssm::index q = 0; q < exact.ids.rows(); ++q) {
        std::set<ssm::index> truth;
        for (ssm::index j = 0; j < k; ++j) truth.insert(exact.ids(q, j));
        ssm::index hit = 0;
        for (ssm::index j = 0; j < std::min(k, found.ids.cols()); ++j) hit += truth.count(found.ids(q, j)) ? 1 : 0;
        sum += static_cast<double>(hit) / static_cast<double>(k);
    }
    return sum / static_cast<double>(exact.ids.rows());
}

/// Bytes of FAISS's serialised index (codes, graph, centroids) per vector.
double bytes_per_vector(const ssm::FaissIndex& index) {
    faiss::VectorIOWriter w;
    faiss::write_index(&index.faiss_index(), &w);
    return static_cast<double>(w.data.size()) / static_cast<double>(index.size());
}

struct Row {
    std::string index, setting;
    double build_s, bytes, qps10, r10, qps100, r100;
};

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    ssm::Matrix docs, queries;
    auto t0 = std::chrono::steady_clock::now();
    if (!o.vectors.empty()) {
        try {
            docs = ssm::load_npy(o.vectors);
            queries = ssm::load_npy(o.query_vectors);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "bench_ann: %s\n", e.what());
            return 1;
        }
        if (docs.cols() != queries.cols() || docs.rows() == 0 || queries.rows() == 0) {
            std::fprintf(stderr, "bench_ann: %s (%lld × %lld) and %s (%lld × %lld) must be non-empty and of one width\n",
                         o.vectors.c_str(), static_cast<long long>(docs.rows()), static_cast<long long>(docs.cols()),
                         o.query_vectors.c_str(), static_cast<long long>(queries.rows()),
                         static_cast<long long>(queries.cols()));
            return 2;
        }
        ssm::normalize_rows(docs);
        ssm::normalize_rows(queries);
        o.docs = docs.rows();
        o.dim = docs.cols();
        o.queries = queries.rows();
        std::printf("bench_ann: %s and %s: %lld documents × %lld dims, %lld queries, %d threads\n", o.vectors.c_str(),
                    o.query_vectors.c_str(), static_cast<long long>(o.docs), static_cast<long long>(o.dim),
                    static_cast<long long>(o.queries), ssm::num_threads());
    } else {
        std::printf("bench_ann: %lld documents × %lld dims, %lld queries, %lld clusters, noise %.2f, %d threads\n",
                    static_cast<long long>(o.docs), static_cast<long long>(o.dim), static_cast<long long>(o.queries),
                    static_cast<long long>(o.clusters), o.noise, ssm::num_threads());
        docs = vectors(o, o.docs, 7);
        queries = vectors(o, o.queries, 11);
        std::printf("vectors  generated in %.1f s (%.0f MB of float32 documents)\n", seconds_since(t0),
                    static_cast<double>(docs.size()) * 4 / 1e6);
    }
    const auto wants = [&](const char* name) { return ("," + o.only + ",").find(std::string(",") + name + ",") != std::string::npos; };

    std::vector<Row> rows;
    const auto report = [&](const Row& r) {
        std::printf("%-8s %-22s build %8.2f s  %7.1f B/vec  k=10: %9.1f q/s  R@10 %.4f  k=100: %9.1f q/s  R@100 %.4f\n",
                    r.index.c_str(), r.setting.c_str(), r.build_s, r.bytes, r.qps10, r.r10, r.qps100, r.r100);
        std::fflush(stdout);
        rows.push_back(r);
    };
    // Times `search(k)` over all queries: at least twice and 1 s in all, the best run.
    const auto qps = [&](const std::function<ssm::TopK(ssm::index)>& search, ssm::index k, ssm::TopK& out) {
        double best = 1e300, total = 0;
        for (int run = 0; run < 2 || (total < 1.0 && run < 20); ++run) {
            const auto s0 = std::chrono::steady_clock::now();
            out = search(k);
            const double s = seconds_since(s0);
            best = std::min(best, s);
            total += s;
        }
        return static_cast<double>(o.queries) / best;
    };

    // The exact answer (and the exact search's speed).
    t0 = std::chrono::steady_clock::now();
    const ssm::ExactIndex exact(docs);
    const double exact_build = seconds_since(t0);
    ssm::TopK truth10, truth100;
    const auto exact_search = [&](ssm::index k) { return exact.search(queries, k); };
    const double exact_qps10 = qps(exact_search, 10, truth10), exact_qps100 = qps(exact_search, 100, truth100);
    if (wants("exact"))
        report({"exact", "ssm::ExactIndex", exact_build, static_cast<double>(o.dim) * 4, exact_qps10, 1.0, exact_qps100,
                1.0});

    const auto run_faiss = [&](const std::string& name, const std::string& spec,
                               const std::vector<std::pair<std::string, std::function<void(ssm::FaissIndex&)>>>& settings) {
        const auto b0 = std::chrono::steady_clock::now();
        ssm::FaissIndex index(o.dim, spec);
        index.add(docs);
        const double build = seconds_since(b0);
        const double bytes = bytes_per_vector(index);
        for (const auto& [label, tune] : settings) {
            tune(index);
            ssm::TopK got10, got100;
            const auto search = [&](ssm::index k) { return index.search(queries, k); };
            const double q10 = qps(search, 10, got10), q100 = qps(search, 100, got100);
            report({name, label, build, bytes, q10, recall(got10, truth10, 10), q100, recall(got100, truth100, 100)});
        }
    };
    if (wants("flat")) run_faiss("flat", "flat", {{"Flat", [](ssm::FaissIndex&) {}}});
    if (wants("hnsw")) {
        std::vector<std::pair<std::string, std::function<void(ssm::FaissIndex&)>>> s;
        for (const int ef : {16, 32, 64, 128, 256, 512})
            s.push_back({"HNSW32 efSearch " + std::to_string(ef), [ef](ssm::FaissIndex& i) { i.set_ef_search(ef); }});
        run_faiss("hnsw", "hnsw:32", s);
    }
    if (wants("ivfpq")) {
        // nlist ≈ 4 √N (a power of two), PQ with dim/8 bytes a vector
        ssm::index nlist = 1;
        while (nlist * 2 <= 4 * static_cast<ssm::index>(std::sqrt(static_cast<double>(o.docs)))) nlist *= 2;
        const ssm::index m = o.dim / 8;
        const std::string spec = "ivf:" + std::to_string(nlist) + ",pq:" + std::to_string(m);
        std::vector<std::pair<std::string, std::function<void(ssm::FaissIndex&)>>> s;
        for (const ssm::index nprobe : {1, 4, 16, 64, 256})
            if (nprobe <= nlist)
                s.push_back({"IVF" + std::to_string(nlist) + ",PQ" + std::to_string(m) + " nprobe " + std::to_string(nprobe),
                             [nprobe](ssm::FaissIndex& i) { i.set_nprobe(nprobe); }});
        run_faiss("ivfpq", spec, s);
    }

    if (!o.csv.empty()) {
        std::ofstream csv(o.csv);
        csv << "index,setting,build_s,bytes_per_vector,qps_k10,recall_at_10,qps_k100,recall_at_100,docs,dim,queries\n";
        for (const auto& r : rows)
            csv << r.index << ",\"" << r.setting << "\"," << r.build_s << ',' << r.bytes << ',' << r.qps10 << ',' << r.r10
                << ',' << r.qps100 << ',' << r.r100 << ',' << o.docs << ',' << o.dim << ',' << o.queries << '\n';
        std::printf("wrote    %s\n", o.csv.c_str());
    }
    return 0;
}
