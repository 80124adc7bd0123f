// ssm/io/config.hpp — a Mamba checkpoint's config.json, in HuggingFace or original
// state-spaces (mamba_ssm) form, as one typed struct.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/checked.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/path.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/io/json_excerpt.hpp"

namespace ssm {

namespace detail {

/// The largest size (of a dimension, vocabulary, window, ...) a config may give: a size read
/// is at most this in magnitude, so sums and products of two sizes cannot overflow.
inline constexpr index kMaxConfigSize = 2147483647;
/// The most layers a config may give (checked before anything is made per layer).
inline constexpr index kMaxConfigLayers = 65536;

/// Typed reads of config.json fields, with errors that name the file and the key.
struct JsonFields {
    const std::string& source;

    /// An integer of int64 range; one above INT64_MAX is an error, not a negative number.
    [[nodiscard]] index integer(const nlohmann::json& obj, const char* key, std::optional<index> fallback) const {
        if (!obj.contains(key) || obj.at(key).is_null()) {
            if (!fallback) fail(source, ": missing '", key, "'");
            return *fallback;
        }
        const auto& v = obj.at(key);
        if (!v.is_number_integer()) fail(source, ": '", key, "' must be an integer, got ", json_excerpt(v));
        return in_range(v, key);
    }
    /// A size: an integer of magnitude at most `kMaxConfigSize`, checked as it is read.
    [[nodiscard]] index size(const nlohmann::json& obj, const char* key, std::optional<index> fallback) const {
        const index v = integer(obj, key, fallback);
        if (v > kMaxConfigSize || v < -kMaxConfigSize)
            fail(source, ": '", key, "' is ", v, ", out of range (a size is at most ", kMaxConfigSize, ")");
        return v;
    }
    [[nodiscard]] std::int64_t in_range(const nlohmann::json& v, const char* key) const {
        if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
            fail(source, ": '", key, "' is ", v.get<std::uint64_t>(), ", beyond the 64-bit integer range");
        return v.get<std::int64_t>();
    }
    [[nodiscard]] bool boolean(const nlohmann::json& obj, const char* key, bool fallback) const {
        if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
        if (!obj.at(key).is_boolean()) fail(source, ": '", key, "' must be true or false, got ", json_excerpt(obj.at(key)));
        return obj.at(key).get<bool>();
    }
    [[nodiscard]] double number(const nlohmann::json& obj, const char* key, double fallback) const {
        if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
        if (!obj.at(key).is_number()) fail(source, ": '", key, "' must be a number, got ", json_excerpt(obj.at(key)));
        return obj.at(key).get<double>();
    }
    /// A token id (or the first of a list of them, as some configs give), if present.
    [[nodiscard]] std::optional<std::int64_t> token_id(const nlohmann::json& obj, const char* key) const {
        if (!obj.contains(key) || obj.at(key).is_null()) return std::nullopt;
        const auto& v = obj.at(key);
        if (v.is_array() && !v.empty() && v.at(0).is_number_integer()) return in_range(v.at(0), key);
        if (!v.is_number_integer()) fail(source, ": '", key, "' must be an integer token id, got ", json_excerpt(v));
        return in_range(v, key);
    }
    [[nodiscard]] std::string string(const nlohmann::json& obj, const char* key, const std::string& fallback) const {
        if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
        if (!obj.at(key).is_string()) fail(source, ": '", key, "' must be a string, got ", json_excerpt(obj.at(key)));
        return obj.at(key).get<std::string>();
    }
};

}  // namespace detail

/// The model families a config.json can describe. A config says which by `model_type`,
/// by `architectures` (HuggingFace), by `ssm_cfg.layer` (original `mamba_ssm`) or by being
/// a lit-gpt config (SAMBA); one that names no family is read as Mamba-1.
enum class ModelFamily { Mamba1, Mamba2, FalconMamba, Samba };

[[nodiscard]] inline const char* family_name(ModelFamily f) noexcept {
    switch (f) {
        case ModelFamily::Mamba1: return "mamba";
        case ModelFamily::Mamba2: return "mamba2";
        case ModelFamily::FalconMamba: return "falcon_mamba";
        case ModelFamily::Samba: return "samba";
    }
    return "?";
}

namespace detail {

inline constexpr const char* kSupportedFamilies =
    "supported: mamba, mamba2, falcon_mamba, and SAMBA's lit-gpt config";

/// The family a (non-lit-gpt) config.json describes; any other is refused by name.
[[nodiscard]] inline ModelFamily config_family(const nlohmann::json& j, const std::string& source) {
    std::optional<ModelFamily> by_type;
    if (j.contains("model_type") && !j.at("model_type").is_null()) {
        const auto& v = j.at("model_type");
        if (!v.is_string()) fail(source, ": 'model_type' must be a string, got ", detail::json_excerpt(v));
        const std::string t = v.get<std::string>();
        if (t == "mamba") by_type = ModelFamily::Mamba1;
        else if (t == "mamba2") by_type = ModelFamily::Mamba2;
        else if (t == "falcon_mamba") by_type = ModelFamily::FalconMamba;
        else fail(source, ": model_type \"", t, "\" is not supported (", kSupportedFamilies, ")");
    } else if (j.contains("architectures") && j.at("architectures").is_array() && !j.at("architectures").empty()) {
        const auto& v = j.at("architectures").at(0);
        if (!v.is_string()) fail(source, ": 'architectures' must list class names, got ", detail::json_excerpt(v));
        const std::string a = v.get<std::string>();
        const auto starts = [&](const char* p) { return a.rfind(p, 0) == 0; };
        if (starts("FalconMamba")) by_type = ModelFamily::FalconMamba;
        else if (starts("Mamba2")) by_type = ModelFamily::Mamba2;
        else if (starts("MambaFor") || starts("MambaModel") || starts("MambaLMHead")) by_type = ModelFamily::Mamba1;
        else fail(source, ": architecture \"", a, "\" is not supported (", kSupportedFamilies, ")");
    }
    std::optional<ModelFamily> by_layer;
    if (j.contains("ssm_cfg") && j.at("ssm_cfg").is_object() && j.at("ssm_cfg").contains("layer")) {
        const auto& v = j.at("ssm_cfg").at("layer");
        if (!v.is_string()) fail(source, ": 'ssm_cfg.layer' must be a string, got ", detail::json_excerpt(v));
        const std::string l = v.get<std::string>();
        if (l == "Mamba1") by_layer = ModelFamily::Mamba1;
        else if (l == "Mamba2") by_layer = ModelFamily::Mamba2;
        else fail(source, ": ssm_cfg.layer \"", l, "\" is not supported (Mamba1 or Mamba2)");
    }
    if (j.contains("attn_layer_idx") && j.at("attn_layer_idx").is_array() && !j.at("attn_layer_idx").empty())
        fail(source, ": 'attn_layer_idx' asks for a mamba_ssm hybrid with attention layers, which is not supported (",
             kSupportedFamilies, ")");
    if (j.contains("d_intermediate")) {
        const auto& v = j.at("d_intermediate");
        if (!v.is_number() || v.get<double>() != 0.0)
            fail(source, ": 'd_intermediate' is ", detail::json_excerpt(v),
                 ": mamba_ssm blocks with an MLP after the mixer are not supported (0 only)");
    }
    if (by_type && by_layer && *by_type != *by_layer && *by_type != ModelFamily::FalconMamba)
        fail(source, ": model_type says ", family_name(*by_type), " but ssm_cfg.layer says ", family_name(*by_layer));
    if (by_type) return *by_type;
    if (by_layer) return *by_layer;
    return ModelFamily::Mamba1;
}

/// A float that Python may have written as a number, as the non-JSON token `Infinity`
/// (quoted by `quote_nonfinite_tokens`), or as transformers' `{"__float__": "Infinity"}`.
[[nodiscard]] inline double config_float(const nlohmann::json& v, const std::string& source, const char* key) {
    if (v.is_number()) return v.get<double>();
    const nlohmann::json* s = &v;
    if (v.is_object() && v.size() == 1 && v.contains("__float__")) s = &v.at("__float__");
    if (s->is_number()) return s->get<double>();
    if (s->is_string()) {
        const std::string t = s->get<std::string>();
        if (t == "Infinity" || t == "inf" || t == "+Infinity") return HUGE_VAL;
        if (t == "-Infinity" || t == "-inf") return -HUGE_VAL;
    }
    fail(source, ": '", key, "' must hold numbers (or Infinity), got ", detail::json_excerpt(v));
}

/// config.json text with the bare tokens Python's `json` writes for non-finite floats
/// (`Infinity`, `-Infinity`, `NaN`), which JSON does not allow, turned into strings.
[[nodiscard]] inline std::string quote_nonfinite_tokens(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char ch = text[i];
        if (in_string) {
            out += ch;
            if (ch == '\\' && i + 1 < text.size()) out += text[++i];
            else if (ch == '"') in_string = false;
            continue;
        }
        if (ch == '"') {
            in_string = true;
            out += ch;
            continue;
        }
        bool replaced = false;
        for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
            const std::size_t n = std::char_traits<char>::length(token);
            if (text.compare(i, n, token) == 0) {
                out += '"';
                out += token;
                out += '"';
                i += n - 1;
                replaced = true;
                break;
            }
        }
        if (!replaced) out += ch;
    }
    return out;
}

}  // namespace detail

