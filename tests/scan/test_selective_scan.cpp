// Selective scans: SequentialScan against a naive double-precision recurrence written
// here (each discretization, with/without D, z, initial/final state, packed sequences,
// strided operands); ParallelScan against SequentialScan at many lengths and thread
// counts, with and without time chunking; the decoding update against the full scan.
#include <cmath>
#include <string>
#include <vector>

#include "ssm/scan/selective_scan.hpp"
#include "test_util.hpp"

namespace test_selective_scan {

using Index = ssm::index;

namespace {

/// Random operands for a scan, stored with row strides wider than the rows.
struct Problem {
    Index T, E, N, pad = 3;
    std::vector<Index> offsets;
    std::vector<float> u, dt, A, B, C, D, z, init;

    Problem(std::vector<Index> offs, Index e, Index n, std::uint64_t seed) : T(offs.back()), E(e), N(n), offsets(std::move(offs)) {
        using ssm::test::random_floats;
        const auto nseq = static_cast<Index>(offsets.size()) - 1;
        u = random_floats(static_cast<std::size_t>(T * (E + pad)), -2, 2, seed + 1);
        dt = random_floats(static_cast<std::size_t>(T * (E + pad)), 0.001f, 0.3f, seed + 2);
        A = random_floats(static_cast<std::size_t>(E * N), -8, -0.05f, seed + 3);
        B = random_floats(static_cast<std::size_t>(T * (N + pad)), -1, 1, seed + 4);
        C = random_floats(static_cast<std::size_t>(T * (N + pad)), -1, 1, seed + 5);
        D = random_floats(static_cast<std::size_t>(E), -1, 1, seed + 6);
        z = random_floats(static_cast<std::size_t>(T * (E + pad)), -3, 3, seed + 7);
        init = random_floats(static_cast<std::size_t>(nseq * E * N), -1, 1, seed + 8);
    }

