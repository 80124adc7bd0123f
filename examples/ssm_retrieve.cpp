// ssm-retrieve: dense retrieval with a Mamba bi-encoder — encode a corpus and queries,
// exact top-k by cosine, a TREC run, and nDCG@10 / MRR@10 / Recall@100 / Recall@1000.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ssm/retrieval/beir.hpp>
#include <ssm/retrieval/encode.hpp>
#include <ssm/retrieval/metrics.hpp>
#include <ssm/retrieval/npy.hpp>
#include <ssm/retrieval/top_k.hpp>
#include <ssm/retrieval/trec.hpp>
#include <ssm/ssm.hpp>

#include "cli.hpp"
#include "inputs.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-retrieve — dense retrieval with a Mamba bi-encoder

usage: ssm-retrieve --model DIR --corpus corpus.jsonl --queries queries.jsonl
                    [--qrels qrels.tsv] [--top-k 100] [--run out.trec] [options]
       ssm-retrieve --model DIR --beir DIR [...]

  --model DIR            checkpoint folder (config.json, safetensors or pytorch_model.bin, tokenizer.json)
  --corpus FILE          BEIR corpus.jsonl: {"_id": ..., "title": ..., "text": ...} per line
  --queries FILE         BEIR queries.jsonl: {"_id": ..., "text": ...} per line
  --qrels FILE           relevance judgements: BEIR TSV (query-id, corpus-id, score) or
                         TREC qrels (qid 0 docid rel); prints nDCG@10, MRR@10, R@100, R@1000
  --beir DIR             DIR/corpus.jsonl, DIR/queries.jsonl and DIR/qrels/test.tsv
  --top-k K              documents per query in the run (default 100)
  --run FILE             write the ranking as a TREC run ("qid Q0 docid rank score ssm")
  --corpus-embeddings F  .npy cache of the corpus embeddings: loaded if F exists (its rows
                         must match the corpus), else computed and written to F
  --max-length N         keep the first N tokens of each document and query (default: all)
  --batch-tokens N       tokens per packed batch (default 16384)
  --bf16                 keep the weight matrices in bfloat16: half the memory and faster
                         decoding; float32 arithmetic (exact for a BF16 checkpoint)
  --threads N            worker threads (default: all cores)
  --help                 this text

Documents are "title text" (or just the text), queries their text; each gets the EOS
appended, and is embedded as the L2-normalised final hidden state at the EOS. Search is
exact (blocked matrix products over all documents), not approximate.
)";

template <class Model>
ssm::Matrix embed(const Model& model, std::vector<std::vector<std::int32_t>>& seqs, const char* what,
                  ssm::index batch_tokens) {
    ssm::index tokens = 0;
    for (const auto& s : seqs) tokens += static_cast<ssm::index>(s.size());
    ssm::Progress progress(what, tokens, "tok");
    const auto t0 = std::chrono::steady_clock::now();
    ssm::Matrix m = ssm::encode_sequences(model, seqs, {batch_tokens, &progress});
    progress.finish();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-8s %zu texts, %lld tokens in %.2f s (%.0f tokens/s)\n", what, seqs.size(),
                static_cast<long long>(tokens), s, static_cast<double>(tokens) / s);
    return m;
}