/// The Mamba-2 (SSD) mixer's sizes and switches (REFERENCE names in comments); set only
/// for `ModelFamily::Mamba2` configs.
struct Mamba2Fields {
    index num_heads = 0;          // H
    index head_dim = 0;           // P
    index n_groups = 1;           // G: B and C are shared by H / G heads each
    index ssm_size = 0;           // d_ssm = H·P; the rest of d_inner is a gated MLP (mamba_ssm d_ssm)
    index chunk_size = 256;       // the SSD's chunk length as trained
    double dt_min = 0.0;          // time_step_limit: Δ is clamped to [dt_min, dt_max]
    double dt_max = HUGE_VAL;
    bool gated_norm = true;       // y = rmsnorm(y · silu(z)) · w; false: y · silu(z)
    bool d_per_channel = false;   // D has d_ssm entries (mamba_ssm D_has_hdim), else H
    double norm_epsilon = 1e-5;   // the gated norm's eps
};

enum class NormKind { RMSNorm, LayerNorm };

/// What a layer of a hybrid (SAMBA) model mixes with.
enum class LayerKind { Mamba, Attention };

/// The sizes and switches of a Mamba-1 model (REFERENCE names in comments), and of a
/// SAMBA hybrid, whose extra fields are set only when `layer_kinds` is not empty.
///
/// Two config.json forms describe a plain Mamba model: HuggingFace (`hidden_size`, ...) and
/// the original state-spaces one (`d_model`, `n_layer`, `ssm_cfg`). A SAMBA model is described
/// by the lit-gpt `Config` fields its training code saves (`n_embd`, `n_layer`, `n_head`,
/// `mb_per_layer`, `local_window`, ...), read from `config.json` or `lit_config.json`.
struct MambaConfig {
    index vocab_size = 0;
    index hidden_size = 0;        // D (d_model)
    index num_hidden_layers = 0;  // (n_layer)
    index state_size = 16;        // N (d_state)
    index conv_kernel = 4;        // K (d_conv)
    index expand = 2;
    index intermediate_size = 0;  // E = expand · D unless given
    index time_step_rank = 0;     // R; "auto" = ceil(D / 16)
    bool use_bias = false;        // in_proj / out_proj bias
    bool use_conv_bias = true;
    bool tie_word_embeddings = true;
    bool residual_in_fp32 = true;
    double layer_norm_epsilon = 1e-5;
    NormKind norm = NormKind::RMSNorm;
    std::optional<std::int64_t> bos_token_id, eos_token_id, pad_token_id;

