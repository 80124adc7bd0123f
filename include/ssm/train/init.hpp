// ssm/train/init.hpp — a freshly initialised Mamba-1, Falcon-Mamba or Mamba-2 model, drawn
// as `mamba_ssm`'s `MambaLMHeadModel` draws one (`Mamba.__init__` / `Mamba2.__init__` plus
// `_init_weights` of mixer_seq_simple.py), from a seed, and written as a checkpoint folder
// the loaders open.
//
// What each tensor gets (V vocabulary, D hidden, E inner, N state, K conv width, R dt rank,
// L layers; U(−b, b) uniform, N(0, σ²) normal):
//
//   embeddings.weight (V, D)     N(0, initializer_range²)
//   norm.weight, norm_f.weight   1; their biases (LayerNorm configs) 0
//   A_log (E, N)                 log(n + 1) in every row (S4D-real: A = −(n + 1))
//   D (E)                        1
//   conv1d.weight (E, 1, K)      U(−1/√K, 1/√K): PyTorch's Conv1d default, fan_in = K
//   conv1d.bias (E)              U(−1/√K, 1/√K)
//   in_proj.weight (2E, D)       U(−1/√D, 1/√D): nn.Linear's kaiming_uniform(a = √5)
//   x_proj.weight (R + 2N, E)    U(−1/√E, 1/√E)
//   dt_proj.weight (E, R)        U(−s, s), s = dt_scale/√R ("random"); or s ("constant")
//   dt_proj.bias (E)             softplus⁻¹(dt), dt = max(exp(U(ln dt_min, ln dt_max)), floor)
//   out_proj.weight (D, E)       U(−1/√E, 1/√E), divided by √L with rescale_prenorm_residual
//   in_proj.bias, out_proj.bias  0 (use_bias configs)
//   lm_head.weight (V, D)        untied heads only: U(−1/√D, 1/√D), nn.Linear's default
//
// Falcon-Mamba has Mamba-1's tensors (its B, C and Δ norms have no weights) and gets the
// same. A Mamba-2 layer (H heads of P, G groups, d_ssm = H·P, C = d_ssm + 2GN conv
// channels, in_proj width 2E + 2GN + H) gets, as `Mamba2.__init__` draws them:
//
//   dt_bias (H)                  softplus⁻¹(dt), dt as dt_proj.bias above
//   A_log (H)                    ln(a), a ~ U(A_init_range) = U(1, 16) by default
//   D (H, or d_ssm with D_has_hdim)   1
//   conv1d.weight (C, 1, K)      U(−1/√K, 1/√K); conv1d.bias (C) the same
//   in_proj.weight (2E+2GN+H, D) U(−1/√D, 1/√D)
//   norm.weight (d_ssm)          1 (the gated RMSNorm; configs without it have none)
//   out_proj.weight (D, E)       as Mamba-1's
//
// (Recent transformers versions' own `MambaPreTrainedModel._init_weights` differ: it draws every
// Linear weight but dt_proj's and out_proj's from N(0, initializer_range²) and zeroes the conv
// bias; its Mamba-2 sets A = 1..H. A config.json written by transformers also carries its
// defaults, initializer_range 0.1 and no rescaling; `InitOptions::from_config` reads them.)
//
// Random numbers: every tensor draws from its own `std::mt19937_64` (whose output the C++
// standard fixes), seeded with splitmix64(seed ⊕ splitmix64(FNV-1a-64(tensor name))), so a
// tensor's values depend only on the seed, its name, its shape and the options, not on the
// order or number of the others. Uniform draws are u = (next() >> 11) · 2⁻⁵³ in [0, 1),
// and U(−b, b) is (2u − 1) · b: 2u − 1 is exact, and b (1/√fan_in and the like), the
// product and its rounding to float are IEEE 754 operations, the same bits with every
// compiler and standard library. Normal draws are Box–Muller pairs, and the time steps go
// through exp and log: those use the math library, whose last-bit differences in double
// could change a float32 value only where they straddle a float rounding boundary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/atomic_file.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/path.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/io/config.hpp"
#include "ssm/io/safetensors.hpp"

