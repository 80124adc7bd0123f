// ssm-rerank: relevance scores from a Mamba cross-encoder (RankMamba) — for (query,
// document) pairs or token ids, or to rerank the top of a TREC run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <ssm/retrieval/beir.hpp>
#include <ssm/retrieval/encode.hpp>
#include <ssm/retrieval/metrics.hpp>
#include <ssm/retrieval/trec.hpp>
#include <ssm/ssm.hpp>

#include "cli.hpp"
#include "inputs.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-rerank — score (query, document) pairs with a Mamba cross-encoder (RankMamba)

usage: ssm-rerank --model DIR --input FILE.jsonl [options]
       ssm-rerank --model DIR --run run.trec --queries queries.jsonl --corpus corpus.jsonl
                  --out reranked.trec [--depth 100] [--qrels qrels.tsv] [options]

  --model DIR        checkpoint folder with the scoring head `score.weight` [1, hidden]
                     (and optionally `score.bias` [1]) beside the Mamba weights
  --head FILE        a safetensors or PyTorch file holding score.weight / score.bias, when they are
                     not in the checkpoint (default: DIR/score.safetensors when present, as
                     ssm-train reranker saves it)
  --input FILE       one object per line: {"query": "...", "document": "..."} or
                     {"input_ids": [...]}; prints one score per line, in input order
  --run FILE         a TREC run to rerank: the top --depth documents of each query are
                     scored and written, best first, to --out
  --queries FILE     BEIR queries.jsonl ({"_id", "text"}) for --run
  --corpus FILE      BEIR corpus.jsonl ({"_id", "title", "text"}) for --run
  --out FILE         the reranked TREC run
  --depth N          documents reranked per query (default 100)
  --qrels FILE       with --run: print nDCG@10 and MRR@10 before and after reranking
  --no-eos           do not append config.json's eos_token_id to each input
  --batch-tokens N   tokens per packed batch (default 16384)
  --bf16             keep the weight matrices in bfloat16: half the memory and faster
                     decoding; float32 arithmetic (exact for a BF16 checkpoint)
  --threads N        worker threads (default: all cores)
  --help             this text

A pair is read as "Document: " + document + "\n\nQuery: " + query, then the EOS; the
score is score.weight · h + score.bias, with h the final hidden state at the EOS.
)";

template <class Model>
ssm::Matrix score(const Model& model, const std::vector<std::vector<std::int32_t>>& seqs, ssm::index batch_tokens) {
    ssm::index tokens = 0;
    for (const auto& s : seqs) tokens += static_cast<ssm::index>(s.size());
    ssm::Progress progress("rerank", tokens, "tok");
    const auto t0 = std::chrono::steady_clock::now();
    ssm::Matrix m = ssm::encode_sequences(model, seqs, {batch_tokens, &progress});
    progress.finish();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "scored %zu inputs (%lld tokens) in %.2f s: %.0f tokens/s\n", seqs.size(),
                 static_cast<long long>(tokens), s, static_cast<double>(tokens) / s);
    return m;
}

void print_metrics(const char* label, const ssm::Run& run, const ssm::Qrels& qrels) {
    const int nd[] = {10}, mr[] = {10};
    const ssm::Evaluation e = ssm::evaluate(run, qrels, nd, mr, {});
    std::printf("%-8s nDCG@10 %.4f  MRR@10 %.4f  (%zu judged queries)\n", label, e.mean.at("ndcg@10"),
                e.mean.at("mrr@10"), e.queries);
}

