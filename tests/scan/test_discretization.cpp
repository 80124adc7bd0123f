// Discretization policies against closed-form values, lane by lane, including the
// zero-order-hold limit A → 0; the concept rejects types that are not policies.
#include <cmath>

#include "ssm/scan/discretization.hpp"
#include "test_util.hpp"

namespace test_discretization {

namespace {

using V = Eigen::Array<float, 16, 1>;

template <class Disc>
void eval(float dt, float A, double& a_bar, double& beta) {
    V dtv = V::Constant(dt), Av = V::Constant(A), a, b;
    Disc::discretize(dtv, Av, a, b);
    // Every lane the same, and the 1-lane form agrees with the 16-lane one.
    CHECK((a == a(0)).all());
    Eigen::Array<float, 1, 1> d1, A1, a1, b1;
    d1 << dt;
    A1 << A;
    Disc::discretize(d1, A1, a1, b1);
    CHECK(std::abs(a1(0) - a(0)) <= 1e-7f * std::abs(a(0)));
    a_bar = a(0);
    beta = b(0);
}

bool close(double got, double want, double rel = 2e-6) { return std::abs(got - want) <= rel * std::abs(want) + 1e-30; }

}  // namespace

static_assert(!ssm::Discretization<int>);
struct NotAPolicy {
    static int discretize(int) { return 0; }
};
static_assert(!ssm::Discretization<NotAPolicy>);

TEST_CASE("MambaDiscretization: a = exp(dt·A), beta = dt", "[discretization]") {
    for (auto [dt, A] : {std::pair{0.01f, -1.0f}, {0.1f, -16.0f}, {0.5f, -0.2f}, {2.0f, -3.0f}}) {
        double a, b;
        eval<ssm::MambaDiscretization>(dt, A, a, b);
        CHECK(close(a, std::exp(double(dt) * A)));
        CHECK(close(b, dt));
    }
}

TEST_CASE("ZeroOrderHold: beta = (exp(dt·A) − 1)/A, → dt as A → 0", "[discretization]") {
    for (auto [dt, A] : {std::pair{0.01f, -1.0f}, {0.1f, -16.0f}, {0.5f, -0.2f}, {1e-3f, -1e-4f}}) {
        double a, b;
        eval<ssm::ZeroOrderHold>(dt, A, a, b);
        CHECK(close(a, std::exp(double(dt) * A)));
        CHECK(close(b, std::expm1(double(dt) * A) / A));
    }
    double a, b;
    eval<ssm::ZeroOrderHold>(0.25f, 0.0f, a, b);
    CHECK(a == 1.0);
    CHECK(close(b, 0.25));
    eval<ssm::ZeroOrderHold>(0.25f, -1e-30f, a, b);
    CHECK(close(b, 0.25));
}

TEST_CASE("Bilinear: a = (1 + dt·A/2)/(1 − dt·A/2), beta = dt/(1 − dt·A/2)", "[discretization]") {
    for (auto [dt, A] : {std::pair{0.01f, -1.0f}, {0.1f, -16.0f}, {0.5f, -0.2f}}) {
        double a, b;
        eval<ssm::Bilinear>(dt, A, a, b);
        const double h = double(dt) * A / 2;
        CHECK(close(a, (1 + h) / (1 - h)));
        CHECK(close(b, dt / (1 - h)));
    }
}

}  // namespace test_discretization
