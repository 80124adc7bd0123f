// Linear's backward against central finite differences: weight, bias and input
// gradients; parameter gradients accumulate across calls; the input gradient is written
// or added; a bfloat16-stored weight trains from its widened float32 master.
#include <string>

#include "ssm/layers/linear.hpp"
#include "ssm/train/parameters.hpp"
#include "train/gradient_check.hpp"

namespace ssm::test_backward_linear {
using test::mspan;

namespace {

Linear make_linear(index out, index in, bool bias, std::uint64_t seed) {
    const auto w = test::random_floats(static_cast<std::size_t>(out * in), -0.5f, 0.5f, seed);
    std::optional<Tensor> b;
    if (bias) b = Tensor::from({out}, test::random_floats(static_cast<std::size_t>(out), -0.5f, 0.5f, seed + 1));
    return Linear(Tensor::from({out, in}, w), std::move(b));
}

}  // namespace

TEST_CASE("Linear backward matches finite differences", "[train]") {
    for (index rows : {3, 40}) {  // the matrix-vector and the GEMM forward
        for (bool bias : {false, true}) {
            INFO("rows " << rows << " bias " << bias);
            const index in = 7, out = 5;
            Linear lin = make_linear(out, in, bias, 11);
            train::Parameters params;
            lin.register_parameters(params, "proj");
            REQUIRE(params.size() == (bias ? 2u : 1u));
            CHECK(params.at("proj.weight").decay);
            if (bias) CHECK_FALSE(params.at("proj.bias").decay);

            Matrix x = test::random_matrix(rows, in, -1, 1, 21);
            const Matrix g = test::random_matrix(rows, out, -1, 1, 22);
            const auto f = [&] {
                Matrix y(rows, out);
                lin.forward(x, y);
                return test::probe(y, g);
            };
            Matrix dx(rows, in);
            lin.backward(cview(x), cview(g), view(dx));
            test::check_gradient("weight", params.at("proj.weight").value, params.at("proj.weight").grad, f);
            if (bias) test::check_gradient("bias", params.at("proj.bias").value, params.at("proj.bias").grad, f);
            test::check_gradient("input", mspan(x), test::span_of(dx), f);
        }
    }
}

TEST_CASE("Linear backward accumulates parameter gradients and writes or adds the input gradient", "[train]") {
    const index rows = 4, in = 6, out = 3;
    Linear lin = make_linear(out, in, true, 5);
    train::Parameters params;
    lin.register_parameters(params, "l");
    const Matrix x = test::random_matrix(rows, in, -1, 1, 6);
    const Matrix g = test::random_matrix(rows, out, -1, 1, 7);
    Matrix dx = Matrix::Constant(rows, in, 100.0f);
    lin.backward(cview(x), cview(g), view(dx));
    const std::vector<float> w1(params.at("l.weight").grad.begin(), params.at("l.weight").grad.end());
    const std::vector<float> b1(params.at("l.bias").grad.begin(), params.at("l.bias").grad.end());
    const Matrix dx1 = dx;
    CHECK(dx1.maxCoeff() < 50.0f);  // written, not added to the 100s

    lin.backward(cview(x), cview(g), view(dx), true);
    for (std::size_t i = 0; i < w1.size(); ++i) CHECK(params.at("l.weight").grad[i] == Approx(2 * w1[i]));
    for (std::size_t i = 0; i < b1.size(); ++i) CHECK(params.at("l.bias").grad[i] == Approx(2 * b1[i]));
    CHECK(test::rel_error(test::span_of(dx), test::span_of(Matrix(2 * dx1))) < 1e-6);

    params.zero_grad();
    for (float v : params.at("l.weight").grad) CHECK(v == 0.0f);
}

TEST_CASE("Linear with a bfloat16 weight trains from its float32 master", "[train]") {
    const index rows = 33, in = 8, out = 4;
    Linear lin = make_linear(out, in, false, 9);
    lin.store_bf16();
    REQUIRE(lin.weight().is_bf16());
    // The master holds the bfloat16 values widened exactly.
    std::vector<float> widened(static_cast<std::size_t>(out * in));
    lin.weight().rows_f32(0, out, widened.data());
    train::Parameters params;
    lin.register_parameters(params, "w");
    CHECK_FALSE(lin.weight().is_bf16());
    const auto master = params.at("w.weight").value;
    for (std::size_t i = 0; i < widened.size(); ++i) CHECK(master[i] == widened[i]);

    Matrix x = test::random_matrix(rows, in, -1, 1, 3);
    const Matrix g = test::random_matrix(rows, out, -1, 1, 4);
    const auto f = [&] {
        Matrix y(rows, out);
        lin.forward(x, y);
        return test::probe(y, g);
    };
    Matrix dx(rows, in);
    lin.backward(cview(x), cview(g), view(dx));
    test::check_gradient("weight", params.at("w.weight").value, params.at("w.weight").grad, f);
}

TEST_CASE("Linear backward rejects misuse", "[train]") {
    Linear lin = make_linear(3, 4, false, 1);
    Matrix x(2, 4), g(2, 3), dx(2, 4);
    CHECK(test::error_of([&] { lin.backward(cview(x), cview(g), view(dx)); }).find("register_parameters") !=
          std::string::npos);
    train::Parameters params;
    lin.register_parameters(params, "l");
    Matrix bad(2, 5);
    CHECK(test::error_of([&] { lin.backward(cview(x), cview(bad), view(dx)); }).find("do not fit") !=
          std::string::npos);
    CHECK(test::error_of([&] { lin.register_parameters(params, "l"); }).find("registered twice") !=
          std::string::npos);
}

}  // namespace ssm::test_backward_linear
