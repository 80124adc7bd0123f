// ssm/retrieval/beir.hpp — read a retrieval data set in the BEIR folder format: the corpus,
// the queries and the relevance judgments (qrels).
//
//   DIR/corpus.jsonl    {"_id": "d1", "title": "...", "text": "..."}   one document a line
//   DIR/queries.jsonl   {"_id": "q1", "text": "..."}                   one query a line
//   DIR/qrels/test.tsv  "query-id<TAB>corpus-id<TAB>score" after a header line
//
// Ids stay strings ("007" and "7" are different ids), as BEIR and trec_eval keep them.
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"
#include "ssm/retrieval/jsonl.hpp"

namespace ssm {

/// One corpus document. `title` is empty when the record has none.
struct Document {
    std::string id, title, text;
};

/// One query.
struct Query {
    std::string id, text;
};

/// Relevance judgments: query id -> document id -> relevance (graded; > 0 is relevant,
/// 0 judged non-relevant, < 0 treated as non-relevant by the metrics, as trec_eval does).
using Qrels = std::map<std::string, std::map<std::string, int>>;

namespace detail {

/// A record's id: "_id", or "id" when there is no "_id"; a non-empty string, or an
/// integer (kept as its decimal digits).
[[nodiscard]] inline std::string beir_id(const nlohmann::json& record,
                                         const std::filesystem::path& path, std::int64_t line) {
    auto it = record.find("_id");
    if (it == record.end()) it = record.find("id");
    if (it == record.end()) fail_at_line(path, line, "missing \"_id\"");
    if (it->is_number_integer()) return it->dump();
    if (!it->is_string()) {
        fail_at_line(path, line,
                     "\"" + it.key() + "\" must be a string or an integer, got " + it->type_name());
    }
    std::string id = it->get<std::string>();
    if (id.empty()) fail_at_line(path, line, "\"" + it.key() + "\" is empty");
    return id;
}

/// The string field `key`: required ones must be present; an optional one may be absent
/// or null (read as "").
[[nodiscard]] inline std::string beir_text(const nlohmann::json& record, const std::string& key,
                                           bool required, const std::filesystem::path& path,
                                           std::int64_t line) {
    const auto it = record.find(key);
    if (it == record.end() || (!required && it->is_null())) {
        if (required) fail_at_line(path, line, "missing \"" + key + "\"");
        return {};
    }
    if (!it->is_string()) {
        fail_at_line(path, line, "\"" + key + "\" must be a string, got " + it->type_name());
    }
    return it->get<std::string>();
}

/// Fails when `id` was already seen in `path` (on the line recorded in `seen`).
inline void check_unique_id(std::unordered_map<std::string, std::int64_t>& seen,
                            const std::string& id, const std::filesystem::path& path,
                            std::int64_t line) {
    const auto [it, inserted] = seen.emplace(id, line);
    if (!inserted) {
        fail_at_line(
            path, line,
            "duplicate id \"" + id + "\" (first on line " + std::to_string(it->second) + ")");
    }
}

/// `text` parsed as a whole decimal integer.
[[nodiscard]] inline bool parse_int(std::string_view text, int& value) {
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    return ec == std::errc() && ptr == end && !text.empty();
}

/// `text` without leading and trailing spaces.
[[nodiscard]] inline std::string_view trim(std::string_view text) {
    const std::size_t begin = text.find_first_not_of(" \t\r\n\f\v");
    if (begin == std::string_view::npos) return {};
    return text.substr(begin, text.find_last_not_of(" \t\r\n\f\v") - begin + 1);
}

/// `line` split at every tab.
[[nodiscard]] inline std::vector<std::string_view> split_tabs(std::string_view line) {
    std::vector<std::string_view> fields;
    std::size_t begin = 0;
    while (true) {
        const std::size_t tab = line.find('\t', begin);
        fields.push_back(line.substr(begin, tab == std::string_view::npos ? tab : tab - begin));
        if (tab == std::string_view::npos) return fields;
        begin = tab + 1;
    }
}

}  // namespace detail

/// Reads a BEIR corpus.jsonl: one object a line with "_id" ("id" accepted), "text" and an
/// optional "title" (absent or null: empty). Blank lines are skipped. A malformed line, a
/// missing or mistyped field and a repeated id are errors naming FILE:LINE.
[[nodiscard]] inline std::vector<Document> read_corpus(const std::filesystem::path& corpus_jsonl) {
    std::vector<Document> docs;
    std::unordered_map<std::string, std::int64_t> seen;
    for_each_jsonl(corpus_jsonl, [&](const nlohmann::json& record, std::int64_t line) {
        Document d;
        d.id = detail::beir_id(record, corpus_jsonl, line);
        d.title = detail::beir_text(record, "title", false, corpus_jsonl, line);
        d.text = detail::beir_text(record, "text", true, corpus_jsonl, line);
        detail::check_unique_id(seen, d.id, corpus_jsonl, line);
        docs.push_back(std::move(d));
    });
    return docs;
}

/// Reads a BEIR queries.jsonl: one object a line with "_id" ("id" accepted) and "text";
/// other fields ("metadata") are ignored. Errors name FILE:LINE, as for the corpus.
[[nodiscard]] inline std::vector<Query> read_queries(const std::filesystem::path& queries_jsonl) {
    std::vector<Query> queries;
    std::unordered_map<std::string, std::int64_t> seen;
    for_each_jsonl(queries_jsonl, [&](const nlohmann::json& record, std::int64_t line) {
        Query q;
        q.id = detail::beir_id(record, queries_jsonl, line);
        q.text = detail::beir_text(record, "text", true, queries_jsonl, line);
        detail::check_unique_id(seen, q.id, queries_jsonl, line);
        queries.push_back(std::move(q));
    });
    return queries;
}

/// Reads relevance judgments in either format, told apart by the first non-blank line:
/// - BEIR TSV: "query-id<TAB>corpus-id<TAB>score", 3 tab-separated fields; a first line
///   whose score is not an integer is the header and is skipped;
/// - TREC qrels: "qid iteration docid relevance", 4 whitespace-separated fields (the
///   iteration, usually 0, is ignored).
/// Relevance must be an integer (negative values are kept). Blank lines are skipped. The
/// same (query, document) pair judged twice with the same relevance is accepted, with two
/// different relevances an error. Every error names FILE:LINE.
[[nodiscard]] inline Qrels read_qrels(const std::filesystem::path& path) {
    enum class Format { unknown, beir_tsv, trec };
    Format format = Format::unknown;
    Qrels qrels;
    detail::for_each_line(path, [&](std::string_view line, std::int64_t number) {
        if (detail::is_blank(line)) return;
        std::string_view query, doc, rel_text;
        if (format == Format::unknown) {
            const auto tabs = detail::split_tabs(line);
            const auto words = detail::split_whitespace(line);
            int ignored = 0;
            if (tabs.size() == 3) {
                format = Format::beir_tsv;
                if (!detail::parse_int(detail::trim(tabs[2]), ignored)) return;  // the header
            } else if (words.size() == 4) {
                format = Format::trec;
            } else {
                fail_at_line(path, number,
                             "expected a BEIR qrels line \"query-id<TAB>corpus-id<TAB>score\" or a "
                             "TREC qrels line \"qid 0 docid relevance\"");
            }
        }
        if (format == Format::beir_tsv) {
            const auto tabs = detail::split_tabs(line);
            if (tabs.size() != 3) {
                fail_at_line(path, number,
                             "expected 3 tab-separated fields (query-id, corpus-id, score), got " +
                                 std::to_string(tabs.size()));
            }
            query = detail::trim(tabs[0]);
            doc = detail::trim(tabs[1]);
            rel_text = detail::trim(tabs[2]);
        } else {
            const auto words = detail::split_whitespace(line);
            if (words.size() != 4) {
                fail_at_line(path, number,
                             "expected 4 fields (qid iteration docid relevance), got " +
                                 std::to_string(words.size()));
            }
            query = words[0];
            doc = words[2];
            rel_text = words[3];
        }
        if (query.empty() || doc.empty()) fail_at_line(path, number, "empty query or document id");
        int rel = 0;
        if (!detail::parse_int(rel_text, rel)) {
            fail_at_line(path, number,
                         "relevance \"" + std::string(rel_text) + "\" is not an integer");
        }
        auto& judged = qrels[std::string(query)];
        const auto [it, inserted] = judged.emplace(std::string(doc), rel);
        if (!inserted && it->second != rel) {
            fail_at_line(path, number,
                         "query \"" + std::string(query) + "\", document \"" + std::string(doc) +
                             "\" judged again with a different relevance (" +
                             std::to_string(it->second) + ", now " + std::to_string(rel) + ")");
        }
    });
    return qrels;
}

/// A BEIR data set read whole.
struct BeirDataset {
    std::vector<Document> corpus;
    std::vector<Query> queries;
    Qrels qrels;
};

/// Reads DIR/corpus.jsonl, DIR/queries.jsonl and DIR/qrels/test.tsv (qrels empty when that
/// file is absent). All queries are kept, those without any judgment too: the caller
/// decides what to run and evaluate.
[[nodiscard]] inline BeirDataset read_beir(const std::filesystem::path& dir) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
        fail(dir.string(), std::filesystem::exists(dir, ec) ? ": not a folder" : ": no such folder",
             " (expected a BEIR data set: corpus.jsonl, queries.jsonl, qrels/test.tsv)");
    }
    BeirDataset data;
    data.corpus = read_corpus(dir / "corpus.jsonl");
    data.queries = read_queries(dir / "queries.jsonl");
    const auto qrels = dir / "qrels" / "test.tsv";
    if (std::filesystem::exists(qrels, ec)) data.qrels = read_qrels(qrels);
    return data;
}

/// The text a bi-encoder reads for a document: title + " " + text when the title is
/// non-empty, else the text.
[[nodiscard]] inline std::string document_text(const Document& d) {
    return d.title.empty() ? d.text : d.title + " " + d.text;
}

}  // namespace ssm