template <class Model>
int run(const Model& model, const ssm::cli::Args& args, const std::string& model_dir) {
    ssm::BeirDataset data;
    if (auto beir = args.get("beir")) {
        if (args.get("corpus") || args.get("queries") || args.get("qrels"))
            throw ssm::cli::UsageError("--beir replaces --corpus, --queries and --qrels");
        data = ssm::read_beir(*beir);
    } else {
        data.corpus = ssm::read_corpus(args.required("corpus"));
        data.queries = ssm::read_queries(args.required("queries"));
        if (auto q = args.get("qrels")) data.qrels = ssm::read_qrels(*q);
    }
    if (data.corpus.empty()) ssm::fail("the corpus holds no document");
    if (data.queries.empty()) ssm::fail("there are no queries");
    const auto top_k = static_cast<ssm::index>(args.integer("top-k", 100, 1, 1'000'000));
    const auto max_len = static_cast<ssm::index>(args.integer("max-length", 0, 1, 1LL << 31));
    const auto batch_tokens = static_cast<ssm::index>(args.integer("batch-tokens", 16384, 1, 1LL << 31));
    const std::int32_t eos = ssm::cli::eos_id(model.config(), model_dir);
    ssm::cli::LazyTokenizer tokenizer(model_dir, model.vocab_size());
    const auto tokenize = [&](const std::string& text) {
        auto ids = tokenizer.encode(text);
        ssm::cli::finish_input(ids, max_len, eos);
        return ids;
    };

    // Corpus: from the cache, or encoded (and cached when asked).
    ssm::Matrix docs;
    const auto cache = args.get("corpus-embeddings");
    if (cache && std::filesystem::exists(*cache)) {
        docs = ssm::load_npy(*cache);
        if (docs.rows() != static_cast<ssm::index>(data.corpus.size()) || docs.cols() != model.hidden_size())
            ssm::fail(*cache, ": holds [", docs.rows(), ", ", docs.cols(), "] embeddings, but the corpus has ",
                      data.corpus.size(), " documents of hidden size ", model.hidden_size(),
                      " (delete the file to recompute it)");
        std::printf("corpus   %zu embeddings loaded from %s\n", data.corpus.size(), cache->c_str());
    } else {
        std::vector<std::vector<std::int32_t>> seqs;
        seqs.reserve(data.corpus.size());
        for (const auto& d : data.corpus) seqs.push_back(tokenize(ssm::document_text(d)));
        docs = embed(model, seqs, "corpus", batch_tokens);
        if (cache) {
            ssm::save_npy(*cache, docs);
            std::printf("wrote    %s\n", cache->c_str());
        }
    }
    std::vector<std::vector<std::int32_t>> qseqs;
    for (const auto& q : data.queries) qseqs.push_back(tokenize(q.text));
    const ssm::Matrix queries = embed(model, qseqs, "queries", batch_tokens);

    // Search deep enough for Recall@1000 when there are judgements.
    const ssm::index depth = std::min<ssm::index>(docs.rows(), std::max<ssm::index>(top_k, data.qrels.empty() ? 0 : 1000));
    const auto t0 = std::chrono::steady_clock::now();
    const ssm::TopK hits = ssm::exact_top_k(queries, docs, depth);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("search   %zu queries × %zu documents, top %lld, in %.3f s (exact)\n", data.queries.size(),
                data.corpus.size(), static_cast<long long>(depth), s);

    ssm::Run deep, shallow;
    for (std::size_t q = 0; q < data.queries.size(); ++q) {
        auto& entries = deep[data.queries[q].id];
        for (ssm::index j = 0; j < hits.ids.cols(); ++j)
            entries.push_back({data.corpus[static_cast<std::size_t>(hits.ids(static_cast<ssm::index>(q), j))].id,
                               static_cast<double>(hits.scores(static_cast<ssm::index>(q), j))});
        auto& top = shallow[data.queries[q].id];
        top.assign(entries.begin(), entries.begin() + std::min<std::ptrdiff_t>(top_k, static_cast<std::ptrdiff_t>(entries.size())));
    }
    if (auto out = args.get("run")) {
        ssm::write_trec_run(*out, shallow, "ssm");
        std::printf("wrote    %s (%zu queries, top %lld)\n", out->c_str(), shallow.size(),
                    static_cast<long long>(std::min(top_k, docs.rows())));
    }
    if (!data.qrels.empty()) {
        const int nd[] = {10}, mr[] = {10}, rc[] = {100, 1000};
        const ssm::Evaluation e = ssm::evaluate(deep, data.qrels, nd, mr, rc);
        std::printf("metrics  over %zu judged queries: nDCG@10 %.4f  MRR@10 %.4f  R@100 %.4f  R@1000 %.4f\n",
                    e.queries, e.mean.at("ndcg@10"), e.mean.at("mrr@10"), e.mean.at("recall@100"),
                    e.mean.at("recall@1000"));
    } else {
        const std::size_t show = std::min<std::size_t>(3, data.queries.size());
        for (std::size_t q = 0; q < show; ++q) {
            std::printf("query    %s:", data.queries[q].id.c_str());
            const auto& e = shallow[data.queries[q].id];
            for (std::size_t j = 0; j < std::min<std::size_t>(3, e.size()); ++j)
                std::printf(" %s (%.4f)", e[j].doc_id.c_str(), e[j].score);
            std::printf("\n");
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-retrieve", [&] {
        const ssm::cli::Args args(argc, argv,
                                  {"model", "corpus", "queries", "qrels", "beir", "top-k", "run",
                                   "corpus-embeddings", "max-length", "batch-tokens", "threads"},
                                  {"bf16"});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string model_dir = args.required("model");
        if (!args.get("beir") && (!args.get("corpus") || !args.get("queries")))
            throw ssm::cli::UsageError("give --corpus and --queries, or --beir DIR");
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        return ssm::with_mamba<ssm::BiEncoderHead<ssm::LastToken>>(
            model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir); });
    });
}