    [[nodiscard]] ssm::SelectiveScanArgs args(std::vector<float>& y, bool with_D, bool with_z, bool with_init,
                                              std::vector<float>* final_state) const {
        y.assign(static_cast<std::size_t>(T * (E + pad)), -777.0f);
        ssm::SelectiveScanArgs a;
        a.T = T, a.E = E, a.N = N;
        a.u = u.data(), a.ld_u = E + pad;
        a.dt = dt.data(), a.ld_dt = E + pad;
        a.A = A.data();
        a.B = B.data(), a.ld_B = N + pad;
        a.C = C.data(), a.ld_C = N + pad;
        a.D = with_D ? D.data() : nullptr;
        a.z = with_z ? z.data() : nullptr, a.ld_z = E + pad;
        a.y = y.data(), a.ld_y = E + pad;
        a.offsets = offsets;
        a.initial_state = with_init ? init.data() : nullptr;
        if (final_state) {
            final_state->assign(static_cast<std::size_t>((static_cast<Index>(offsets.size()) - 1) * E * N), -555.0f);
            a.final_state = final_state->data();
        }
        return a;
    }
};

enum class Kind { Mamba, Zoh, Bilinear };

/// The recurrence in double precision, straight from the formulas.
void naive(const ssm::SelectiveScanArgs& a, Kind kind, std::vector<double>& y, std::vector<double>& fin) {
    const auto nseq = static_cast<Index>(a.offsets.size()) - 1;
    y.assign(static_cast<std::size_t>(a.T * a.E), 0.0);
    fin.assign(static_cast<std::size_t>(nseq * a.E * a.N), 0.0);
    for (Index s = 0; s < nseq; ++s)
        for (Index e = 0; e < a.E; ++e)
            for (Index n = 0; n < a.N; ++n) {
                double h = a.initial_state ? a.initial_state[(s * a.E + e) * a.N + n] : 0.0;
                for (Index t = a.offsets[static_cast<std::size_t>(s)]; t < a.offsets[static_cast<std::size_t>(s) + 1]; ++t) {
                    const double dt = a.dt[t * a.ld_dt + e], A = a.A[e * a.N + n];
                    const double Bu = static_cast<double>(a.B[t * a.ld_B + n]) * a.u[t * a.ld_u + e];
                    double abar = std::exp(dt * A), bbar = dt * Bu;
                    if (kind == Kind::Zoh) bbar = std::expm1(dt * A) / A * Bu;
                    if (kind == Kind::Bilinear) {
                        abar = (1 + dt * A / 2) / (1 - dt * A / 2);
                        bbar = dt / (1 - dt * A / 2) * Bu;
                    }
                    h = abar * h + bbar;
                    y[static_cast<std::size_t>(t * a.E + e)] += h * a.C[t * a.ld_C + n];
                }
                fin[static_cast<std::size_t>((s * a.E + e) * a.N + n)] = h;
            }
    for (Index t = 0; t < a.T; ++t)
        for (Index e = 0; e < a.E; ++e) {
            double& v = y[static_cast<std::size_t>(t * a.E + e)];
            if (a.D) v += static_cast<double>(a.D[e]) * a.u[t * a.ld_u + e];
            if (a.z) {
                const double z = a.z[t * a.ld_z + e];
                v *= z / (1 + std::exp(-z));
            }
        }
}

/// y rows without the padding columns.
std::vector<float> dense(const std::vector<float>& y, Index T, Index E, Index ld) {
    std::vector<float> out;
    for (Index t = 0; t < T; ++t)
        for (Index e = 0; e < E; ++e) out.push_back(y[static_cast<std::size_t>(t * ld + e)]);
    return out;
}

template <class Scan, class Disc>
void run(const ssm::SelectiveScanArgs& a) {
    Scan::template run<Disc>(a);
}

template <class Disc>
void check_against_naive(Kind kind) {
    const Problem p({0, 1, 9, 9, 40, 57}, 37, 8, 100);  // includes an empty sequence
    for (bool with_D : {false, true})
        for (bool with_z : {false, true})
            for (bool with_init : {false, true}) {
                INFO("D " << with_D << " z " << with_z << " init " << with_init);
                std::vector<float> y, fin;
                const auto a = p.args(y, with_D, with_z, with_init, &fin);
                run<ssm::SequentialScan, Disc>(a);
                std::vector<double> ry, rfin;
                naive(a, kind, ry, rfin);
                const std::vector<float> ryf(ry.begin(), ry.end()), rfinf(rfin.begin(), rfin.end());
                CHECK(ssm::test::rel_error(dense(y, p.T, p.E, p.E + p.pad), ryf) < 1e-5);
                CHECK(ssm::test::rel_error(fin, rfinf) < 1e-5);
                for (Index t = 0; t < p.T; ++t)  // padding columns untouched
                    for (Index e = p.E; e < p.E + p.pad; ++e) REQUIRE(y[static_cast<std::size_t>(t * (p.E + p.pad) + e)] == -777.0f);
            }
}

}  // namespace

TEST_CASE("SequentialScan equals the naive recurrence: Mamba discretization", "[scan]") {
    check_against_naive<ssm::MambaDiscretization>(Kind::Mamba);
}
TEST_CASE("SequentialScan equals the naive recurrence: zero-order hold", "[scan]") {
    check_against_naive<ssm::ZeroOrderHold>(Kind::Zoh);
}
TEST_CASE("SequentialScan equals the naive recurrence: bilinear", "[scan]") {
    check_against_naive<ssm::Bilinear>(Kind::Bilinear);
}

TEST_CASE("ParallelScan equals SequentialScan at any length and thread count", "[scan]") {
    const ssm::test::MultiThreadCheck threaded("ParallelScan at 2-7 threads");
    const std::vector<Index> lengths = {1, 2, 3, 5, 7, 13, 31, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 513, 5000};
    for (Index N : {8, 16}) {
        for (Index E : {37, 48}) {
            for (Index L : lengths) {
                const Problem p({0, L}, E, N, 200 + static_cast<std::uint64_t>(L));
                std::vector<float> y_ref, fin_ref;
                run<ssm::SequentialScan, ssm::MambaDiscretization>(p.args(y_ref, true, true, true, &fin_ref));
                for (int threads : {1, 2, 3, 4, 7}) {
                    ssm::set_num_threads(threads);
                    for (bool chunked : {false, true}) {
                        INFO("N " << N << " E " << E << " L " << L << " threads " << threads << " time-chunked " << chunked);
                        std::vector<float> y, fin;
                        const auto a = p.args(y, true, true, true, &fin);
                        if (chunked)
                            run<ssm::BasicParallelScan<true>, ssm::MambaDiscretization>(a);
                        else
                            run<ssm::ParallelScan, ssm::MambaDiscretization>(a);
                        REQUIRE(ssm::test::rel_error(y, y_ref) < 1e-6);
                        REQUIRE(ssm::test::rel_error(fin, fin_ref) < 1e-6);
                    }
                }
            }
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

TEST_CASE("ParallelScan over packed sequences equals SequentialScan", "[scan]") {
    const ssm::test::MultiThreadCheck threaded("packed ParallelScan at 2 and 5 threads");
    const Problem p({0, 700, 701, 701, 1900, 1913}, 21, 16, 300);
    std::vector<float> y_ref, fin_ref;
    run<ssm::SequentialScan, ssm::ZeroOrderHold>(p.args(y_ref, true, true, true, &fin_ref));
    for (int threads : {1, 2, 5}) {
        ssm::set_num_threads(threads);
        for (bool chunked : {false, true}) {
            INFO("threads " << threads << " chunked " << chunked);
            std::vector<float> y, fin;
            const auto a = p.args(y, true, true, true, &fin);
            if (chunked)
                run<ssm::BasicParallelScan<true>, ssm::ZeroOrderHold>(a);
            else
                run<ssm::ParallelScan, ssm::ZeroOrderHold>(a);
            CHECK(ssm::test::rel_error(y, y_ref) < 1e-6);
            CHECK(ssm::test::rel_error(fin, fin_ref) < 1e-6);
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

TEST_CASE("selective_state_update token by token equals the full scan", "[scan]") {
    // N 16: one vector of state per channel; 21: a vector and 5 one by one; 5: none.
    for (const Index N : {16, 21, 5}) {
        INFO("N " << N);
        const Index T = 40, E = 19, split = 13;
        const Problem p({0, T}, E, N, 400);
        std::vector<float> y_ref, fin_ref;
        run<ssm::SequentialScan, ssm::MambaDiscretization>(p.args(y_ref, true, true, false, &fin_ref));

        // Prefill rows [0, split) into a state, then one row at a time.
        std::vector<float> y, state;
        auto a = p.args(y, true, true, false, &state);
        std::vector<Index> head = {0, split};
        auto pre = a;
        pre.T = split;
        pre.offsets = head;
        run<ssm::ParallelScan, ssm::MambaDiscretization>(pre);
        for (Index t = split; t < T; ++t) {
            auto step = a;
            step.T = 1;
            step.u += t * a.ld_u, step.dt += t * a.ld_dt, step.B += t * a.ld_B, step.C += t * a.ld_C;
            step.z += t * a.ld_z, step.y += t * a.ld_y;
            ssm::selective_state_update<ssm::MambaDiscretization>(step, state.data());
        }
        CHECK(ssm::test::rel_error(y, y_ref) < 1e-6);
        CHECK(ssm::test::rel_error(state, fin_ref) < 1e-6);
    }
}

TEST_CASE("selective_state_update advances a batch of sequences independently", "[scan]") {
    const ssm::test::MultiThreadCheck threaded("batched selective_state_update at 3 threads");
    const Index Bsz = 5, E = 97, N = 8;  // 485 channels: 3 threads get 64 or more
    const Problem p({0, 1, 2, 3, 4, 5}, E, N, 500);  // five one-token sequences
    std::vector<float> y_ref, fin_ref;
    run<ssm::SequentialScan, ssm::Bilinear>(p.args(y_ref, true, false, true, &fin_ref));
    std::vector<float> y;
    auto a = p.args(y, true, false, false, nullptr);
    std::vector<float> state = p.init;
    REQUIRE(static_cast<Index>(state.size()) == Bsz * E * N);
    ssm::set_num_threads(3);
    ssm::selective_state_update<ssm::Bilinear>(a, state.data());
    ssm::set_num_threads(0);
    threaded.verify();
    CHECK(ssm::test::rel_error(y, y_ref) < 1e-6);
    CHECK(ssm::test::rel_error(state, fin_ref) < 1e-6);
}

TEST_CASE("validate rejects inconsistent offsets and strides", "[scan]") {
    const Problem p({0, 10}, 4, 4, 600);
    std::vector<float> y;
    const auto good = p.args(y, false, false, false, nullptr);
    auto expect = [&](std::vector<Index> offs, const std::string& needle) {
        auto a = good;
        a.offsets = offs;
        const auto msg = ssm::test::error_of([&] { ssm::SequentialScan::run<ssm::MambaDiscretization>(a); });
        INFO(msg);
        CHECK(msg.find(needle) != std::string::npos);
    };
    expect({1, 10}, "start at 0");
    expect({0, 9}, "end at T");
    expect({0, 6, 4, 10}, "decrease");
    expect({0}, "at least 2");
    auto a = good;
    a.ld_u = 2;
    CHECK(ssm::test::error_of([&] { ssm::ParallelScan::run<ssm::MambaDiscretization>(a); }).find("stride") != std::string::npos);
}

}  // namespace test_selective_scan