namespace ssm::train {

/// How `dt_proj.weight` starts (mamba_ssm's `dt_init`, transformers' `time_step_init_scheme`).
enum class DtInit { random, constant };

/// The initialisation's hyper-parameters, with `mamba_ssm`'s defaults.
struct InitOptions {
    double dt_min = 0.001;  // time steps start log-uniform in [dt_min, dt_max]
    double dt_max = 0.1;
    double dt_init_floor = 1e-4;  // ... and at least this
    double dt_scale = 1.0;        // dt_proj.weight's bound is dt_scale / √R
    DtInit dt_init = DtInit::random;
    double initializer_range = 0.02;       // standard deviation of the embedding
    bool rescale_prenorm_residual = true;  // out_proj.weight divided by √(layers)
    double a_init_min = 1.0;   // Mamba-2: each head's −A starts uniform in
    double a_init_max = 16.0;  // [a_init_min, a_init_max] (mamba_ssm's A_init_range)
    std::uint64_t seed = 0;

    /// Fails, naming `source`, unless 0 < dt_min <= dt_max, the floor, the scale and the
    /// range are >= 0, and all are finite.
    void validate(const std::string& source = "InitOptions") const {
        const auto finite_at_least = [&](double v, double lo, const char* what) {
            if (!(std::isfinite(v) && v >= lo))
                fail(source, ": ", what, " must be a finite number >= ", lo, ", got ", v);
        };
        if (!(std::isfinite(dt_min) && dt_min > 0))
            fail(source, ": dt_min must be a finite positive number, got ", dt_min);
        finite_at_least(dt_max, dt_min, "dt_max (at least dt_min)");
        finite_at_least(dt_init_floor, 0.0, "dt_init_floor");
        finite_at_least(dt_scale, 0.0, "dt_scale");
        finite_at_least(initializer_range, 0.0, "initializer_range");
        if (!(std::isfinite(a_init_min) && a_init_min > 0))
            fail(source, ": A_init_range's lower end must be a finite positive number, got ", a_init_min);
        finite_at_least(a_init_max, a_init_min, "A_init_range's upper end (at least its lower end)");
    }

    /// The options a config.json asks for, each absent key keeping `mamba_ssm`'s default:
    /// transformers' `time_step_min`, `time_step_max`, `time_step_floor`, `time_step_scale`,
    /// `time_step_init_scheme`, `initializer_range` and `rescale_prenorm_residual`, or an
    /// original config's `ssm_cfg.{dt_min, dt_max, dt_init_floor, dt_scale, dt_init}` and
    /// `initializer_cfg.{initializer_range, rescale_prenorm_residual}`; Mamba-2's
    /// `A_init_range` ([lo, hi], in `ssm_cfg` or at the top level). `config_json` is the
    /// file or its folder.
    [[nodiscard]] static InitOptions from_config(const std::filesystem::path& config_json,
                                                 std::uint64_t seed = 0);
};

/// One tensor of a checkpoint: its name and its float32 value (which carries the shape).
struct NamedTensor {
    std::string name;  // e.g. "backbone.layers.0.mixer.A_log"
    Tensor value;
};

namespace detail {

/// splitmix64's finaliser: a bijection of 64-bit words that spreads every input bit.
[[nodiscard]] constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/// FNV-1a, 64-bit, over the bytes of `s`.
[[nodiscard]] constexpr std::uint64_t fnv1a64(std::string_view s) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return h;
}

/// The random stream of one tensor (see the top of this file).
class InitStream {
public:
    InitStream(std::uint64_t seed, std::string_view tensor_name)
        : gen_(splitmix64(seed ^ splitmix64(fnv1a64(tensor_name)))) {}

    /// u in [0, 1): the top 53 bits of the next word, scaled by 2⁻⁵³ (exact).
    [[nodiscard]] double uniform01() noexcept {
        return static_cast<double>(gen_() >> 11) * (1.0 / 9007199254740992.0);
    }