    ModelFamily family = ModelFamily::Mamba1;
    double mixer_rms_eps = 1e-6;  // Falcon-Mamba: eps of the weightless RMS norm of Δ, B and C
    Mamba2Fields mamba2;          // Mamba-2 only

    // SAMBA hybrids: every layer is x += Mixer(RMSNorm(x)); x += SwiGLU(RMSNorm(x)), the
    // mixer Mamba or sliding-window attention as `layer_kinds` says.
    std::vector<LayerKind> layer_kinds;  // one per layer; empty for a plain Mamba model
    index num_attention_heads = 0;
    index num_key_value_heads = 0;
    index head_dim = 0;
    index rotary_dim = 0;                // features of each head RoPE rotates (0: no RoPE)
    double rope_theta = 10000.0;
    index sliding_window = 0;            // keys each token sees, itself included; 0: all earlier
    index mlp_size = 0;                  // SwiGLU inner size

    /// True for a SAMBA-style hybrid (attention layers and an MLP in every block).
    [[nodiscard]] bool is_hybrid() const noexcept { return !layer_kinds.empty(); }

    /// Reads any of the forms; `source` names the file in error messages.
    [[nodiscard]] static MambaConfig from_json(const nlohmann::json& j, const std::string& source) {
        if (!j.is_object()) fail(source, ": config is not a JSON object");
        if (j.contains("n_embd")) return from_lit_gpt(j, source);
        const ModelFamily family = detail::config_family(j, source);
        if (family == ModelFamily::Mamba2) return from_mamba2(j, source);
        MambaConfig c;
        c.family = family;
        const bool original = j.contains("d_model") && !j.contains("hidden_size");
        const nlohmann::json empty = nlohmann::json::object();
        const nlohmann::json& ssm_cfg = original && j.contains("ssm_cfg") ? j.at("ssm_cfg") : empty;
        if (!ssm_cfg.is_object()) fail(source, ": 'ssm_cfg' is not an object");

        const detail::JsonFields f{source};

        const nlohmann::json* rank_value = nullptr;
        if (original) {
            c.hidden_size = f.size(j, "d_model", std::nullopt);
            c.num_hidden_layers = f.size(j, "n_layer", std::nullopt);
            c.vocab_size = f.size(j, "vocab_size", std::nullopt);
            const index multiple = f.size(j, "pad_vocab_size_multiple", 1);
            if (multiple <= 0) fail(source, ": 'pad_vocab_size_multiple' must be positive");
            c.vocab_size = (c.vocab_size + multiple - 1) / multiple * multiple;
            c.state_size = f.size(ssm_cfg, "d_state", 16);
            c.conv_kernel = f.size(ssm_cfg, "d_conv", 4);
            c.expand = f.size(ssm_cfg, "expand", 2);
            c.intermediate_size = c.expand * c.hidden_size;
            c.use_bias = f.boolean(ssm_cfg, "bias", false);
            c.use_conv_bias = f.boolean(ssm_cfg, "conv_bias", true);
            c.norm = f.boolean(j, "rms_norm", true) ? NormKind::RMSNorm : NormKind::LayerNorm;
            c.residual_in_fp32 = f.boolean(j, "residual_in_fp32", true);
            c.tie_word_embeddings = f.boolean(j, "tie_embeddings", true);
            c.layer_norm_epsilon = f.number(j, "norm_epsilon", 1e-5);
            if (ssm_cfg.contains("dt_rank")) rank_value = &ssm_cfg.at("dt_rank");
        } else {
            c.hidden_size = f.size(j, "hidden_size", std::nullopt);
            c.num_hidden_layers = f.size(j, "num_hidden_layers", std::nullopt);
            c.vocab_size = f.size(j, "vocab_size", std::nullopt);
            c.state_size = f.size(j, "state_size", 16);
            c.conv_kernel = f.size(j, "conv_kernel", 4);
            c.expand = f.size(j, "expand", 2);
            c.intermediate_size = f.integer(j, "intermediate_size", c.expand * c.hidden_size);
            c.use_bias = f.boolean(j, "use_bias", false);
            c.use_conv_bias = f.boolean(j, "use_conv_bias", true);
            c.tie_word_embeddings = f.boolean(j, "tie_word_embeddings", true);
            c.residual_in_fp32 = f.boolean(j, "residual_in_fp32", true);
            c.layer_norm_epsilon = f.number(j, "layer_norm_epsilon", 1e-5);
            if (j.contains("rms_norm")) c.norm = f.boolean(j, "rms_norm", true) ? NormKind::RMSNorm : NormKind::LayerNorm;
            if (j.contains("time_step_rank")) rank_value = &j.at("time_step_rank");
        }
        if (!rank_value || rank_value->is_null() || (rank_value->is_string() && rank_value->get<std::string>() == "auto")) {
            c.time_step_rank = (c.hidden_size + 15) / 16;
        } else if (rank_value->is_number_integer()) {
            c.time_step_rank = f.in_range(*rank_value, "time_step_rank");
        } else {
            fail(source, ": time step rank must be an integer or \"auto\", got ", detail::json_excerpt(*rank_value));
        }
        c.bos_token_id = f.token_id(j, "bos_token_id");
        c.eos_token_id = f.token_id(j, "eos_token_id");
        c.pad_token_id = f.token_id(j, "pad_token_id");
        if (family == ModelFamily::FalconMamba) c.mixer_rms_eps = f.number(j, "mixer_rms_eps", 1e-6);
        c.validate(source);
        return c;
    }

