// The selective scan backward against central finite differences of a double-precision
// reference forward (every operand: u, Δ, A, B, C, D, z and the initial state), the
// parallel policy against the sequential one, chunk lengths against each other, threaded
// runs against each other bit for bit, and a packed batch against each of its sequences
// alone (no gradient crosses a boundary).
#include <cmath>
#include <vector>

#include "ssm/scan/selective_scan_backward.hpp"
#include "train/gradient_check.hpp"

namespace ssm::test_selective_scan_backward {
namespace {

struct Problem {
    index E = 19, N = 5;  // one full block of 16 channels and 3 single ones
    std::vector<index> offsets;
    std::vector<float> u, dt, A, B, C, D, z, init;
    bool gate = true, skip = true, with_init = true;

    [[nodiscard]] index T() const { return offsets.back(); }
    [[nodiscard]] index nseq() const { return static_cast<index>(offsets.size()) - 1; }

    static Problem make(std::vector<index> offsets, std::uint64_t seed, index channels = 19, index state = 5) {
        Problem p;
        p.E = channels;
        p.N = state;
        p.offsets = std::move(offsets);
        const auto TE = static_cast<std::size_t>(p.T() * p.E), TN = static_cast<std::size_t>(p.T() * p.N);
        p.u = test::random_floats(TE, -1, 1, seed);
        p.dt = test::random_floats(TE, 0.02f, 0.6f, seed + 1);
        p.A = test::random_floats(static_cast<std::size_t>(p.E * p.N), -2.0f, -0.1f, seed + 2);
        p.B = test::random_floats(TN, -1, 1, seed + 3);
        p.C = test::random_floats(TN, -1, 1, seed + 4);
        p.D = test::random_floats(static_cast<std::size_t>(p.E), -1, 1, seed + 5);
        p.z = test::random_floats(TE, -2, 2, seed + 6);
        p.init = test::random_floats(static_cast<std::size_t>(p.nseq() * p.E * p.N), -1, 1, seed + 7);
        return p;
    }

