// ssm-train: fine-tunes (or trains from scratch) a Mamba model as a dense retriever, a
// cross-encoder reranker or a language model, from files on disk, and saves folders that
// the library and transformers both load.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include <ssm/core/progress.hpp>
#include <ssm/retrieval/encode.hpp>
#include <ssm/retrieval/metrics.hpp>
#include <ssm/retrieval/top_k.hpp>
#include <ssm/ssm.hpp>
#include <ssm/train/adamw.hpp>
#include <ssm/train/data.hpp>
#include <ssm/train/init.hpp>
#include <ssm/train/losses.hpp>
#include <ssm/train/parameters.hpp>
#include <ssm/train/save.hpp>
#include <ssm/train/schedule.hpp>
#include <ssm/train/steps.hpp>

#include "cli.hpp"
#include "inputs.hpp"
#include "ranks.hpp"

namespace {

namespace fs = std::filesystem;
using ssm::index;
using Ids = std::vector<std::int32_t>;

constexpr const char* kHelp = R"(ssm-train — train a Mamba retriever, reranker or language model

usage: ssm-train retriever --model DIR --train DATA --out DIR [options]
       ssm-train reranker  --model DIR --train DATA --out DIR [options]
       ssm-train lm        --model DIR --train FILE --out DIR [options]
       (--init config.json instead of --model trains from scratch;
        --resume DIR continues a run saved by --out or --save-every)

Recipes
  retriever   bi-encoder (Mamba Retriever): last-token embedding after the final norm,
              L2-normalised; InfoNCE over each query's group (1 positive + negatives) with
              in-batch negatives (every passage of the batch), scores cos/T.
  reranker    cross-encoder (RankMamba): "Document: " + doc + "\n\nQuery: " + query + EOS,
              the document cut so the pair fits --max-length; score = score.weight·h +
              score.bias with dropout on h; listwise softmax over each group, target the
              positive.
  lm          causal language model (MambaByte on a byte-level model): text packed into
              sequences of --seq-len tokens, cross-entropy over every predicted token.

Data (--train)
  retriever, reranker: Tevatron JSON Lines {"query_id", "query", "positive_passages":
              [{"docid","title","text"}], "negative_passages": [...]}, or a BEIR folder with
              qrels/train.tsv and --negatives RUN (hard negatives: the best-ranked documents
              of each query that are not judged relevant)
  lm:         a text file, or JSON Lines of {"text": ...} (documents, tokenized and packed,
              EOS between documents when config.json has one) or {"ids": [...]} (one
              sequence a line, used as given)

Model and output
  --model DIR          checkpoint folder to start from (Mamba-1, Falcon-Mamba or Mamba-2;
                       float32, bf16 or sharded)
  --init FILE          config.json of a Mamba-1, Falcon-Mamba or Mamba-2 model to initialise
                       from scratch (mamba_ssm's initialisation, seeded by --seed)
  --out DIR            where the trained model goes: config.json, model.safetensors,
                       tokenizer files, score.safetensors (reranker), optimizer.safetensors,
                       trainer_state.json
  --resume DIR         continue a run from a folder this program saved (the same options
                       give the same losses as an uninterrupted run)
  --head FILE          reranker: initial score.weight [1, D] / score.bias [1] (default: the
                       model folder's score.safetensors, else a fresh Linear(D, 1))

Optimisation
  --steps N | --epochs E   optimizer steps, or passes over the training items
  --batch-size N       queries (retriever, reranker) or sequences (lm) per micro-batch (8)
  --grad-accum N       micro-batches per optimizer step (1)
  --lr X               peak learning rate (lm 6e-4; retriever, reranker 2e-5)
  --weight-decay X     AdamW decay, not on norms, biases, A_log, D (lm 0.1; others 0)
  --warmup N           warmup steps (0)
  --schedule S         constant | linear | cosine (linear)
  --clip X             global gradient-norm clip, 0 for none (1.0)
  --seed N             data order, negatives, dropout and --init (0)
  --threads N          worker threads (all cores)
  --bf16-products      the projections' products (forward and both backward GEMMs) with
                       bf16 operands and float32 sums, on the CPU's bf16 unit where the
                       dispatch uses it (AVX512-BF16 where it outruns the float32 FMA units;
                       SSM_CPU_ISA=avx512bf16 forces it); masters, optimizer, norms and scan
                       stay float32. Elsewhere the products stay float32, with a note.

Recipe options
  --group-size N       retriever, reranker: passages per query, 1 positive (8)
  --negatives RUN      retriever, reranker with a BEIR folder: TREC run to mine negatives
  --max-negatives N    negatives kept per query from RUN (30)
  --temperature T      retriever: InfoNCE temperature (0.01)
  --query-max-length N   retriever: query tokens before the EOS (32)
  --passage-max-length N retriever: passage tokens before the EOS (128)
  --max-length N       reranker: tokens of a pair, EOS included (512)
  --dropout P          reranker: dropout on the pooled state in training (0.1)
  --seq-len N          lm: tokens per packed sequence (1024)

Progress, evaluation, checkpoints
  --eval PATH          retriever: BEIR folder (qrels/test.tsv): nDCG@10, MRR@10, R@100;
                       reranker: BEIR folder and --eval-run RUN to rerank: nDCG@10, MRR@10;
                       lm: held-out text: loss, bits per byte (byte models), perplexity
  --eval-run RUN       reranker: candidates to rerank (the top --eval-depth of each query)
  --eval-depth N       reranker: candidates per query (100)
  --eval-every N       evaluate every N steps (and at the end when --eval is given)
  --save-every N       save OUT/checkpoint-STEP every N steps
  --log FILE           JSON Lines: {"step","loss","lr","grad_norm","tokens","tokens_per_s"}
                       each step, {"step","eval":{...}} each evaluation (appended)
  --help               this text

A progress bar (step, smoothed loss, lr, tokens/s, ETA) is drawn on a terminal.

Data-parallel training (a build with MPI): mpirun -np N ssm-train ... splits every
micro-batch into N runs of consecutive items (B/N each, rounded), one per rank, and sums
the gradients over the ranks before each optimizer step; the retriever's in-batch
negatives are the passages of all ranks. Each step's loss and gradient norm equal the
single-process run's to float32 rounding. Rank 0 writes the log, the checkpoints and the
evaluations; with --init the other ranks read the model rank 0 wrote, so --out must be
on a file system every rank sees.
)";

// ---------------------------------------------------------------------------------------
// Options

struct Options {
    std::string mode;
    std::optional<fs::path> model, init, resume;
    fs::path train, out;
    std::optional<fs::path> eval, eval_run, log, head, negatives;
    index steps = 0;
    double epochs = 0;
    index batch_size = 8, grad_accum = 1, warmup = 0, seed = 0, save_every = 0, eval_every = 0;
    double lr = 0, weight_decay = 0, clip = 1.0;
    std::string schedule = "linear";
    index group_size = 8, max_negatives = 30, query_max = 32, passage_max = 128, max_length = 512, seq_len = 1024;
    index eval_depth = 100;
    double temperature = 0.01, dropout = 0.1;
};

Options parse_options(const std::string& mode, const ssm::cli::Args& args) {
    Options o;
    o.mode = mode;
    const bool lm = mode == "lm", rr = mode == "reranker", ret = mode == "retriever";
    if (auto v = args.get("model")) o.model = *v;
    if (auto v = args.get("init")) o.init = *v;
    if (auto v = args.get("resume")) o.resume = *v;
    if (o.model && o.init) throw ssm::cli::UsageError("give --model or --init, not both");
    if (!o.model && !o.init && !o.resume) throw ssm::cli::UsageError("missing --model DIR (or --init config.json, or --resume DIR)");
    o.train = args.required("train");
    o.out = args.required("out");
    for (const char* k : {"eval", "eval-run", "log", "head", "negatives"}) {
        if (auto v = args.get(k)) {
            const std::string key = k;
            if (key == "eval") o.eval = *v;
            if (key == "eval-run") o.eval_run = *v;
            if (key == "log") o.log = *v;
            if (key == "head") o.head = *v;
            if (key == "negatives") o.negatives = *v;
        }
    }
    const auto only = [&](const char* name, bool allowed, const char* modes) {
        if (!allowed && args.get(name))
            throw ssm::cli::UsageError(std::string("--") + name + " is for " + modes + " only");
    };
    only("head", rr, "reranker");
    only("max-length", rr, "reranker");
    only("dropout", rr, "reranker");
    only("eval-run", rr, "reranker");
    only("eval-depth", rr, "reranker");
    only("temperature", ret, "retriever");
    only("query-max-length", ret, "retriever");
    only("passage-max-length", ret, "retriever");
    only("seq-len", lm, "lm");
    only("group-size", !lm, "retriever and reranker");
    only("negatives", !lm, "retriever and reranker");
    only("max-negatives", !lm, "retriever and reranker");

    if (args.get("steps") && args.get("epochs")) throw ssm::cli::UsageError("give --steps or --epochs, not both");
    if (!args.get("steps") && !args.get("epochs")) throw ssm::cli::UsageError("missing --steps N (or --epochs E)");
    o.steps = args.integer("steps", 0, 1, 1LL << 40);
    o.epochs = args.real("epochs", 0, 1e-9, 1e9);
    o.batch_size = args.integer("batch-size", 8, 1, 1 << 20);
    o.grad_accum = args.integer("grad-accum", 1, 1, 1 << 20);
    o.lr = args.real("lr", lm ? 6e-4 : 2e-5, 0, 10);
    o.weight_decay = args.real("weight-decay", lm ? 0.1 : 0.0, 0, 10);
    o.warmup = args.integer("warmup", 0, 0, 1LL << 40);
    o.schedule = args.get("schedule").value_or("linear");
    if (o.schedule != "constant" && o.schedule != "linear" && o.schedule != "cosine")
        throw ssm::cli::UsageError("--schedule must be constant, linear or cosine, got '" + o.schedule + "'");
    o.clip = args.real("clip", 1.0, 0, 1e9);
    o.seed = args.integer("seed", 0, 0, 1LL << 62);
    o.save_every = args.integer("save-every", 0, 1, 1LL << 40);
    o.eval_every = args.integer("eval-every", 0, 1, 1LL << 40);
    if (o.eval_every && !o.eval) throw ssm::cli::UsageError("--eval-every needs --eval PATH");
    o.group_size = args.integer("group-size", 8, rr ? 2 : 1, 1 << 16);
    o.max_negatives = args.integer("max-negatives", 30, 1, 1 << 20);
    o.temperature = args.real("temperature", 0.01, 1e-6, 1e6);
    o.query_max = args.integer("query-max-length", 32, 1, 1 << 24);
    o.passage_max = args.integer("passage-max-length", 128, 1, 1 << 24);
    o.max_length = args.integer("max-length", 512, 8, 1 << 24);
    o.dropout = args.real("dropout", 0.1, 0, 0.95);
    o.seq_len = args.integer("seq-len", 1024, 2, 1 << 24);
    o.eval_depth = args.integer("eval-depth", 100, 1, 1 << 20);
    if (rr && o.eval && !o.eval_run) throw ssm::cli::UsageError("reranker --eval needs --eval-run RUN (the candidates to rerank)");
    if (o.negatives && ssm::path_kind(o.train) == ssm::PathKind::file)
        throw ssm::cli::UsageError("--negatives goes with a BEIR folder as --train (a JSON Lines file has its own negatives)");
    return o;
}

// ---------------------------------------------------------------------------------------
// Output folder, trainer state, logs

/// Fails early, with one line, when `dir` cannot be created or written.
void check_writable(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!fs::is_directory(dir, ec))
        ssm::fail(dir.string(), ": cannot create the output folder", ec ? " (" + ec.message() + ")" : std::string());
    const fs::path probe = dir / ".ssm-train-probe";
    {
        std::ofstream f(probe);
        if (!f || !(f << "probe") || !f.flush()) {
            fs::remove(probe, ec);
            ssm::fail(dir.string(), ": the output folder is not writable");
        }
    }
    fs::remove(probe, ec);
}

struct TrainerState {
    std::string mode;
    index step = 0;
    nlohmann::json settings;  // what must match for a resumed run to continue exactly
};

nlohmann::json run_settings(const Options& o) {
    nlohmann::json s = {{"mode", o.mode},          {"seed", o.seed},         {"batch_size", o.batch_size},
                        {"grad_accum", o.grad_accum}, {"schedule", o.schedule}, {"warmup", o.warmup}};
    if (o.mode == "lm") s["seq_len"] = o.seq_len;
    else s["group_size"] = o.group_size;
    return s;
}

TrainerState read_trainer_state(const fs::path& dir) {
    const fs::path file = dir / "trainer_state.json";
    std::ifstream in(file);
    if (!in) ssm::fail(dir.string(), ": not a folder saved by ssm-train (no trainer_state.json)");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
        TrainerState s;
        s.mode = j.at("mode").get<std::string>();
        s.step = j.at("step").get<index>();
        s.settings = j.at("settings");
        if (s.step < 0) throw std::runtime_error("negative step");
        return s;
    } catch (const std::exception& e) {
        ssm::fail(file.string(), ": not a valid trainer state (", e.what(), ")");
    }
}

