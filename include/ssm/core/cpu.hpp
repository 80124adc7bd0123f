// ssm/core/cpu.hpp — which instruction set the CPU kernels use, chosen at run time: one
// binary serves a CPU with AVX-512, one with only AVX2 + FMA and one with neither. The
// choice is the best the CPU reports that is also the fastest (`default_cpu_isa`: the bf16
// dot-product unit only where it outruns the float32 FMA units), unless the environment
// (`SSM_CPU_ISA`) or a caller (`use_cpu_isa`, for tests and benchmarks) asks for another set
// the CPU supports.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ssm/core/error.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SSM_X86_DISPATCH 1
#else
#define SSM_X86_DISPATCH 0
#endif

// AMX: 64-bit only (the tile instructions do not exist in 32-bit mode), and on Linux, whose
// kernel grants the tile state on request (arch_prctl).
#if SSM_X86_DISPATCH && defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define SSM_AMX_DISPATCH 1
#else
#define SSM_AMX_DISPATCH 0
#endif

namespace ssm {

/// The instruction sets the dispatched kernels have paths for, in increasing order.
enum class CpuIsa : int {
    Generic = 0,  // portable C++ (vectorised as far as the compiler's flags allow)
    Avx2 = 1,     // AVX2 + FMA
    Avx512 = 2,   // AVX-512 F + BW
    Avx512Bf16 = 3,  // AVX-512 F + BW + BF16 (vdpbf16ps: bf16 products, float32 sums)
    Amx = 4,      // the above + AMX-TILE + AMX-BF16 (tdpbf16ps: a 16 × 16 tile of float32 sums
                  // of bf16 products, 16 × 16 × 32 multiply-adds an instruction)
};

[[nodiscard]] inline const char* isa_name(CpuIsa isa) noexcept {
    switch (isa) {
        case CpuIsa::Generic: return "generic";
        case CpuIsa::Avx2: return "avx2";
        case CpuIsa::Avx512: return "avx512";
        case CpuIsa::Avx512Bf16: return "avx512bf16";
        case CpuIsa::Amx: return "amx";
    }
    return "?";
}

/// Whether this CPU and its kernel offer AMX's bf16 tiles: the CPU reports AMX-TILE and
/// AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22) and the Linux kernel supports the tile data
/// state (`arch_prctl(ARCH_GET_XCOMP_SUPP)` lists XFEATURE_XTILEDATA; kernels before 5.16
/// and hypervisors that hide the tiles do not). Asked once; it requests nothing.
[[nodiscard]] inline bool cpu_has_amx_bf16() noexcept {
#if SSM_AMX_DISPATCH
    static const bool has = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
        const bool tile = ((edx >> 24) & 1u) != 0, bf16 = ((edx >> 22) & 1u) != 0;
        if (!tile || !bf16) return false;
        constexpr long kGetXcompSupp = 0x1021;  // ARCH_GET_XCOMP_SUPP
        unsigned long features = 0;
        if (syscall(SYS_arch_prctl, kGetXcompSupp, &features) != 0) return false;
        return ((features >> 18) & 1u) != 0;  // XFEATURE_XTILEDATA
    }();
    return has;
#else
    return false;
#endif
}

namespace detail {
/// Asks the Linux kernel for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`), once, when AMX is first chosen — not merely detected: from then
/// on the kernel holds every thread of the process to signal stacks large enough for the
/// tiles, which a program that never uses them should not have to meet. The grant covers
/// every thread, present and future. False where it is refused (e.g. an alternate signal
/// stack already too small).
[[nodiscard]] inline bool amx_permission() noexcept {
#if SSM_AMX_DISPATCH
    static const bool granted = [] {
        constexpr long kReqXcompPerm = 0x1023;  // ARCH_REQ_XCOMP_PERM
        constexpr long kXtiledata = 18;         // XFEATURE_XTILEDATA
        return cpu_has_amx_bf16() && syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
    }();
    return granted;
#else
    return false;
#endif
}
}  // namespace detail

/// The best instruction set this CPU supports (asked once).
[[nodiscard]] inline CpuIsa detected_cpu_isa() noexcept {
#if SSM_X86_DISPATCH
    static const CpuIsa isa = [] {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
            if (!__builtin_cpu_supports("avx512bf16")) return CpuIsa::Avx512;
            return cpu_has_amx_bf16() ? CpuIsa::Amx : CpuIsa::Avx512Bf16;
        }
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::Avx2;
        return CpuIsa::Generic;
    }();
    return isa;
#else
    return CpuIsa::Generic;
#endif
}

/// Whether the CPU's bf16 dot-product unit (`vdpbf16ps`, 32 multiply-adds an instruction)
/// does more multiply-adds a cycle than its float32 FMA units, so that a product of bf16
/// operands is faster on it than widened to float32. AMD's cores with AVX512-BF16 issue it as
/// fast as an FMA, twice the work (Zen 4, bench_model: 464 against 229 GFLOP/s); Intel's at
/// half the FMA's rate, so it does no more than the FMA units (a Xeon of family 6, model 207:
/// 169 against 341 GFLOP/s) — their bf16 matrix unit is AMX, a different instruction set.
[[nodiscard]] inline bool bf16_unit_outruns_fma() noexcept {
#if SSM_X86_DISPATCH
    static const bool faster = [] {
        __builtin_cpu_init();
        return __builtin_cpu_is("amd") != 0;
    }();
    return faster;
#else
    return false;
#endif
}

