// The Mamba mixer and whole Mamba models trained through: every parameter's gradient
// against central finite differences (on a sample of coordinates) for the bundled tiny
// checkpoints (RMSNorm, and LayerNorm with biases), through the hidden states and
// through the tied LM head's logits; the training forward against the inference forward;
// a packed batch's gradients against the sum of each sequence's alone.
#include <filesystem>
#include <string>
#include <vector>

#include "ssm/model/batch.hpp"
#include "ssm/model/hybrid.hpp"
#include "ssm/model/mamba.hpp"
#include "ssm/train/parameters.hpp"
#include "train/gradient_check.hpp"

namespace ssm::test_backward_mamba {
namespace {

const std::vector<std::vector<std::int32_t>> kSequences = {
    {5, 17, 256, 3, 999, 42, 7, 7, 100, 0, 12},
    {1},
    {64, 65, 66, 2, 900, 31, 8},
};

Batch batch_of(const std::vector<std::vector<std::int32_t>>& seqs, std::int32_t vocab) {
    Batch b;
    for (auto s : seqs) {
        for (auto& id : s) id %= vocab;
        b.add(s);
    }
    return b;
}

/// Every parameter's gradient against central differences on `coords` coordinates
/// (norm-wise); `f` re-runs the forward and probes it.
/// A_log's and dt_proj's gradients are tiny (1e-7 to 1e-4 here): their differences need
/// a longer step to stand above the forward's float32 rounding (A_log's agree to ~1e-3 at
/// 3e-2; at 1e-3 rounding makes them wrong by tens of percent).
template <class F>
void check_all_parameters(train::Parameters& params, F&& f, double tol, float step, index coords) {
    test::check_parameters(params, f, tol, [&](const std::string& name) {
        // A_log moves the output by little for its size: its differences need the largest
        // step to stand above float32 rounding (at 3× the relative error was 0.0057 with
        // AVX-512 kernels, at 1.5× 0.0087: noise, falling as the step grows).
        if (name.find("A_log") != std::string::npos) return 6 * step;
        return name.find("dt_proj") != std::string::npos ? 3 * step : step;
    }, coords);
}

/// The gradients of kSequences packed in one batch (ids taken mod `vocab`) against the
/// sum of each sequence's alone, through the hidden states with a random gradient.
template <class ModelT>
void check_packed_is_sum(const char* dir, std::int32_t vocab, std::uint64_t seed) {
    auto model = ModelT::load(test::data_dir() / dir);
    train::Parameters params;
    model.register_parameters(params);
    const Batch batch = batch_of(kSequences, vocab);
    const Matrix g = test::random_matrix(batch.total_tokens(), model.hidden_size(), -1, 1, seed);
    typename ModelT::TrainCache cache;
    model.forward_train(batch, cache);
    model.backward(cache, cview(g));
    std::vector<std::vector<float>> packed;
    for (const auto& p : params) packed.emplace_back(p.grad.begin(), p.grad.end());

    params.zero_grad();
    for (index s = 0; s < batch.size(); ++s) {
        const Batch one = batch_of({kSequences[static_cast<std::size_t>(s)]}, vocab);
        typename ModelT::TrainCache c;
        model.forward_train(one, c);
        const Matrix gs = g.middleRows(batch.offsets()[static_cast<std::size_t>(s)], batch.length(s));
        model.backward(c, cview(gs));  // accumulates over the sequences
    }
    std::size_t i = 0;
    for (const auto& p : params) {
        INFO(dir << " " << p.name);
        CHECK(test::rel_error(p.grad, packed[i++]) < 1e-5);
    }
}

}  // namespace

TEST_CASE("MambaMixer backward matches finite differences", "[train]") {
    auto model = MambaLM::load(test::data_dir() / "mamba-tiny");
    auto mixer = model.backbone()[1].mixer();  // a copy; registering gives it its own masters
    train::Parameters params;
    mixer.register_parameters(params, "backbone.layers.1.mixer");
    const std::vector<std::string> names = {"A_log", "D", "conv1d.weight", "conv1d.bias", "in_proj.weight",
                                            "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight"};
    REQUIRE(params.size() == names.size());
    std::size_t i = 0;
    for (const auto& p : params) CHECK(p.name == "backbone.layers.1.mixer." + names[i++]);
    // Trained dt biases make Δ ≈ 0.001-0.1, where Δ's path changes the output by less than
    // float32 differencing resolves; shift them so Δ ≈ 0.1-1 and that path is measurable.
    for (float& b : params.at("backbone.layers.1.mixer.dt_proj.bias").value) b += 4.0f;

    const std::vector<index> offsets = {0, 9, 10, 23};
    const index T = offsets.back(), D = mixer.hidden_size();
    Matrix h = test::random_matrix(T, D, -1, 1, 31);
    const Matrix g = test::random_matrix(T, D, -1, 1, 32);
    std::decay_t<decltype(mixer)>::Cache cache;
    const auto f = [&] {
        Matrix out = Matrix::Zero(T, D);
        mixer.forward(cview(h), offsets, view(out), false, cache);
        return test::probe(out, g);
    };
    // The training forward computes what inference does.
    Matrix out(T, D), out_ref(T, D);
    Workspace ws;
    mixer.forward(cview(h), offsets, view(out_ref), false, ws);
    mixer.forward(cview(h), offsets, view(out), false, cache);
    CHECK(test::rel_error(test::span_of(out), test::span_of(out_ref)) < 1e-6);
    Matrix dh(T, D);
    mixer.backward(cview(g), cache, view(dh));
    check_all_parameters(params, f, 5e-3, 1e-2f, 24);
    test::check_gradient("input", test::mspan(h), test::span_of(dh), f, 5e-3, 1e-3f, 48);
}

TEST_CASE("whole-model gradients match finite differences", "[train]") {
    // mamba-tiny: tied head; the bf16 sharded copy: an untied lm_head, bfloat16 weights;
    // falcon-mamba-tiny: the weightless RMS normalisation of dt, B and C.
    for (const char* dir : {"mamba-tiny", "mamba-tiny-bf16-sharded", "falcon-mamba-tiny"}) {
        INFO(dir);
        {
            using ModelT = MambaLM;
            auto model = MambaLM::load(test::data_dir() / dir);
            const bool tied = model.config().tie_word_embeddings;
            train::Parameters params;
            model.register_parameters(params);
            // Checkpoint order: embedding, layers (norm, then the mixer's), final norm, head.
            CHECK(params.begin()->name == "backbone.embeddings.weight");
            CHECK((params.end() - (tied ? 1 : 2))->name == "backbone.norm_f.weight");
            if (tied)
                CHECK(params.find("lm_head.weight") == nullptr);  // shares the embedding's gradient
            else
                CHECK((params.end() - 1)->name == "lm_head.weight");
            CHECK(params.at("backbone.layers.0.norm.weight").decay == false);
            CHECK(params.at("backbone.layers.0.mixer.in_proj.weight").decay);

            // Δ ≈ 0.1-1 instead of the checkpoint's 0.001-0.1, so Δ's path is measurable.
            for (auto& p : params)
                if (p.name.find("dt_proj.bias") != std::string::npos)
                    for (float& b : p.value) b += 4.0f;
            const Batch batch = batch_of(kSequences, static_cast<std::int32_t>(model.vocab_size()));
            const index T = batch.total_tokens();
            typename ModelT::TrainCache cache;
            const Matrix hidden = model.forward_train(batch, cache);
            const ForwardResult ref = model.forward(batch, {Logits::None, false});
            CHECK(test::rel_error(test::span_of(hidden), test::span_of(ref.hidden)) < 1e-6);

            SECTION("through the hidden states") {
                const Matrix g = test::random_matrix(T, model.hidden_size(), -1, 1, 41);
                model.backward(cache, cview(g));
                const auto f = [&] {
                    typename ModelT::TrainCache c;
                    return test::probe(model.forward_train(batch, c), g);
                };
                check_all_parameters(params, f, 1e-2, 1e-2f, 12);
            }
            SECTION("through the LM head's logits") {
                const Matrix g = test::random_matrix(T, model.vocab_size(), -0.1f, 0.1f, 42);
                const Matrix logits = model.logits_train(cache);
                CHECK(test::rel_error(test::span_of(logits),
                                      test::span_of(model.forward(batch, {Logits::All, false}).logits)) < 1e-6);
                model.backward_logits(cache, cview(g));
                const auto f = [&] {
                    typename ModelT::TrainCache c;
                    model.forward_train(batch, c);
                    return test::probe(model.logits_train(c), g);
                };
                check_all_parameters(params, f, 1e-2, 1e-2f, 12);
            }
        }
    }
}

TEST_CASE("SAMBA whole-model gradients match finite differences", "[train]") {
    // samba-tiny: layers M/A/M/A, grouped-query heads, window 8 (shorter than the first
    // sequence); samba-tiny-mha: M/A/M, multi-head, RoPE on half of each head.
    for (const char* dir : {"samba-tiny", "samba-tiny-mha"}) {
        INFO(dir);
        auto model = Samba::load(test::data_dir() / dir);
        train::Parameters params;
        model.register_parameters(params);
        CHECK(params.begin()->name == "backbone.embeddings.weight");
        CHECK(params.find("lm_head.weight") == nullptr);  // tied
        CHECK((params.end() - 1)->name == "backbone.norm_f.weight");
        CHECK(params.at("backbone.layers.1.mixer.q_proj.weight").decay);
        CHECK(params.at("backbone.layers.1.mlp.gate_proj.weight").decay);
        CHECK_FALSE(params.at("backbone.layers.1.mlp_norm.weight").decay);
        CHECK_FALSE(params.at("backbone.layers.0.mixer.A_log").decay);
        for (auto& p : params)
            if (p.name.find("dt_proj.bias") != std::string::npos)
                for (float& b : p.value) b += 4.0f;
        const Batch batch = batch_of(kSequences, static_cast<std::int32_t>(model.config().vocab_size));
        const index T = batch.total_tokens();
        Samba::TrainCache cache;
        const Matrix hidden = model.forward_train(batch, cache);
        CHECK(test::rel_error(test::span_of(hidden),
                              test::span_of(model.forward(batch, {Logits::None, false}).hidden)) < 1e-6);
        const Matrix g = test::random_matrix(T, model.vocab_size(), -0.1f, 0.1f, 43);
        model.backward_logits(cache, cview(g));
        const auto f = [&] {
            Samba::TrainCache c;
            model.forward_train(batch, c);
            return test::probe(model.logits_train(c), g);
        };
        check_all_parameters(params, f, 1e-2, 1e-2f, 10);
    }
}

TEST_CASE("SAMBA: a packed batch's gradients equal the sum of each sequence's alone", "[train]") {
    check_packed_is_sum<Samba>("samba-tiny", 300, 52);
}

TEST_CASE("a packed batch's gradients equal the sum of each sequence's alone", "[train]") {
    check_packed_is_sum<MambaLM>("mamba-tiny", 1000, 51);
}

TEST_CASE("a bfloat16 model trains from float32 masters of its weights", "[train]") {
    auto model = MambaLM::load(test::data_dir() / "mamba-tiny-bf16-sharded");
    model.store_weights_bf16();
    const Batch batch = batch_of({kSequences[0]}, static_cast<std::int32_t>(model.vocab_size()));
    const Matrix before = model.forward(batch, {Logits::None, false}).hidden;
    train::Parameters params;
    model.register_parameters(params);
    MambaLM::TrainCache cache;
    // The masters hold the bfloat16 values exactly: the same hidden states.
    CHECK(test::rel_error(test::span_of(model.forward_train(batch, cache)), test::span_of(before)) < 1e-6);
    CHECK(test::error_of([&] { model.register_parameters(params); }).find("registered twice") != std::string::npos);
}

}  // namespace ssm

namespace ssm {

TEST_CASE("a mixer's training cache is O(E + N) floats per token", "[train]") {
    auto model = MambaLM::load(test::data_dir() / "mamba-tiny");
    auto mixer = model.backbone()[0].mixer();
    train::Parameters params;
    mixer.register_parameters(params, "m");
    const index D = mixer.hidden_size(), E = mixer.inner_size(), N = mixer.state_size(), R = mixer.dt_rank();
    for (index T : {512, 2048}) {
        const std::vector<index> offsets = {0, T};
        const Matrix h = test::random_matrix(T, D, -1, 1, 60);
        Matrix out(T, D);
        std::decay_t<decltype(mixer)>::Cache cache;
        mixer.forward(cview(h), offsets, view(out), false, cache);
        // D + 7E + R + 2N per token, and one (E, N) state per 64 tokens — not E·N per token.
        const auto expect = static_cast<std::size_t>(T * (D + 7 * E + R + 2 * N) + (T / 64) * E * N);
        CHECK(cache.floats() == expect);
        CHECK(cache.scan.floats() == static_cast<std::size_t>(T * E * N) / 64);  // 1/64 of every state
    }
}

}  // namespace ssm::test_backward_mamba
