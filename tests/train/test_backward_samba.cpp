// The backward passes of SAMBA's layers — SwiGLU, RoPE, SlidingWindowAttention (RoPE,
// grouped-query heads, windows; Eigen's products and gemm_f32's in its blocks) — against
// central finite differences; the training
// forwards against the inference forwards; packed batches against each sequence alone.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ssm/core/threads.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/layers/rotary.hpp"
#include "ssm/layers/sliding_window_attention.hpp"
#include "ssm/layers/swiglu.hpp"
#include "ssm/train/parameters.hpp"
#include "train/gradient_check.hpp"

namespace ssm::test_backward_samba {
namespace {

Tensor random_tensor(index rows, index cols, float r, std::uint64_t seed) {
    return Tensor::from({rows, cols},
                        test::random_floats(static_cast<std::size_t>(rows * cols), -r, r, seed));
}

SwiGLU make_swiglu(index D, index F, std::uint64_t seed) {
    const float r = 1.0f / std::sqrt(static_cast<float>(D));
    return SwiGLU(random_tensor(F, D, 2 * r, seed), random_tensor(F, D, 2 * r, seed + 1),
                  random_tensor(D, F, 2 * r, seed + 2));
}

SlidingWindowAttention make_attention(const SlidingWindowAttention::Shape& s, index D,
                                      std::uint64_t seed) {
    const float r = 1.5f / std::sqrt(static_cast<float>(D));  // attention sharp enough to matter
    const index q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
    return SlidingWindowAttention(
        s, random_tensor(q, D, r, seed), random_tensor(kv, D, r, seed + 1),
        random_tensor(kv, D, r, seed + 2), random_tensor(D, q, r, seed + 3));
}

}  // namespace

TEST_CASE("SwiGLU backward matches finite differences; training forward equals inference",
          "[train]") {
    const index rows = 6, D = 5, F = 7;
    SwiGLU mlp = make_swiglu(D, F, 10);
    train::Parameters params;
    mlp.register_parameters(params, "backbone.layers.0.mlp");
    REQUIRE(params.size() == 3);
    for (const char* n : {"gate_proj", "up_proj", "down_proj"}) {
        const auto& p = params.at(std::string("backbone.layers.0.mlp.") + n + ".weight");
        CHECK(p.decay);
        CHECK(p.shape == (std::string(n) == "down_proj" ? std::vector<index>{D, F}
                                                        : std::vector<index>{F, D}));
    }
    Matrix h = test::random_matrix(rows, D, -2, 2, 11);
    const Matrix g = test::random_matrix(rows, D, -1, 1, 12);
    Workspace ws;
    const auto f = [&] {
        Matrix y(rows, D);
        ws.reset();
        mlp.forward(cview(h), view(y), false, ws);
        return test::probe(y, g);
    };
    SwiGLU::Cache cache;
    Matrix y(rows, D), y_ref(rows, D);
    mlp.forward(cview(h), view(y), false, cache);
    ws.reset();
    mlp.forward(cview(h), view(y_ref), false, ws);
    CHECK(y == y_ref);
    // accumulate: out += SwiGLU(h)
    Matrix y_acc = Matrix::Constant(rows, D, 0.25f);
    mlp.forward(cview(h), view(y_acc), true, cache);
    CHECK(test::rel_error(test::span_of(Matrix(y_acc.array() - 0.25f)), test::span_of(y_ref)) <
          1e-6);

    Matrix dh = Matrix::Constant(rows, D, 1.0f);
    mlp.backward(cview(h), cview(g), cache, view(dh), true);  // added to the ones
    dh.array() -= 1.0f;
    for (const auto& p : params)
        test::check_gradient(p.name.c_str(), p.value, p.grad, f, 2e-3, 1e-2f, 60);
    test::check_gradient("input", test::mspan(h), test::span_of(dh), f);

    // the gradients accumulate: a second backward doubles them
    const std::vector<float> once(params.at("backbone.layers.0.mlp.up_proj.weight").grad.begin(),
                                  params.at("backbone.layers.0.mlp.up_proj.weight").grad.end());
    Matrix dh2(rows, D);
    mlp.backward(cview(h), cview(g), cache, view(dh2));
    const auto& up = params.at("backbone.layers.0.mlp.up_proj.weight");
    for (std::size_t i = 0; i < once.size(); ++i) CHECK(up.grad[i] == 2.0f * once[i]);
    CHECK(test::rel_error(test::span_of(dh2), test::span_of(dh)) < 1e-6);
}

TEST_CASE("RotaryEmbedding: apply_transposed is the transpose and inverse of apply", "[train]") {
    const index heads = 3, hd = 10;
    for (index r : {index{10}, index{6}}) {
        INFO("rotary dim " << r);
        const RotaryEmbedding rope(r, 10000.0);
        std::vector<float> cs(static_cast<std::size_t>(r));
        for (std::int64_t pos : {0, 1, 17, 4099}) {
            rope.angles(pos, cs.data());
            const auto x =
                test::random_floats(heads * hd, -1, 1, 20 + static_cast<std::uint64_t>(pos));
            const auto y =
                test::random_floats(heads * hd, -1, 1, 40 + static_cast<std::uint64_t>(pos));
            std::vector<float> rx = x, rty = y, back = x;
            rope.apply(rx.data(), heads, hd, cs.data());
            rope.apply_transposed(rty.data(), heads, hd, cs.data());
            rope.apply(back.data(), heads, hd, cs.data());
            rope.apply_transposed(back.data(), heads, hd, cs.data());
            double lhs = 0, rhs = 0;  // ⟨R x, y⟩ = ⟨x, Rᵀ y⟩
            for (std::size_t i = 0; i < x.size(); ++i) {
                lhs += static_cast<double>(rx[i]) * y[i];
                rhs += static_cast<double>(x[i]) * rty[i];
            }
            CHECK(std::abs(lhs - rhs) < 1e-6 * (1 + std::abs(lhs)));
            CHECK(test::rel_error(back, x) < 1e-6);
            if (pos > 0) CHECK(test::rel_error(rx, x) > 1e-3);  // it did rotate
            for (index h = 0; h < heads; ++h)  // features past the rotary dimension untouched
                for (index i = r; i < hd; ++i)
                    CHECK(rty[static_cast<std::size_t>(h * hd + i)] ==
                          y[static_cast<std::size_t>(h * hd + i)]);
        }
    }
}

TEST_CASE("SlidingWindowAttention backward matches finite differences (RoPE, GQA, windows)",
          "[train]") {
    struct Case {
        SlidingWindowAttention::Shape shape;
        std::vector<index> offsets;
    };
    // heads, kv heads, head dim, window, rotary dim, base; the 70-token sequence crosses
    // a 64-query block, so a block's keys start before it
    const std::vector<Case> cases = {
        {{4, 2, 6, 3, 6, 10000.0}, {0, 5, 6, 76}},  // grouped-query, window 3, full RoPE
        {{2, 2, 4, 0, 2, 500.0}, {0, 9, 17}},       // multi-head, no window, partial RoPE
        {{3, 1, 4, 1, 4, 10000.0}, {0, 4, 11}},     // multi-query, window 1 (only itself)
        {{2, 1, 4, 5, 0, 10000.0}, {0, 12}},        // no RoPE
        {{2, 1, 16, 40, 16, 10000.0}, {0, 70}},     // head dim 16: gemm_f32 packs kᵀ and vᵀ by 8 × 8 transposes
    };
    // Each case's parameter gradients through Eigen's products, to hold gemm_f32's against.
    std::vector<std::vector<std::vector<float>>> eigen_grads(cases.size());
    const index D = 8;
    // Eigen's products and gemm_f32's (where the CPU runs it) in the attention blocks
    for (const CpuIsa isa : test::float32_gemm_isas()) {
        for (std::size_t c = 0; c < cases.size(); ++c) {
            const test::ForceCpuIsa hold(isa);
            INFO(isa_name(isa));
            const auto& shape = cases[c].shape;
            const auto& offsets = cases[c].offsets;
            INFO("case " << c << ": heads " << shape.heads << ", kv heads " << shape.kv_heads
                         << ", window " << shape.window << ", rotary " << shape.rotary_dim);
            const index T = offsets.back();
            SlidingWindowAttention attn = make_attention(shape, D, 100 + c);
            train::Parameters params;
            attn.register_parameters(params, "backbone.layers.1.mixer");
            REQUIRE(params.size() == 4);
            CHECK(params.at("backbone.layers.1.mixer.q_proj.weight").shape ==
                  std::vector<index>{shape.heads * shape.head_dim, D});
            CHECK(params.at("backbone.layers.1.mixer.k_proj.weight").shape ==
                  std::vector<index>{shape.kv_heads * shape.head_dim, D});
            CHECK(params.at("backbone.layers.1.mixer.o_proj.weight").shape ==
                  std::vector<index>{D, shape.heads * shape.head_dim});

            Matrix h = test::random_matrix(T, D, -1, 1, 200 + c);
            const Matrix g = test::random_matrix(T, D, -1, 1, 300 + c);
            Workspace ws;
            const auto f = [&] {
                Matrix y(T, D);
                ws.reset();
                attn.forward(cview(h), offsets, view(y), false, ws);
                return test::probe(y, g);
            };
            SlidingWindowAttention::Cache cache;
            Matrix y(T, D), y_ref(T, D);
            for (int threads : {1, 2}) {
                set_num_threads(threads);
                attn.forward(cview(h), offsets, view(y), false, cache);
                ws.reset();
                attn.forward(cview(h), offsets, view(y_ref), false, ws);
                CHECK(test::rel_error(test::span_of(y), test::span_of(y_ref)) < 1e-6);
            }
            set_num_threads(0);

            Matrix dh = Matrix::Constant(T, D, 1.0f);
            attn.backward(cview(h), cview(g), cache, view(dh), true);  // added to the ones
            dh.array() -= 1.0f;
            for (const auto& p : params)
                test::check_gradient(p.name.c_str(), p.value, p.grad, f, 2e-3, 1e-2f, 60);
            test::check_gradient("input", test::mspan(h), test::span_of(dh), f, 2e-3, 1e-2f, 80);

            // the same gradients with 2 threads, up to summation order
            std::vector<std::vector<float>> grads;
            for (const auto& p : params) grads.emplace_back(p.grad.begin(), p.grad.end());
            if (shape.window == 1)  // each query sees itself only: the softmax is constant
                for (const char* name : {"q_proj", "k_proj"}) {
                    INFO(name << " gradient is exactly zero");
                    const auto& grad = params.at(std::string("backbone.layers.1.mixer.") + name + ".weight").grad;
                    CHECK(std::all_of(grad.begin(), grad.end(), [](float v) { return v == 0.0f; }));
                }
            if (isa == CpuIsa::Generic) {
                eigen_grads[c] = grads;
            } else if (!eigen_grads[c].empty()) {
                for (std::size_t j = 0; j < grads.size(); ++j)
                    CHECK(test::rel_error(grads[j], eigen_grads[c][j]) < 1e-5);
            }
            params.zero_grad();
            set_num_threads(2);
            Matrix dh2(T, D);
            attn.backward(cview(h), cview(g), cache, view(dh2));
            set_num_threads(0);
            CHECK(test::rel_error(test::span_of(dh2), test::span_of(dh)) < 1e-6);
            std::size_t i = 0;
            for (const auto& p : params) CHECK(test::rel_error(p.grad, grads[i++]) < 1e-6);
        }
    }
}

TEST_CASE(
    "SlidingWindowAttention backward: a packed batch's gradients are the sums of each sequence "
    "alone",
    "[train]") {
    const SlidingWindowAttention::Shape shape{4, 2, 4, 4, 4, 10000.0};
    const index D = 8;
    const std::vector<index> offsets = {0, 6, 7, 15};
    const index T = offsets.back();
    SlidingWindowAttention attn = make_attention(shape, D, 7);
    train::Parameters params;
    attn.register_parameters(params, "attn");
    const Matrix h = test::random_matrix(T, D, -1, 1, 8);
    const Matrix g = test::random_matrix(T, D, -1, 1, 9);

    SlidingWindowAttention::Cache cache;
    Matrix y(T, D), dh(T, D);
    attn.forward(cview(h), offsets, view(y), false, cache);
    attn.backward(cview(h), cview(g), cache, view(dh));
    std::vector<std::vector<float>> packed;
    for (const auto& p : params) packed.emplace_back(p.grad.begin(), p.grad.end());

    params.zero_grad();
    Matrix dh_alone(T, D);
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
        const index b = offsets[s], n = offsets[s + 1] - b;
        const Matrix hs = h.middleRows(b, n), gs = g.middleRows(b, n);
        const std::vector<index> one = {0, n};
        Matrix ys(n, D), dhs(n, D);
        attn.forward(cview(hs), one, view(ys), false, cache);
        attn.backward(cview(hs), cview(gs), cache, view(dhs));  // parameter gradients add up
        CHECK(test::rel_error(test::span_of(ys), test::rows_of(y, b, n)) < 1e-6);
        dh_alone.middleRows(b, n) = dhs;
    }
    CHECK(test::rel_error(test::span_of(dh_alone), test::span_of(dh)) < 1e-6);
    std::size_t i = 0;
    for (const auto& p : params) {
        INFO(p.name);
        CHECK(test::rel_error(p.grad, packed[i++]) < 1e-6);
    }
}

