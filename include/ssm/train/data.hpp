// ssm/train/data.hpp — training data for the three recipes: query groups for a retriever
// or a reranker (Tevatron JSON Lines, or a BEIR folder with a run to mine negatives from),
// token streams packed into sequences for a language model, and the seeded order in which
// a run visits them.
//
// Every random choice is a pure function of (seed, epoch, item): the order of an epoch,
// the positive and negatives drawn for a group. A run that resumes at step s therefore
// sees exactly the data an uninterrupted run sees from step s on; nothing random is saved.
// The generator is the library's own (SplitMix64), so a seed means the same data on every
// platform and standard library.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/retrieval/beir.hpp"
#include "ssm/retrieval/jsonl.hpp"
#include "ssm/retrieval/trec.hpp"

namespace ssm::train {

/// SplitMix64: a small, well-mixed 64-bit generator. `mix` hashes a tuple of integers
/// into a seed, so each (seed, epoch, item) has its own independent stream.
class SplitMix64 {
public:
    explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}
    std::uint64_t next() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    /// Uniform in [0, n) (n > 0), without modulo bias.
    std::uint64_t below(std::uint64_t n) noexcept {
        const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
        std::uint64_t x;
        do x = next();
        while (x >= limit);
        return x % n;
    }
    /// Uniform in [0, 1) with 53 random bits.
    double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

    [[nodiscard]] static std::uint64_t mix(std::initializer_list<std::uint64_t> parts) noexcept {
        SplitMix64 g(0x5EEDULL);
        std::uint64_t h = 0;
        for (const std::uint64_t p : parts) {
            g.state_ ^= p + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
            h = g.next();
        }
        return h;
    }

private:
    std::uint64_t state_;
};

