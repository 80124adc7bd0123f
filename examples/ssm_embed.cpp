// ssm-embed: texts or token ids (JSON Lines) → L2-normalised embeddings (.npy), one row
// per input line in input order — the Mamba Retriever bi-encoder.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ssm/retrieval/encode.hpp>
#include <ssm/retrieval/jsonl.hpp>
#include <ssm/retrieval/npy.hpp>
#include <ssm/retrieval/shard.hpp>
#include <ssm/ssm.hpp>

#include "cli.hpp"
#include "inputs.hpp"
#include "ranks.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-embed — embed texts with a Mamba bi-encoder (Mamba Retriever)

usage: ssm-embed --model DIR --input FILE.jsonl --out FILE.npy [options]
       mpirun -np N ssm-embed ...   (a build with MPI: N processes share the work)

  --model DIR          checkpoint folder (config.json, safetensors or pytorch_model.bin; tokenizer.json for text)
  --input FILE.jsonl   one object per line: {"id": ..., "text": "..."} or
                       {"id": ..., "input_ids": [3, 17, ...]}
  --out FILE.npy       float32 [n, hidden], row i = line i (blank lines skipped)
  --no-eos             do not append config.json's eos_token_id to each input
  --pooling P          last (the hidden state at the EOS; default) or mean
  --no-normalize       keep the raw pooled vectors (default: unit L2 norm)
  --max-length N       keep the first N tokens of each input (before the EOS; default: all)
  --batch-tokens N     tokens per packed batch (default 16384)
  --bf16               keep the weight matrices in bfloat16: half the memory and faster
                       decoding; float32 arithmetic (exact for a BF16 checkpoint)
  --threads N          worker threads (default: all cores)
  --help               this text

The embedding is the final hidden state (after the last norm) at the appended EOS,
L2-normalised, so dot products are cosine similarities. Inputs are sorted by length
into packed batches (no padding); a progress bar shows on a terminal.

Under mpirun (or srun) every rank reads the input, encodes a share of the batches
holding about 1/N of the tokens with its own --threads, and rank 0 writes the gathered
embeddings: the same file, bit for bit, as one process with the same --threads and
--batch-tokens writes. If any rank fails, all stop with its message and --out is not
written.
)";

template <class Model>
int run(Model& model, const ssm::cli::Args& args, const std::string& model_dir, ssm::cli::Ranks& ranks) {
    const std::filesystem::path input = args.required("input");
    const std::filesystem::path out = args.required("out");
    const auto max_len = static_cast<ssm::index>(args.integer("max-length", 0, 1, 1LL << 31));
    const auto batch_tokens = static_cast<ssm::index>(args.integer("batch-tokens", 16384, 1, 1LL << 31));
    const auto vocab = model.vocab_size();
    std::optional<std::int32_t> eos;
    if (!args.flag("no-eos")) eos = ssm::cli::eos_id(model.config(), model_dir);
    model.head().set_normalize(!args.flag("no-normalize"));

    ssm::cli::LazyTokenizer tokenizer(model_dir, vocab);
    std::vector<std::vector<std::int32_t>> seqs;
    ranks.phase([&] {
        ssm::for_each_jsonl(input, [&](const nlohmann::json& obj, std::int64_t line) {
            std::vector<std::int32_t> ids;
            if (obj.contains("input_ids")) {
                ids = ssm::cli::ids_field(obj, "input_ids", input, line);
            } else if (obj.contains("text")) {
                ids = tokenizer.encode(ssm::cli::string_field(obj, "text", input, line));
            } else {
                ssm::fail_at_line(input, line, "needs a \"text\" or an \"input_ids\" field");
            }
            ssm::cli::check_ids_at(ids, vocab, input, line);
            ssm::cli::finish_input(ids, max_len, eos);
            seqs.push_back(std::move(ids));
        });
        if (seqs.empty()) ssm::fail(input.string(), ": no inputs (the file has no non-blank line)");
    });

    // Each rank encodes whole batches holding about 1/N of the tokens (one rank: all).
    const ssm::ShardPlan plan = ssm::plan_shards(ssm::sequence_lengths(seqs), batch_tokens, ranks.size());
    ssm::index tokens = 0;
    for (const auto t : plan.tokens) tokens += t;
    ssm::Progress progress("embed", plan.tokens[static_cast<std::size_t>(ranks.rank())], "tok");
    const auto t0 = std::chrono::steady_clock::now();
    const ssm::Matrix mine = ranks.phase([&] {
        ssm::Matrix part = ssm::encode_shard(model, seqs, plan, ranks.rank(), {batch_tokens, &progress});
        ssm::cli::injected_failure(ranks, "encode");
        return part;
    });
    progress.finish();
    const ssm::Matrix gathered = ranks.gather_rows(mine);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ssm::index dim = 0;
    ranks.phase([&] {
        if (!ranks.root()) return;
        const ssm::Matrix emb = ssm::unshard_rows(gathered, plan);
        dim = emb.cols();
        ssm::save_npy(out, emb);
    });
    if (ranks.size() > 1)
        std::printf("embedded %zu inputs (%lld tokens) in %.2f s: %.0f tokens/s, %d ranks × %d threads\n", seqs.size(),
                    static_cast<long long>(tokens), s, static_cast<double>(tokens) / s, ranks.size(),
                    ssm::num_threads());
    else
        std::printf("embedded %zu inputs (%lld tokens) in %.2f s: %.0f tokens/s, %d threads\n", seqs.size(),
                    static_cast<long long>(tokens), s, static_cast<double>(tokens) / s, ssm::num_threads());
    std::printf("wrote    %s: float32 [%zu, %lld]%s\n", out.string().c_str(), seqs.size(), static_cast<long long>(dim),
                args.flag("no-normalize") ? "" : ", unit L2 norm");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ssm::cli::Ranks ranks(argc, argv);
    return ssm::cli::run_ranks(ranks, "ssm-embed", [&] {
        const ssm::cli::Args args(argc, argv,
                                  {"model", "input", "out", "pooling", "max-length", "batch-tokens", "threads"},
                                  {"no-eos", "no-normalize", "bf16"});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string model_dir = args.required("model");
        (void)args.required("input");
        (void)args.required("out");
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        const std::string pooling = args.get("pooling").value_or("last");
        if (pooling == "last")
            return ssm::with_mamba<ssm::BiEncoderHead<ssm::LastToken>>(
                model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir, ranks); });
        if (pooling == "mean")
            return ssm::with_mamba<ssm::BiEncoderHead<ssm::Mean>>(
                model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir, ranks); });
        throw ssm::cli::UsageError("--pooling must be 'last' or 'mean', got '" + pooling + "'");
    });
}