    /// A SAMBA hybrid described by the lit-gpt `Config` fields (`n_embd`, `n_layer`, `n_head`,
    /// `n_query_groups`, `head_size`, `intermediate_size`, `rotary_percentage`, `local_window`,
    /// `mb_per_layer`, `vocab_size`, `padded_vocab_size`, `norm_eps`, ...), absent ones taking
    /// lit-gpt's defaults. Layer i is Mamba when `mb_per_layer` > 0 and i % mb_per_layer == 0,
    /// sliding-window attention otherwise. Switches for variants this library does not
    /// implement are refused by name. `bos_token_id` / `eos_token_id` are read when present.
    [[nodiscard]] static MambaConfig from_lit_gpt(const nlohmann::json& j, const std::string& source) {
        const detail::JsonFields f{source};
        MambaConfig c;
        c.family = ModelFamily::Samba;
        c.hidden_size = f.size(j, "n_embd", std::nullopt);
        c.num_hidden_layers = f.size(j, "n_layer", std::nullopt);
        const index multiple = f.size(j, "padding_multiple", 512);
        if (multiple <= 0) fail(source, ": 'padding_multiple' must be positive, got ", multiple);
        const index vocab = f.size(j, "vocab_size", std::nullopt);
        c.vocab_size = f.integer(j, "padded_vocab_size", (vocab + multiple - 1) / multiple * multiple);
        c.num_attention_heads = f.size(j, "n_head", std::nullopt);
        if (c.num_attention_heads <= 0) fail(source, ": 'n_head' must be positive, got ", c.num_attention_heads);
        c.num_key_value_heads = f.size(j, "n_query_groups", c.num_attention_heads);
        c.head_dim = f.size(j, "head_size", c.hidden_size / c.num_attention_heads);
        const double rotary = f.number(j, "rotary_percentage", 0.25);  // lit-gpt's default
        if (!(rotary >= 0.0 && rotary <= 1.0)) fail(source, ": 'rotary_percentage' must be in [0, 1], got ", rotary);
        c.rotary_dim = f.boolean(j, "nope", false) ? 0 : static_cast<index>(rotary * static_cast<double>(c.head_dim));
        c.rope_theta = f.number(j, "rope_base", 10000.0);  // SAMBA: always 10000
        c.sliding_window = std::max<index>(0, f.size(j, "local_window", 0));
        c.mlp_size = f.size(j, "intermediate_size", std::nullopt);
        c.layer_norm_epsilon = f.number(j, "norm_eps", 1e-5);
        c.tie_word_embeddings = f.boolean(j, "mamba_init", true) || f.boolean(j, "tie_embeddings", false);
        // lit-gpt configs name no special tokens; a file may add them (LLaMA-2: bos 1, eos 2).
        c.bos_token_id = f.token_id(j, "bos_token_id");
        c.eos_token_id = f.token_id(j, "eos_token_id");

        // The Mamba layers are state-spaces Mamba-1 with its defaults.
        c.expand = 2;
        c.intermediate_size = c.expand * c.hidden_size;
        c.time_step_rank = (c.hidden_size + 15) / 16;

        // A key absent from the file takes lit-gpt's `Config` default, as lit-gpt itself
        // would (`asdict(config)` dumps every field, so absent keys come from hand-written
        // files); several of those defaults describe a GPT-NeoX model, which is refused.
        const auto refuse = [&](const char* key, const std::string& why) {
            const std::string value = j.contains(key) ? detail::json_excerpt(j.at(key)) : std::string("absent: lit-gpt's default");
            fail(source, ": '", key, "' (", value, ") is not supported (", why, ")");
        };
        const auto on = [&](const char* key) {  // a switch or a *_per_layer count that is set
            if (!j.contains(key) || j.at(key).is_null()) return false;
            const auto& v = j.at(key);
            return v.is_boolean() ? v.get<bool>() : v.is_number() ? v.get<double>() > 0.0 : !v.empty();
        };
        if (f.boolean(j, "bias", true)) refuse("bias", "SAMBA layers have no biases");
        if (f.boolean(j, "parallel_residual", true)) refuse("parallel_residual", "SAMBA blocks are sequential");
        if (f.boolean(j, "shared_attention_norm", false)) refuse("shared_attention_norm", "SAMBA has two norms per block");
        if (f.boolean(j, "mamba", false)) refuse("mamba", "a plain Mamba model needs a Mamba config.json, not lit-gpt fields");
        if (f.number(j, "condense_ratio", 1.0) != 1.0) refuse("condense_ratio", "positions are not condensed");
        const std::string mlp = f.string(j, "_mlp_class", "GptNeoxMLP");
        if (mlp != "LLaMAMLP") refuse("_mlp_class", "the MLP is SwiGLU (LLaMAMLP)");
        const std::string norm = f.string(j, "_norm_class", "LayerNorm");
        if (norm != "RMSNorm" && norm != "FusedRMSNorm") refuse("_norm_class", "the norm is RMSNorm");
        for (const char* key : {"gla_per_layer", "ret_per_layer", "abl_mamba", "use_mega", "mamba_swa_mlp", "sc_attn",
                                "attn_layer_pos", "mlp_per_layer"})
            if (on(key)) refuse(key, "a variant this library does not implement");
        const index full_every = f.integer(j, "full_per_layer", 1000000);
        const index mb = f.integer(j, "mb_per_layer", -1);  // <= 0: no Mamba layers
        c.check_layer_count(source);
        for (index i = 0; i < c.num_hidden_layers; ++i) {
            const bool mamba = mb > 0 && i % mb == 0;
            c.layer_kinds.push_back(mamba ? LayerKind::Mamba : LayerKind::Attention);
            if (!mamba && c.sliding_window > 0 && full_every > 0 && i % full_every >= full_every - 1)
                refuse("full_per_layer", "every attention layer must use the same window");
        }
        c.validate(source);
        return c;
    }