    [[nodiscard]] SelectiveScanArgs args(float* y) const {
        SelectiveScanArgs a;
        a.T = T();
        a.E = E;
        a.N = N;
        a.u = u.data();
        a.ld_u = E;
        a.dt = dt.data();
        a.ld_dt = E;
        a.A = A.data();
        a.B = B.data();
        a.ld_B = N;
        a.C = C.data();
        a.ld_C = N;
        a.D = skip ? D.data() : nullptr;
        a.z = gate ? z.data() : nullptr;
        a.ld_z = E;
        a.y = y;
        a.ld_y = E;
        a.offsets = offsets;
        a.initial_state = with_init ? init.data() : nullptr;
        return a;
    }
};

/// The scan's output in double, straight from the definition.
std::vector<double> reference_forward(const Problem& p) {
    const index E = p.E, N = p.N;
    std::vector<double> y(static_cast<std::size_t>(p.T() * E));
    for (index s = 0; s < p.nseq(); ++s)
        for (index e = 0; e < E; ++e) {
            std::vector<double> h(static_cast<std::size_t>(N));
            for (index n = 0; n < N; ++n)
                h[static_cast<std::size_t>(n)] = p.with_init ? p.init[static_cast<std::size_t>((s * E + e) * N + n)] : 0.0;
            for (index t = p.offsets[static_cast<std::size_t>(s)]; t < p.offsets[static_cast<std::size_t>(s) + 1]; ++t) {
                const double dt = p.dt[static_cast<std::size_t>(t * E + e)], u = p.u[static_cast<std::size_t>(t * E + e)];
                double acc = 0;
                for (index n = 0; n < N; ++n) {
                    double& hn = h[static_cast<std::size_t>(n)];
                    hn = std::exp(dt * p.A[static_cast<std::size_t>(e * N + n)]) * hn + dt * p.B[static_cast<std::size_t>(t * N + n)] * u;
                    acc += hn * p.C[static_cast<std::size_t>(t * N + n)];
                }
                if (p.skip) acc += p.D[static_cast<std::size_t>(e)] * u;
                if (p.gate) {
                    const double z = p.z[static_cast<std::size_t>(t * E + e)];
                    acc *= z / (1.0 + std::exp(-z));
                }
                y[static_cast<std::size_t>(t * E + e)] = acc;
            }
        }
    return y;
}

struct Grads {
    std::vector<float> du, ddt, dB, dC, dz, dA, dD, dinit, y;
};

template <class S>
Grads backward(const Problem& p, const std::vector<float>& dy, index chunk) {
    const auto TE = static_cast<std::size_t>(p.T() * p.E), TN = static_cast<std::size_t>(p.T() * p.N);
    Grads g{std::vector<float>(TE, NAN), std::vector<float>(TE, NAN), std::vector<float>(TN, NAN),
            std::vector<float>(TN, NAN), std::vector<float>(TE, NAN),
            std::vector<float>(static_cast<std::size_t>(p.E * p.N), NAN), std::vector<float>(static_cast<std::size_t>(p.E), NAN),
            std::vector<float>(p.init.size(), NAN), std::vector<float>(TE, NAN)};
    const SelectiveScanArgs a = p.args(g.y.data());
    ScanCheckpoints ck;
    selective_scan_forward_train<S>(a, ck, chunk);
    SelectiveScanGrads sg;
    sg.dy = dy.data();
    sg.ld_dy = p.E;
    sg.du = g.du.data();
    sg.ld_du = p.E;
    sg.ddt = g.ddt.data();
    sg.ld_ddt = p.E;
    sg.dB = g.dB.data();
    sg.ld_dB = p.N;
    sg.dC = g.dC.data();
    sg.ld_dC = p.N;
    sg.dz = g.dz.data();
    sg.ld_dz = p.E;
    sg.dA = g.dA.data();
    sg.dD = g.dD.data();
    sg.d_initial_state = g.dinit.data();
    selective_scan_backward<S>(a, ck, sg);
    return g;
}

void check_all_against_fd(Problem& p, const Grads& g, const std::vector<float>& dy) {
    const auto f = [&] {
        const auto y = reference_forward(p);
        double s = 0;
        for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * static_cast<double>(dy[i]);
        return s;
    };
    const double tol = 1e-4;
    const float h = 1e-3f;
    test::check_gradient("u", std::span<float>(p.u), g.du, f, tol, h);
    test::check_gradient("dt", std::span<float>(p.dt), g.ddt, f, tol, h);
    test::check_gradient("A", std::span<float>(p.A), g.dA, f, tol, h);
    test::check_gradient("B", std::span<float>(p.B), g.dB, f, tol, h);
    test::check_gradient("C", std::span<float>(p.C), g.dC, f, tol, h);
    if (p.skip) test::check_gradient("D", std::span<float>(p.D), g.dD, f, tol, h);
    if (p.gate) test::check_gradient("z", std::span<float>(p.z), g.dz, f, tol, h);
    if (p.with_init) test::check_gradient("initial state", std::span<float>(p.init), g.dinit, f, tol, h);
}

}  // namespace

TEST_CASE("selective scan backward matches finite differences of a double reference", "[train]") {
    set_num_threads(2);
    for (index chunk : {1, 4, 256}) {
        for (int variant = 0; variant < 3; ++variant) {
            INFO("chunk " << chunk << " variant " << variant);
            Problem p = Problem::make({0, 9, 10, 23}, 100 + static_cast<std::uint64_t>(variant));
            p.gate = variant != 1;
            p.skip = variant != 1;
            p.with_init = variant != 2;
            const auto dy = test::random_floats(static_cast<std::size_t>(p.T() * p.E), -1, 1, 7);
            const Grads g = backward<SequentialScan>(p, dy, chunk);
            // The training forward's output is the scan's.
            const auto yref = reference_forward(p);
            CHECK(test::rel_error(g.y, std::vector<float>(yref.begin(), yref.end())) < 1e-5);
            check_all_against_fd(p, g, dy);
        }
    }
    set_num_threads(0);
}

TEST_CASE("parallel scan backward equals the sequential one, for every chunk length", "[train]") {
    const Problem p = Problem::make({0, 40, 41, 77}, 3, 37);  // two full blocks and 5 single channels
    const auto dy = test::random_floats(static_cast<std::size_t>(p.T() * p.E), -1, 1, 8);
    const Grads ref = backward<SequentialScan>(p, dy, 1000);
    for (int threads : {1, 2, 3}) {
        set_num_threads(threads);
        for (index chunk : {1, 5, 16, 1000}) {
            INFO("threads " << threads << " chunk " << chunk);
            const Grads g = backward<ParallelScan>(p, dy, chunk);
            for (auto [a, b] : {std::pair{&g.du, &ref.du}, {&g.ddt, &ref.ddt}, {&g.dB, &ref.dB}, {&g.dC, &ref.dC},
                                {&g.dz, &ref.dz}, {&g.dA, &ref.dA}, {&g.dD, &ref.dD}, {&g.dinit, &ref.dinit},
                                {&g.y, &ref.y}})
                CHECK(test::rel_error(*a, *b) < 1e-6);
        }
    }
    set_num_threads(0);
}

TEST_CASE("parallel scan backward gives the same bits on every run", "[train]") {
    // dB and dC are summed over channel ranges on different threads; the ranges' sums are
    // added in a fixed order, so which thread finishes first cannot change a bit.
    const Problem p = Problem::make({0, 70, 71, 150}, 5, 16 * 6 + 3);
    const auto dy = test::random_floats(static_cast<std::size_t>(p.T() * p.E), -1, 1, 10);
    set_num_threads(3);
    const test::MultiThreadCheck threaded("scan backward on 3 threads");
    const Grads first = backward<ParallelScan>(p, dy, 64);
    threaded.verify();
    for (int run = 0; run < 8; ++run) {
        const Grads again = backward<ParallelScan>(p, dy, 64);
        CHECK(again.dB == first.dB);
        CHECK(again.dC == first.dC);
        CHECK(again.dA == first.dA);
        CHECK(again.dD == first.dD);
        CHECK(again.du == first.du);
        CHECK(again.ddt == first.ddt);
        CHECK(again.dz == first.dz);
        CHECK(again.dinit == first.dinit);
    }
    set_num_threads(0);
}

TEST_CASE("scan backward: empty sequences, fewer than 16 channels, the largest state", "[train]") {
    // Empty sequences anywhere in the batch, every channel a single-channel block (E 3) or
    // full blocks and single ones with N 64 (the largest state the backward takes).
    for (auto [E, N] : {std::pair<index, index>{3, 5}, {35, 64}}) {
        INFO("E " << E << " N " << N);
        const Problem p = Problem::make({0, 0, 9, 9, 23, 23}, 31, E, N);
        const auto dy = test::random_floats(static_cast<std::size_t>(p.T() * p.E), -1, 1, 11);
        const Grads ref = backward<SequentialScan>(p, dy, 1000);
        for (int threads : {1, 2}) {
            set_num_threads(threads);
            for (index chunk : {4, 64}) {
                INFO("threads " << threads << " chunk " << chunk);
                const Grads g = backward<ParallelScan>(p, dy, chunk);
                for (auto [a, b] : {std::pair{&g.du, &ref.du}, {&g.ddt, &ref.ddt}, {&g.dB, &ref.dB}, {&g.dC, &ref.dC},
                                    {&g.dz, &ref.dz}, {&g.dA, &ref.dA}, {&g.dD, &ref.dD}, {&g.dinit, &ref.dinit}})
                    CHECK(test::rel_error(*a, *b) < 1e-6);
            }
        }
        set_num_threads(0);
    }
    // Against finite differences with E 3: every channel through the single-channel path.
    Problem p = Problem::make({0, 0, 9, 9, 23}, 32, 3);
    const auto dy = test::random_floats(static_cast<std::size_t>(p.T() * p.E), -1, 1, 12);
    const Grads g = backward<SequentialScan>(p, dy, 4);
    check_all_against_fd(p, g, dy);
}

TEST_CASE("scan backward refuses a state above 64 and checkpoints of other sequences", "[train]") {
    const auto run_error = [](const Problem& p, const ScanCheckpoints& ck) {
        const auto TE = static_cast<std::size_t>(p.T() * p.E), TN = static_cast<std::size_t>(p.T() * p.N);
        std::vector<float> y(TE), dy(TE, 1.0f), du(TE), ddt(TE), dz(TE), dB(TN), dC(TN),
            dA(static_cast<std::size_t>(p.E * p.N)), dD(static_cast<std::size_t>(p.E));
        SelectiveScanGrads sg;
        sg.dy = dy.data(), sg.ld_dy = p.E, sg.du = du.data(), sg.ld_du = p.E, sg.ddt = ddt.data(), sg.ld_ddt = p.E;
        sg.dB = dB.data(), sg.ld_dB = p.N, sg.dC = dC.data(), sg.ld_dC = p.N, sg.dz = dz.data(), sg.ld_dz = p.E;
        sg.dA = dA.data(), sg.dD = dD.data();
        return test::error_of([&] { selective_scan_backward<ParallelScan>(p.args(y.data()), ck, sg); });
    };
    {
        const Problem p = Problem::make({0, 6}, 40, 16, 65);
        std::vector<float> y(static_cast<std::size_t>(p.T() * p.E));
        ScanCheckpoints ck;
        selective_scan_forward_train<ParallelScan>(p.args(y.data()), ck, 4);
        CHECK(run_error(p, ck).find("state size 65 above 64") != std::string::npos);
    }
    {
        // Same total rows, same number of checkpoint chunks, other sequence lengths.
        Problem p = Problem::make({0, 5, 20}, 41);
        std::vector<float> y(static_cast<std::size_t>(p.T() * p.E));
        ScanCheckpoints ck;
        selective_scan_forward_train<ParallelScan>(p.args(y.data()), ck, 4);
        p.offsets = {0, 10, 20};
        p.init.assign(p.init.size(), 0.5f);
        CHECK(run_error(p, ck).find("not from a forward of these sequences (sequence 0 has 10 rows, 2 checkpoint") !=
              std::string::npos);
    }
}

TEST_CASE("packed scan gradients equal each sequence's alone", "[train]") {
    const Problem p = Problem::make({0, 12, 13, 30}, 21);
    const auto dy = test::random_floats(static_cast<std::size_t>(p.T() * p.E), -1, 1, 9);
    const Grads packed = backward<ParallelScan>(p, dy, 4);
    std::vector<float> dA_sum(static_cast<std::size_t>(p.E * p.N), 0.0f), dD_sum(static_cast<std::size_t>(p.E), 0.0f);
    for (index s = 0; s < p.nseq(); ++s) {
        const index b = p.offsets[static_cast<std::size_t>(s)], e = p.offsets[static_cast<std::size_t>(s) + 1];
        Problem one = p;
        one.offsets = {0, e - b};
        const auto rows = [&](const std::vector<float>& v, index w) {
            return std::vector<float>(v.begin() + b * w, v.begin() + e * w);
        };
        one.u = rows(p.u, p.E);
        one.dt = rows(p.dt, p.E);
        one.z = rows(p.z, p.E);
        one.B = rows(p.B, p.N);
        one.C = rows(p.C, p.N);
        one.init.assign(p.init.begin() + s * p.E * p.N, p.init.begin() + (s + 1) * p.E * p.N);
        const Grads alone = backward<ParallelScan>(one, rows(dy, p.E), 4);
        INFO("sequence " << s);
        CHECK(test::rel_error(alone.du, rows(packed.du, p.E)) < 1e-6);
        CHECK(test::rel_error(alone.ddt, rows(packed.ddt, p.E)) < 1e-6);
        CHECK(test::rel_error(alone.dz, rows(packed.dz, p.E)) < 1e-6);
        CHECK(test::rel_error(alone.dB, rows(packed.dB, p.N)) < 1e-6);
        CHECK(test::rel_error(alone.dC, rows(packed.dC, p.N)) < 1e-6);
        CHECK(test::rel_error(alone.dinit, std::vector<float>(packed.dinit.begin() + s * p.E * p.N,
                                                              packed.dinit.begin() + (s + 1) * p.E * p.N)) < 1e-6);
        for (std::size_t i = 0; i < dA_sum.size(); ++i) dA_sum[i] += alone.dA[i];
        for (std::size_t i = 0; i < dD_sum.size(); ++i) dD_sum[i] += alone.dD[i];
    }
    CHECK(test::rel_error(dA_sum, packed.dA) < 1e-5);
    CHECK(test::rel_error(dD_sum, packed.dD) < 1e-5);
}

TEST_CASE("scan checkpoints keep one state per chunk", "[train]") {
    const Problem p = Problem::make({0, 10, 11, 31}, 4);
    std::vector<float> y(static_cast<std::size_t>(p.T() * p.E));
    ScanCheckpoints ck;
    selective_scan_forward_train<SequentialScan>(p.args(y.data()), ck, 4);
    CHECK(ck.first == std::vector<index>{0, 3, 4, 9});  // ⌈10/4⌉, ⌈1/4⌉, ⌈20/4⌉
    CHECK(ck.floats() == static_cast<std::size_t>(9 * p.E * p.N));
    // The first chunk of each sequence starts from its initial state.
    for (index s = 0; s < p.nseq(); ++s)
        for (index i = 0; i < p.E * p.N; ++i)
            CHECK(ck.states[static_cast<std::size_t>(ck.first[static_cast<std::size_t>(s)] * p.E * p.N + i)] ==
                  p.init[static_cast<std::size_t>(s * p.E * p.N + i)]);
    CHECK(test::error_of([&] { selective_scan_forward_train<SequentialScan>(p.args(y.data()), ck, 0); })
              .find("chunk") != std::string::npos);
}

}  // namespace ssm::test_selective_scan_backward
