// ssm-retrieve: dense retrieval with a Mamba bi-encoder — encode a corpus and queries,
// top-k by cosine (exact, or through a FAISS index), a TREC run, and nDCG@10 / MRR@10 /
// Recall@100 / Recall@1000; under mpirun, every rank encodes and searches a shard.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <ssm/retrieval/beir.hpp>
#include <ssm/retrieval/encode.hpp>
#include <ssm/retrieval/metrics.hpp>
#include <ssm/retrieval/npy.hpp>
#include <ssm/retrieval/shard.hpp>
#include <ssm/retrieval/top_k.hpp>
#include <ssm/retrieval/trec.hpp>
#include <ssm/retrieval/vector_index.hpp>
#include <ssm/ssm.hpp>
#if SSM_WITH_FAISS
#include <ssm/retrieval/faiss_index.hpp>
#endif

#include "cli.hpp"
#include "inputs.hpp"
#include "ranks.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-retrieve — dense retrieval with a Mamba bi-encoder

usage: ssm-retrieve --model DIR --corpus corpus.jsonl --queries queries.jsonl
                    [--qrels qrels.tsv] [--top-k 100] [--run out.trec] [options]
       ssm-retrieve --model DIR --beir DIR [...]
       mpirun -np N ssm-retrieve ...   (a build with MPI: N processes, one shard each)

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
  --index SPEC           search through a FAISS index instead of exactly: flat, hnsw[:M]
                         (default M 32), ivf:NLIST, ivf:NLIST,pq:M, or a FAISS factory
                         string ("OPQ16_64,IVF1024,PQ16"); inner product on unit vectors
  --nprobe N             IVF: inverted lists probed per query (FAISS default 1)
  --ef-search N          HNSW: candidate list size per query (FAISS default 16)
  --save-index FILE      write the index (document ids beside it) after building it
  --load-index FILE      search a saved index instead of encoding the corpus; refused if
                         it was built for another corpus or model width
  --max-length N         keep the first N tokens of each document and query (default: all)
  --batch-tokens N       tokens per packed batch (default 16384)
  --bf16                 keep the weight matrices in bfloat16: half the memory and faster
                         decoding; float32 arithmetic (exact for a BF16 checkpoint)
  --threads N            worker threads (default: all cores)
  --help                 this text

Documents are "title text" (or just the text), queries their text; each gets the EOS
appended, and is embedded as the L2-normalised final hidden state at the EOS. Without
--index, search is exact (blocked matrix products over all documents).

Under mpirun (or srun) every rank reads the corpus and queries, encodes its share of
each (whole batches, about 1/N of the tokens), keeps only its shard of the corpus and
searches it (exactly or with its own FAISS index); rank 0 merges the ranks' top-k lists
into the global top-k (the single-process result) and writes the run and metrics.
--save-index / --load-index then name one file per rank: FILE.rankR-of-N. If any rank
fails, all stop with its message and no output file is left under its final name.
--corpus-embeddings is gathered to rank 0 when written, and read whole by every rank.
)";