    /// A draw from U(−bound, bound): (2u − 1) is exact, so one multiplication and the
    /// rounding to float are the only roundings.
    [[nodiscard]] float symmetric(double bound) noexcept {
        const double s = 2.0 * uniform01() - 1.0;
        return static_cast<float>(s * bound);
    }

    /// Fills `out` with N(0, stddev²) by Box–Muller pairs: r = √(−2 ln(1 − u₁)),
    /// z = r·cos(2πu₂), r·sin(2πu₂) (1 − u₁ is in (0, 1], so the log is finite).
    void normal(std::span<float> out, double stddev) {
        for (std::size_t i = 0; i < out.size(); i += 2) {
            const double r = std::sqrt(-2.0 * std::log(1.0 - uniform01()));
            const double theta = 2.0 * std::numbers::pi * uniform01();
            out[i] = static_cast<float>(stddev * r * std::cos(theta));
            if (i + 1 < out.size()) out[i + 1] = static_cast<float>(stddev * r * std::sin(theta));
        }
    }

private:
    std::mt19937_64 gen_;
};

/// A config file given as itself or as its folder (config.json, else lit_config.json, as
/// `MambaConfig::load` reads).
[[nodiscard]] inline std::filesystem::path config_file_of(const std::filesystem::path& p) {
    if (!is_folder(p)) return p;
    if (!path_exists(p / "config.json") && path_exists(p / "lit_config.json"))
        return p / "lit_config.json";
    return p / "config.json";
}

/// The bytes of `file`, or an error naming it.
[[nodiscard]] inline std::string read_text_file(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) fail(file.string(), ": cannot open");
    std::stringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) fail(file.string(), ": read failed");
    return buffer.str();
}

/// Refuses, naming `source`, what `initial_parameters` cannot draw: hybrids (SAMBA).
inline void require_initialisable(const MambaConfig& config, const std::string& source) {
    const bool ssm_only = config.family == ModelFamily::Mamba1 ||
                          config.family == ModelFamily::FalconMamba ||
                          config.family == ModelFamily::Mamba2;
    if (!ssm_only || config.is_hybrid())
        fail(source,
             ": only Mamba-1, Falcon-Mamba and Mamba-2 models can be initialised for training; "
             "this config describes a ",
             family_name(config.family), " model");
}

/// `[lo, hi]` of `key` in `j` into lo, hi; absent or null keeps them.
inline void read_range(const nlohmann::json& j, const char* key, const std::string& source,
                       double& lo, double& hi) {
    if (!j.contains(key) || j.at(key).is_null()) return;
    const nlohmann::json& v = j.at(key);
    if (!v.is_array() || v.size() != 2 || !v.at(0).is_number() || !v.at(1).is_number())
        fail(source, ": '", key, "' must be a list of two numbers [lo, hi], got ", v.dump());
    lo = v.at(0).get<double>();
    hi = v.at(1).get<double>();
}

}  // namespace detail