class Log {
public:
    explicit Log(const std::optional<fs::path>& path) {
        if (!path) return;
        out_.open(*path, std::ios::app);
        if (!out_) ssm::fail(path->string(), ": cannot open the log for writing");
        path_ = *path;
    }
    void write(const nlohmann::json& j) {
        if (!out_.is_open()) return;
        out_ << j.dump() << "\n";
        out_.flush();
        if (!out_) ssm::fail(path_.string(), ": write failed");
    }

private:
    std::ofstream out_;
    fs::path path_;
};

// ---------------------------------------------------------------------------------------
// The score head of the reranker: Linear(D, 1) with dropout on its input in training.

struct ScoreHead {
    ssm::Tensor weight, bias, weight_grad, bias_grad;  // (1, D), (1)

    static ScoreHead load_or_init(const std::optional<fs::path>& file, index hidden, std::uint64_t seed) {
        ScoreHead h;
        if (file) {
            const ssm::Checkpoint c = ssm::Checkpoint::open(*file);
            const index ws[] = {1, hidden}, bs[] = {1};
            h.weight = c.load_f32("score.weight", ws);
            if (c.contains("score.bias")) h.bias = c.load_f32("score.bias", bs);
            else h.bias = ssm::Tensor::zeros({1});
            return h;
        }
        // torch.nn.Linear's initialisation: U(−1/√D, 1/√D) for weight and bias.
        ssm::train::SplitMix64 rng(ssm::train::SplitMix64::mix({seed, 0x5C03EULL}));
        const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
        std::vector<float> w(static_cast<std::size_t>(hidden));
        for (float& x : w) x = static_cast<float>((2 * rng.uniform() - 1) * bound);
        h.weight = ssm::Tensor::from({1, hidden}, std::move(w));
        h.bias = ssm::Tensor::from({1}, std::vector<float>{static_cast<float>((2 * rng.uniform() - 1) * bound)});
        return h;
    }

