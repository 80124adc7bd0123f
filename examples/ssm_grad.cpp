// ssm-grad: one loss's gradient with respect to every parameter of a model, written as
// safetensors — to check the library's backward passes against any framework.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <type_traits>
#include <vector>

#include <ssm/retrieval/jsonl.hpp>
#include <ssm/ssm.hpp>
#include <ssm/train/losses.hpp>
#include <ssm/train/parameters.hpp>
#include <ssm/train/steps.hpp>

#include "cli.hpp"
#include "inputs.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-grad — the gradient of a loss w.r.t. every parameter of a Mamba model

usage: ssm-grad --model DIR --loss lm       --input seqs.jsonl   --out grads.safetensors
       ssm-grad --model DIR --loss infonce  --input groups.jsonl --out grads.safetensors [--temperature T]
       ssm-grad --model DIR --loss listwise --input groups.jsonl --head head.safetensors --out grads.safetensors

  --model DIR        checkpoint folder (config.json, safetensors or pytorch_model.bin)
  --loss L           lm: causal LM cross-entropy, mean over every predicted position
                     (token t predicts t+1 of its own sequence); input lines {"ids": [..]}
                     infonce: InfoNCE over L2-normalised embeddings with in-batch negatives,
                     scores Q·Pᵀ/T, each query's target its group's first passage, mean over
                     queries; input lines {"query": [ids], "passages": [[ids], ...]}
                     (the same passage count on every line)
                     listwise: softmax cross-entropy over each group's scores
                     score.weight·h + score.bias, target the first pair, mean over groups;
                     input lines {"pairs": [[ids], ...]} (the same count on every line)
  --input FILE       JSON Lines as above; token ids are used exactly as given (nothing appended)
  --head FILE        listwise: safetensors with score.weight [1, hidden] and score.bias [1]
  --temperature T    infonce: the temperature (default 0.01)
  --out FILE         float32 safetensors: loss [1], and every parameter's gradient under its
                     checkpoint name (a tied lm_head is not listed: its gradient is in
                     backbone.embeddings.weight), plus score.weight/score.bias for listwise
  --threads N        worker threads (default: all cores)
  --help             this text

Embeddings and scores are the final hidden state (after the final norm) at each
sequence's last token. Every sequence starts from zero state.
)";

using Ids = std::vector<std::int32_t>;

/// The groups of a JSON Lines file: field `key` of each line, an array of id arrays, the
/// same count on every line; `first` (when non-null) reads a single-array field too.
struct Groups {
    std::vector<Ids> first;   // one per line (infonce: the queries)
    std::vector<Ids> items;   // size() · group_size, line by line
    ssm::index group_size = 0;
};

Ids ids_of(const nlohmann::json& v, const std::filesystem::path& path, std::int64_t line, const std::string& what,
           std::int64_t vocab) {
    if (!v.is_array()) ssm::fail_at_line(path, line, what + " must be an array of token ids");
    nlohmann::json obj = {{"ids", v}};
    Ids ids = ssm::cli::ids_field(obj, "ids", path, line);
    if (ids.empty()) ssm::fail_at_line(path, line, what + " is empty");
    ssm::cli::check_ids_at(ids, vocab, path, line);
    return ids;
}

Groups read_groups(const std::filesystem::path& path, const char* first_key, const char* key, std::int64_t vocab) {
    Groups g;
    ssm::for_each_jsonl(path, [&](const nlohmann::json& obj, std::int64_t line) {
        if (first_key) {
            if (!obj.contains(first_key)) ssm::fail_at_line(path, line, std::string("no '") + first_key + "' field");
            g.first.push_back(ids_of(obj.at(first_key), path, line, std::string("'") + first_key + "'", vocab));
        }
        if (!obj.contains(key)) ssm::fail_at_line(path, line, std::string("no '") + key + "' field");
        const auto& list = obj.at(key);
        if (!list.is_array() || list.empty())
            ssm::fail_at_line(path, line, std::string("'") + key + "' must be a non-empty array of id arrays");
        const auto n = static_cast<ssm::index>(list.size());
        if (g.group_size == 0) g.group_size = n;
        if (n != g.group_size)
            ssm::fail_at_line(path, line, std::string("'") + key + "' has " + std::to_string(n) + " entries, line 1 had " +
                                              std::to_string(g.group_size) + " (every group must be the same size)");
        for (std::size_t i = 0; i < list.size(); ++i)
            g.items.push_back(ids_of(list[i], path, line, std::string("'") + key + "' item " + std::to_string(i), vocab));
    });
    if (g.group_size == 0) ssm::fail(path.string(), ": no groups (the file has no non-blank line)");
    return g;
}

void write_gradients(const std::filesystem::path& out, double loss, const ssm::train::Parameters& params) {
    std::vector<ssm::TensorToWrite> tensors;
    const float l = static_cast<float>(loss);
    tensors.push_back(ssm::f32_tensor("loss", {1}, std::span<const float>(&l, 1)));
    for (const auto& p : params) {
        for (float v : p.grad)
            if (!std::isfinite(v)) ssm::fail("ssm-grad: the gradient of ", p.name, " is not finite");
        tensors.push_back(ssm::f32_tensor(p.name, p.shape, p.grad));
    }
    ssm::write_safetensors(out, tensors);
}

