// The library's whole-model gradients for the three losses against PyTorch autograd in
// float64 (tests/data/mambabyte-tiny/grad/ for Mamba, falcon-mamba-tiny/grad/ for
// Falcon-Mamba, mamba2-tiny/grad/ for Mamba-2, samba-tiny/grad/ for a SAMBA hybrid; see
// tests/data/README.md): every parameter's gradient to 1e-4 relative
// (norm-wise), the loss to 1e-5.
#include <cmath>
#include <string>
#include <vector>

#include "ssm/io/safetensors.hpp"
#include "ssm/retrieval/jsonl.hpp"
#include "ssm/ssm.hpp"
#include "ssm/train/losses.hpp"
#include "ssm/train/parameters.hpp"
#include "ssm/train/steps.hpp"
#include "test_util.hpp"

namespace ssm::test_gradient_reference {
namespace {

/// The Mamba-family cases: Mamba-1, and Falcon-Mamba (dt, B and C RMS-normalised).
const char* const kMambaCases[] = {"mambabyte-tiny", "falcon-mamba-tiny"};

std::vector<std::int32_t> ids(const nlohmann::json& v) { return v.get<std::vector<std::int32_t>>(); }

/// Compares every gradient in the reference file with the registry's, and the loss.
void check_against_reference(const std::filesystem::path& dir, const std::string& loss_name, double loss,
                             const train::Parameters& params) {
    const auto ref = SafetensorsFile::open(dir / "grad" / (loss_name + ".safetensors"));
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
    for (const char* name : kMambaCases) {
        INFO(name);
        const std::filesystem::path dir = test::data_dir() / name;
        auto model = MambaLM::load(dir);
        train::Parameters params;
        model.register_parameters(params);
        Batch batch;
        for_each_jsonl(dir / "grad" / "lm.jsonl", [&](const nlohmann::json& o, std::int64_t) { batch.add(ids(o.at("ids"))); });
        MambaLM::TrainCache cache;
        model.forward_train(batch, cache);
        Matrix dlogits;
        const double loss = train::causal_lm_loss(model.logits_train(cache), batch.tokens(), batch.offsets(), dlogits);
        model.backward_logits(cache, cview(dlogits));
        check_against_reference(dir, "lm", loss, params);
    }
}

TEST_CASE("InfoNCE gradients equal PyTorch float64 autograd", "[train]") {
    for (const char* name : kMambaCases) {
        INFO(name);
        const std::filesystem::path dir = test::data_dir() / name;
        auto model = MambaRetriever::load(dir);
        train::Parameters params;
        model.register_parameters(params);
        Batch batch;
        std::vector<std::vector<std::int32_t>> passages;
        index group = 0;
        for_each_jsonl(dir / "grad" / "infonce.jsonl", [&](const nlohmann::json& o, std::int64_t) {
            batch.add(ids(o.at("query")));
            group = static_cast<index>(o.at("passages").size());
            for (const auto& p : o.at("passages")) passages.push_back(ids(p));
        });
        const index nq = batch.size();
        for (const auto& p : passages) batch.add(p);
        const double tau = SafetensorsFile::open(dir / "grad" / "infonce.safetensors").load_f32("temperature").values()[0];
        MambaRetriever::TrainCache cache;
        const Matrix emb = model.encode_train(batch, cache);
        Matrix dq, dp;
        const double loss = train::info_nce_loss(emb.topRows(nq), emb.bottomRows(emb.rows() - nq), group, tau, dq, dp);
        Matrix d(emb.rows(), emb.cols());
        d << dq, dp;
        model.backward_encoded(cache, d);
        check_against_reference(dir, "infonce", loss, params);
    }
}

TEST_CASE("listwise gradients equal PyTorch float64 autograd", "[train]") {
    for (const char* name : kMambaCases) {
        INFO(name);
        const std::filesystem::path dir = test::data_dir() / name;
        Checkpoint ckpt = Checkpoint::open(dir);
        ckpt.add_extra(dir / "grad" / "head.safetensors");
        auto model = MambaReranker::load(ckpt, MambaConfig::load(dir));
        train::Parameters params;
        model.register_parameters(params);
        CHECK((params.end() - 2)->name == "score.weight");
        CHECK_FALSE((params.end() - 1)->decay);
        Batch batch;
        index group = 0;
        for_each_jsonl(dir / "grad" / "listwise.jsonl", [&](const nlohmann::json& o, std::int64_t) {
            group = static_cast<index>(o.at("pairs").size());
            for (const auto& p : o.at("pairs")) batch.add(ids(p));
        });
        MambaReranker::TrainCache cache;
        const Matrix scores = model.encode_train(batch, cache);
        Matrix dscores(scores.rows(), 1);
        const double loss = train::listwise_softmax_loss({scores.data(), static_cast<std::size_t>(scores.size())}, group,
                                                         {dscores.data(), static_cast<std::size_t>(dscores.size())});
        model.backward_encoded(cache, dscores);
        check_against_reference(dir, "listwise", loss, params);
    }
}

namespace {

/// The three losses through models of one family, `With<Head>` (the LM head, a bi-encoder,
/// a reranker with the reference's head), against `dir/grad/`, one SECTION each.
template <template <class> class With>
void check_three_losses(const std::filesystem::path& dir) {
    const auto read = [&](const char* name, const char* key, index& group) {
        std::vector<std::vector<std::int32_t>> first, items;
        for_each_jsonl(dir / "grad" / name, [&](const nlohmann::json& o, std::int64_t) {
            if (o.contains("query")) first.push_back(ids(o.at("query")));
            group = static_cast<index>(o.at(key).size());
            for (const auto& p : o.at(key)) items.push_back(ids(p));
        });
        Batch batch;
        for (const auto& q : first) batch.add(q);
        for (const auto& p : items) batch.add(p);
        return std::make_pair(batch, static_cast<index>(first.size()));
    };
    SECTION("causal LM") {
        auto model = With<LmHead>::load(dir);
        train::Parameters params;
        model.register_parameters(params);
        Batch batch;
        for_each_jsonl(dir / "grad" / "lm.jsonl", [&](const nlohmann::json& o, std::int64_t) { batch.add(ids(o.at("ids"))); });
        check_against_reference(dir, "lm", train::causal_lm_step(model, batch), params);
    }
    SECTION("InfoNCE") {
        auto model = With<BiEncoderHead<LastToken>>::load(dir);
        train::Parameters params;
        model.register_parameters(params);
        index group = 0;
        const auto [batch, nq] = read("infonce.jsonl", "passages", group);
        const double tau = SafetensorsFile::open(dir / "grad" / "infonce.safetensors").load_f32("temperature").values()[0];
        check_against_reference(dir, "infonce", train::info_nce_step(model, batch, nq, group, tau), params);
    }
    SECTION("listwise") {
        Checkpoint ckpt = Checkpoint::open(dir);
        ckpt.add_extra(dir / "grad" / "head.safetensors");
        using Reranker = With<RerankerHead>;
        auto model = Reranker::load(ckpt, MambaConfig::load(dir));
        train::Parameters params;
        model.register_parameters(params);
        index group = 0;
        const auto [batch, nq] = read("listwise.jsonl", "pairs", group);
        CHECK(nq == 0);
        typename Reranker::TrainCache cache;
        const Matrix scores = model.encode_train(batch, cache);
        Matrix dscores(scores.rows(), 1);
        const double loss = train::listwise_softmax_loss({scores.data(), static_cast<std::size_t>(scores.size())},
                                                         group, {dscores.data(), static_cast<std::size_t>(dscores.size())});
        model.backward_encoded(cache, dscores);
        check_against_reference(dir, "listwise", loss, params);
    }
}

template <class Head>
using Mamba2Family = Mamba2With<Head>;
template <class Head>
using SambaFamily = SambaWith<Head>;

}  // namespace

TEST_CASE("Mamba-2 gradients equal PyTorch float64 autograd for the three losses", "[train][mamba2]") {
    // transformers' Mamba2ForCausalLM: 4 heads of 16, one group, chunks of 16 (most inputs
    // cross a chunk boundary), tied embeddings.
    check_three_losses<Mamba2Family>(test::data_dir() / "mamba2-tiny");
}

TEST_CASE("SAMBA hybrid gradients equal PyTorch float64 autograd for the three losses", "[train]") {
    // Layers M/A/M/A, grouped-query attention with a window of 8 (shorter than most inputs).
    check_three_losses<SambaFamily>(test::data_dir() / "samba-tiny");
}

}  // namespace ssm::test_gradient_reference