    void register_parameters(ssm::train::Parameters& params) {
        ssm::train::register_tensor(params, "score.weight", weight, weight_grad, true);
        ssm::train::register_tensor(params, "score.bias", bias, bias_grad, false);
    }

    /// Scores of each sequence's last hidden row; with `drop` > 0 each input element is
    /// zeroed with probability `drop` (the rest scaled by 1/(1−drop)), masks from `rng_seed`.
    /// `masks` keeps the scaled masks for the backward.
    /// `first_row`: the batch's first sequence is sequence `first_row` of the whole step's
    /// batch (a rank's share in data-parallel training), so its masks are those that
    /// sequence would get in one process.
    ssm::Matrix forward(const ssm::Matrix& hidden, std::span<const index> offsets, double drop, std::uint64_t rng_seed,
                        ssm::Matrix* masks, index first_row = 0) const {
        const index n = static_cast<index>(offsets.size()) - 1, D = hidden.cols();
        ssm::Matrix scores(n, 1);
        if (masks) masks->setOnes(n, D);
        ssm::train::SplitMix64 rng(rng_seed);
        if (drop > 0 && masks)
            for (index k = 0; k < first_row * D; ++k) (void)rng.uniform();
        const auto w = weight.matrix().row(0);
        const float keep_scale = drop > 0 ? static_cast<float>(1.0 / (1.0 - drop)) : 1.0f;
        for (index s = 0; s < n; ++s) {
            const index last = offsets[static_cast<std::size_t>(s) + 1] - 1;
            if (drop > 0 && masks) {
                for (index d = 0; d < D; ++d) (*masks)(s, d) = rng.uniform() < drop ? 0.0f : keep_scale;
                scores(s, 0) = hidden.row(last).cwiseProduct(masks->row(s)).dot(w) + bias.data()[0];
            } else {
                scores(s, 0) = hidden.row(last).dot(w) + bias.data()[0];
            }
        }
        return scores;
    }

    /// d_hidden (tokens, D) gets each last row's gradient; the head's gradients accumulate.
    void backward(const ssm::Matrix& hidden, std::span<const index> offsets, const ssm::Matrix& masks,
                  const ssm::Matrix& d_scores, ssm::Matrix& d_hidden) {
        const index n = static_cast<index>(offsets.size()) - 1;
        const auto w = weight.matrix().row(0);
        auto dw = weight_grad.mutable_matrix().row(0);
        for (index s = 0; s < n; ++s) {
            const index last = offsets[static_cast<std::size_t>(s) + 1] - 1;
            const float ds = d_scores(s, 0);
            dw += ds * hidden.row(last).cwiseProduct(masks.row(s));
            d_hidden.row(last) += ds * w.cwiseProduct(masks.row(s));
            bias_grad.mutable_data()[0] += ds;
        }
    }

    void save(const fs::path& file, index step) const {
        const std::vector<ssm::TensorToWrite> t = {
            ssm::f32_tensor("score.weight", {1, weight.dim(1)}, weight.values()),
            ssm::f32_tensor("score.bias", {1}, bias.values())};
        ssm::write_safetensors(file, t, {{"format", "pt"}, {"ssm.step", std::to_string(step)}});
    }
};

// ---------------------------------------------------------------------------------------
// Tokenized training data

/// The model folder's tokenizer, made the first time text needs one (token-id input needs
/// none), and a retriever/reranker group's text tokenized once per distinct string.
class TextCache {
public:
    TextCache(fs::path dir, index vocab) : dir_(std::move(dir)), vocab_(vocab) {}
    const Ids& get(const std::string& text) {
        auto it = cache_.find(text);
        if (it != cache_.end()) return it->second;
        return cache_.emplace(text, tokenizer().encode(text)).first->second;
    }
    const ssm::Tokenizer& tokenizer() {
        if (!tok_) tok_ = ssm::Tokenizer::for_checkpoint(dir_, vocab_);
        return *tok_;
    }

private:
    fs::path dir_;
    index vocab_;
    std::optional<ssm::Tokenizer> tok_;
    std::unordered_map<std::string, Ids> cache_;
};

/// A copy of `ids` as the encoders read it: the first `max_tokens`, then the EOS.
Ids truncated_with_eos(const Ids& ids, index max_tokens, std::optional<std::int32_t> eos) {
    Ids out = ids;
    ssm::cli::finish_input(out, max_tokens, eos);
    return out;
}

/// RankMamba's pair: "Document: " + doc + "\n\nQuery: " + query, then EOS; the document's
/// tokens are cut so the whole pair has at most `max_length` tokens.
Ids reranker_pair(TextCache& cache, const std::string& query, const std::string& doc, index max_length,
                  std::optional<std::int32_t> eos) {
    const Ids& head = cache.get("Document: ");
    const Ids& tail = cache.get("\n\nQuery: " + query);
    const Ids& body = cache.get(doc);
    const index fixed = static_cast<index>(head.size() + tail.size()) + (eos ? 1 : 0);
    const index room = std::max<index>(0, max_length - fixed);
    Ids out(head);
    out.insert(out.end(), body.begin(), body.begin() + std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(body.size()), room));
    out.insert(out.end(), tail.begin(), tail.end());
    if (static_cast<index>(out.size()) + (eos ? 1 : 0) > max_length)
        out.resize(static_cast<std::size_t>(std::max<index>(1, max_length - (eos ? 1 : 0))));
    if (eos) out.push_back(*eos);
    return out;
}

