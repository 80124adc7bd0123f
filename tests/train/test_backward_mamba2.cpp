// The Mamba-2 backward: the SSD scan's against central finite differences (packed
// sequences, groups, an initial state, several checkpoint intervals, the chunked form's
// products through Eigen and through gemm_f32); the mixer's for
// mamba2-tiny (one group) and mamba2-grouped-torch (two groups, a gated MLP beside the
// SSM, per-group norm); whole Mamba-2 models through the hidden states and the LM head,
// and a packed batch's gradients against the sum of each sequence's alone.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "ssm/model/batch.hpp"
#include "ssm/model/mamba.hpp"
#include "ssm/scan/ssd.hpp"
#include "ssm/scan/ssd_backward.hpp"
#include "ssm/train/parameters.hpp"
#include "train/gradient_check.hpp"

namespace ssm::test_backward_mamba2 {
namespace {

/// A random SSD problem: x, B, C in [−1, 1], Δ in [0.05, 0.8], A in [−1.5, −0.2].
struct SsdProblem {
    index H = 4, P = 3, N = 5, G = 2;
    std::vector<index> offsets = {0, 7, 7, 8, 21};  // an empty and a one-token sequence
    Matrix x, dt, B, C, y, init;
    std::vector<float> A;

    SsdProblem() {
        const index T = offsets.back();
        x = test::random_matrix(T, H * P, -1, 1, 1);
        dt = test::random_matrix(T, H, 0.05f, 0.8f, 2);
        B = test::random_matrix(T, G * N, -1, 1, 3);
        C = test::random_matrix(T, G * N, -1, 1, 4);
        const Matrix a = test::random_matrix(1, H, -1.5f, -0.2f, 5);
        A.assign(a.data(), a.data() + H);
        init = test::random_matrix(static_cast<index>(offsets.size()) - 1, H * P * N, -0.5f, 0.5f, 6);
        y = Matrix::Zero(T, H * P);
    }

    /// Another shape and packing, with x, Δ (in [dt_lo, dt_hi]), B, C and the initial states
    /// drawn afresh from seeds seed … seed + 4; A stays as drawn (its first H values).
    void redraw(index h, index p, index n, index g, std::vector<index> offs, float dt_lo, float dt_hi,
                unsigned seed) {
        H = h;
        P = p;
        N = n;
        G = g;
        offsets = std::move(offs);
        const index T = offsets.back();
        x = test::random_matrix(T, H * P, -1, 1, seed);
        dt = test::random_matrix(T, H, dt_lo, dt_hi, seed + 1);
        B = test::random_matrix(T, G * N, -1, 1, seed + 2);
        C = test::random_matrix(T, G * N, -1, 1, seed + 3);
        init = test::random_matrix(static_cast<index>(offsets.size()) - 1, H * P * N, -0.5f, 0.5f, seed + 4);
        y = Matrix::Zero(T, H * P);
    }

