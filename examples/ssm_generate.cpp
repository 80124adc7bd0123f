// ssm-generate: generation from a prompt through the recurrent state — byte-level
// (MambaByte, vocab 256) or token-level (tokenizer.json) — greedy or sampled.
#include <functional>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "cli.hpp"
#include "inputs.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-generate — generate bytes or tokens with a Mamba or SAMBA language model

usage: ssm-generate --model DIR (--prompt TEXT | --ids 1,2,3) [options]

  --model DIR            checkpoint folder (Mamba, MambaByte or a SAMBA hybrid); text
                         needs tokenizer.json (byte-level BPE or LLaMA kind) unless the
                         vocabulary is the 256 byte values (MambaByte)
  --prompt TEXT          the prompt as text
  --ids LIST             the prompt as comma-separated token ids
  --max-new-tokens N     at most N new tokens (default 64)
  --greedy               always the most likely token (the default without sampling options)
  --temperature T        sample from softmax(logits / T)
  --top-k K              sample among the K most likely tokens
  --top-p P              sample among the smallest set of tokens with probability >= P
  --seed S               seed of the sampler (default 0): the same seed repeats a run
  --stop TEXT            stop once the generated text contains TEXT
  --no-eos-stop          keep going past config.json's eos_token_id
  --format text|ids      print the continuation as text (default; streamed), or the new
                         token ids comma-separated on one line
  --bf16                 keep the weight matrices in bfloat16: half the memory and faster
                         decoding; float32 arithmetic (exact for a BF16 checkpoint)
  --int8                 keep the weight matrices as int8 blocks (32 values, one scale):
                         about a quarter of float32's bytes, the fastest decoding; logits
                         move by about 1% (docs/benchmarks.md)
  --int8-activations     with --int8: decoding rounds its activations to int8 blocks too
                         (integer dot products: faster where the CPU lacks AVX-512;
                         logits move by about 2%)
  --threads N            worker threads (default: all cores)
  --help                 this text

The prompt is read once (a parallel prefill); each new token is one constant-cost step
through the recurrent state, however long the text gets (a SAMBA model's attention
layers read a key/value cache of at most its window). Timing goes to stderr.
)";

template <class Model>
int run(const Model& model, const ssm::cli::Args& args, const std::string& model_dir) {
    const auto& config = model.config();
    const std::string format = args.get("format").value_or("text");
    if (format != "text" && format != "ids")
        throw ssm::cli::UsageError("--format must be 'text' or 'ids', got '" + format + "'");
    ssm::cli::LazyTokenizer tokenizer(model_dir, model.vocab_size());

    std::vector<std::int32_t> prompt;
    if (auto ids = args.get("ids")) {
        prompt = ssm::cli::parse_ids(*ids, "--ids");
    } else {
        prompt = tokenizer.encode(args.required("prompt"));
        if (prompt.empty()) throw ssm::cli::UsageError("--prompt is empty");
    }
    model.embedding().check_ids(prompt);

    ssm::GenerateOptions opt;
    opt.max_new_tokens = args.integer("max-new-tokens", 64, 0, 1LL << 31);
    const bool sampling = args.get("temperature") || args.get("top-k") || args.get("top-p");
    if (args.flag("greedy") && sampling)
        throw ssm::cli::UsageError("--greedy cannot be combined with --temperature, --top-k or --top-p");
    opt.sampling.greedy = !sampling;
    // Any number here; the sampler names a value outside its range.
    opt.sampling.temperature = static_cast<float>(args.real("temperature", opt.sampling.temperature, -1e30, 1e30));
    opt.sampling.top_p = static_cast<float>(args.real("top-p", opt.sampling.top_p, -1e30, 1e30));
    opt.sampling.top_k = args.integer("top-k", 0, 0, 1LL << 31);
    opt.sampling.seed = static_cast<std::uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
    (void)ssm::Sampler(opt.sampling);  // checks the options before any work
    if (!args.flag("no-eos-stop") && config.eos_token_id) opt.eos_token_id = static_cast<std::int32_t>(*config.eos_token_id);
    if (auto s = args.get("stop")) {
        if (s->empty()) throw ssm::cli::UsageError("--stop is empty");
        opt.stop_strings.push_back(*s);
    }

    std::function<std::string(std::int32_t)> token_text;
    if (format == "text" || !opt.stop_strings.empty()) {
        const auto& tok = tokenizer.get();
        token_text = [&tok](std::int32_t id) { return tok.token_bytes(id); };
    }
    ssm::cli::Utf8Stream stream;
    std::function<bool(std::int32_t)> on_token;
    if (format == "text") {
        // The prompt is printed first, then the continuation.
        std::fputs(stream.push(tokenizer.get().decode(prompt)).c_str(), stdout);
        on_token = [&](std::int32_t id) {
            std::fputs(stream.push(token_text(id)).c_str(), stdout);
            std::fflush(stdout);
            return true;
        };
    }
    const ssm::Generation g = ssm::generate(model, prompt, opt, token_text, on_token);
    if (format == "text") {
        std::fputs(stream.flush().c_str(), stdout);
        std::fputc('\n', stdout);
    } else {
        std::string line;
        for (auto id : g.tokens) line += (line.empty() ? "" : ",") + std::to_string(id);
        std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);  // the text before the timing line on a shared terminal
    const char* why = g.reason == ssm::StopReason::Eos          ? "end of sequence"
                      : g.reason == ssm::StopReason::StopString ? "stop string"
                                                                : "max new tokens";
    std::fprintf(stderr,
                 "[%zu prompt tokens: prefill %.2f ms (%.0f tok/s); %zu new tokens: %.3f ms/token (%.0f tok/s); "
                 "stopped: %s]\n",
                 prompt.size(), g.prefill_seconds * 1e3, static_cast<double>(prompt.size()) / g.prefill_seconds,
                 g.tokens.size(), g.tokens.empty() ? 0.0 : g.decode_seconds * 1e3 / static_cast<double>(g.tokens.size()),
                 g.decode_seconds > 0 ? static_cast<double>(g.tokens.size()) / g.decode_seconds : 0.0, why);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-generate", [&] {
        const ssm::cli::Args args(argc, argv,
                                  {"model", "prompt", "ids", "max-new-tokens", "temperature", "top-k", "top-p", "seed",
                                   "stop", "format", "threads"},
                                  {"greedy", "no-eos-stop", "bf16", "int8", "int8-activations"});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string model_dir = args.required("model");
        if (args.get("prompt") && args.get("ids")) throw ssm::cli::UsageError("give --prompt or --ids, not both");
        if (!args.get("prompt") && !args.get("ids")) throw ssm::cli::UsageError("give --prompt TEXT or --ids LIST");
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        return ssm::with_mamba_lm(model_dir, [&](auto& model) { return run(ssm::cli::apply_weight_options(model, args), args, model_dir); });
    });
}
