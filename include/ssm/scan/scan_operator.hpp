// ssm/scan/scan_operator.hpp — the associative operator of the linear recurrence
// h_t = a_t · h_{t−1} + b_t, written once for every scan (CPU, and CUDA's BlockScan).
#pragma once

#if defined(__CUDACC__)
#define SSM_HOST_DEVICE __host__ __device__
#else
#define SSM_HOST_DEVICE
#endif

namespace ssm {

/// One step of the recurrence, or the composition of several: applying it to a state
/// h gives a·h + b.
template <class T>
struct ScanElement {
    T a;  // multiplier (Ā)
    T b;  // addend (B̄x)
};

/// (a₁, b₁) ∘ (a₂, b₂) = (a₁·a₂, a₂·b₁ + b₂): first apply (a₁, b₁), then (a₂, b₂).
/// Associative, need not be commutative; identity (1, 0). Works on floats and on
/// element-wise array types (Eigen arrays, CUDA vector types with the operators).
struct ScanOp {
    template <class T>
    SSM_HOST_DEVICE constexpr ScanElement<T> operator()(const ScanElement<T>& first,
                                                        const ScanElement<T>& second) const {
        return {first.a * second.a, second.a * first.b + second.b};
    }

    /// The state after applying (a, b) to state h: the `b` of (·, h) ∘ (a, b).
    template <class S, class T>
    SSM_HOST_DEVICE static constexpr auto advance(const S& h, const T& a, const T& b) {
        return a * h + b;
    }
};

}  // namespace ssm
