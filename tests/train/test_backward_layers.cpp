// The backward passes of RMSNorm, LayerNorm, Embedding and CausalConv1d (+ SiLU) against
// central finite differences; the training forwards against the inference forwards;
// packed convolutions against each sequence alone.
#include <optional>
#include <string>
#include <vector>

#include "ssm/layers/causal_conv1d.hpp"
#include "ssm/layers/embedding.hpp"
#include "ssm/layers/layer_norm.hpp"
#include "ssm/layers/rms_norm.hpp"
#include "ssm/train/parameters.hpp"
#include "train/gradient_check.hpp"

namespace ssm::test_backward_layers {
using test::mspan;

TEST_CASE("RMSNorm backward matches finite differences", "[train]") {
    const index rows = 5, dim = 12;
    RMSNorm norm(Tensor::from({dim}, test::random_floats(dim, 0.5f, 1.5f, 1)), 1e-5);
    train::Parameters params;
    norm.register_parameters(params, "backbone.norm_f");
    REQUIRE(params.size() == 1);
    CHECK_FALSE(params.at("backbone.norm_f.weight").decay);
    Matrix x = test::random_matrix(rows, dim, -1, 1, 2);
    const Matrix g = test::random_matrix(rows, dim, -1, 1, 3);
    const auto f = [&] {
        Matrix y(rows, dim);
        norm.forward(cview(x), view(y));
        return test::probe(y, g);
    };
    RMSNorm::Cache cache;
    Matrix y(rows, dim), y_ref(rows, dim);
    norm.forward(cview(x), view(y), cache);
    norm.forward(cview(x), view(y_ref));
    CHECK(y == y_ref);  // the training forward computes what inference does
    Matrix dx = Matrix::Constant(rows, dim, 1.0f);
    norm.backward(cview(g), cache, view(dx), true);  // added to the ones
    dx.array() -= 1.0f;
    test::check_gradient("weight", params.at("backbone.norm_f.weight").value, params.at("backbone.norm_f.weight").grad, f);
    test::check_gradient("input", mspan(x), test::span_of(dx), f);
}

TEST_CASE("LayerNorm backward matches finite differences", "[train]") {
    const index rows = 4, dim = 10;
    for (bool bias : {true, false}) {
        INFO("bias " << bias);
        std::optional<Tensor> b;
        if (bias) b = Tensor::from({dim}, test::random_floats(dim, -0.5f, 0.5f, 4));
        LayerNorm norm(Tensor::from({dim}, test::random_floats(dim, 0.5f, 1.5f, 5)), std::move(b), 1e-5);
        train::Parameters params;
        norm.register_parameters(params, "n");
        REQUIRE(params.size() == (bias ? 2u : 1u));
        Matrix x = test::random_matrix(rows, dim, -1, 1, 6);
        const Matrix g = test::random_matrix(rows, dim, -1, 1, 7);
        const auto f = [&] {
            Matrix y(rows, dim);
            norm.forward(cview(x), view(y));
            return test::probe(y, g);
        };
        LayerNorm::Cache cache;
        Matrix y(rows, dim), y_ref(rows, dim);
        norm.forward(cview(x), view(y), cache);
        norm.forward(cview(x), view(y_ref));
        CHECK(test::rel_error(test::span_of(y), test::span_of(y_ref)) < 1e-6);
        Matrix dx(rows, dim);
        norm.backward(cview(g), cache, view(dx));
        test::check_gradient("weight", params.at("n.weight").value, params.at("n.weight").grad, f);
        if (bias) test::check_gradient("bias", params.at("n.bias").value, params.at("n.bias").grad, f);
        test::check_gradient("input", mspan(x), test::span_of(dx), f);
    }
}

TEST_CASE("Embedding backward scatter-adds into the table's gradient", "[train]") {
    const index vocab = 9, dim = 4;
    Embedding emb(Tensor::from({vocab, dim}, test::random_floats(vocab * dim, -1, 1, 8)));
    emb.store_bf16();  // a bfloat16 table trains from its widened master
    train::Parameters params;
    emb.register_parameters(params, "backbone.embeddings.weight");
    const std::vector<std::int32_t> ids = {3, 0, 3, 8, 3};
    const Matrix g = test::random_matrix(static_cast<index>(ids.size()), dim, -1, 1, 9);
    const auto f = [&] {
        Matrix y(static_cast<index>(ids.size()), dim);
        emb.forward(ids, view(y));
        return test::probe(y, g);
    };
    emb.backward(ids, cview(g));
    auto& p = *params.find("backbone.embeddings.weight");
    test::check_gradient("table", p.value, p.grad, f, 2e-3, 1e-2f, vocab * dim);
    // Rows of ids never used get nothing; row 3 gets three rows' worth.
    for (index k = 0; k < dim; ++k) {
        CHECK(p.grad[static_cast<std::size_t>(5 * dim + k)] == 0.0f);
        CHECK(p.grad[static_cast<std::size_t>(3 * dim + k)] == Approx(g(0, k) + g(2, k) + g(4, k)));
    }
    const std::vector<std::int32_t> bad = {1, 9};
    CHECK(test::error_of([&] { emb.backward(bad, cview(Matrix(2, dim))); }).find("position 1") != std::string::npos);
}

TEST_CASE("CausalConv1d backward matches finite differences inside each packed sequence", "[train]") {
    const index E = 6, K = 4;
    const std::vector<index> offsets = {0, 5, 7, 15};  // a sequence shorter than the kernel
    const index T = offsets.back();
    for (bool silu : {true, false}) {
        INFO("silu " << silu);
        CausalConv1d conv(Tensor::from({E, 1, K}, test::random_floats(E * K, -1, 1, 10)),
                          Tensor::from({E}, test::random_floats(E, -1, 1, 11)));
        train::Parameters params;
        conv.register_parameters(params, "conv1d");
        REQUIRE(params.size() == 2);
        CHECK(params.at("conv1d.weight").shape == std::vector<index>{E, 1, K});
        CHECK_FALSE(params.at("conv1d.bias").decay);
        Matrix x = test::random_matrix(T, E, -1, 1, 12);
        const Matrix g = test::random_matrix(T, E, -1, 1, 13);
        CausalConv1d::Cache cache;
        const auto f = [&] {
            Matrix y(T, E);
            conv.forward(cview(x), offsets, view(y), silu, cache);  // re-derives the taps from the master
            return test::probe(y, g);
        };
        Matrix y(T, E), y_ref(T, E);
        conv.forward(cview(x), offsets, view(y), silu, cache);
        conv.forward(cview(x), offsets, view(y_ref), silu);
        CHECK(y == y_ref);
        Matrix dx(T, E);
        conv.backward(cview(x), offsets, cview(g), cache, view(dx));
        test::check_gradient("weight", params.at("conv1d.weight").value, params.at("conv1d.weight").grad, f);
        test::check_gradient("bias", params.at("conv1d.bias").value, params.at("conv1d.bias").grad, f);
        test::check_gradient("input", mspan(x), test::span_of(dx), f, 2e-3, 1e-2f, T * E);
    }
}

TEST_CASE("CausalConv1d packed gradients equal the sum over sequences alone", "[train]") {
    const index E = 5, K = 3;
    const std::vector<index> offsets = {0, 4, 6, 11};
    const index T = offsets.back();
    const auto w = test::random_floats(E * K, -1, 1, 14);
    const auto b = test::random_floats(E, -1, 1, 15);
    const Matrix x = test::random_matrix(T, E, -1, 1, 16);
    const Matrix g = test::random_matrix(T, E, -1, 1, 17);
    // Returns the weight gradient (the registry only views the layer's buffers).
    const auto run = [&](index b0, index b1, Matrix& dx) {
        train::Parameters params;
        CausalConv1d conv(Tensor::from({E, 1, K}, w), Tensor::from({E}, b));
        conv.register_parameters(params, "c");
        const std::vector<index> off = {0, b1 - b0};
        const std::span<const index> o = b0 == 0 && b1 == T ? std::span<const index>(offsets) : std::span<const index>(off);
        const Matrix xs = x.middleRows(b0, b1 - b0), gs = g.middleRows(b0, b1 - b0);
        Matrix y(b1 - b0, E);
        CausalConv1d::Cache cache;
        conv.forward(cview(xs), o, view(y), true, cache);
        dx.resize(b1 - b0, E);
        conv.backward(cview(xs), o, cview(gs), cache, view(dx));
        return std::vector<float>(params.at("c.weight").grad.begin(), params.at("c.weight").grad.end());
    };
    Matrix dx_packed;
    const auto dw_packed = run(0, T, dx_packed);
    std::vector<float> dw(static_cast<std::size_t>(E * K), 0.0f);
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
        Matrix dx;
        const auto dw_alone = run(offsets[s], offsets[s + 1], dx);
        CHECK(test::rel_error(test::span_of(dx), test::rows_of(dx_packed, offsets[s], offsets[s + 1] - offsets[s])) < 1e-6);
        for (std::size_t i = 0; i < dw.size(); ++i) dw[i] += dw_alone[i];
    }
    CHECK(test::rel_error(dw, dw_packed) < 1e-6);
}

}  // namespace ssm::test_backward_layers