inline InitOptions InitOptions::from_config(const std::filesystem::path& config_json,
                                            std::uint64_t seed) {
    const std::filesystem::path file = detail::config_file_of(config_json);
    const std::string source = file.string();
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(
            ssm::detail::quote_nonfinite_tokens(detail::read_text_file(file)));
    } catch (const nlohmann::json::exception& e) {
        fail(source, ": invalid JSON: ", e.what());
    }
    if (!j.is_object()) fail(source, ": config is not a JSON object");
    const ssm::detail::JsonFields f{source};
    InitOptions o;
    o.seed = seed;
    std::string scheme = "random";
    const bool original = j.contains("d_model") && !j.contains("hidden_size");
    if (original) {
        const nlohmann::json empty = nlohmann::json::object();
        const auto object = [&](const char* key) -> const nlohmann::json& {
            if (!j.contains(key) || j.at(key).is_null()) return empty;
            if (!j.at(key).is_object()) fail(source, ": '", key, "' is not an object");
            return j.at(key);
        };
        const nlohmann::json& ssm_cfg = object("ssm_cfg");
        const nlohmann::json& init_cfg = object("initializer_cfg");
        o.dt_min = f.number(ssm_cfg, "dt_min", o.dt_min);
        o.dt_max = f.number(ssm_cfg, "dt_max", o.dt_max);
        o.dt_init_floor = f.number(ssm_cfg, "dt_init_floor", o.dt_init_floor);
        o.dt_scale = f.number(ssm_cfg, "dt_scale", o.dt_scale);
        scheme = f.string(ssm_cfg, "dt_init", scheme);
        o.initializer_range = f.number(init_cfg, "initializer_range", o.initializer_range);
        o.rescale_prenorm_residual =
            f.boolean(init_cfg, "rescale_prenorm_residual", o.rescale_prenorm_residual);
        detail::read_range(ssm_cfg, "A_init_range", source, o.a_init_min, o.a_init_max);
    } else {
        o.dt_min = f.number(j, "time_step_min", o.dt_min);
        o.dt_max = f.number(j, "time_step_max", o.dt_max);
        o.dt_init_floor = f.number(j, "time_step_floor", o.dt_init_floor);
        o.dt_scale = f.number(j, "time_step_scale", o.dt_scale);
        scheme = f.string(j, "time_step_init_scheme", scheme);
        o.initializer_range = f.number(j, "initializer_range", o.initializer_range);
        o.rescale_prenorm_residual =
            f.boolean(j, "rescale_prenorm_residual", o.rescale_prenorm_residual);
        detail::read_range(j, "A_init_range", source, o.a_init_min, o.a_init_max);
    }
    if (scheme == "random")
        o.dt_init = DtInit::random;
    else if (scheme == "constant")
        o.dt_init = DtInit::constant;
    else
        fail(source, ": time step init scheme \"", scheme,
             "\" is not supported (random or constant)");
    o.validate(source);
    return o;
}

