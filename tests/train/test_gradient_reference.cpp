// The library's whole-model gradients for the three losses against PyTorch autograd in
// float64 (tests/data/mambabyte-tiny/grad/, see tests/data/README.md): every parameter's
// gradient to 1e-4 relative (norm-wise), the loss to 1e-5.
#include <cmath>
#include <string>
#include <vector>

#include "ssm/io/safetensors.hpp"
#include "ssm/retrieval/jsonl.hpp"
#include "ssm/ssm.hpp"
#include "ssm/train/losses.hpp"
#include "ssm/train/parameters.hpp"
#include "test_util.hpp"

namespace ssm {
namespace {

const std::filesystem::path kDir = test::data_dir() / "mambabyte-tiny";

std::vector<std::int32_t> ids(const nlohmann::json& v) { return v.get<std::vector<std::int32_t>>(); }

/// Compares every gradient in the reference file with the registry's, and the loss.
void check_against_reference(const std::string& loss_name, double loss, const train::Parameters& params) {
    const auto ref = SafetensorsFile::open(kDir / "grad" / (loss_name + ".safetensors"));
    CHECK(std::abs(loss - ref.load_f32("loss").values()[0]) <= 1e-5 * std::abs(ref.load_f32("loss").values()[0]));
    std::size_t compared = 0;
    for (const auto& p : params) {
        INFO(loss_name << " " << p.name);
        REQUIRE(ref.contains(p.name));
        const Tensor want = ref.load_f32(p.name);
        REQUIRE(want.size() == p.size());
        if (p.name == "score.bias")  // 0 in exact arithmetic
            CHECK(std::abs(p.grad[0]) < 1e-6);
        else
            CHECK(test::rel_error(p.grad, want.values()) < 1e-4);
        ++compared;
    }
    CHECK(compared + 1 + (loss_name == "infonce" ? 1 : 0) == ref.names().size());  // + loss (+ temperature)
}

}  // namespace

TEST_CASE("causal LM gradients equal PyTorch float64 autograd", "[train]") {
    auto model = MambaLM::load(kDir);
    train::Parameters params;
    model.register_parameters(params);
    Batch batch;
    for_each_jsonl(kDir / "grad" / "lm.jsonl", [&](const nlohmann::json& o, std::int64_t) { batch.add(ids(o.at("ids"))); });
    MambaLM::TrainCache cache;
    model.forward_train(batch, cache);
    Matrix dlogits;
    const double loss = train::causal_lm_loss(model.logits_train(cache), batch.tokens(), batch.offsets(), dlogits);
    model.backward_logits(cache, cview(dlogits));
    check_against_reference("lm", loss, params);
}

TEST_CASE("InfoNCE gradients equal PyTorch float64 autograd", "[train]") {
    auto model = MambaRetriever::load(kDir);
    train::Parameters params;
    model.register_parameters(params);
    Batch batch;
    std::vector<std::vector<std::int32_t>> passages;
    index group = 0;
    for_each_jsonl(kDir / "grad" / "infonce.jsonl", [&](const nlohmann::json& o, std::int64_t) {
        batch.add(ids(o.at("query")));
        group = static_cast<index>(o.at("passages").size());
        for (const auto& p : o.at("passages")) passages.push_back(ids(p));
    });
    const index nq = batch.size();
    for (const auto& p : passages) batch.add(p);
    const double tau = SafetensorsFile::open(kDir / "grad" / "infonce.safetensors").load_f32("temperature").values()[0];
    MambaRetriever::TrainCache cache;
    const Matrix emb = model.encode_train(batch, cache);
    Matrix dq, dp;
    const double loss = train::info_nce_loss(emb.topRows(nq), emb.bottomRows(emb.rows() - nq), group, tau, dq, dp);
    Matrix d(emb.rows(), emb.cols());
    d << dq, dp;
    model.backward_encoded(cache, d);
    check_against_reference("infonce", loss, params);
}

TEST_CASE("listwise gradients equal PyTorch float64 autograd", "[train]") {
    Checkpoint ckpt = Checkpoint::open(kDir);
    ckpt.add_extra(kDir / "grad" / "head.safetensors");
    auto model = MambaReranker::load(ckpt, MambaConfig::load(kDir));
    train::Parameters params;
    model.register_parameters(params);
    CHECK((params.end() - 2)->name == "score.weight");
    CHECK_FALSE((params.end() - 1)->decay);
    Batch batch;
    index group = 0;
    for_each_jsonl(kDir / "grad" / "listwise.jsonl", [&](const nlohmann::json& o, std::int64_t) {
        group = static_cast<index>(o.at("pairs").size());
        for (const auto& p : o.at("pairs")) batch.add(ids(p));
    });
    MambaReranker::TrainCache cache;
    const Matrix scores = model.encode_train(batch, cache);
    Matrix dscores(scores.rows(), 1);
    const double loss = train::listwise_softmax_loss({scores.data(), static_cast<std::size_t>(scores.size())}, group,
                                                     {dscores.data(), static_cast<std::size_t>(dscores.size())});
    model.backward_encoded(cache, dscores);
    check_against_reference("listwise", loss, params);
}

}  // namespace ssm