/// Identifies a corpus (its size and a hash of every id, title and text), so an index
/// built for another corpus is refused.
std::string corpus_fingerprint(const std::vector<ssm::Document>& corpus) {
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a, 64 bits
    const auto mix = [&](const std::string& s) {
        for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
        h = (h ^ 0xffU) * 0x100000001b3ULL;  // a separator no UTF-8 text holds
    };
    for (const auto& d : corpus) {
        mix(d.id);
        mix(d.title);
        mix(d.text);
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    return std::to_string(corpus.size()) + " documents, fnv1a64 " + hex;
}

/// What --index, --nprobe, --ef-search, --save-index and --load-index ask for.
struct IndexOptions {
    std::optional<std::string> spec, save, load;
    ssm::index nprobe = 0, ef_search = 0;  // 0: FAISS's default
    [[nodiscard]] bool faiss() const { return spec || load; }
};

IndexOptions index_options(const ssm::cli::Args& args) {
    IndexOptions o;
    o.spec = args.get("index");
    o.save = args.get("save-index");
    o.load = args.get("load-index");
    o.nprobe = static_cast<ssm::index>(args.integer("nprobe", 0, 1, 1 << 30));
    o.ef_search = static_cast<ssm::index>(args.integer("ef-search", 0, 1, 1 << 30));
#if !SSM_WITH_FAISS
    for (const char* name : {"index", "save-index", "load-index", "nprobe", "ef-search"})
        if (args.get(name))
            throw ssm::cli::UsageError(std::string("--") + name +
                                       " needs FAISS, and this ssm-retrieve was built without it "
                                       "(install libfaiss-dev and configure again)");
#endif
    if (o.load && o.spec) throw ssm::cli::UsageError("--load-index reads the index type from the file; drop --index");
    if (o.load && o.save) throw ssm::cli::UsageError("--load-index and --save-index together would copy the file");
    if (o.save && !o.spec) throw ssm::cli::UsageError("--save-index needs --index (the exact search builds no index)");
    if ((o.nprobe || o.ef_search) && !o.faiss())
        throw ssm::cli::UsageError("--nprobe and --ef-search tune a FAISS index: give --index or --load-index");
    if (o.load && args.get("corpus-embeddings"))
        throw ssm::cli::UsageError("--load-index replaces the corpus embeddings; drop --corpus-embeddings");
    return o;
}

/// This rank's file of a per-rank set: FILE itself for one process, FILE.rankR-of-N.
[[maybe_unused]] std::filesystem::path rank_file(const std::string& file, const ssm::cli::Ranks& ranks) {
    if (ranks.size() == 1) return file;
    return file + ".rank" + std::to_string(ranks.rank()) + "-of-" + std::to_string(ranks.size());
}

#if SSM_WITH_FAISS
/// Writes every rank's index file, all or none: each rank writes a temporary file beside
/// its final name, and only when every rank has succeeded are they renamed into place.
void save_index_files(ssm::cli::Ranks& ranks, const std::filesystem::path& path, const ssm::FaissIndex& index,
                      const ssm::IndexLabels& labels) {
    const std::filesystem::path partial = path.string() + ".partial";
    try {
        ranks.phase([&] {
            std::error_code ec;
            if (std::filesystem::is_directory(path, ec)) ssm::fail(path.string(), ": is a folder");
            ssm::save_faiss_index(partial, index, labels);
            ssm::cli::injected_failure(ranks, "save-index");
        });
        ranks.phase([&] {
            std::error_code ec;
            std::filesystem::rename(partial, path, ec);
            if (ec) ssm::fail(path.string(), ": cannot move the finished index into place: ", ec.message());
        });
    } catch (...) {
        std::error_code ignored;
        std::filesystem::remove(partial, ignored);
        throw;
    }
}
#endif


/// This rank's part of `plan`: its rows, in the plan's order.
template <class Model>
ssm::Matrix embed(const Model& model, const std::vector<std::vector<std::int32_t>>& seqs, const ssm::ShardPlan& plan,
                  ssm::cli::Ranks& ranks, const char* what, ssm::index batch_tokens) {
    ssm::index tokens = 0;
    for (const auto t : plan.tokens) tokens += t;
    ssm::Progress progress(what, plan.tokens[static_cast<std::size_t>(ranks.rank())], "tok");
    const auto t0 = std::chrono::steady_clock::now();
    ssm::Matrix m = ranks.phase([&] {
        ssm::Matrix part = ssm::encode_shard(model, seqs, plan, ranks.rank(), {batch_tokens, &progress});
        ssm::cli::injected_failure(ranks, "encode");
        return part;
    });
    progress.finish();
    ranks.barrier();  // the slowest rank sets the time
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-8s %zu texts, %lld tokens in %.2f s (%.0f tokens/s)\n", what, seqs.size(),
                static_cast<long long>(tokens), s, static_cast<double>(tokens) / s);
    return m;
}

