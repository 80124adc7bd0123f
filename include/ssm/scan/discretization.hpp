// ssm/scan/discretization.hpp — how (Δ, A, B, u) become (Ā, B̄u): the `Discretization`
// policies, applied lane-wise to small fixed-size arrays so the scan's loop vectorises.
#pragma once

#include <Eigen/Core>

namespace ssm {

/// A discretization computes, lane by lane, Ā and the factor β with B̄u = β · B · u from
/// the step Δ and the (negative) continuous A.
template <class D>
concept Discretization = requires(const Eigen::Array<float, 16, 1>& v, Eigen::Array<float, 16, 1>& out,
                                  const Eigen::Array<float, 1, 1>& s, Eigen::Array<float, 1, 1>& sout) {
    D::discretize(v, v, out, out);  // (dt, A) -> (a_bar, beta)
    D::discretize(s, s, sout, sout);
};

/// Ā = exp(ΔA), B̄u = Δ·B·u — zero-order hold for A, Euler for B: what every Mamba
/// checkpoint was trained with.
struct MambaDiscretization {
    template <class V>
    static void discretize(const V& dt, const V& A, V& a_bar, V& beta) {
        a_bar = (dt * A).exp();
        beta = dt;
    }
};

/// The zero-order hold for both: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B (→ Δ·B as A → 0).
struct ZeroOrderHold {
    template <class V>
    static void discretize(const V& dt, const V& A, V& a_bar, V& beta) {
        const V x = dt * A;
        a_bar = x.exp();
        // expm1(x)/A = Δ · expm1(x)/x, with expm1(x)/x → 1 as x → 0.
        beta = (x.abs() < 1e-20f).select(dt, x.expm1() / A);
    }
};

/// The bilinear (Tustin) transform: Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2) · B.
struct Bilinear {
    template <class V>
    static void discretize(const V& dt, const V& A, V& a_bar, V& beta) {
        const V half = 0.5f * dt * A;
        const V inv = 1.0f / (1.0f - half);
        a_bar = (1.0f + half) * inv;
        beta = dt * inv;
    }
};

static_assert(Discretization<MambaDiscretization>);
static_assert(Discretization<ZeroOrderHold>);
static_assert(Discretization<Bilinear>);

}  // namespace ssm
