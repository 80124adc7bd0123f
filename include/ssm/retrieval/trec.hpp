// ssm/retrieval/trec.hpp — retrieval runs and the TREC run file format that trec_eval,
// pytrec_eval and ranx read: one line "qid Q0 docid rank score tag" per retrieved document.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numeric>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ssm/core/atomic_file.hpp"
#include "ssm/core/error.hpp"
#include "ssm/retrieval/jsonl.hpp"

namespace ssm {

/// One retrieved document and its score (higher is better).
struct RunEntry {
    std::string doc_id;
    double score = 0;
};

/// A retrieval run: query id -> retrieved documents, in any order.
using Run = std::map<std::string, std::vector<RunEntry>>;

namespace detail {

/// The order in which trec_eval ranks one query's entries: by score descending, the
/// scores compared as 32-bit floats (trec_eval keeps them as `float`, so 1.0 and
/// 1.0 + 1e-9 are a tie), and ties by document id *descending*, compared byte by byte
/// (`comp_sim_docno` in trec_eval's form_res_rels.c). Returns indices into `entries`,
/// best first. A NaN score or a document listed twice is an error; `context` starts
/// its message.
[[nodiscard]] inline std::vector<std::size_t> trec_eval_order(const std::vector<RunEntry>& entries,
                                                              const std::string& context) {
    std::vector<std::size_t> order(entries.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    for (const auto& e : entries) {
        if (std::isnan(e.score)) fail(context, ": document \"", e.doc_id, "\" has a NaN score");
    }
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return entries[a].doc_id < entries[b].doc_id; });
    for (std::size_t i = 1; i < order.size(); ++i) {
        if (entries[order[i]].doc_id == entries[order[i - 1]].doc_id) {
            fail(context, ": document \"", entries[order[i]].doc_id, "\" is listed twice");
        }
    }
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const float sa = static_cast<float>(entries[a].score);
        const float sb = static_cast<float>(entries[b].score);
        if (sa != sb) return sa > sb;
        return entries[a].doc_id > entries[b].doc_id;
    });
    return order;
}

/// Fails unless `field` is non-empty and free of whitespace (so it reads back as one field).
inline void check_trec_field(std::string_view field, std::string_view what,
                             const std::string& file) {
    if (field.empty() || field.find_first_of(" \t\r\n\f\v") != std::string_view::npos) {
        fail(file, ": cannot write ", what, " \"", field,
             "\" to a TREC run: it is empty or holds whitespace");
    }
}

}  // namespace detail

/// Writes `run` as a TREC run file, "qid Q0 docid rank score tag" a line, queries in id
/// order, each query's documents ranked 1, 2, ... in the order trec_eval ranks them (score
/// descending, ties by doc id descending; see `detail::trec_eval_order`), so the rank
/// column agrees with what trec_eval computes. Scores are written with the fewest digits
/// that read back to the same double. A query with no entries writes no line. Ids and the
/// tag must be non-empty and free of whitespace; a NaN score or a document listed twice
/// for a query is an error. The file appears complete or not at all.
inline void write_trec_run(const std::filesystem::path& path, const Run& run,
                           const std::string& tag = "ssm") {
    const std::string file = path.string();
    detail::check_trec_field(tag, "tag", file);
    write_file_atomically(path, [&](std::ostream& out) {
        std::string text;
        char number[64];
        for (const auto& [qid, entries] : run) {
            if (entries.empty()) continue;
            detail::check_trec_field(qid, "query id", file);
            const auto order = detail::trec_eval_order(entries, file + ": query \"" + qid + "\"");
            text.clear();
            for (std::size_t r = 0; r < order.size(); ++r) {
                const RunEntry& e = entries[order[r]];
                detail::check_trec_field(e.doc_id, "document id", file);
                const auto res = std::to_chars(number, number + sizeof number, e.score);
                text.append(qid).append(" Q0 ").append(e.doc_id).append(" ");
                text.append(std::to_string(r + 1)).append(" ");
                text.append(number, res.ptr).append(" ").append(tag).append("\n");
            }
            out.write(text.data(), static_cast<std::streamsize>(text.size()));
        }
    });
}

/// Reads a TREC run file: lines "qid Q0 docid rank score tag" separated by whitespace
/// (blank lines skipped). Entries keep the file's order. The rank must be an integer but
/// is otherwise ignored, as trec_eval ranks by score; "Q0" and the tag are not checked.
/// A line with another number of fields, a rank that is not an integer, a score that is not a
/// number (or is NaN), and a document listed twice for one query are errors naming FILE:LINE.
[[nodiscard]] inline Run read_trec_run(const std::filesystem::path& path) {
    Run run;
    std::map<std::string, std::vector<std::int64_t>> lines;  // line of each entry, for duplicates
    detail::for_each_line(path, [&](std::string_view line, std::int64_t number) {
        if (detail::is_blank(line)) return;
        const auto f = detail::split_whitespace(line);
        if (f.size() != 6) {
            fail_at_line(path, number,
                         "expected 6 fields \"qid Q0 docid rank score tag\", got " +
                             std::to_string(f.size()));
        }
        long long rank = 0;
        const auto rank_res = std::from_chars(f[3].data(), f[3].data() + f[3].size(), rank);
        if (rank_res.ec != std::errc() || rank_res.ptr != f[3].data() + f[3].size()) {
            fail_at_line(path, number, "rank \"" + std::string(f[3]) + "\" is not an integer");
        }
        double score = 0;
        const auto score_res = std::from_chars(f[4].data(), f[4].data() + f[4].size(), score);
        if (score_res.ec != std::errc() || score_res.ptr != f[4].data() + f[4].size() ||
            std::isnan(score)) {
            fail_at_line(path, number, "score \"" + std::string(f[4]) + "\" is not a number");
        }
        const std::string qid(f[0]);
        run[qid].push_back(RunEntry{std::string(f[2]), score});
        lines[qid].push_back(number);
    });
    for (const auto& item : run) {  // not a structured binding: lambdas capture `entries`
        const std::string& qid = item.first;
        const std::vector<RunEntry>& entries = item.second;
        const auto& at = lines.at(qid);
        std::vector<std::size_t> order(entries.size());
        std::iota(order.begin(), order.end(), std::size_t{0});
        // (a structured binding cannot be captured before C++20's P1091, which clang 14 lacks)
        std::sort(order.begin(), order.end(), [&e = entries](std::size_t a, std::size_t b) {
            return e[a].doc_id != e[b].doc_id ? e[a].doc_id < e[b].doc_id : a < b;
        });
        for (std::size_t i = 1; i < order.size(); ++i) {
            if (entries[order[i]].doc_id == entries[order[i - 1]].doc_id) {
                fail_at_line(path, at[order[i]],
                             "document \"" + entries[order[i]].doc_id +
                                 "\" listed again for query \"" + qid + "\" (first on line " +
                                 std::to_string(at[order[i - 1]]) + ")");
            }
        }
    }
    return run;
}

}  // namespace ssm