template <class Model>
int run(const Model& model, const ssm::cli::Args& args, const std::string& model_dir, ssm::cli::Ranks& ranks) {
    const IndexOptions iopt = index_options(args);
    if (args.get("beir") && (args.get("corpus") || args.get("queries") || args.get("qrels")))
        throw ssm::cli::UsageError("--beir replaces --corpus, --queries and --qrels");
    ssm::BeirDataset data;
    ranks.phase([&] {
        if (auto beir = args.get("beir")) {
            data = ssm::read_beir(*beir);
        } else {
            data.corpus = ssm::read_corpus(args.required("corpus"));
            data.queries = ssm::read_queries(args.required("queries"));
            if (auto q = args.get("qrels")) data.qrels = ssm::read_qrels(*q);
        }
        if (data.corpus.empty()) ssm::fail("the corpus holds no document");
        if (data.queries.empty()) ssm::fail("there are no queries");
    });
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
    const auto nd = static_cast<ssm::index>(data.corpus.size());
    const std::string fingerprint = corpus_fingerprint(data.corpus);

    // This rank's shard of the corpus: its embeddings (rows) and their document indices.
    ssm::Matrix docs;
    std::vector<ssm::index> doc_rows;
#if SSM_WITH_FAISS
    std::optional<ssm::FaissIndex> faiss;
    const auto tune = [&] {  // a parameter the index does not have is an error, before any work
        if (iopt.nprobe) faiss->set_nprobe(iopt.nprobe);
        if (iopt.ef_search) faiss->set_ef_search(iopt.ef_search);
    };
    if (iopt.spec) {  // an index string FAISS rejects is reported before the corpus is encoded
        ranks.phase([&] {
            faiss.emplace(model.hidden_size(), *iopt.spec);
            tune();
        });
    }
    if (iopt.load) {
        const auto file = rank_file(*iopt.load, ranks);
        ranks.phase([&] {
            std::error_code ec;
            if (ranks.size() > 1 && !std::filesystem::exists(file, ec))
                ssm::fail(file.string(), ": no such file (an index saved by N ranks is loaded by N ranks)");
            ssm::LoadedFaissIndex loaded = ssm::load_faiss_index(file);
            if (loaded.index.dim() != model.hidden_size())
                ssm::fail(file.string(), ": holds vectors of dimension ", loaded.index.dim(),
                          ", but the model's hidden size is ", model.hidden_size());
            if (loaded.labels.corpus != fingerprint)
                ssm::fail(file.string(), ": was built for another corpus (", loaded.labels.corpus,
                          "); this one has ", fingerprint, " — build the index again with --save-index");
            if (loaded.labels.shard != ranks.name())
                ssm::fail(file.string(), ": holds ", loaded.labels.shard.empty() ? "the whole corpus" : loaded.labels.shard,
                          ", but this process is ", ranks.name().empty() ? "a single process" : ranks.name());
            std::unordered_map<std::string, ssm::index> row_of;
            for (ssm::index d = 0; d < nd; ++d) row_of.emplace(data.corpus[static_cast<std::size_t>(d)].id, d);
            for (const auto& id : loaded.labels.doc_ids) {
                const auto it = row_of.find(id);
                if (it == row_of.end()) ssm::fail(file.string(), ": document '", id, "' is not in the corpus");
                doc_rows.push_back(it->second);
            }
            faiss.emplace(std::move(loaded.index));
            tune();
        });
        std::printf("index    %s: %s, %lld vectors loaded\n", file.string().c_str(), faiss->description().c_str(),
                    static_cast<long long>(faiss->size()));
    }
#endif
    const auto cache = args.get("corpus-embeddings");
    if (!iopt.load && cache && ssm::path_exists(*cache)) {
        // A cache: every rank reads it and keeps an equal run of rows.
        ranks.phase([&] {
            ssm::Matrix all = ssm::load_npy(*cache);
            if (all.rows() != nd || all.cols() != model.hidden_size())
                ssm::fail(*cache, ": holds [", all.rows(), ", ", all.cols(), "] embeddings, but the corpus has ", nd,
                          " documents of hidden size ", model.hidden_size(), " (delete the file to recompute it)");
            const ssm::index begin = nd * ranks.rank() / ranks.size(), end = nd * (ranks.rank() + 1) / ranks.size();
            docs = ranks.size() == 1 ? std::move(all) : ssm::Matrix(all.middleRows(begin, end - begin));
            for (ssm::index d = begin; d < end; ++d) doc_rows.push_back(d);
        });
        std::printf("corpus   %zu embeddings loaded from %s\n", data.corpus.size(), cache->c_str());
    } else if (!iopt.load) {
        std::vector<std::vector<std::int32_t>> seqs;
        seqs.reserve(data.corpus.size());
        ranks.phase([&] {
            for (const auto& d : data.corpus) seqs.push_back(tokenize(ssm::document_text(d)));
        });
        const ssm::ShardPlan plan = ssm::plan_shards(ssm::sequence_lengths(seqs), batch_tokens, ranks.size());
        docs = embed(model, seqs, plan, ranks, "corpus", batch_tokens);
        doc_rows.assign(plan.members(ranks.rank()).begin(), plan.members(ranks.rank()).end());
        if (cache) {
            const ssm::Matrix gathered = ranks.gather_rows(docs);
            ranks.phase([&] {
                if (ranks.root()) ssm::save_npy(*cache, ssm::unshard_rows(gathered, plan));
            });
            std::printf("wrote    %s\n", cache->c_str());
        }
    }

    // Queries: each rank encodes a share, every rank gets all of them.
    if (docs.rows() == 0) docs.resize(0, model.hidden_size());  // a rank with no document
    std::vector<std::vector<std::int32_t>> qseqs;
    ranks.phase([&] {
        for (const auto& q : data.queries) qseqs.push_back(tokenize(q.text));
    });
    const ssm::ShardPlan qplan = ssm::plan_shards(ssm::sequence_lengths(qseqs), batch_tokens, ranks.size());
    const ssm::Matrix queries =
        ssm::unshard_rows(ranks.allgather_rows(embed(model, qseqs, qplan, ranks, "queries", batch_tokens)), qplan);

    // Search deep enough for Recall@1000 when there are judgements.
    const ssm::index depth = std::min<ssm::index>(nd, std::max<ssm::index>(top_k, data.qrels.empty() ? 0 : 1000));
    std::string how = "exact";
    ssm::TopK local;
    auto t0 = std::chrono::steady_clock::now();
#if SSM_WITH_FAISS
    if (iopt.spec) {
        ranks.phase([&] { faiss->add(docs); });
        ranks.barrier();
        const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("index    %s over %lld documents built in %.3f s\n", faiss->description().c_str(),
                    static_cast<long long>(nd), build_s);
        docs = ssm::Matrix();  // the index holds its own copy (or codes)
        if (iopt.save) {
            const auto file = rank_file(*iopt.save, ranks);
            ssm::IndexLabels labels{{}, fingerprint, ranks.name()};
            for (const ssm::index d : doc_rows) labels.doc_ids.push_back(data.corpus[static_cast<std::size_t>(d)].id);
            save_index_files(ranks, file, *faiss, labels);
            std::printf("wrote    %s%s\n", file.string().c_str(), ranks.size() > 1 ? " (and the other ranks')" : "");
        }
    }
    if (faiss) {
        how = "FAISS " + faiss->description();
        if (iopt.nprobe) how += ", nprobe " + std::to_string(iopt.nprobe);
        if (iopt.ef_search) how += ", efSearch " + std::to_string(iopt.ef_search);
        t0 = std::chrono::steady_clock::now();
        local = ranks.phase([&] { return faiss->search(queries, depth); });
    } else
#endif
    {
        t0 = std::chrono::steady_clock::now();
        const ssm::ExactIndex exact(std::move(docs));
        local = exact.search(queries, depth);
    }
    ssm::to_global_ids(local, doc_rows);
    const ssm::TopK hits = ranks.gather_top_k(local, depth);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (ranks.size() > 1) how += ", " + std::to_string(ranks.size()) + " shards";
    std::printf("search   %zu queries × %zu documents, top %lld, in %.3f s (%s)\n", data.queries.size(),
                data.corpus.size(), static_cast<long long>(depth), s, how.c_str());
    if (!ranks.root()) return 0;

    ssm::Run deep, shallow;
    for (std::size_t q = 0; q < data.queries.size(); ++q) {
        auto& entries = deep[data.queries[q].id];
        for (ssm::index j = 0; j < hits.ids.cols(); ++j) {
            const ssm::index d = hits.ids(static_cast<ssm::index>(q), j);
            if (d < 0) continue;  // an approximate index found fewer
            entries.push_back({data.corpus[static_cast<std::size_t>(d)].id,
                               static_cast<double>(hits.scores(static_cast<ssm::index>(q), j))});
        }
        auto& top = shallow[data.queries[q].id];
        top.assign(entries.begin(), entries.begin() + std::min<std::ptrdiff_t>(top_k, static_cast<std::ptrdiff_t>(entries.size())));
    }
    if (auto out = args.get("run")) {
        ssm::write_trec_run(*out, shallow, "ssm");
        std::printf("wrote    %s (%zu queries, top %lld)\n", out->c_str(), shallow.size(),
                    static_cast<long long>(std::min(top_k, nd)));
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
    ssm::cli::Ranks ranks(argc, argv);
    return ssm::cli::run_ranks(ranks, "ssm-retrieve", [&] {
        const ssm::cli::Args args(argc, argv,
                                  {"model", "corpus", "queries", "qrels", "beir", "top-k", "run",
                                   "corpus-embeddings", "max-length", "batch-tokens", "threads", "index",
                                   "nprobe", "ef-search", "save-index", "load-index"},
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
            model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir, ranks); });
    });
}