/// Every tensor of a freshly initialised checkpoint for `config`, under the checkpoint
/// names transformers' `MambaForCausalLM` / `Mamba2ForCausalLM` use, in the order the
/// training registry lists them: `backbone.embeddings.weight`; per layer i
/// `backbone.layers.{i}.norm.weight` (+ `.bias` for LayerNorm), and `.mixer.` — Mamba-1 and
/// Falcon-Mamba: `A_log`, `D`, `conv1d.weight` (E, 1, K), `conv1d.bias` (use_conv_bias),
/// `in_proj.weight`, `in_proj.bias` (use_bias), `x_proj.weight`, `dt_proj.weight`,
/// `dt_proj.bias`, `out_proj.weight`, `out_proj.bias` (use_bias); Mamba-2: `dt_bias`,
/// `A_log`, `D`, `conv1d.*`, `in_proj.*`, `norm.weight` (gated norm), `out_proj.*`; then
/// `backbone.norm_f.weight` (+ `.bias`) and `lm_head.weight` when the head is not tied.
/// Values as the tables at the top of this file say. SAMBA configs are refused.
[[nodiscard]] inline std::vector<NamedTensor> initial_parameters(const MambaConfig& config,
                                                                 const InitOptions& options) {
    detail::require_initialisable(config, "initial_parameters");
    config.validate("initial_parameters");
    options.validate();
    const index V = config.vocab_size, D = config.hidden_size, E = config.intermediate_size,
                N = config.state_size, K = config.conv_kernel, R = config.time_step_rank,
                L = config.num_hidden_layers;
    const bool layer_norm = config.norm == NormKind::LayerNorm;

    std::vector<NamedTensor> out;
    const auto add = [&](std::string name, std::vector<index> shape, auto&& fill) {
        Tensor t = Tensor::zeros(std::move(shape));
        detail::InitStream rng(options.seed, name);
        fill(std::span<float>(t.mutable_data(), static_cast<std::size_t>(t.size())), rng);
        out.push_back(NamedTensor{std::move(name), std::move(t)});
    };
    const auto uniform = [](double bound) {
        return [bound](std::span<float> v, detail::InitStream& rng) {
            for (float& x : v) x = rng.symmetric(bound);
        };
    };
    const auto constant = [](float c) {
        return [c](std::span<float> v, detail::InitStream&) {
            for (float& x : v) x = c;
        };
    };
    const auto fan_in_bound = [](index fan_in) {
        return 1.0 / std::sqrt(static_cast<double>(fan_in));
    };

    add("backbone.embeddings.weight", {V, D}, [&](std::span<float> v, detail::InitStream& rng) {
        rng.normal(v, options.initializer_range);
    });

    const double log_min = std::log(options.dt_min), log_max = std::log(options.dt_max);
    const double out_bound =
        fan_in_bound(E) /
        (options.rescale_prenorm_residual ? std::sqrt(static_cast<double>(L)) : 1.0);
    // softplus(bias) = dt, dt log-uniform in [dt_min, dt_max] and at least the floor;
    // softplus⁻¹(dt) = dt + ln(−expm1(−dt)) = ln(eᵈᵗ − 1), without cancellation.
    const auto time_step_bias = [&](std::span<float> v, detail::InitStream& rng) {
        for (float& x : v) {
            const double dt = std::max(std::exp(log_min + rng.uniform01() * (log_max - log_min)),
                                       options.dt_init_floor);
            x = static_cast<float>(dt + std::log(-std::expm1(-dt)));
        }
    };
    for (index i = 0; i < L; ++i) {
        const std::string p = "backbone.layers." + std::to_string(i);
        const std::string m = p + ".mixer.";
        add(p + ".norm.weight", {D}, constant(1.0f));
        if (layer_norm) add(p + ".norm.bias", {D}, constant(0.0f));
        if (config.family == ModelFamily::Mamba2) {
            const Mamba2Fields& f = config.mamba2;
            const index H = f.num_heads, S = f.ssm_size, G = f.n_groups;
            const index C = S + 2 * G * N, in_width = 2 * E + 2 * G * N + H;
            add(m + "dt_bias", {H}, time_step_bias);
            // A = −a with a ~ U(a_init_min, a_init_max): A_log = ln(a).
            add(m + "A_log", {H}, [&](std::span<float> v, detail::InitStream& rng) {
                for (float& x : v)
                    x = static_cast<float>(std::log(
                        options.a_init_min +
                        rng.uniform01() * (options.a_init_max - options.a_init_min)));
            });
            add(m + "D", {f.d_per_channel ? S : H}, constant(1.0f));
            add(m + "conv1d.weight", {C, 1, K}, uniform(fan_in_bound(K)));
            if (config.use_conv_bias) add(m + "conv1d.bias", {C}, uniform(fan_in_bound(K)));
            add(m + "in_proj.weight", {in_width, D}, uniform(fan_in_bound(D)));
            if (config.use_bias) add(m + "in_proj.bias", {in_width}, constant(0.0f));
            if (f.gated_norm) add(m + "norm.weight", {S}, constant(1.0f));
            add(m + "out_proj.weight", {D, E}, uniform(out_bound));
            if (config.use_bias) add(m + "out_proj.bias", {D}, constant(0.0f));
            continue;
        }
        const double dt_bound = options.dt_scale / std::sqrt(static_cast<double>(R));
        add(m + "A_log", {E, N}, [&](std::span<float> v, detail::InitStream&) {
            for (index e = 0; e < E; ++e)
                for (index n = 0; n < N; ++n)
                    v[static_cast<std::size_t>(e * N + n)] =
                        static_cast<float>(std::log(static_cast<double>(n + 1)));
        });
        add(m + "D", {E}, constant(1.0f));
        add(m + "conv1d.weight", {E, 1, K}, uniform(fan_in_bound(K)));
        if (config.use_conv_bias) add(m + "conv1d.bias", {E}, uniform(fan_in_bound(K)));
        add(m + "in_proj.weight", {2 * E, D}, uniform(fan_in_bound(D)));
        if (config.use_bias) add(m + "in_proj.bias", {2 * E}, constant(0.0f));
        add(m + "x_proj.weight", {R + 2 * N, E}, uniform(fan_in_bound(E)));
        if (options.dt_init == DtInit::random)
            add(m + "dt_proj.weight", {E, R}, uniform(dt_bound));
        else
            add(m + "dt_proj.weight", {E, R}, constant(static_cast<float>(dt_bound)));
        add(m + "dt_proj.bias", {E}, time_step_bias);
        add(m + "out_proj.weight", {D, E}, uniform(out_bound));
        if (config.use_bias) add(m + "out_proj.bias", {D}, constant(0.0f));
    }
    add("backbone.norm_f.weight", {D}, constant(1.0f));
    if (layer_norm) add("backbone.norm_f.bias", {D}, constant(0.0f));
    if (!config.tie_word_embeddings) add("lm_head.weight", {V, D}, uniform(fan_in_bound(D)));
    return out;
}