    /// A Mamba-2 config in HuggingFace form (`Mamba2Config`: `num_heads`, `head_dim`,
    /// `n_groups`, `state_size`, `chunk_size`, `time_step_limit`, ...) or original
    /// `mamba_ssm` form (`d_model`, `n_layer`, `ssm_cfg: {"layer": "Mamba2", "headdim",
    /// "ngroups", "d_ssm", "dt_limit", "rmsnorm", "D_has_hdim", ...}`). Absent keys take
    /// the defaults of the library that wrote the form.
    [[nodiscard]] static MambaConfig from_mamba2(const nlohmann::json& j, const std::string& source) {
        const detail::JsonFields f{source};
        MambaConfig c;
        c.family = ModelFamily::Mamba2;
        Mamba2Fields& m = c.mamba2;
        const bool original = j.contains("d_model") && !j.contains("hidden_size");
        const nlohmann::json* limit = nullptr;
        const char* limit_key = "time_step_limit";
        if (original) {
            const nlohmann::json empty = nlohmann::json::object();
            const nlohmann::json& ssm_cfg = j.contains("ssm_cfg") ? j.at("ssm_cfg") : empty;
            if (!ssm_cfg.is_object()) fail(source, ": 'ssm_cfg' is not an object");
            c.hidden_size = f.integer(j, "d_model", std::nullopt);
            c.num_hidden_layers = f.integer(j, "n_layer", std::nullopt);
            c.vocab_size = f.integer(j, "vocab_size", std::nullopt);
            const index multiple = f.integer(j, "pad_vocab_size_multiple", 1);
            if (multiple <= 0 || multiple > (index{1} << 20))
                fail(source, ": 'pad_vocab_size_multiple' must be in [1, 2^20], got ", multiple);
            if (c.vocab_size > 0 && c.vocab_size < (index{1} << 40))
                c.vocab_size = (c.vocab_size + multiple - 1) / multiple * multiple;
            c.state_size = f.integer(ssm_cfg, "d_state", 128);
            c.conv_kernel = f.integer(ssm_cfg, "d_conv", 4);
            c.expand = f.integer(ssm_cfg, "expand", 2);
            m.head_dim = f.integer(ssm_cfg, "headdim", 64);
            m.n_groups = f.integer(ssm_cfg, "ngroups", 1);
            m.chunk_size = f.integer(ssm_cfg, "chunk_size", 256);
            m.gated_norm = f.boolean(ssm_cfg, "rmsnorm", true);
            m.d_per_channel = f.boolean(ssm_cfg, "D_has_hdim", false);
            m.norm_epsilon = 1e-5;  // mamba_ssm's RMSNormGated in Mamba2
            if (f.boolean(ssm_cfg, "norm_before_gate", false))
                fail(source, ": ssm_cfg.norm_before_gate true is not supported (Mamba-2 gates before its norm)");
            c.use_bias = f.boolean(ssm_cfg, "bias", false);
            c.use_conv_bias = f.boolean(ssm_cfg, "conv_bias", true);
            if (!f.boolean(j, "rms_norm", true))
                fail(source, ": a Mamba-2 model with LayerNorm blocks (rms_norm false) is not supported");
            c.residual_in_fp32 = f.boolean(j, "residual_in_fp32", true);
            c.tie_word_embeddings = f.boolean(j, "tie_embeddings", true);
            c.layer_norm_epsilon = f.number(j, "norm_epsilon", 1e-5);
            if (ssm_cfg.contains("dt_limit")) limit = &ssm_cfg.at("dt_limit");
            limit_key = "ssm_cfg.dt_limit";
            if (c.hidden_size > 0 && c.expand > 0 && c.hidden_size < (index{1} << 31) && c.expand < (index{1} << 31))
                c.intermediate_size = c.expand * c.hidden_size;
            const index d_ssm = f.integer(ssm_cfg, "d_ssm", c.intermediate_size);
            m.ssm_size = d_ssm;
            if (m.head_dim <= 0) fail(source, ": ssm_cfg.headdim must be positive, got ", m.head_dim);
            if (d_ssm <= 0 || d_ssm % m.head_dim != 0)
                fail(source, ": d_ssm ", d_ssm, " is not a positive multiple of headdim ", m.head_dim);
            m.num_heads = d_ssm / m.head_dim;
        } else {
            c.hidden_size = f.integer(j, "hidden_size", std::nullopt);
            c.num_hidden_layers = f.integer(j, "num_hidden_layers", std::nullopt);
            c.vocab_size = f.integer(j, "vocab_size", std::nullopt);
            c.state_size = f.integer(j, "state_size", 128);
            c.conv_kernel = f.integer(j, "conv_kernel", 4);
            c.expand = f.integer(j, "expand", 2);
            m.num_heads = f.integer(j, "num_heads", 128);
            m.head_dim = f.integer(j, "head_dim", 64);
            m.n_groups = f.integer(j, "n_groups", 8);
            m.chunk_size = f.integer(j, "chunk_size", 256);
            c.use_bias = f.boolean(j, "use_bias", false);
            c.use_conv_bias = f.boolean(j, "use_conv_bias", true);
            c.tie_word_embeddings = f.boolean(j, "tie_word_embeddings", false);  // Mamba2Config's default
            c.residual_in_fp32 = f.boolean(j, "residual_in_fp32", true);
            c.layer_norm_epsilon = f.number(j, "layer_norm_epsilon", 1e-5);
            m.norm_epsilon = c.layer_norm_epsilon;
            const std::string act = f.string(j, "hidden_act", "silu");
            if (act != "silu") fail(source, ": hidden_act \"", act, "\" is not supported (silu only)");
            if (j.contains("time_step_limit")) limit = &j.at("time_step_limit");
            if (c.hidden_size > 0 && c.expand > 0 && c.hidden_size < (index{1} << 31) && c.expand < (index{1} << 31))
                c.intermediate_size = c.expand * c.hidden_size;
            if (m.num_heads > 0 && m.head_dim > 0 && m.num_heads < (index{1} << 31) && m.head_dim < (index{1} << 31))
                m.ssm_size = m.num_heads * m.head_dim;
            if (m.ssm_size != c.intermediate_size)
                fail(source, ": num_heads × head_dim (", m.num_heads, " × ", m.head_dim,
                     ") must equal expand × hidden_size (", c.expand, " × ", c.hidden_size, ")");
        }
        if (limit && !limit->is_null()) {
            if (!limit->is_array() || limit->size() != 2)
                fail(source, ": '", limit_key, "' must be a pair [min, max], got ", detail::json_excerpt(*limit));
            m.dt_min = detail::config_float(limit->at(0), source, limit_key);
            m.dt_max = detail::config_float(limit->at(1), source, limit_key);
        }
        c.time_step_rank = c.hidden_size > 0 && c.hidden_size < (index{1} << 40) ? (c.hidden_size + 15) / 16 : 1;
        c.bos_token_id = f.token_id(j, "bos_token_id");
        c.eos_token_id = f.token_id(j, "eos_token_id");
        c.pad_token_id = f.token_id(j, "pad_token_id");
        c.validate(source);
        return c;
    }