template <class Model>
int run(const Model& model, const ssm::cli::Args& args, const std::string& model_dir) {
    const auto batch_tokens = static_cast<ssm::index>(args.integer("batch-tokens", 16384, 1, 1LL << 31));
    std::optional<std::int32_t> eos;
    if (!args.flag("no-eos")) eos = ssm::cli::eos_id(model.config(), model_dir);
    ssm::cli::LazyTokenizer tokenizer(model_dir, model.vocab_size());
    const auto pair_ids = [&](const std::string& query, const std::string& doc) {
        auto ids = tokenizer.encode(ssm::RerankerHead::pair_text(query, doc));
        ssm::cli::finish_input(ids, 0, eos);
        return ids;
    };

    if (auto input = args.get("input")) {
        const std::filesystem::path path = *input;
        std::vector<std::vector<std::int32_t>> seqs;
        ssm::for_each_jsonl(path, [&](const nlohmann::json& obj, std::int64_t line) {
            std::vector<std::int32_t> ids;
            if (obj.contains("input_ids")) {
                ids = ssm::cli::ids_field(obj, "input_ids", path, line);
                ssm::cli::check_ids_at(ids, model.vocab_size(), path, line);
                ssm::cli::finish_input(ids, 0, eos);
            } else if (obj.contains("query") || obj.contains("document")) {
                ids = pair_ids(ssm::cli::string_field(obj, "query", path, line),
                               ssm::cli::string_field(obj, "document", path, line));
            } else {
                ssm::fail_at_line(path, line, "needs \"query\" and \"document\", or \"input_ids\"");
            }
            seqs.push_back(std::move(ids));
        });
        if (seqs.empty()) ssm::fail(path.string(), ": no inputs (the file has no non-blank line)");
        const ssm::Matrix s = score(model, seqs, batch_tokens);
        for (ssm::index i = 0; i < s.rows(); ++i) std::printf("%.9g\n", static_cast<double>(s(i, 0)));
        return 0;
    }

    const ssm::Run first = ssm::read_trec_run(args.required("run"));
    const auto out = args.required("out");
    std::map<std::string, std::string> query_text, doc_text;
    for (const auto& q : ssm::read_queries(args.required("queries"))) query_text[q.id] = q.text;
    for (const auto& d : ssm::read_corpus(args.required("corpus"))) doc_text[d.id] = ssm::document_text(d);
    const auto depth = static_cast<std::size_t>(args.integer("depth", 100, 1, 1'000'000));

    std::vector<std::vector<std::int32_t>> seqs;
    std::vector<std::pair<std::string, std::string>> pairs;  // (query id, doc id) of each input
    for (const auto& [qid, entries] : first) {
        const auto q = query_text.find(qid);
        if (q == query_text.end()) ssm::fail(args.required("queries"), ": no query '", qid, "' (it is in the run)");
        auto sorted = entries;
        std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
        for (std::size_t j = 0; j < std::min(depth, sorted.size()); ++j) {
            const auto d = doc_text.find(sorted[j].doc_id);
            if (d == doc_text.end())
                ssm::fail(args.required("corpus"), ": no document '", sorted[j].doc_id, "' (it is in the run for query '",
                          qid, "')");
            seqs.push_back(pair_ids(q->second, d->second));
            pairs.emplace_back(qid, sorted[j].doc_id);
        }
    }
    const ssm::Matrix s = score(model, seqs, batch_tokens);
    ssm::Run reranked;
    for (std::size_t i = 0; i < pairs.size(); ++i)
        reranked[pairs[i].first].push_back({pairs[i].second, static_cast<double>(s(static_cast<ssm::index>(i), 0))});
    ssm::write_trec_run(out, reranked, "ssm-rerank");
    std::printf("reranked %zu queries, top %zu each: %zu pairs; wrote %s\n", reranked.size(), depth, pairs.size(),
                out.c_str());
    if (auto qrels_file = args.get("qrels")) {
        const ssm::Qrels qrels = ssm::read_qrels(*qrels_file);
        print_metrics("before", first, qrels);
        print_metrics("after", reranked, qrels);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-rerank", [&] {
        const ssm::cli::Args args(argc, argv,
                                  {"model", "head", "input", "run", "queries", "corpus", "out", "depth", "qrels",
                                   "batch-tokens", "threads"},
                                  {"no-eos", "bf16"});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string model_dir = args.required("model");
        if (args.get("input") && args.get("run")) throw ssm::cli::UsageError("give --input or --run, not both");
        if (!args.get("input") && !args.get("run")) throw ssm::cli::UsageError("give --input FILE or --run FILE");
        if (args.get("run"))
            for (const char* need : {"queries", "corpus", "out"}) (void)args.required(need);
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        std::vector<std::filesystem::path> extra;
        if (auto head = args.get("head")) {
            extra.emplace_back(*head);
        } else {  // a folder ssm-train saved keeps its head beside the weights
            const auto beside = std::filesystem::path(model_dir) / "score.safetensors";
            std::error_code ec;
            if (std::filesystem::is_regular_file(beside, ec)) extra.push_back(beside);
        }
        return ssm::with_mamba<ssm::RerankerHead>(
            model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir); }, extra);
    });
}