std::vector<ssm::train::QueryGroup> read_groups(const Options& o) {
    std::error_code ec;
    if (fs::is_directory(o.train, ec)) {
        if (!o.negatives)
            throw ssm::cli::UsageError("a BEIR folder as --train needs --negatives RUN (a run to mine hard negatives from)");
        return ssm::train::read_beir_training(o.train, *o.negatives, o.max_negatives);
    }
    if (!fs::exists(o.train, ec)) ssm::fail(o.train.string(), ": no such file or folder");
    return ssm::train::read_tevatron_jsonl(o.train);
}

/// LM training sequences: packed text, or one {"ids"} line a sequence.
std::vector<Ids> read_lm_sequences(const Options& o, TextCache& text_cache, const ssm::MambaConfig& config) {
    std::error_code ec;
    if (!fs::is_regular_file(o.train, ec)) ssm::fail(o.train.string(), ": no such file (the training text)");
    const bool jsonl = o.train.extension() == ".jsonl" || o.train.extension() == ".json";
    if (!jsonl) {
        std::ifstream in(o.train, std::ios::binary);
        if (!in) ssm::fail(o.train.string(), ": cannot open for reading");
        std::stringstream text;
        text << in.rdbuf();
        const Ids ids = text_cache.tokenizer().encode(text.str());
        auto seqs = ssm::train::pack_sequences(ids, o.seq_len);
        if (seqs.empty()) ssm::fail(o.train.string(), ": under two tokens of text, nothing to predict");
        return seqs;
    }
    std::vector<Ids> given;
    Ids stream;
    bool has_text = false, has_ids = false;
    ssm::for_each_jsonl(o.train, [&](const nlohmann::json& obj, std::int64_t line) {
        if (obj.contains("ids")) {
            Ids ids = ssm::cli::ids_field(obj, "ids", o.train, line);
            ssm::cli::check_ids_at(ids, config.vocab_size, o.train, line);
            if (ids.size() < 2) ssm::fail_at_line(o.train, line, "'ids' has one token: it predicts nothing");
            given.push_back(std::move(ids));
            has_ids = true;
        } else if (obj.contains("text")) {
            const std::string text = ssm::cli::string_field(obj, "text", o.train, line);
            const Ids ids = text_cache.tokenizer().encode(text);
            if (has_text && config.eos_token_id) stream.push_back(static_cast<std::int32_t>(*config.eos_token_id));
            stream.insert(stream.end(), ids.begin(), ids.end());
            has_text = true;
        } else {
            ssm::fail_at_line(o.train, line, "no 'text' or 'ids' field");
        }
        if (has_text && has_ids) ssm::fail_at_line(o.train, line, "mixes 'text' and 'ids' lines; use one kind per file");
    });
    if (has_ids) return given;
    auto seqs = ssm::train::pack_sequences(stream, o.seq_len);
    if (seqs.empty()) ssm::fail(o.train.string(), ": under two tokens of text, nothing to predict");
    return seqs;
}

// ---------------------------------------------------------------------------------------
// The trainer

std::string fmt(const char* f, double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, x);
    return buf;
}

template <class Model>
class Trainer {
public:
    Trainer(Model& model, const Options& o, const ssm::MambaConfig& config, fs::path base_dir, ssm::cli::Ranks& ranks)
        : model_(model), o_(o), config_(config), base_dir_(std::move(base_dir)), ranks_(ranks) {}

