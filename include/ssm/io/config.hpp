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
        MambaConfig c;
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
            if (ssm_cfg.contains("layer") && ssm_cfg.at("layer") != "Mamba1")
                fail(source, ": ssm_cfg.layer ", detail::json_excerpt(ssm_cfg.at("layer")), " is not supported (Mamba1 only)");
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

    /// Reads `file_or_dir` (a folder means its config.json, or lit_config.json).
    [[nodiscard]] static MambaConfig load(const std::filesystem::path& file_or_dir) {
        auto file = std::filesystem::is_directory(file_or_dir) ? file_or_dir / "config.json" : file_or_dir;
        if (std::filesystem::is_directory(file_or_dir) && !std::filesystem::exists(file) &&
            std::filesystem::exists(file_or_dir / "lit_config.json"))
            file = file_or_dir / "lit_config.json";
        if (!std::filesystem::exists(file_or_dir)) fail(file_or_dir.string(), ": no such file or folder");
        std::ifstream in(file);
        if (!in) fail(file.string(), ": cannot open (a checkpoint folder needs a config.json)");
        std::stringstream buffer;
        buffer << in.rdbuf();
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(buffer.str());
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
        for (const auto& [id, name] : {std::pair{eos_token_id, "eos_token_id"}, std::pair{bos_token_id, "bos_token_id"},
                                       std::pair{pad_token_id, "pad_token_id"}})
            if (id && (*id < 0 || *id >= vocab_size))
                fail(source, ": ", name, " ", *id, " is outside the vocabulary [0, ", vocab_size, ")");
    }
};

}  // namespace ssm