/// The order in which epoch `epoch` visits `n` items: a Fisher–Yates shuffle seeded by
/// (seed, epoch).
[[nodiscard]] inline std::vector<index> epoch_order(index n, std::uint64_t seed, index epoch) {
    std::vector<index> order(static_cast<std::size_t>(std::max<index>(n, 0)));
    for (index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    SplitMix64 g(SplitMix64::mix({seed, 0x0DE5ULL, static_cast<std::uint64_t>(epoch)}));
    for (index i = n - 1; i > 0; --i)
        std::swap(order[static_cast<std::size_t>(i)],
                  order[static_cast<std::size_t>(g.below(static_cast<std::uint64_t>(i) + 1))]);
    return order;
}

/// The endless sequence of items a run visits: epoch 0's order, then epoch 1's, ...
/// `at(k)` is the k-th item visited (k from 0), with its epoch.
class ItemStream {
public:
    ItemStream(index items, std::uint64_t seed) : n_(items), seed_(seed) {
        require(items > 0, "ItemStream: no training items");
    }
    struct Item {
        index item;
        index epoch;
    };
    [[nodiscard]] Item at(index k) {
        const index epoch = k / n_;
        if (epoch != cached_epoch_) {
            order_ = epoch_order(n_, seed_, epoch);
            cached_epoch_ = epoch;
        }
        return {order_[static_cast<std::size_t>(k % n_)], epoch};
    }
    [[nodiscard]] index size() const noexcept { return n_; }

private:
    index n_;
    std::uint64_t seed_;
    index cached_epoch_ = -1;
    std::vector<index> order_;
};

/// One training query with its judged passages: the positives (at least one) and the
/// hard negatives to draw from.
struct QueryGroup {
    std::string query_id, query;
    std::vector<Document> positives, negatives;
    std::int64_t line = 0;  // where it was read (JSON Lines), for messages
};

/// A group as one step trains on it: one positive and `group_size − 1` negatives.
struct GroupDraw {
    const Document* positive = nullptr;
    std::vector<const Document*> negatives;
};

/// Draws group `g`'s positive and `group_size − 1` negatives for `epoch`, seeded by
/// (seed, epoch, item): the positive uniformly; the negatives without replacement when
/// there are enough, else with replacement. A group without negatives (when any are
/// needed) is an error naming the query.
[[nodiscard]] inline GroupDraw draw_group(const QueryGroup& g, index group_size, std::uint64_t seed, index epoch,
                                          index item) {
    require(group_size >= 1, "draw_group: group size must be >= 1, got ", group_size);
    require(!g.positives.empty(), "query ", g.query_id, ": no positive passage");
    SplitMix64 rng(SplitMix64::mix({seed, 0x6E67ULL, static_cast<std::uint64_t>(epoch), static_cast<std::uint64_t>(item)}));
    GroupDraw d;
    d.positive = &g.positives[rng.below(g.positives.size())];
    const auto need = static_cast<std::size_t>(group_size - 1);
    if (need == 0) return d;
    require(!g.negatives.empty(), "query ", g.query_id, ": no negative passage, and groups of ", group_size,
            " need ", need);
    if (g.negatives.size() >= need) {
        std::vector<std::size_t> pick(g.negatives.size());
        for (std::size_t i = 0; i < pick.size(); ++i) pick[i] = i;
        for (std::size_t i = 0; i < need; ++i)
            std::swap(pick[i], pick[i + rng.below(pick.size() - i)]);
        for (std::size_t i = 0; i < need; ++i) d.negatives.push_back(&g.negatives[pick[i]]);
    } else {
        for (std::size_t i = 0; i < need; ++i) d.negatives.push_back(&g.negatives[rng.below(g.negatives.size())]);
    }
    return d;
}

namespace detail {

[[nodiscard]] inline Document tevatron_passage(const nlohmann::json& p, const std::filesystem::path& path,
                                               std::int64_t line, const char* list, std::size_t i) {
    const std::string where = std::string("'") + list + "' item " + std::to_string(i);
    if (!p.is_object()) fail_at_line(path, line, where + " must be an object {\"docid\", \"title\", \"text\"}");
    Document d;
    const auto text = p.find("text");
    if (text == p.end() || !text->is_string()) fail_at_line(path, line, where + " has no string 'text'");
    d.text = text->get<std::string>();
    if (const auto t = p.find("title"); t != p.end() && !t->is_null()) {
        if (!t->is_string()) fail_at_line(path, line, where + ": 'title' must be a string");
        d.title = t->get<std::string>();
    }
    if (const auto id = p.find("docid"); id != p.end() && !id->is_null()) {
        if (id->is_string()) d.id = id->get<std::string>();
        else if (id->is_number_integer()) d.id = std::to_string(id->get<std::int64_t>());
        else fail_at_line(path, line, where + ": 'docid' must be a string or an integer");
    }
    return d;
}

}  // namespace detail

/// Reads Tevatron's training JSON Lines: one query a line,
/// `{"query_id", "query", "positive_passages": [{"docid","title","text"}], "negative_passages": [...]}`.
/// A malformed line, a missing field, a line without positives, or no lines at all is an
/// error naming the file and line.
[[nodiscard]] inline std::vector<QueryGroup> read_tevatron_jsonl(const std::filesystem::path& path) {
    std::vector<QueryGroup> groups;
    for_each_jsonl(path, [&](const nlohmann::json& obj, std::int64_t line) {
        if (!obj.is_object()) fail_at_line(path, line, "expected a JSON object");
        QueryGroup g;
        g.line = line;
        const auto q = obj.find("query");
        if (q == obj.end() || !q->is_string()) fail_at_line(path, line, "no string 'query'");
        g.query = q->get<std::string>();
        if (const auto id = obj.find("query_id"); id != obj.end()) {
            if (id->is_string()) g.query_id = id->get<std::string>();
            else if (id->is_number_integer()) g.query_id = std::to_string(id->get<std::int64_t>());
        }
        if (g.query_id.empty()) g.query_id = "line " + std::to_string(line);
        for (const char* key : {"positive_passages", "negative_passages"}) {
            const auto list = obj.find(key);
            const bool positive = key[0] == 'p';
            if (list == obj.end()) {
                if (positive) fail_at_line(path, line, "no 'positive_passages'");
                continue;
            }
            if (!list->is_array()) fail_at_line(path, line, std::string("'") + key + "' must be an array");
            auto& dst = positive ? g.positives : g.negatives;
            for (std::size_t i = 0; i < list->size(); ++i) dst.push_back(detail::tevatron_passage((*list)[i], path, line, key, i));
        }
        if (g.positives.empty()) fail_at_line(path, line, "query '" + g.query_id + "' has no positive passage");
        groups.push_back(std::move(g));
    });
    if (groups.empty()) fail(path.string(), ": no training queries (the file has no non-blank line)");
    return groups;
}

/// Training groups from a BEIR folder: the queries judged in `DIR/qrels/<qrels_name>`
/// with relevance > 0 as positives, and negatives mined from `run` (a TREC run over the
/// same corpus, e.g. BM25's): the first `max_negatives` documents of each query's ranking
/// that are not judged relevant. A judged document or query missing from the corpus or
/// the queries, a run document missing from the corpus, or a query with no positive is
/// an error naming it and the file.
[[nodiscard]] inline std::vector<QueryGroup> read_beir_training(const std::filesystem::path& dir,
                                                               const std::filesystem::path& run_path,
                                                               index max_negatives,
                                                               const std::string& qrels_name = "train.tsv") {
    require(max_negatives >= 1, "read_beir_training: max_negatives must be >= 1, got ", max_negatives);
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
        fail(dir.string(), ": no such folder (expected a BEIR data set with qrels/", qrels_name, ")");
    const auto qrels_path = dir / "qrels" / qrels_name;
    if (!std::filesystem::exists(qrels_path, ec)) fail(qrels_path.string(), ": no such file (the training judgments)");
    std::vector<Document> corpus = read_corpus(dir / "corpus.jsonl");
    const std::vector<Query> queries = read_queries(dir / "queries.jsonl");
    const Qrels qrels = read_qrels(qrels_path);
    const Run run = read_trec_run(run_path);

    std::unordered_map<std::string, std::size_t> doc_row;
    for (std::size_t i = 0; i < corpus.size(); ++i) doc_row.emplace(corpus[i].id, i);
    std::unordered_map<std::string, std::size_t> query_row;
    for (std::size_t i = 0; i < queries.size(); ++i) query_row.emplace(queries[i].id, i);

    std::vector<QueryGroup> groups;
    for (const auto& [qid, judged] : qrels) {
        const auto q = query_row.find(qid);
        if (q == query_row.end())
            fail(qrels_path.string(), ": query '", qid, "' is not in ", (dir / "queries.jsonl").string());
        QueryGroup g;
        g.query_id = qid;
        g.query = queries[q->second].text;
        std::set<std::string> relevant;
        for (const auto& [docid, rel] : judged) {
            const auto d = doc_row.find(docid);
            if (d == doc_row.end())
                fail(qrels_path.string(), ": document '", docid, "' (judged for query '", qid, "') is not in ",
                     (dir / "corpus.jsonl").string());
            if (rel > 0) {
                g.positives.push_back(corpus[d->second]);
                relevant.insert(docid);
            }
        }
        if (g.positives.empty()) continue;  // judged, but nothing relevant: nothing to train on
        if (const auto r = run.find(qid); r != run.end()) {
            std::vector<RunEntry> ranked = r->second;
            std::stable_sort(ranked.begin(), ranked.end(),
                             [](const RunEntry& a, const RunEntry& b) { return a.score > b.score; });
            for (const RunEntry& e : ranked) {
                if (static_cast<index>(g.negatives.size()) >= max_negatives) break;
                if (relevant.count(e.doc_id)) continue;
                const auto d = doc_row.find(e.doc_id);
                if (d == doc_row.end())
                    fail(run_path.string(), ": document '", e.doc_id, "' (ranked for query '", qid, "') is not in ",
                         (dir / "corpus.jsonl").string());
                g.negatives.push_back(corpus[d->second]);
            }
        }
        groups.push_back(std::move(g));
    }
    if (groups.empty()) fail(qrels_path.string(), ": no query has a relevant document to train on");
    return groups;
}

/// Cuts a token stream into consecutive sequences of `seq_len` tokens (the last one
/// shorter, dropped when under two tokens: it predicts nothing). Gradients never cross
/// from one sequence to the next.
[[nodiscard]] inline std::vector<std::vector<std::int32_t>> pack_sequences(std::span<const std::int32_t> tokens,
                                                                          index seq_len) {
    require(seq_len >= 2, "pack_sequences: sequence length must be >= 2, got ", seq_len);
    std::vector<std::vector<std::int32_t>> out;
    for (std::size_t at = 0; at < tokens.size(); at += static_cast<std::size_t>(seq_len)) {
        const std::size_t n = std::min(tokens.size() - at, static_cast<std::size_t>(seq_len));
        if (n < 2) break;
        out.emplace_back(tokens.begin() + static_cast<std::ptrdiff_t>(at),
                         tokens.begin() + static_cast<std::ptrdiff_t>(at + n));
    }
    return out;
}

}  // namespace ssm::train