/// Writes a new checkpoint folder `dir` holding `config.json` (a byte-for-byte copy of
/// `config_json`, a file or the folder holding it) and `model.safetensors` (float32, the
/// tensors of `initial_parameters`, with the options in its metadata), which
/// `ssm::with_mamba`, `MambaLM::load` and transformers' `from_pretrained` open. The folder
/// is assembled beside `dir` and renamed into place, so it appears complete or not at all;
/// `dir` must not exist or be an empty folder (a checkpoint already there is never
/// overwritten). A SAMBA config is refused with an `ssm::Error` naming the file and the
/// family.
inline void write_initial_checkpoint(const std::filesystem::path& config_json,
                                     const std::filesystem::path& dir, const InitOptions& options) {
    namespace fs = std::filesystem;
    const fs::path file = detail::config_file_of(config_json);
    const MambaConfig config = MambaConfig::load(file);
    detail::require_initialisable(config, file.string());
    options.validate();
    const std::string text = detail::read_text_file(file);

    fs::path target = dir.lexically_normal();
    if (!target.has_filename()) target = target.parent_path();  // "out/" names "out"
    const std::string where = target.string();
    std::error_code ec;
    if (fs::exists(target, ec) && !(fs::is_directory(target, ec) && fs::is_empty(target, ec)))
        fail(where,
             ": already exists and is not an empty folder (a new checkpoint is written only "
             "to a new or empty folder)");
    const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    if (ec) fail(where, ": cannot create the parent folder: ", ec.message());

    std::random_device rd;
    const fs::path tmp = parent / (target.filename().string() + ".tmp-" + std::to_string(rd()) +
                                   std::to_string(rd()));
    if (!fs::create_directory(tmp, ec) || ec)
        fail(where, ": cannot create the temporary folder ", tmp.string(), ": ", ec.message());
    try {
        const std::vector<NamedTensor> params = initial_parameters(config, options);
        std::vector<TensorToWrite> tensors;
        tensors.reserve(params.size());
        for (const NamedTensor& t : params)
            tensors.push_back(f32_tensor(t.name, {t.value.shape().begin(), t.value.shape().end()},
                                         t.value.values()));
        std::ostringstream init;
        init.precision(17);
        init << "mamba_ssm seed=" << options.seed << " dt_min=" << options.dt_min
             << " dt_max=" << options.dt_max << " dt_init_floor=" << options.dt_init_floor
             << " dt_scale=" << options.dt_scale
             << " dt_init=" << (options.dt_init == DtInit::random ? "random" : "constant")
             << " initializer_range=" << options.initializer_range << " rescale_prenorm_residual="
             << (options.rescale_prenorm_residual ? "true" : "false");
        if (config.family == ModelFamily::Mamba2)
            init << " A_init_range=" << options.a_init_min << "," << options.a_init_max;
        const std::map<std::string, std::string> metadata{{"format", "pt"},
                                                          {"ssm.init", init.str()}};
        write_safetensors(tmp / "model.safetensors", tensors, metadata);
        write_file_atomically(tmp / "config.json", [&](std::ostream& os) {
            os.write(text.data(), static_cast<std::streamsize>(text.size()));
        });
        fs::rename(tmp, target, ec);
        if (ec) fail(where, ": cannot move the finished checkpoint into place: ", ec.message());
    } catch (...) {
        std::error_code ignored;
        fs::remove_all(tmp, ignored);
        throw;
    }
}

}  // namespace ssm::train
