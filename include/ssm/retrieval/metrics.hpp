// ssm/retrieval/metrics.hpp — nDCG@k, MRR@k and Recall@k exactly as trec_eval (and so
// pytrec_eval and BEIR) computes them.
//
// Ranking: each query's documents are ranked by score descending, the scores compared as
// 32-bit floats, ties by document id descending (trec_eval's form_res_rels.c); the order
// entries come in does not matter.
// Relevance: a judged relevance >= 1 is relevant; 0, negative values and documents
// missing from the qrels are not relevant and have no gain.
//
//   ndcg@k    trec_eval "ndcg_cut_k": DCG = sum over ranks i <= k of rel_i / log2(i + 1),
//             rel_i the judged relevance where > 0; divided by the ideal DCG, the DCG of
//             the query's positive judgments sorted descending, cut at k; 0 when no
//             document is relevant.
//   mrr@k     1 / rank of the first relevant document within ranks 1..k, 0 if none: what
//             trec_eval's "recip_rank" gives on the run cut to its top k.
//   recall@k  trec_eval "recall_k": relevant documents within ranks 1..k divided by all
//             relevant documents of the query; 0 when it has none.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/retrieval/beir.hpp"
#include "ssm/retrieval/trec.hpp"

namespace ssm {

/// The result of `evaluate`.
struct Evaluation {
    std::map<std::string, std::map<std::string, double>> per_query;  // qid -> measure -> value
    std::map<std::string, double> mean;  // measure -> mean over the evaluated queries
    std::size_t queries = 0;             // queries evaluated
};

namespace detail {

/// One query's ranking as the metrics see it.
struct JudgedRanking {
    std::vector<int> rel;      // judged relevance at rank 1, 2, ... (0 when unjudged)
    std::vector<int> ideal;    // the query's positive relevances, descending
    std::size_t relevant = 0;  // judgments with relevance >= 1
};

[[nodiscard]] inline JudgedRanking judge(const std::vector<RunEntry>& entries,
                                         const std::map<std::string, int>& qrels,
                                         const std::string& context) {
    JudgedRanking j;
    for (const auto& [doc, rel] : qrels) {
        if (rel > 0) j.ideal.push_back(rel);
    }
    std::sort(j.ideal.begin(), j.ideal.end(), std::greater<>());
    j.relevant = j.ideal.size();
    const auto order = trec_eval_order(entries, context);
    j.rel.reserve(order.size());
    for (const std::size_t i : order) {
        const auto it = qrels.find(entries[i].doc_id);
        j.rel.push_back(it == qrels.end() ? 0 : it->second);
    }
    return j;
}

[[nodiscard]] inline std::size_t cut(std::size_t size, int k) {
    return std::min(size, static_cast<std::size_t>(k));
}

[[nodiscard]] inline double ndcg_cut(const JudgedRanking& j, int k) {
    double dcg = 0, ideal = 0;
    for (std::size_t i = 0; i < cut(j.rel.size(), k); ++i) {
        if (j.rel[i] > 0) dcg += j.rel[i] / std::log2(static_cast<double>(i + 2));
    }
    for (std::size_t i = 0; i < cut(j.ideal.size(), k); ++i) {
        ideal += j.ideal[i] / std::log2(static_cast<double>(i + 2));
    }
    return ideal > 0 ? dcg / ideal : 0.0;
}

[[nodiscard]] inline double recip_rank_cut(const JudgedRanking& j, int k) {
    for (std::size_t i = 0; i < cut(j.rel.size(), k); ++i) {
        if (j.rel[i] >= 1) return 1.0 / static_cast<double>(i + 1);
    }
    return 0.0;
}

[[nodiscard]] inline double recall_cut(const JudgedRanking& j, int k) {
    if (j.relevant == 0) return 0.0;
    std::size_t found = 0;
    for (std::size_t i = 0; i < cut(j.rel.size(), k); ++i) found += j.rel[i] >= 1 ? 1 : 0;
    return static_cast<double>(found) / static_cast<double>(j.relevant);
}

inline void check_cutoff(int k, const char* measure) {
    require(k >= 1, measure, ": the cutoff k must be >= 1, got ", k);
}

}  // namespace detail

/// nDCG@k of one query (trec_eval "ndcg_cut_k"). `ranked`: the query's entries in any
/// order (ranked as trec_eval ranks them); `rel`: its judgments. k >= 1.
[[nodiscard]] inline double ndcg_at(const std::vector<RunEntry>& ranked,
                                    const std::map<std::string, int>& rel, int k) {
    detail::check_cutoff(k, "ndcg_at");
    return detail::ndcg_cut(detail::judge(ranked, rel, "ndcg_at"), k);
}

/// MRR@k of one query: 1 / rank of the first relevant document in the top k, else 0.
[[nodiscard]] inline double mrr_at(const std::vector<RunEntry>& ranked,
                                   const std::map<std::string, int>& rel, int k) {
    detail::check_cutoff(k, "mrr_at");
    return detail::recip_rank_cut(detail::judge(ranked, rel, "mrr_at"), k);
}

/// Recall@k of one query (trec_eval "recall_k").
[[nodiscard]] inline double recall_at(const std::vector<RunEntry>& ranked,
                                      const std::map<std::string, int>& rel, int k) {
    detail::check_cutoff(k, "recall_at");
    return detail::recall_cut(detail::judge(ranked, rel, "recall_at"), k);
}

/// Evaluates `run` against `qrels` the way pytrec_eval's RelevanceEvaluator does (and so
/// BEIR's EvaluateRetrieval):
/// - the evaluated queries are those with at least one judgment in `qrels` (of any
///   relevance, 0 included) that are also keys of `run`;
/// - a query whose judgments are all non-relevant is evaluated and scores 0 on every
///   measure (it lowers the mean); a query present in `run` with no entries scores 0;
/// - a query judged in `qrels` but absent from `run` is skipped (not counted as 0), and a
///   query of `run` without judgments is skipped.
/// Measures are named "ndcg@K", "mrr@K" and "recall@K" for each cutoff K given (each
/// >= 1); `mean` averages each over the evaluated queries (0 when there are none).
/// A NaN score or a document listed twice for a query is an error naming the query.
[[nodiscard]] inline Evaluation evaluate(const Run& run, const Qrels& qrels,
                                         std::span<const int> ndcg_k, std::span<const int> mrr_k,
                                         std::span<const int> recall_k) {
    for (const int k : ndcg_k) detail::check_cutoff(k, "evaluate (ndcg)");
    for (const int k : mrr_k) detail::check_cutoff(k, "evaluate (mrr)");
    for (const int k : recall_k) detail::check_cutoff(k, "evaluate (recall)");
    std::vector<std::string> names;
    for (const int k : ndcg_k) names.push_back("ndcg@" + std::to_string(k));
    for (const int k : mrr_k) names.push_back("mrr@" + std::to_string(k));
    for (const int k : recall_k) names.push_back("recall@" + std::to_string(k));

    Evaluation ev;
    for (const auto& [qid, judged] : qrels) {
        if (judged.empty()) continue;
        const auto it = run.find(qid);
        if (it == run.end()) continue;
        const auto j = detail::judge(it->second, judged, "evaluate: query \"" + qid + "\"");
        auto& values = ev.per_query[qid];
        for (const int k : ndcg_k) values["ndcg@" + std::to_string(k)] = detail::ndcg_cut(j, k);
        for (const int k : mrr_k) values["mrr@" + std::to_string(k)] = detail::recip_rank_cut(j, k);
        for (const int k : recall_k)
            values["recall@" + std::to_string(k)] = detail::recall_cut(j, k);
    }
    ev.queries = ev.per_query.size();
    for (const auto& name : names) {
        double sum = 0;
        for (const auto& [qid, values] : ev.per_query) sum += values.at(name);
        ev.mean[name] = ev.queries > 0 ? sum / static_cast<double>(ev.queries) : 0.0;
    }
    return ev;
}

}  // namespace ssm