    int run(index start_step, index total_steps, index items, const std::optional<fs::path>& resume_dir) {
        if (o_.mode == "reranker") {
            std::optional<fs::path> head_file = o_.head;
            if (!head_file && resume_dir) head_file = *resume_dir / "score.safetensors";
            if (!head_file && ssm::path_exists(base_dir_ / "score.safetensors")) head_file = base_dir_ / "score.safetensors";
            head_ = ScoreHead::load_or_init(head_file, model_.hidden_size(), static_cast<std::uint64_t>(o_.seed));
        }
        model_.register_parameters(params_);
        if (head_) head_->register_parameters(params_);
        ssm::train::AdamWOptions ao;
        ao.lr = o_.lr;
        ao.weight_decay = o_.weight_decay;
        ao.max_grad_norm = o_.clip;
        ssm::train::LrSchedule sched = o_.schedule == "constant" ? ssm::train::LrSchedule::constant(o_.warmup)
                                       : o_.schedule == "cosine" ? ssm::train::LrSchedule::cosine(o_.warmup, total_steps)
                                                                 : ssm::train::LrSchedule::linear(o_.warmup, total_steps);
        opt_.emplace(ao, sched);
        if (resume_dir) {
            opt_->load(*resume_dir / "optimizer.safetensors", params_);
            if (opt_->steps_taken() != start_step)
                ssm::fail(resume_dir->string(), ": optimizer.safetensors is at step ", opt_->steps_taken(),
                          ", trainer_state.json at step ", start_step,
                          " (the folder mixes two saves; resume from an earlier checkpoint)");
        }

        Log log(std::nullopt);  // the root logs, saves and evaluates
        on_root([&] { log = Log(o_.log); });
        ssm::train::ItemStream stream(items, static_cast<std::uint64_t>(o_.seed));
        ssm::Progress bar("train", total_steps - start_step, "step", ranks_.root() ? stderr : nullptr);
        double smooth = 0;
        double first_loss = NAN, last_loss = NAN;
        index trained_tokens = 0;
        const auto t_start = std::chrono::steady_clock::now();
        for (index step = start_step; step < total_steps; ++step) {
            const auto t0 = std::chrono::steady_clock::now();
            params_.zero_grad();
            double loss = 0;
            index tokens = 0;
            // Data-parallel: each rank takes an equal run of every micro-batch's items; its
            // share of the loss (and gradient) is weighted so the shares add up to the
            // whole micro-batch's, then the gradients are summed over the ranks.
            const index lo = o_.batch_size * ranks_.rank() / ranks_.size();
            const index hi = o_.batch_size * (ranks_.rank() + 1) / ranks_.size();
            for (index micro = 0; micro < o_.grad_accum; ++micro) {
                std::vector<ssm::train::ItemStream::Item> batch_items;
                for (index j = 0; j < o_.batch_size; ++j)
                    batch_items.push_back(stream.at((step * o_.grad_accum + micro) * o_.batch_size + j));
                const auto [l, t] = micro_step(batch_items, lo, hi, step, micro);
                loss += l;
                tokens += t;
            }
            if (ranks_.size() > 1) {
                for (ssm::train::Parameter& p : params_) ranks_.sum_everywhere(p.grad);
                ranks_.sum_everywhere(std::span<double>(&loss, 1));
                std::int64_t all_tokens = tokens;
                ranks_.sum_everywhere(std::span<std::int64_t>(&all_tokens, 1));
                tokens = all_tokens;
            }
            loss /= static_cast<double>(o_.grad_accum);
            ranks_.phase([&] {  // the same sum on every rank, so the same verdict
                if (!std::isfinite(loss)) ssm::fail("step ", step + 1, ": the loss is ", loss, " (lower --lr, or check the data)");
            });
            const ssm::train::AdamWStep s = opt_->step(params_, o_.grad_accum);
            model_.refresh_derived();
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            trained_tokens += tokens;
            smooth = step == start_step ? loss : 0.9 * smooth + 0.1 * loss;
            if (std::isnan(first_loss)) first_loss = loss;
            last_loss = loss;
            const double tps = static_cast<double>(tokens) / std::max(secs, 1e-9);
            log.write({{"step", step + 1}, {"loss", loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                       {"tokens", tokens}, {"tokens_per_s", tps}});
            bar.set_note("loss " + fmt("%.4f", smooth) + "  lr " + fmt("%.2e", s.lr) + "  " +
                         ssm::Progress::human(tps) + " tok/s");
            bar.advance(1);
            const index done = step + 1;
            if (o_.save_every && done % o_.save_every == 0 && done < total_steps)
                on_root([&] { save(o_.out / ("checkpoint-" + std::to_string(done)), done); });
            if (o_.eval_every && done % o_.eval_every == 0 && done < total_steps)
                on_root([&] { evaluate(done, log, bar.enabled()); });
        }
        bar.finish();
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        on_root([&] { save(o_.out, total_steps); });
        std::printf("trained steps %lld..%lld in %.1f s: loss %.4f -> %.4f, %.0f tokens/s (%lld tokens)\n",
                    static_cast<long long>(start_step + 1), static_cast<long long>(total_steps), secs, first_loss,
                    last_loss, static_cast<double>(trained_tokens) / std::max(secs, 1e-9),
                    static_cast<long long>(trained_tokens));
        std::printf("saved %s\n", o_.out.string().c_str());
        if (o_.eval) on_root([&] { evaluate(total_steps, log, false); });
        return 0;
    }

    /// Runs `f` on the root alone, as a phase: when it fails there, every rank stops with
    /// its message (rather than waiting in the next step's gradient sum).
    template <class F>
    void on_root(F&& f) {
        ranks_.phase([&] {
            if (ranks_.root()) f();
        });
    }

    // --- data -------------------------------------------------------------------------

    void set_groups(std::vector<ssm::train::QueryGroup> groups, TextCache& cache, std::optional<std::int32_t> eos) {
        groups_ = std::move(groups);
        cache_ = &cache;
        eos_ = eos;
    }
    void set_sequences(std::vector<Ids> seqs) { seqs_ = std::move(seqs); }
    void set_eval_tokenizer(TextCache* cache, std::optional<std::int32_t> eos) {
        cache_ = cache;
        eos_ = eos;
    }

private:
    /// This rank's share of one micro-batch: items [lo, hi) of `items`. Returns its share of
    /// the loss and the tokens it read; the gradient of that share is added to the
    /// parameters. With one process, [lo, hi) is the whole micro-batch.
    std::pair<double, index> micro_step(const std::vector<ssm::train::ItemStream::Item>& items, index lo, index hi,
                                        index step, index micro) {
        // lm and reranker shares need no other rank: a failure in one (a loss that is not
        // finite) is agreed on at once. The retriever's share gathers embeddings, so it is
        // no phase; its loss, computed alike on every rank, is.
        if (o_.mode == "retriever") return retriever_step(items, lo, hi);
        return ranks_.phase([&] {
            return o_.mode == "lm" ? lm_step(items, lo, hi) : reranker_step(items, lo, hi, step, micro);
        });
    }

    /// The loss is the mean over the micro-batch's predicted tokens: a share of n of N
    /// tokens weighs its mean by n / N.
    std::pair<double, index> lm_step(const std::vector<ssm::train::ItemStream::Item>& items, index lo, index hi) {
        if constexpr (ssm::LanguageModelHead<typename Model::head_type>) {
            ssm::Batch batch;
            index predicted_all = 0;
            for (index j = 0; j < static_cast<index>(items.size()); ++j) {
                const Ids& seq = seqs_[static_cast<std::size_t>(items[static_cast<std::size_t>(j)].item)];
                predicted_all += static_cast<index>(seq.size()) - 1;
                if (j >= lo && j < hi) batch.add(seq);
            }
            const index predicted = batch.total_tokens() - batch.size();
            // A share with nothing to predict adds nothing; a whole batch with nothing to
            // predict is an error, which causal_lm_loss reports.
            if (predicted == 0 && predicted_all > 0) return {0.0, batch.total_tokens()};
            const double weight = predicted_all > 0 ? static_cast<double>(predicted) / static_cast<double>(predicted_all) : 1.0;
            return {ssm::train::causal_lm_step(model_, batch, weight) * weight, batch.total_tokens()};
        } else {
            ssm::fail("internal: lm step on a model without a language-model head");
        }
    }

    /// InfoNCE with in-batch negatives over the whole micro-batch: the ranks' query and
    /// passage embeddings are gathered, every rank computes the same loss, and each
    /// back-propagates the rows of its own sequences (its share of the loss: 1 / ranks).
    std::pair<double, index> retriever_step(const std::vector<ssm::train::ItemStream::Item>& items, index lo, index hi) {
        if constexpr (!ssm::LanguageModelHead<typename Model::head_type>) {
            const index nq = hi - lo;
            ssm::Batch batch;
            std::vector<Ids> passages;
            for (index j = lo; j < hi; ++j) {
                const auto& it = items[static_cast<std::size_t>(j)];
                const auto& g = groups_[static_cast<std::size_t>(it.item)];
                batch.add(truncated_with_eos(cache_->get(g.query), o_.query_max, eos_));
                const auto d = ssm::train::draw_group(g, o_.group_size, static_cast<std::uint64_t>(o_.seed), it.epoch, it.item);
                passages.push_back(truncated_with_eos(cache_->get(ssm::document_text(*d.positive)), o_.passage_max, eos_));
                for (const auto* n : d.negatives)
                    passages.push_back(truncated_with_eos(cache_->get(ssm::document_text(*n)), o_.passage_max, eos_));
            }
            for (const auto& p : passages) batch.add(p);
            if (ranks_.size() == 1)
                return {ssm::train::info_nce_step(model_, batch, nq, o_.group_size, o_.temperature), batch.total_tokens()};
            typename Model::TrainCache cache;
            const ssm::Matrix emb = nq > 0 ? model_.encode_train(batch, cache) : ssm::Matrix(0, model_.hidden_size());
            const ssm::Matrix q_all = ranks_.allgather_rows(emb.topRows(nq));
            const ssm::Matrix p_all = ranks_.allgather_rows(emb.bottomRows(emb.rows() - nq));
            ssm::Matrix dq, dp;
            const double loss =
                ranks_.phase([&] { return ssm::train::info_nce_loss(q_all, p_all, o_.group_size, o_.temperature, dq, dp); });
            if (nq > 0) {
                ssm::Matrix d_emb(emb.rows(), emb.cols());
                d_emb.topRows(nq) = dq.middleRows(lo, nq);
                d_emb.bottomRows(emb.rows() - nq) = dp.middleRows(lo * o_.group_size, nq * o_.group_size);
                model_.backward_encoded(cache, d_emb);
            }
            return {loss / static_cast<double>(ranks_.size()), batch.total_tokens()};
        } else {
            ssm::fail("internal: retriever step on a language model");
        }
    }

    /// The loss is the mean over the micro-batch's queries: a share of n of N queries weighs
    /// its mean by n / N.
    std::pair<double, index> reranker_step(const std::vector<ssm::train::ItemStream::Item>& items, index lo, index hi,
                                           index step, index micro) {
        if (hi == lo) return {0.0, 0};
        ssm::Batch batch;
        for (index j = lo; j < hi; ++j) {
            const auto& it = items[static_cast<std::size_t>(j)];
            const auto& g = groups_[static_cast<std::size_t>(it.item)];
            const auto d = ssm::train::draw_group(g, o_.group_size, static_cast<std::uint64_t>(o_.seed), it.epoch, it.item);
            batch.add(reranker_pair(*cache_, g.query, ssm::document_text(*d.positive), o_.max_length, eos_));
            for (const auto* n : d.negatives)
                batch.add(reranker_pair(*cache_, g.query, ssm::document_text(*n), o_.max_length, eos_));
        }
        typename Model::TrainCache cache;
        model_.forward_train(batch, cache);
        ssm::Matrix masks;
        const std::uint64_t drop_seed = ssm::train::SplitMix64::mix(
            {static_cast<std::uint64_t>(o_.seed), 0xD209ULL, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(micro)});
        const ssm::Matrix scores =
            head_->forward(cache.hidden, cache.offsets, o_.dropout, drop_seed, &masks, lo * o_.group_size);
        ssm::Matrix dscores(scores.rows(), 1);
        double loss = ssm::train::listwise_softmax_loss(
            std::span<const float>(scores.data(), static_cast<std::size_t>(scores.size())), o_.group_size,
            std::span<float>(dscores.data(), static_cast<std::size_t>(dscores.size())));
        if (hi - lo != static_cast<index>(items.size())) {
            const double weight = static_cast<double>(hi - lo) / static_cast<double>(items.size());
            dscores *= static_cast<float>(weight);
            loss *= weight;
        }
        ssm::Matrix d_hidden = ssm::Matrix::Zero(cache.hidden.rows(), cache.hidden.cols());
        head_->backward(cache.hidden, cache.offsets, masks, dscores, d_hidden);
        model_.backward(cache, ssm::cview(d_hidden));
        return {loss, batch.total_tokens()};
    }

    // --- saving -----------------------------------------------------------------------

    void save(const fs::path& dir, index step) {
        ssm::train::SaveOptions so;
        so.metadata["ssm.step"] = std::to_string(step);
        so.exclude_prefixes = {"score."};
        ssm::train::save_model_folder(dir, base_dir_, config_, params_, so);
        if (head_) head_->save(dir / "score.safetensors", step);
        opt_->save(dir / "optimizer.safetensors", params_);
        const nlohmann::json state = {{"format", "ssm.trainer"}, {"mode", o_.mode}, {"step", step},
                                      {"settings", run_settings(o_)}};
        ssm::train::write_text_file(dir / "trainer_state.json", state.dump(2) + "\n");  // last: the save is complete
    }

    // --- evaluation -------------------------------------------------------------------

    void evaluate(index step, Log& log, bool bar_on) {
        model_.refresh_derived();
        nlohmann::json result;
        if (o_.mode == "lm") result = eval_lm();
        else if (o_.mode == "retriever") result = eval_retriever();
        else result = eval_reranker();
        log.write({{"step", step}, {"eval", result}});
        if (bar_on) std::fputc('\n', stderr);
        std::printf("eval at step %lld: %s\n", static_cast<long long>(step), result.dump().c_str());
        std::fflush(stdout);
    }

    nlohmann::json eval_lm() {
        if constexpr (ssm::LanguageModelHead<typename Model::head_type>) {
            if (!eval_seqs_) {  // read and tokenized once, at the first evaluation
                std::ifstream in(*o_.eval, std::ios::binary);
                if (!in) ssm::fail(o_.eval->string(), ": cannot open the held-out text");
                std::stringstream text;
                text << in.rdbuf();
                const Ids ids = cache_->tokenizer().encode(text.str());
                eval_seqs_ = ssm::train::pack_sequences(ids, o_.seq_len);
                if (eval_seqs_->empty()) ssm::fail(o_.eval->string(), ": under two tokens of text");
            }
            const std::vector<Ids>& seqs = *eval_seqs_;
            double nats = 0;
            index predicted = 0;
            for (std::size_t at = 0; at < seqs.size(); at += static_cast<std::size_t>(o_.batch_size)) {
                ssm::Batch batch;
                index n = 0;
                for (std::size_t k = at; k < std::min(seqs.size(), at + static_cast<std::size_t>(o_.batch_size)); ++k) {
                    batch.add(seqs[k]);
                    n += static_cast<index>(seqs[k].size()) - 1;
                }
                typename Model::TrainCache cache;
                model_.forward_train(batch, cache);
                const ssm::Matrix logits = model_.logits_train(cache);
                ssm::Matrix unused;
                nats += ssm::train::causal_lm_loss(logits, batch.tokens(), batch.offsets(), unused) * static_cast<double>(n);
                predicted += n;
            }
            const double mean = nats / static_cast<double>(predicted);
            nlohmann::json r = {{"loss", mean}, {"perplexity", std::exp(mean)}, {"tokens", predicted}};
            if (config_.vocab_size == 256) r["bits_per_byte"] = mean / std::log(2.0);
            return r;
        } else {
            return {};
        }
    }

    std::vector<Ids> tokenize_all(const std::vector<std::string>& texts, index max_tokens) {
        std::vector<Ids> out;
        out.reserve(texts.size());
        for (const auto& t : texts) out.push_back(truncated_with_eos(cache_->tokenizer().encode(t), max_tokens, eos_));
        return out;
    }

    nlohmann::json eval_retriever() {
        if constexpr (!ssm::LanguageModelHead<typename Model::head_type>) {
            if (!eval_retrieval_) {  // read and tokenized once, at the first evaluation
                const ssm::BeirDataset data = ssm::read_beir(*o_.eval);
                if (data.qrels.empty()) ssm::fail(o_.eval->string(), ": no qrels/test.tsv to evaluate against");
                EvalRetrieval e;
                std::vector<std::string> qtext, dtext;
                for (const auto& q : data.queries)
                    if (data.qrels.count(q.id)) {
                        e.qids.push_back(q.id);
                        qtext.push_back(q.text);
                    }
                for (const auto& d : data.corpus) {
                    e.doc_ids.push_back(d.id);
                    dtext.push_back(ssm::document_text(d));
                }
                e.queries = tokenize_all(qtext, o_.query_max);
                e.passages = tokenize_all(dtext, o_.passage_max);
                e.qrels = data.qrels;
                eval_retrieval_ = std::move(e);
            }
            const EvalRetrieval& e = *eval_retrieval_;
            const ssm::Matrix Q = ssm::encode_sequences(model_, std::span<const Ids>(e.queries));
            const ssm::Matrix P = ssm::encode_sequences(model_, std::span<const Ids>(e.passages));
            const index k = std::min<index>(100, P.rows());
            const ssm::TopK hits = ssm::exact_top_k(Q, P, k);
            ssm::Run run;
            for (index i = 0; i < Q.rows(); ++i)
                for (index j = 0; j < k; ++j)
                    run[e.qids[static_cast<std::size_t>(i)]].push_back(
                        {e.doc_ids[static_cast<std::size_t>(hits.ids(i, j))], hits.scores(i, j)});
            const int nd[] = {10}, mr[] = {10}, rc[] = {100};
            const ssm::Evaluation ev = ssm::evaluate(run, e.qrels, nd, mr, rc);
            nlohmann::json r = ev.mean;
            r["queries"] = ev.queries;
            return r;
        } else {
            return {};
        }
    }

    nlohmann::json eval_reranker() {
        if (!eval_rerank_) {  // read and tokenized once, at the first evaluation
            const ssm::BeirDataset data = ssm::read_beir(*o_.eval);
            if (data.qrels.empty()) ssm::fail(o_.eval->string(), ": no qrels/test.tsv to evaluate against");
            const ssm::Run candidates = ssm::read_trec_run(*o_.eval_run);
            std::unordered_map<std::string, const ssm::Document*> docs;
            for (const auto& d : data.corpus) docs.emplace(d.id, &d);
            std::unordered_map<std::string, std::string> qtext;
            for (const auto& q : data.queries) qtext.emplace(q.id, q.text);
            EvalRerank e;
            e.qrels = data.qrels;
            for (const auto& [qid, judged] : data.qrels) {
                const auto c = candidates.find(qid);
                const auto q = qtext.find(qid);
                if (c == candidates.end() || q == qtext.end()) continue;
                std::vector<ssm::RunEntry> top = c->second;
                std::stable_sort(top.begin(), top.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
                if (static_cast<index>(top.size()) > o_.eval_depth) top.resize(static_cast<std::size_t>(o_.eval_depth));
                if (top.empty()) continue;
                typename EvalRerank::Query rq;
                rq.qid = qid;
                for (const auto& entry : top) {
                    const auto d = docs.find(entry.doc_id);
                    if (d == docs.end())
                        ssm::fail(o_.eval_run->string(), ": document '", entry.doc_id, "' is not in ", o_.eval->string(),
                                  "/corpus.jsonl");
                    rq.pairs.add(reranker_pair(*cache_, q->second, ssm::document_text(*d->second), o_.max_length, eos_));
                    rq.doc_ids.push_back(entry.doc_id);
                }
                e.queries.push_back(std::move(rq));
            }
            eval_rerank_ = std::move(e);
        }
        ssm::Run run;
        for (const auto& q : eval_rerank_->queries) {
            typename Model::TrainCache cache;
            model_.forward_train(q.pairs, cache);
            const ssm::Matrix scores = head_->forward(cache.hidden, cache.offsets, 0.0, 0, nullptr);
            for (std::size_t i = 0; i < q.doc_ids.size(); ++i)
                run[q.qid].push_back({q.doc_ids[i], scores(static_cast<index>(i), 0)});
        }
        const int nd[] = {10}, mr[] = {10};
        const ssm::Evaluation ev = ssm::evaluate(run, eval_rerank_->qrels, nd, mr, std::span<const int>());
        nlohmann::json r = ev.mean;
        r["queries"] = ev.queries;
        return r;
    }

    /// The evaluation inputs, tokenized at the first evaluation and kept.
    struct EvalRetrieval {
        std::vector<std::string> qids, doc_ids;
        std::vector<Ids> queries, passages;
        ssm::Qrels qrels;
    };
    struct EvalRerank {
        struct Query {
            std::string qid;
            ssm::Batch pairs;
            std::vector<std::string> doc_ids;
        };
        std::vector<Query> queries;
        ssm::Qrels qrels;
    };
    std::optional<std::vector<Ids>> eval_seqs_;
    std::optional<EvalRetrieval> eval_retrieval_;
    std::optional<EvalRerank> eval_rerank_;

    Model& model_;
    const Options& o_;
    ssm::MambaConfig config_;
    fs::path base_dir_;
    ssm::cli::Ranks& ranks_;
    ssm::train::Parameters params_;
    std::optional<ssm::train::AdamW> opt_;
    std::optional<ScoreHead> head_;
    std::vector<ssm::train::QueryGroup> groups_;
    std::vector<Ids> seqs_;
    TextCache* cache_ = nullptr;
    std::optional<std::int32_t> eos_;
};

/// Fails when the resumed folder's model differs from the one --model names.
void check_same_model(const fs::path& resume, const ssm::MambaConfig& r, const fs::path& base, const ssm::MambaConfig& b) {
    const auto differ = [&](const char* what, index x, index y) {
        if (x != y)
            ssm::fail("--resume ", resume.string(), ": a checkpoint of a different model (", what, " ", x, ", --model ",
                      base.string(), " has ", y, ")");
    };
    if (r.family != b.family)
        ssm::fail("--resume ", resume.string(), ": a checkpoint of a different model (", ssm::family_name(r.family), ", --model ",
                  base.string(), " is ", ssm::family_name(b.family), ")");
    differ("hidden_size", r.hidden_size, b.hidden_size);
    differ("num_hidden_layers", r.num_hidden_layers, b.num_hidden_layers);
    differ("vocab_size", r.vocab_size, b.vocab_size);
    differ("state_size", r.state_size, b.state_size);
    differ("intermediate_size", r.intermediate_size, b.intermediate_size);
}

template <class Head>
int train_with(const Options& o, const fs::path& model_dir, index start_step, const std::optional<fs::path>& resume_dir,
               ssm::cli::Ranks& ranks) {
    const ssm::MambaConfig config = ssm::MambaConfig::load(model_dir);
    return ssm::with_mamba<Head>(model_dir, [&](auto& model) -> int {
        using Model = std::decay_t<decltype(model)>;
        // SAMBA hybrids have backward passes (ssm-grad), but no writer of their lit-gpt
        // checkpoints yet, so ssm-train refuses them.
        if constexpr (!ssm::train::TrainableModel<Model> || Model::backbone_type::per_kind) {
            ssm::fail(model_dir.string(), ": ssm-train trains Mamba-1, Falcon-Mamba and Mamba-2 models only (this is ", ssm::family_name(config.family),
                      config.is_hybrid() ? ", a SAMBA hybrid" : "", ")");
        } else {
            Trainer<Model> trainer(model, o, config, model_dir, ranks);
            TextCache cache(model_dir, config.vocab_size);
            std::optional<std::int32_t> eos;
            if (config.eos_token_id) eos = static_cast<std::int32_t>(*config.eos_token_id);
            // Every rank reads the data; a fault in it stops them all with one message.
            const index items = ranks.phase([&]() -> index {
                if (o.mode == "lm") {
                    auto seqs = read_lm_sequences(o, cache, config);
                    const auto n = static_cast<index>(seqs.size());
                    trainer.set_sequences(std::move(seqs));
                    trainer.set_eval_tokenizer(&cache, eos);
                    return n;
                }
                if (!eos)
                    ssm::fail(model_dir.string(), "/config.json: no eos_token_id; the ", o.mode,
                              " recipe appends it to every input (pooling reads the last token)");
                auto groups = read_groups(o);
                if (o.mode == "reranker")
                    for (const auto& g : groups)
                        if (g.negatives.empty())
                            ssm::fail(o.train.string(), ": query '", g.query_id, "' has no negative passage",
                                      g.line ? " (line " + std::to_string(g.line) + ")" : std::string(),
                                      "; listwise training needs a positive and negatives in every group");
                const auto n = static_cast<index>(groups.size());
                trainer.set_groups(std::move(groups), cache, eos);
                return n;
            });
            const index per_step = o.batch_size * o.grad_accum;
            const index total = o.steps ? o.steps
                                        : std::max<index>(1, static_cast<index>(std::ceil(o.epochs * static_cast<double>(items) /
                                                                                          static_cast<double>(per_step))));
            ranks.phase([&] {
                if (o.mode != "lm" && o.batch_size * o.group_size > 1 << 20) ssm::fail("--batch-size × --group-size is too large");
                if (start_step >= total)
                    ssm::fail("--resume ", resume_dir->string(), ": already at step ", start_step, " of ", total, "; nothing to do");
            });
            std::printf("%s: %lld training items, %lld steps of %lld × %lld, %s%s\n", o.mode.c_str(),
                        static_cast<long long>(items), static_cast<long long>(total), static_cast<long long>(o.batch_size),
                        static_cast<long long>(o.grad_accum), ssm::cli::describe(config, config.tie_word_embeddings).c_str(),
                        ssm::bf16_products() ? ", bf16 products" : "");
            std::fflush(stdout);
            return trainer.run(start_step, total, items, resume_dir);
        }
        return 0;
    });
}

int run(const std::string& mode, const ssm::cli::Args& args, ssm::cli::Ranks& ranks) {
    const Options o = parse_options(mode, args);
    ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
    if (args.flag("bf16-products")) {
        ssm::set_matmul_precision(ssm::MatmulPrecision::Bf16Products);
        if (!ssm::bf16_products() && ranks.root())
            std::fprintf(stderr,
                         "ssm-train: --bf16-products: the kernels in use (%s) have no bf16 unit (the CPU has none, or "
                         "it is slower than the float32 FMA units here; SSM_CPU_ISA=avx512bf16 forces it where the "
                         "CPU has one): the products stay float32\n",
                         ssm::isa_name(ssm::cpu_isa()));
    }
    if (o.batch_size < ranks.size())
        throw ssm::cli::UsageError("--batch-size " + std::to_string(o.batch_size) + " is split over " +
                                   std::to_string(ranks.size()) + " ranks: give at least one item per rank");
    ranks.phase([&] {
        if (ranks.root()) check_writable(o.out);
    });

    fs::path model_dir;
    index start_step = 0;
    if (o.resume) {
        const TrainerState st = read_trainer_state(*o.resume);
        if (st.mode != mode)
            ssm::fail("--resume ", o.resume->string(), ": that run trained a ", st.mode, ", not a ", mode);
        const nlohmann::json now = run_settings(o);
        for (const auto& [key, value] : st.settings.items())
            if (now.contains(key) && now[key] != value)
                ssm::fail("--resume ", o.resume->string(), ": the run used ", key, " = ", value.dump(), ", this one ",
                          now[key].dump(), " (give the same options to continue it)");
        if (o.model) check_same_model(*o.resume, ssm::MambaConfig::load(*o.resume), *o.model, ssm::MambaConfig::load(*o.model));
        model_dir = *o.resume;
        start_step = st.step;
    } else if (o.init) {
        // A fresh model is written into the output folder first, then trained from there.
        // With several ranks the root writes it and the others read it.
        ranks.phase([&] {
            if (!ranks.root()) return;
            const auto io = ssm::train::InitOptions::from_config(*o.init, static_cast<std::uint64_t>(o.seed));
            ssm::train::write_initial_checkpoint(*o.init, o.out, io);
        });
        model_dir = o.out;
    } else {
        model_dir = *o.model;
    }
    // Every rank reads the model and the data; a fault in them is the same on every rank.
    if (mode == "lm") return train_with<ssm::LmHead>(o, model_dir, start_step, o.resume, ranks);
    return train_with<ssm::BiEncoderHead<ssm::LastToken>>(o, model_dir, start_step, o.resume, ranks);
}

}  // namespace

int main(int argc, char** argv) {
    ssm::cli::keep_freed_memory();
    ssm::cli::Ranks ranks(argc, argv);
    return ssm::cli::run_ranks(ranks, "ssm-train", [&] {
        if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
            std::cout << kHelp;
            return 0;
        }
        if (argc < 2 || std::string(argv[1]).rfind("--", 0) == 0)
            throw ssm::cli::UsageError("the first argument is the recipe: retriever, reranker or lm");
        const std::string mode = argv[1];
        if (mode != "retriever" && mode != "reranker" && mode != "lm")
            throw ssm::cli::UsageError("the recipe must be retriever, reranker or lm, got '" + mode + "'");
        const ssm::cli::Args args(
            argc - 1, argv + 1,
            {"model", "init", "resume", "train", "out", "steps", "epochs", "batch-size", "grad-accum", "lr", "weight-decay",
             "warmup", "schedule", "clip", "seed", "threads", "save-every", "eval", "eval-every", "eval-run", "eval-depth",
             "log", "head", "negatives", "max-negatives", "group-size", "temperature", "query-max-length",
             "passage-max-length", "max-length", "dropout", "seq-len"},
            {"bf16-products"});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        return run(mode, args, ranks);
    });
}
