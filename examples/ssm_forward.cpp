// ssm-forward: run a Mamba checkpoint over token ids and write its logits and final
// hidden states to a safetensors file.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "cli.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-forward — run a Mamba or SAMBA checkpoint over token ids

usage: ssm-forward --model DIR --ids 3,17,5 [--out FILE.safetensors] [--threads N]

  --model DIR     checkpoint folder: config.json + model.safetensors or pytorch_model.bin
                  (or shards with their .index.json), HuggingFace or state-spaces names;
                  or a SAMBA hybrid: lit_config.json + lit_model.pth (lit-gpt names)
  --ids LIST      comma-separated token ids, each in [0, vocab_size)
  --out FILE      write `logits` (F32 [L, vocab]) and `last_hidden_state`
                  (F32 [L, hidden], after the final norm) to FILE (safetensors)
  --threads N     worker threads (default: all cores)
  --help          this text

Prints the model's shape, the time taken and the top next-token predictions.
)";

template <class M>
int run(const M& model, const std::string& model_dir, const std::vector<std::int32_t>& ids,
        const std::optional<std::string>& out) {
    const auto& c = model.config();
    model.embedding().check_ids(ids);
    ssm::Batch batch;
    batch.add(ids);
    const auto t0 = std::chrono::steady_clock::now();
    const ssm::ForwardResult r = model.forward(batch, {ssm::Logits::All, false});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    const auto L = static_cast<ssm::index>(ids.size());
    std::printf("model   %s\n        %s\n", model_dir.c_str(), ssm::cli::describe(c, model.head().tied()).c_str());
    std::printf("tokens  %lld\n", static_cast<long long>(L));
    std::printf("time    %.3f ms (%.0f tokens/s, %d threads)\n", seconds * 1e3,
                static_cast<double>(L) / seconds, ssm::num_threads());

    const auto last = r.logits.row(L - 1);
    std::vector<ssm::index> order(static_cast<std::size_t>(last.size()));
    std::iota(order.begin(), order.end(), ssm::index{0});
    const auto k = std::min<std::size_t>(5, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&](ssm::index a, ssm::index b) { return last(a) > last(b); });
    std::printf("next    top-%zu after the last token:", k);
    for (std::size_t i = 0; i < k; ++i)
        std::printf(" %lld (%.3f)", static_cast<long long>(order[i]), static_cast<double>(last(order[i])));
    std::printf("\n");

    if (out) {
        const std::vector<ssm::TensorToWrite> tensors = {
            ssm::f32_tensor("logits", {L, model.vocab_size()},
                            std::span<const float>(r.logits.data(), static_cast<std::size_t>(r.logits.size()))),
            ssm::f32_tensor("last_hidden_state", {L, model.hidden_size()},
                            std::span<const float>(r.hidden.data(), static_cast<std::size_t>(r.hidden.size()))),
        };
        ssm::write_safetensors(*out, tensors);
        std::printf("wrote   %s: logits [%lld, %lld], last_hidden_state [%lld, %lld]\n", out->c_str(),
                    static_cast<long long>(L), static_cast<long long>(model.vocab_size()),
                    static_cast<long long>(L), static_cast<long long>(model.hidden_size()));
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-forward", [&] {
        const ssm::cli::Args args(argc, argv, {"model", "ids", "out", "threads"}, {});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string model_dir = args.required("model");
        const auto ids = ssm::cli::parse_ids(args.required("ids"), "--ids");
        const auto out = args.get("out");
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        return ssm::with_mamba_lm(model_dir, [&](const auto& model) {
            return run(model, model_dir, ids, out);
        });
    });
}
