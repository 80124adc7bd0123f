// The three products of a training step at in_proj's shape (T 2048, in 768, out 3072): Eigen against gemm_f32's AVX2 tiles.
#include <chrono>
#include <cstdio>
#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
int main() {
    using ssm::Matrix; using ssm::GemmOperand;
    const ssm::index T = 2048, in = 768, out = 3072;
    Matrix x = Matrix::Random(T, in), w = Matrix::Random(out, in), dy = Matrix::Random(T, out), y(T, out), dx(T, in), dw(out, in);
    auto time = [&](auto&& f) { f(); double best = 1e9; for (int i = 0; i < 5; ++i) { auto t0 = std::chrono::steady_clock::now(); f(); best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); } return 2.0*T*in*out/best/1e9; };
    double e0 = time([&]{ y.noalias() = x * w.transpose(); }), e1 = time([&]{ dx.noalias() = dy * w; }), e2 = time([&]{ dw.noalias() += dy.transpose() * x; });
    double g[2][3];
    for (int v = 0; v < 1; ++v) {
        ssm::use_cpu_isa(v ? ssm::CpuIsa::Avx512 : ssm::CpuIsa::Avx2);
        g[v][0] = time([&]{ ssm::gemm_f32(GemmOperand::rows(x.data(), in), GemmOperand::transposed(w.data(), in), T, out, in, y.data(), out, false); });
        g[v][1] = time([&]{ ssm::gemm_f32(GemmOperand::rows(dy.data(), out), GemmOperand::rows(w.data(), in), T, in, out, dx.data(), in, false); });
        g[v][2] = time([&]{ ssm::gemm_f32(GemmOperand::transposed(dy.data(), out), GemmOperand::rows(x.data(), in), out, in, T, dw.data(), in, true); });
    }
    std::printf("GFLOP/s       x·Wᵀ   dy·W   dyᵀ·x\neigen       %6.1f %6.1f %6.1f\navx2 tiles  %6.1f %6.1f %6.1f\navx512 tiles %6.1f %6.1f %6.1f\n", e0, e1, e2, g[0][0], g[0][1], g[0][2], g[0][0], g[0][1], g[0][2]);
}