TEST_CASE("SAMBA layers' backward: a cache that does not fit is an error", "[train]") {
    SwiGLU mlp = make_swiglu(4, 6, 1);
    train::Parameters params;
    mlp.register_parameters(params, "mlp");
    SwiGLU::Cache cache;
    Matrix h = Matrix::Ones(3, 4), y(3, 4), dh(2, 4);
    mlp.forward(cview(h), view(y), false, cache);
    const Matrix h2 = Matrix::Ones(2, 4), g2 = Matrix::Ones(2, 4);
    CHECK(test::error_of([&] {
              mlp.backward(cview(h2), cview(g2), cache, view(dh));
          }).find("SwiGLU::backward") != std::string::npos);

    SlidingWindowAttention attn = make_attention({2, 1, 4, 3, 4, 10000.0}, 8, 2);
    attn.register_parameters(params, "attn");
    SlidingWindowAttention::Cache ac;
    const Matrix x = Matrix::Ones(5, 8), gx = Matrix::Ones(4, 8);
    Matrix out(5, 8), dx(4, 8);
    attn.forward(cview(x), std::vector<index>{0, 5}, view(out), false, ac);
    CHECK(test::error_of([&] {
              attn.backward(cview(Matrix(x.topRows(4))), cview(gx), ac, view(dx));
          }).find("SlidingWindowAttention::backward") != std::string::npos);
}

}  // namespace ssm::test_backward_samba