template <class Model>
void report(const char* loss_name, double loss, const ssm::train::Parameters& params, const std::filesystem::path& out,
            ssm::index sequences, ssm::index tokens) {
    std::printf("%s loss %.9g over %lld sequences (%lld tokens)\n", loss_name, loss, static_cast<long long>(sequences),
                static_cast<long long>(tokens));
    std::printf("wrote %s: loss and %zu gradients (%lld values)\n", out.string().c_str(), params.size(),
                static_cast<long long>(params.count()));
}

int run_lm(const ssm::cli::Args& args, const std::string& dir) {
    return ssm::with_mamba<ssm::LmHead>(dir, [&](auto& model) -> int {
        using Model = std::decay_t<decltype(model)>;
        if constexpr (!ssm::train::TrainableModel<Model>) {
            ssm::fail(dir, ": ssm-grad has no backward pass for this model");
        } else {
            const std::filesystem::path input = args.required("input");
            ssm::Batch batch;
            ssm::for_each_jsonl(input, [&](const nlohmann::json& obj, std::int64_t line) {
                if (!obj.contains("ids")) ssm::fail_at_line(input, line, "no 'ids' field");
                batch.add(ids_of(obj.at("ids"), input, line, "'ids'", model.vocab_size()));
            });
            if (batch.empty()) ssm::fail(input.string(), ": no sequences (the file has no non-blank line)");
            ssm::train::Parameters params;
            model.register_parameters(params);
            const double loss = ssm::train::causal_lm_step(model, batch);
            const std::filesystem::path out = args.required("out");
            write_gradients(out, loss, params);
            report<Model>("lm", loss, params, out, batch.size(), batch.total_tokens());
        }
        return 0;
    });
}

int run_infonce(const ssm::cli::Args& args, const std::string& dir) {
    const double tau = args.real("temperature", 0.01, 1e-30, 1e30);
    return ssm::with_mamba<ssm::BiEncoderHead<ssm::LastToken>>(dir, [&](auto& model) -> int {
        using Model = std::decay_t<decltype(model)>;
        if constexpr (!ssm::train::TrainableModel<Model>) {
            ssm::fail(dir, ": ssm-grad has no backward pass for this model");
        } else {
            const std::filesystem::path input = args.required("input");
            const Groups g = read_groups(input, "query", "passages", model.vocab_size());
            const auto nq = static_cast<ssm::index>(g.first.size());
            ssm::Batch batch;  // queries, then every group's passages
            for (const auto& q : g.first) batch.add(q);
            for (const auto& p : g.items) batch.add(p);
            ssm::train::Parameters params;
            model.register_parameters(params);
            const double loss = ssm::train::info_nce_step(model, batch, nq, g.group_size, tau);
            const std::filesystem::path out = args.required("out");
            write_gradients(out, loss, params);
            report<Model>("infonce", loss, params, out, batch.size(), batch.total_tokens());
        }
        return 0;
    });
}

int run_listwise(const ssm::cli::Args& args, const std::string& dir) {
    const std::filesystem::path head = args.required("head");
    const std::vector<std::filesystem::path> extra = {head};
    return ssm::with_mamba<ssm::RerankerHead>(
        dir,
        [&](auto& model) -> int {
            using Model = std::decay_t<decltype(model)>;
            if constexpr (!ssm::train::TrainableModel<Model>) {
                ssm::fail(dir, ": ssm-grad has no backward pass for this model");
            } else {
                if (!model.head().has_bias())
                    ssm::fail(head.string(), ": missing tensor 'score.bias' [1]");
                const std::filesystem::path input = args.required("input");
                const Groups g = read_groups(input, nullptr, "pairs", model.vocab_size());
                if (g.group_size < 2)
                    ssm::fail(input.string(), ": groups of ", g.group_size,
                              " pair; listwise needs a positive and at least one negative per group");
                ssm::Batch batch;
                for (const auto& p : g.items) batch.add(p);
                ssm::train::Parameters params;
                model.register_parameters(params);
                typename Model::TrainCache cache;
                const ssm::Matrix scores = model.encode_train(batch, cache);  // (pairs, 1)
                ssm::Matrix dscores(scores.rows(), 1);
                const double loss = ssm::train::listwise_softmax_loss(
                    std::span<const float>(scores.data(), static_cast<std::size_t>(scores.size())), g.group_size,
                    std::span<float>(dscores.data(), static_cast<std::size_t>(dscores.size())));
                model.backward_encoded(cache, dscores);
                const std::filesystem::path out = args.required("out");
                write_gradients(out, loss, params);
                report<Model>("listwise", loss, params, out, batch.size(), batch.total_tokens());
            }
            return 0;
        },
        extra);
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-grad", [&] {
        const ssm::cli::Args args(argc, argv, {"model", "loss", "input", "out", "head", "temperature", "threads"}, {});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string dir = args.required("model");
        const std::string loss = args.required("loss");
        (void)args.required("input");
        (void)args.required("out");
        if (loss != "listwise" && args.get("head"))
            throw ssm::cli::UsageError("--head is for --loss listwise only");
        if (loss != "infonce" && args.get("temperature"))
            throw ssm::cli::UsageError("--temperature is for --loss infonce only");
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        if (loss == "lm") return run_lm(args, dir);
        if (loss == "infonce") return run_infonce(args, dir);
        if (loss == "listwise") {
            if (!args.get("head")) throw ssm::cli::UsageError("--loss listwise needs --head FILE (score.weight, score.bias)");
            return run_listwise(args, dir);
        }
        throw ssm::cli::UsageError("--loss must be lm, infonce or listwise, got '" + loss + "'");
    });
}
