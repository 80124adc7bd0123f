// ssm-embed: texts or token ids (JSON Lines) → L2-normalised embeddings (.npy), one row
// per input line in input order — the Mamba Retriever bi-encoder.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ssm/retrieval/encode.hpp>
#include <ssm/retrieval/jsonl.hpp>
#include <ssm/retrieval/npy.hpp>
#include <ssm/ssm.hpp>

#include "cli.hpp"
#include "inputs.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-embed — embed texts with a Mamba bi-encoder (Mamba Retriever)

usage: ssm-embed --model DIR --input FILE.jsonl --out FILE.npy [options]

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
)";

struct Input {
    std::vector<std::int32_t> ids;
    std::int64_t line;
};

template <class Model>
int run(Model& model, const ssm::cli::Args& args, const std::string& model_dir) {
    const std::filesystem::path input = args.required("input");
    const std::filesystem::path out = args.required("out");
    const auto max_len = static_cast<ssm::index>(args.integer("max-length", 0, 1, 1LL << 31));
    const auto vocab = model.vocab_size();
    std::optional<std::int32_t> eos;
    if (!args.flag("no-eos")) eos = ssm::cli::eos_id(model.config(), model_dir);
    model.head().set_normalize(!args.flag("no-normalize"));

    ssm::cli::LazyTokenizer tokenizer(model_dir, vocab);
    std::vector<Input> inputs;
    ssm::for_each_jsonl(input, [&](const nlohmann::json& obj, std::int64_t line) {
        Input in{{}, line};
        if (obj.contains("input_ids")) {
            in.ids = ssm::cli::ids_field(obj, "input_ids", input, line);
        } else if (obj.contains("text")) {
            in.ids = tokenizer.encode(ssm::cli::string_field(obj, "text", input, line));
        } else {
            ssm::fail_at_line(input, line, "needs a \"text\" or an \"input_ids\" field");
        }
        ssm::cli::check_ids_at(in.ids, vocab, input, line);
        ssm::cli::finish_input(in.ids, max_len, eos);
        inputs.push_back(std::move(in));
    });
    if (inputs.empty()) ssm::fail(input.string(), ": no inputs (the file has no non-blank line)");

    std::vector<std::vector<std::int32_t>> seqs;
    ssm::index tokens = 0;
    for (auto& in : inputs) {
        tokens += static_cast<ssm::index>(in.ids.size());
        seqs.push_back(std::move(in.ids));
    }
    ssm::Progress progress("embed", tokens, "tok");
    const auto t0 = std::chrono::steady_clock::now();
    const ssm::Matrix emb = ssm::encode_sequences(
        model, seqs, {args.integer("batch-tokens", 16384, 1, 1LL << 31), &progress});
    progress.finish();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ssm::save_npy(out, emb);
    std::printf("embedded %zu inputs (%lld tokens) in %.2f s: %.0f tokens/s, %d threads\n", seqs.size(),
                static_cast<long long>(tokens), s, static_cast<double>(tokens) / s, ssm::num_threads());
    std::printf("wrote    %s: float32 [%lld, %lld]%s\n", out.string().c_str(), static_cast<long long>(emb.rows()),
                static_cast<long long>(emb.cols()), args.flag("no-normalize") ? "" : ", unit L2 norm");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-embed", [&] {
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
                model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir); });
        if (pooling == "mean")
            return ssm::with_mamba<ssm::BiEncoderHead<ssm::Mean>>(
                model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir); });
        throw ssm::cli::UsageError("--pooling must be 'last' or 'mean', got '" + pooling + "'");
    });
}