    SsdArgs args(bool with_init) {
        SsdArgs a;
        a.T = offsets.back();
        a.H = H;
        a.P = P;
        a.N = N;
        a.G = G;
        a.x = x.data();
        a.ld_x = H * P;
        a.dt = dt.data();
        a.ld_dt = H;
        a.A = A.data();
        a.B = B.data();
        a.ld_B = G * N;
        a.C = C.data();
        a.ld_C = G * N;
        a.y = y.data();
        a.ld_y = H * P;
        a.offsets = offsets;
        a.initial_state = with_init ? init.data() : nullptr;
        return a;
    }
};

struct SsdGradients {
    Matrix dx, ddt, dB, dC;
    std::vector<float> dA;
};

/// The gradients of `ssd_scan_backward` with checkpoints every `every` tokens, or with
/// `chunked`, those of `ssd_scan_backward_chunked` with chunks of `every` tokens.
SsdGradients ssd_backward(SsdProblem& pr, const Matrix& dy, bool with_init, index every, bool chunked = false) {
    const index T = pr.offsets.back();
    SsdGradients r{Matrix(T, pr.H * pr.P), Matrix(T, pr.H), Matrix(T, pr.G * pr.N), Matrix(T, pr.G * pr.N),
                   std::vector<float>(static_cast<std::size_t>(pr.H))};
    SsdGrads g;
    g.dy = dy.data();
    g.ld_dy = pr.H * pr.P;
    g.dx = r.dx.data();
    g.ld_dx = pr.H * pr.P;
    g.ddt = r.ddt.data();
    g.ld_ddt = pr.H;
    g.dB = r.dB.data();
    g.ld_dB = pr.G * pr.N;
    g.dC = r.dC.data();
    g.ld_dC = pr.G * pr.N;
    g.dA = r.dA.data();
    if (chunked)
        ssd_scan_backward_chunked(pr.args(with_init), g, every);
    else
        ssd_scan_backward(pr.args(with_init), g, every);
    return r;
}

/// Every parameter's gradient against central differences on `coords` coordinates.
template <class F>
void check_all_parameters(train::Parameters& params, F&& f, double tol, float step, index coords) {
    test::check_parameters(params, f, tol, [&](const std::string&) { return step; }, coords);
}

const std::vector<std::vector<std::int32_t>> kSequences = {
    {5, 17, 200, 3, 99, 42, 7, 7, 100, 0, 12, 33, 1, 2, 250, 9, 8, 7, 6, 5, 4},  // across chunks of 8 and 16
    {1},
    {64, 65, 66, 2, 90, 31, 8},
};

Batch batch_of(const std::vector<std::vector<std::int32_t>>& seqs) {
    Batch b;
    for (const auto& s : seqs) b.add(s);
    return b;
}

/// Δ ≈ 0.1-1 instead of the checkpoint's 0.001-0.1, so Δ's path is measurable in float32.
void widen_dt(train::Parameters& params) {
    for (auto& p : params)
        if (p.name.find("dt_bias") != std::string::npos)
            for (float& b : p.value) b += 4.0f;
}

/// Every gradient in `an` against central differences of the sequential scan's ⟨y, gy⟩.
void check_against_differences(SsdProblem& pr, const Matrix& gy, bool with_init, const SsdGradients& an) {
    const auto f = [&] {
        SequentialSsd::run(pr.args(with_init));
        return test::probe(pr.y, gy);
    };
    test::check_gradient("x", test::mspan(pr.x), test::span_of(an.dx), f, 2e-3, 1e-2f, 64);
    test::check_gradient("dt", test::mspan(pr.dt), test::span_of(an.ddt), f, 2e-3, 1e-3f, 64);
    test::check_gradient("B", test::mspan(pr.B), test::span_of(an.dB), f, 2e-3, 1e-2f, 64);
    test::check_gradient("C", test::mspan(pr.C), test::span_of(an.dC), f, 2e-3, 1e-2f, 64);
    test::check_gradient("A", std::span<float>(pr.A), std::span<const float>(an.dA), f, 2e-3, 1e-3f, 8);
}

/// Norm-wise relative error of every gradient of `b` against `a`'s, the largest.
double max_rel_error(const SsdGradients& a, const SsdGradients& b) {
    return std::max({test::rel_error(test::span_of(b.dx), test::span_of(a.dx)),
                     test::rel_error(test::span_of(b.ddt), test::span_of(a.ddt)),
                     test::rel_error(test::span_of(b.dB), test::span_of(a.dB)),
                     test::rel_error(test::span_of(b.dC), test::span_of(a.dC)), test::rel_error(b.dA, a.dA)});
}

}  // namespace

TEST_CASE("SSD scan backward matches finite differences", "[train][mamba2]") {
    for (const bool with_init : {false, true}) {
        INFO("initial state: " << with_init);
        SsdProblem pr;
        const index T = pr.offsets.back();
        const Matrix gy = test::random_matrix(T, pr.H * pr.P, -1, 1, 7);
        const SsdGradients an = ssd_backward(pr, gy, with_init, 64);
        check_against_differences(pr, gy, with_init, an);
        // The checkpoint interval changes where states are recomputed from, not the result.
        for (const index every : {1, 3, 7}) {
            INFO("checkpoint every " << every);
            const SsdGradients other = ssd_backward(pr, gy, with_init, every);
            CHECK(test::rel_error(test::span_of(other.dx), test::span_of(an.dx)) < 1e-6);
            CHECK(test::rel_error(test::span_of(other.ddt), test::span_of(an.ddt)) < 1e-6);
            CHECK(test::rel_error(test::span_of(other.dB), test::span_of(an.dB)) < 1e-6);
            CHECK(test::rel_error(test::span_of(other.dC), test::span_of(an.dC)) < 1e-6);
            CHECK(test::rel_error(other.dA, an.dA) < 1e-6);
        }
    }
}

TEST_CASE("chunked SSD scan backward equals the recurrences' and finite differences", "[train][mamba2]") {
    // Eigen's products, then gemm_f32's where the CPU runs it.
    for (const CpuIsa isa : test::float32_gemm_isas()) {
        const test::ForceCpuIsa hold(isa);
        INFO(isa_name(isa));
        for (const bool with_init : {false, true}) {
            INFO("initial state: " << with_init);
            SsdProblem pr;
            const index T = pr.offsets.back();
            const Matrix gy = test::random_matrix(T, pr.H * pr.P, -1, 1, 7);
            const SsdGradients reference = ssd_backward(pr, gy, with_init, 16);
            // Chunks of one token, chunk boundaries inside and at the end of the 13-token
            // sequence, one chunk per sequence (the last cut to the longest sequence).
            for (const index chunk : {index{1}, index{3}, index{8}, index{13}, index{64}, index{1} << 40}) {
                INFO("chunk " << chunk);
                CHECK(max_rel_error(reference, ssd_backward(pr, gy, with_init, chunk, true)) < 1e-5);
            }
            check_against_differences(pr, gy, with_init, ssd_backward(pr, gy, with_init, 3, true));
        }
        // The mamba2-130m head shape (P 64, N 128) over sequences of 150 and 200 tokens, one
        // group of two heads, Δ up to 2: a chunk of 64 decays by as much as e^-190.
        SsdProblem big;
        big.redraw(2, 64, 128, 1, {0, 150, 350}, 0.01f, 2.0f, 11);
        const index T = big.offsets.back();
        const Matrix gy = test::random_matrix(T, big.H * big.P, -1, 1, 16);
        const SsdGradients reference = ssd_backward(big, gy, true, 16);
        for (const index chunk : {64, 0}) {
            INFO("chunk " << chunk);
            CHECK(max_rel_error(reference, ssd_backward(big, gy, true, chunk, true)) < 1e-5);
        }
    }
}

TEST_CASE("chunked SSD scan backward gives the same bits wherever the heap puts its scratch", "[train][mamba2]") {
    // An exactly resumed training run depends on this. Before each call, blocks of every
    // small size are taken and held (so the scan's scratch cannot reuse the last call's),
    // with one of 16·round bytes to move the heap's top.
    SsdProblem pr;
    pr.redraw(pr.H, 16, 20, pr.G, {0, 100, 130}, 0.05f, 0.8f, 21);
    const index T = pr.offsets.back();
    const Matrix gy = test::random_matrix(T, pr.H * pr.P, -1, 1, 26);
    const SsdGradients first = ssd_backward(pr, gy, true, 64, true);
    std::vector<std::vector<char>> held;
    for (std::size_t round = 1; round <= 8; ++round) {
        INFO("round " << round);
        held.emplace_back(16 * round);
        for (std::size_t size = 8; size <= 1024; size += 8) held.emplace_back(size);
        const SsdGradients again = ssd_backward(pr, gy, true, 64, true);
        CHECK(max_rel_error(first, again) == 0.0);
    }
}

TEST_CASE("SSD scan backward refuses bad operands", "[train][mamba2]") {
    SsdProblem pr;
    const Matrix gy = test::random_matrix(pr.offsets.back(), pr.H * pr.P, -1, 1, 7);
    CHECK(test::error_of([&] { ssd_backward(pr, gy, false, 0); }).find("checkpoint_every") != std::string::npos);
    CHECK(test::error_of([&] { ssd_backward(pr, gy, false, -1, true); }).find("chunk length") != std::string::npos);
    const SsdGrads none;  // every gradient null
    CHECK(test::error_of([&] { ssd_scan_backward(pr.args(false), none); }).find("gradient operand is null") !=
          std::string::npos);
}

TEST_CASE("Mamba2Mixer backward matches finite differences", "[train][mamba2]") {
    // mamba2-tiny: one group, D per head; mamba2-grouped-torch: two groups (the norm per
    // group), d_ssm 48 of 64 inner channels (a gated MLP beside the SSM), untied.
    for (const char* dir : {"mamba2-tiny", "mamba2-grouped-torch"}) {
        INFO(dir);
        auto model = Mamba2LM::load(test::data_dir() / dir);
        auto mixer = model.backbone()[1].mixer();  // a copy; registering gives it its own masters
        train::Parameters params;
        mixer.register_parameters(params, "backbone.layers.1.mixer");
        const std::vector<std::string> names = {"dt_bias", "A_log", "D", "conv1d.weight", "conv1d.bias",
                                                "in_proj.weight", "norm.weight", "out_proj.weight"};
        REQUIRE(params.size() == names.size());
        std::size_t i = 0;
        for (const auto& p : params) CHECK(p.name == "backbone.layers.1.mixer." + names[i++]);
        CHECK_FALSE(params.at("backbone.layers.1.mixer.dt_bias").decay);
        CHECK_FALSE(params.at("backbone.layers.1.mixer.norm.weight").decay);
        CHECK(params.at("backbone.layers.1.mixer.in_proj.weight").decay);
        widen_dt(params);
        // The norm's weight is 1 in a fresh checkpoint; vary it so its gradient is general.
        auto& norm_w = params.at("backbone.layers.1.mixer.norm.weight").value;
        for (std::size_t c = 0; c < norm_w.size(); ++c) norm_w[c] = 0.5f + 0.03f * static_cast<float>(c % 17);

        const std::vector<index> offsets = {0, 19, 20, 29};
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
}

TEST_CASE("Mamba-2 whole-model gradients match finite differences", "[train][mamba2]") {
    for (const char* dir : {"mamba2-tiny", "mamba2-grouped-torch"}) {
        INFO(dir);
        auto model = Mamba2LM::load(test::data_dir() / dir);
        const bool tied = model.config().tie_word_embeddings;
        train::Parameters params;
        model.register_parameters(params);
        CHECK(params.begin()->name == "backbone.embeddings.weight");
        CHECK((params.end() - (tied ? 1 : 2))->name == "backbone.norm_f.weight");
        CHECK((params.find("lm_head.weight") == nullptr) == tied);
        widen_dt(params);
        const Batch batch = batch_of(kSequences);
        const index T = batch.total_tokens();
        Mamba2LM::TrainCache cache;
        const Matrix hidden = model.forward_train(batch, cache);
        const ForwardResult ref = model.forward(batch, {Logits::None, false});
        CHECK(test::rel_error(test::span_of(hidden), test::span_of(ref.hidden)) < 1e-6);

        SECTION("through the hidden states") {
            const Matrix g = test::random_matrix(T, model.hidden_size(), -1, 1, 41);
            model.backward(cache, cview(g));
            const auto f = [&] {
                Mamba2LM::TrainCache c;
                return test::probe(model.forward_train(batch, c), g);
            };
            check_all_parameters(params, f, 1e-2, 1e-2f, 12);
        }
        SECTION("through the LM head's logits") {
            const Matrix g = test::random_matrix(T, model.vocab_size(), -0.1f, 0.1f, 42);
            CHECK(test::rel_error(test::span_of(model.logits_train(cache)),
                                  test::span_of(model.forward(batch, {Logits::All, false}).logits)) < 1e-6);
            model.backward_logits(cache, cview(g));
            const auto f = [&] {
                Mamba2LM::TrainCache c;
                model.forward_train(batch, c);
                return test::probe(model.logits_train(c), g);
            };
            check_all_parameters(params, f, 1e-2, 1e-2f, 12);
        }
        SECTION("a packed batch's gradients are the sum of each sequence's") {
            const Matrix g = test::random_matrix(T, model.hidden_size(), -1, 1, 43);
            model.backward(cache, cview(g));
            std::vector<std::vector<float>> packed;
            for (const auto& p : params) packed.emplace_back(p.grad.begin(), p.grad.end());
            params.zero_grad();
            for (index s = 0; s < batch.size(); ++s) {
                const Batch one = batch_of({kSequences[static_cast<std::size_t>(s)]});
                Mamba2LM::TrainCache c;
                model.forward_train(one, c);
                const Matrix gs = g.middleRows(batch.offsets()[static_cast<std::size_t>(s)], batch.length(s));
                model.backward(c, cview(gs));
            }
            std::size_t k = 0;
            for (const auto& p : params) {
                INFO(p.name);
                CHECK(test::rel_error(p.grad, packed[k++]) < 1e-5);
            }
        }
    }
}

}  // namespace ssm::test_backward_mamba2