    /// Reads `file_or_dir` (a folder means its config.json, or lit_config.json).
    [[nodiscard]] static MambaConfig load(const std::filesystem::path& file_or_dir) {
        const PathKind kind = path_kind(file_or_dir);
        if (kind == PathKind::missing) fail(file_or_dir.string(), ": no such file or folder");
        auto file = kind == PathKind::folder ? file_or_dir / "config.json" : file_or_dir;
        if (kind == PathKind::folder && !path_exists(file) && path_exists(file_or_dir / "lit_config.json"))
            file = file_or_dir / "lit_config.json";
        // A named pipe or device would block the read, or never end.
        if ((kind == PathKind::folder ? path_kind(file) : kind) == PathKind::other) fail(file.string(), ": not a regular file");
        std::ifstream in(file);
        if (!in) fail(file.string(), ": cannot open (a checkpoint folder needs a config.json)");
        std::stringstream buffer;
        buffer << in.rdbuf();
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(detail::quote_nonfinite_tokens(buffer.str()));
        } catch (const nlohmann::json::exception& e) {
            fail(file.string(), ": invalid JSON: ", e.what());
        }
        return from_json(j, file.string());
    }

    /// Fails when the number of layers exceeds `detail::kMaxConfigLayers`.
    void check_layer_count(const std::string& source) const {
        if (num_hidden_layers > detail::kMaxConfigLayers)
            fail(source, ": number of layers ", num_hidden_layers, " exceeds the limit of ", detail::kMaxConfigLayers);
    }

    /// Checks that every size is positive and in range, and the sizes agree with each other.
    void validate(const std::string& source) const {
        const auto positive = [&](index v, const char* what) {
            if (v <= 0) fail(source, ": ", what, " must be positive, got ", v);
            if (v > detail::kMaxConfigSize)
                fail(source, ": ", what, " ", v, " exceeds the limit of ", detail::kMaxConfigSize);
        };
        check_layer_count(source);
        positive(vocab_size, "vocab_size");
        positive(hidden_size, "hidden size");
        positive(num_hidden_layers, "number of layers");
        positive(state_size, "state size");
        positive(conv_kernel, "conv kernel");
        positive(expand, "expand");
        positive(intermediate_size, "intermediate size");
        positive(time_step_rank, "time step rank");
        if (!(layer_norm_epsilon > 0) || !std::isfinite(layer_norm_epsilon))
            fail(source, ": layer norm epsilon must be a positive number, got ", layer_norm_epsilon);
        if (is_hybrid()) {
            if (static_cast<index>(layer_kinds.size()) != num_hidden_layers)
                fail(source, ": ", layer_kinds.size(), " layer kinds given for ", num_hidden_layers, " layers");
            positive(num_attention_heads, "number of attention heads");
            positive(num_key_value_heads, "number of key/value heads (n_query_groups)");
            positive(head_dim, "head size");
            positive(mlp_size, "MLP size (intermediate_size)");
            if (num_attention_heads % num_key_value_heads != 0)
                fail(source, ": ", num_attention_heads, " attention heads cannot be shared by ", num_key_value_heads,
                     " key/value heads");
            if (rotary_dim < 0 || rotary_dim > head_dim || rotary_dim % 2 != 0)
                fail(source, ": RoPE covers ", rotary_dim, " features of a ", head_dim,
                     "-feature head; it must be an even number no larger than the head");
            if (!(rope_theta > 0) || !std::isfinite(rope_theta))
                fail(source, ": RoPE base must be a positive number, got ", rope_theta);
            if (sliding_window < 0) fail(source, ": sliding window must be >= 0, got ", sliding_window);
            // The fused projection's rows, (H + 2·G) · head size, are computed from these.
            const auto rows = checked_mul(num_attention_heads + 2 * num_key_value_heads, head_dim);
            if (!rows || *rows > detail::kMaxConfigSize)
                fail(source, ": attention projections of (", num_attention_heads, " + 2 x ", num_key_value_heads,
                     ") heads of size ", head_dim, " exceed the limit of ", detail::kMaxConfigSize, " rows");
        }
        if (family == ModelFamily::FalconMamba && (!(mixer_rms_eps > 0) || !std::isfinite(mixer_rms_eps)))
            fail(source, ": mixer_rms_eps must be a positive number, got ", mixer_rms_eps);
        if (family == ModelFamily::Mamba2) validate_mamba2(source);
        for (const auto& [id, name] : {std::pair{eos_token_id, "eos_token_id"}, std::pair{bos_token_id, "bos_token_id"},
                                       std::pair{pad_token_id, "pad_token_id"}})
            if (id && (*id < 0 || *id >= vocab_size))
                fail(source, ": ", name, " ", *id, " is outside the vocabulary [0, ", vocab_size, ")");
    }

    /// The Mamba-2 checks: heads, groups and chunk positive and agreeing with d_inner.
    void validate_mamba2(const std::string& source) const {
        const Mamba2Fields& m = mamba2;
        // Bounds that keep every size the mixer derives (in_proj's 2·d_inner + 2·G·N + H
        // rows, H·P·N floats of state per sequence) far from overflow; the checkpoint's
        // tensors then bound them by the bytes behind them.
        const auto positive = [&](index v, const char* what) {
            if (v <= 0 || v > (index{1} << 24)) fail(source, ": ", what, " must be in [1, 2^24], got ", v);
        };
        positive(state_size, "state size");
        positive(conv_kernel, "conv kernel");
        if (intermediate_size > (index{1} << 40))
            fail(source, ": intermediate size ", intermediate_size, " is larger than 2^40");
        positive(m.num_heads, "number of heads");
        positive(m.head_dim, "head dim");
        positive(m.n_groups, "number of groups");
        positive(m.chunk_size, "chunk size");
        if (m.ssm_size != m.num_heads * m.head_dim || m.ssm_size > intermediate_size)
            fail(source, ": ", m.num_heads, " heads of ", m.head_dim, " do not fit d_inner ", intermediate_size);
        if (m.num_heads % m.n_groups != 0)
            fail(source, ": ", m.num_heads, " heads cannot be split into ", m.n_groups, " groups");
        if (!(m.norm_epsilon > 0) || !std::isfinite(m.norm_epsilon))
            fail(source, ": the gated norm's epsilon must be a positive number, got ", m.norm_epsilon);
        if (!(m.dt_min >= 0) || !(m.dt_max >= m.dt_min))
            fail(source, ": time_step_limit [", m.dt_min, ", ", m.dt_max, "] must satisfy 0 <= min <= max");
    }
};

}  // namespace ssm