/// The instruction set the dispatch takes unless `SSM_CPU_ISA` or `use_cpu_isa` chose: the
/// best the CPU supports, held at AVX-512 where the bf16 unit is slower than the FMA units
/// (`bf16_unit_outruns_fma`), so that bf16 weights are widened to float32 GEMMs there. AMX
/// is held at AVX-512 too, for now: its tile kernels have been checked only under an
/// emulation of the tile instructions (tests/core/test_gemm_amx.cpp), never on a CPU with
/// AMX, so they run where asked for (`SSM_CPU_ISA=amx`, `use_cpu_isa`) until they have.
[[nodiscard]] inline CpuIsa default_cpu_isa() noexcept {
    const CpuIsa best = detected_cpu_isa();
    if (best == CpuIsa::Amx) return CpuIsa::Avx512;
    return best == CpuIsa::Avx512Bf16 && !bf16_unit_outruns_fma() ? CpuIsa::Avx512 : best;
}

/// Whether the CPU can run `isa`'s kernels (the sets nest: AVX-512 machines have AVX2,
/// AVX512-BF16 ones AVX-512, AMX ones AVX512-BF16).
[[nodiscard]] inline bool cpu_supports(CpuIsa isa) noexcept {
    return static_cast<int>(isa) <= static_cast<int>(detected_cpu_isa());
}

/// Whether the CPU has AVX512-VNNI (`vpdpbusd`: int8 dot products four a lane), which the
/// int8 × int8 decoding kernel uses where the dispatch is AVX-512. Asked once.
[[nodiscard]] inline bool cpu_has_avx512_vnni() noexcept {
#if SSM_X86_DISPATCH
    static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vnni");
    return has;
#else
    return false;
#endif
}

/// Whether this process can run `isa`'s kernels now: the CPU supports it
/// (`cpu_supports`) and, for AMX, the kernel grants the tile state (asked for here, once:
/// `detail::amx_permission`).
[[nodiscard]] inline bool cpu_can_use(CpuIsa isa) noexcept {
    return cpu_supports(isa) && (isa != CpuIsa::Amx || detail::amx_permission());
}

namespace detail {

/// The instruction set `SSM_CPU_ISA` names (generic, avx2, avx512, avx512bf16, amx), or the default
/// one (`default_cpu_isa`) when it is unset. A name that is unknown or that the CPU cannot run
/// is reported on stderr once and the default set is used.
inline CpuIsa cpu_isa_from_environment() noexcept {
    const CpuIsa fallback = default_cpu_isa();
    const char* env = std::getenv("SSM_CPU_ISA");
    if (!env || !*env) return fallback;
    for (const CpuIsa isa : {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Avx512Bf16, CpuIsa::Amx})
        if (std::strcmp(env, isa_name(isa)) == 0) {
            if (cpu_can_use(isa)) return isa;
            std::fprintf(stderr, "ssm: SSM_CPU_ISA=%s: %s; using %s\n", env,
                         cpu_supports(isa) ? "the kernel refused this process the tile state (arch_prctl "
                                             "ARCH_REQ_XCOMP_PERM)"
                                           : "this CPU does not support it",
                         isa_name(fallback));
            return fallback;
        }
    std::fprintf(stderr, "ssm: SSM_CPU_ISA=%s is not one of generic, avx2, avx512, avx512bf16, amx; using %s\n", env,
                 isa_name(fallback));
    return fallback;
}

/// The caller's choice (`use_cpu_isa`), or −1 for the environment's / the default one.
inline std::atomic<int>& cpu_isa_choice() noexcept {
    static std::atomic<int> choice{-1};
    return choice;
}

}  // namespace detail

/// The instruction set the dispatched kernels use now.
[[nodiscard]] inline CpuIsa cpu_isa() noexcept {
    const int chosen = detail::cpu_isa_choice().load(std::memory_order_relaxed);
    if (chosen >= 0) return static_cast<CpuIsa>(chosen);
    static const CpuIsa from_env = detail::cpu_isa_from_environment();
    return from_env;
}

/// Makes the dispatched kernels use `isa` from now on (process-wide; tests and benchmarks
/// force each path this way). Throws `ssm::Error` when the CPU cannot run it.
inline void use_cpu_isa(CpuIsa isa) {
    require(cpu_supports(isa), "use_cpu_isa: this CPU does not support ", isa_name(isa), " (it supports up to ",
            isa_name(detected_cpu_isa()), ")");
    require(cpu_can_use(isa),
            "use_cpu_isa: the kernel refused this process AMX's tile state (arch_prctl ARCH_REQ_XCOMP_PERM)");
    detail::cpu_isa_choice().store(static_cast<int>(isa), std::memory_order_relaxed);
}

/// Back to the environment's choice (`SSM_CPU_ISA`), or the default (`default_cpu_isa`).
inline void use_default_cpu_isa() noexcept { detail::cpu_isa_choice().store(-1, std::memory_order_relaxed); }

}  // namespace ssm
