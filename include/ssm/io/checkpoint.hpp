// ssm/io/checkpoint.hpp — a checkpoint's tensors across one or many files (safetensors or
// PyTorch `pytorch_model.bin`), looked up by canonical (HuggingFace) name with the aliases
// other exports use.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"
#include "ssm/core/path.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/io/torch_file.hpp"

namespace ssm {

namespace detail {

/// Fails unless `path` is a regular file (or a link to one): a folder, named pipe or
/// device is refused before anything opens it.
inline void require_regular_file(const std::filesystem::path& path) {
    const PathKind kind = path_kind(path);
    if (kind == PathKind::file) return;
    fail(path.string(), kind == PathKind::missing ? ": no such file" : ": not a regular file");
}

/// The lit-gpt names (SAMBA's training code) of a canonical name, an empty list when none:
/// `transformer.wte`, `transformer.ln_f`, `transformer.h.{i}.{norm_1, attn, norm_2, mlp}`,
/// with the fused attention projections `attn.attn` / `attn.proj` and the SwiGLU weights
/// `mlp.swiglu.w1/w2/w3` (or `mlp.fc_1/fc_2/proj`).
[[nodiscard]] inline std::vector<std::string> lit_gpt_names(const std::string& c) {
    if (c == "backbone.embeddings.weight") return {"transformer.wte.weight"};
    if (c == "backbone.norm_f.weight") return {"transformer.ln_f.weight"};
    const std::string layers = "backbone.layers.";
    if (c.rfind(layers, 0) != 0) return {};
    const std::size_t dot = c.find('.', layers.size());
    if (dot == std::string::npos) return {};
    const std::string block = "transformer.h." + c.substr(layers.size(), dot - layers.size()) + ".";
    const std::string rest = c.substr(dot + 1);
    const auto starts = [&](std::string_view p) { return rest.rfind(p, 0) == 0; };
    if (rest == "norm.weight") return {block + "norm_1.weight"};
    if (rest == "mlp_norm.weight") return {block + "norm_2.weight"};
    if (rest == "mixer.qkv_proj.weight") return {block + "attn.attn.weight"};
    if (rest == "mixer.o_proj.weight") return {block + "attn.proj.weight"};
    if (starts("mixer.")) return {block + "attn." + rest.substr(6)};
    if (rest == "mlp.gate_proj.weight") return {block + "mlp.swiglu.w1.weight", block + "mlp.fc_1.weight"};
    if (rest == "mlp.up_proj.weight") return {block + "mlp.swiglu.w2.weight", block + "mlp.fc_2.weight"};
    if (rest == "mlp.down_proj.weight") return {block + "mlp.swiglu.w3.weight", block + "mlp.proj.weight"};
    return {};
}

}  // namespace detail

/// The names a canonical tensor name may be stored under, canonical first:
/// original state-spaces checkpoints say `backbone.embedding.weight`; some exports drop
/// the `backbone.` prefix or use `model.` instead; SAMBA checkpoints use lit-gpt names.
[[nodiscard]] inline std::vector<std::string> checkpoint_aliases(std::string_view canonical) {
    std::vector<std::string> names{std::string(canonical)};
    const std::string c(canonical);
    if (c == "backbone.embeddings.weight") names.emplace_back("backbone.embedding.weight");
    const std::string prefix = "backbone.";
    if (c.rfind(prefix, 0) == 0) {
        const std::size_t n = names.size();
        for (std::size_t i = 0; i < n; ++i) {
            const std::string r = names[i].substr(prefix.size());
            names.push_back(r);
            names.push_back("model." + r);
        }
    }
    for (auto& n : detail::lit_gpt_names(c)) names.push_back(std::move(n));
    return names;
}

/// One file of tensors, safetensors or PyTorch, told apart by its first bytes (and, for
/// a file that is neither, by its extension, so the error speaks of the intended format).
class TensorFile {
public:
    [[nodiscard]] static TensorFile open(const std::filesystem::path& path) {
        detail::require_regular_file(path);  // before any read: opening a named pipe would block
        std::byte head[16]{};
        std::size_t n = 0;
        if (std::ifstream in{path, std::ios::binary}) {
            in.read(reinterpret_cast<char*>(head), sizeof head);
            n = static_cast<std::size_t>(in.gcount());
        }
        const auto ext = path.extension();
        const bool torch_name = ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt";
        if (TorchFile::looks_like_torch({head, n}) || torch_name)  // the file exists: checked above
            return TensorFile(TorchFile::open(path));
        return TensorFile(SafetensorsFile::open(path));
    }

    [[nodiscard]] const std::filesystem::path& path() const {
        return std::visit([](const auto& f) -> const std::filesystem::path& { return f.path(); }, f_);
    }
    [[nodiscard]] bool contains(std::string_view name) const {
        return std::visit([&](const auto& f) { return f.contains(name); }, f_);
    }
    [[nodiscard]] const TensorInfo& info(std::string_view name) const {
        return std::visit([&](const auto& f) -> const TensorInfo& { return f.info(name); }, f_);
    }
    [[nodiscard]] std::vector<std::string> names() const {
        return std::visit([](const auto& f) { return f.names(); }, f_);
    }
    [[nodiscard]] Tensor load_f32(std::string_view name) const {
        return std::visit([&](const auto& f) { return f.load_f32(name); }, f_);
    }

private:
    explicit TensorFile(SafetensorsFile f) : f_(std::move(f)) {}
    explicit TensorFile(TorchFile f) : f_(std::move(f)) {}
    std::variant<SafetensorsFile, TorchFile> f_;
};

/// All tensors of a checkpoint: a folder with `model.safetensors` or `pytorch_model.bin`, a
/// folder with shards listed in `model.safetensors.index.json` or
/// `pytorch_model.bin.index.json`, a lit-gpt folder with `lit_model.pth`, or a single file
/// of either kind. A folder holding both kinds is read from its safetensors.
class Checkpoint {
public:
    [[nodiscard]] static Checkpoint open(const std::filesystem::path& dir_or_file) {
        Checkpoint c;
        c.source_ = dir_or_file;
        const PathKind kind = path_kind(dir_or_file);
        if (kind == PathKind::missing) fail(dir_or_file.string(), ": no such file or folder");
        if (kind != PathKind::folder) {
            c.add_file(dir_or_file, std::nullopt);
            return c;
        }
        for (const char* stem : {"model.safetensors", "pytorch_model.bin"}) {
            const auto index_file = dir_or_file / (std::string(stem) + ".index.json");
            if (path_exists(index_file)) {
                c.open_index(index_file);
                return c;
            }
            if (path_exists(dir_or_file / stem)) {
                c.add_file(dir_or_file / stem, std::nullopt);
                return c;
            }
        }
        if (path_exists(dir_or_file / "lit_model.pth")) {  // lit-gpt (SAMBA) checkpoints
            c.add_file(dir_or_file / "lit_model.pth", std::nullopt);
            return c;
        }
        fail(dir_or_file.string(),
             ": no model.safetensors, pytorch_model.bin, their .index.json or lit_model.pth in the folder");
    }

    /// Adds the tensors of another file, safetensors or PyTorch (e.g. a head trained apart
    /// from the backbone). A name the checkpoint already holds is an error naming both files.
    void add_extra(const std::filesystem::path& file) {
        if (!path_exists(file)) fail(file.string(), ": no such file");
        auto extra = TensorFile::open(file);
        const auto names = extra.names();
        for (const auto& n : names)
            if (auto it = where_.find(n); it != where_.end())
                fail(file.string(), ": tensor '", n, "' is already in ", files_[it->second].path().string());
        files_.push_back(std::move(extra));
        for (const auto& n : names) where_[n] = files_.size() - 1;
    }

    /// The folder or file this checkpoint was opened from.
    [[nodiscard]] const std::filesystem::path& source() const noexcept { return source_; }

    /// The stored name for `canonical` (trying its aliases), if present.
    [[nodiscard]] std::optional<std::string> resolve(std::string_view canonical) const {
        for (const auto& n : checkpoint_aliases(canonical))
            if (where_.count(n)) return n;
        return std::nullopt;
    }
    [[nodiscard]] bool contains(std::string_view canonical) const { return resolve(canonical).has_value(); }

    /// Stored tensor names, sorted.
    [[nodiscard]] std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& [n, f] : where_) out.push_back(n);
        return out;
    }

    [[nodiscard]] const TensorInfo& info(std::string_view canonical) const { return file(canonical).info(stored(canonical)); }
    [[nodiscard]] const std::filesystem::path& file_of(std::string_view canonical) const {
        return file(canonical).path();
    }

    /// Loads a tensor as float32 and checks its shape: a mismatch or a missing tensor is
    /// an `ssm::Error` naming the file (or folder), the tensor and the expected shape.
    [[nodiscard]] Tensor load_f32(std::string_view canonical, std::span<const index> expected_shape) const {
        const std::string name = stored(canonical);
        const TensorFile& f = files_[where_.at(name)];
        const TensorInfo& t = f.info(name);
        if (!std::equal(t.shape.begin(), t.shape.end(), expected_shape.begin(), expected_shape.end()))
            fail(f.path().string(), ": tensor '", name, "': expected shape ", shape_string(expected_shape),
                 " (from config.json), found ", shape_string(t.shape));
        return f.load_f32(name);
    }

private:
    [[nodiscard]] std::string stored(std::string_view canonical) const {
        if (auto n = resolve(canonical)) return *n;
        std::string tried;
        for (const auto& n : checkpoint_aliases(canonical)) tried += (tried.empty() ? "" : ", ") + n;
        fail(source_.string(), ": missing tensor '", canonical, "' (looked for: ", tried, ")");
    }
    [[nodiscard]] const TensorFile& file(std::string_view canonical) const {
        return files_[where_.at(stored(canonical))];
    }

    void add_file(const std::filesystem::path& path, const std::optional<std::vector<std::string>>& expected) {
        files_.push_back(TensorFile::open(path));
        const std::size_t k = files_.size() - 1;
        if (expected) {
            for (const auto& n : *expected) {
                if (!files_[k].contains(n))
                    fail(path.string(), ": tensor '", n, "' is listed for this shard in the index but is not in it");
                where_[n] = k;
            }
        } else {
            for (const auto& n : files_[k].names()) where_[n] = k;
        }
    }

    void open_index(const std::filesystem::path& index_file) {
        const std::string src = index_file.string();
        detail::require_regular_file(index_file);
        std::ifstream in(index_file);
        if (!in) fail(src, ": cannot open");
        std::stringstream buffer;
        buffer << in.rdbuf();
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(buffer.str());
        } catch (const nlohmann::json::exception& e) {
            fail(src, ": invalid JSON: ", e.what());
        }
        if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
            fail(src, ": no 'weight_map' object");
        std::map<std::string, std::vector<std::string>> by_shard;
        for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it) {
            if (!it.value().is_string()) fail(src, ": weight_map entry '", it.key(), "' is not a file name");
            const auto shard = it.value().get<std::string>();
            if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
                fail(src, ": weight_map entry '", it.key(), "' names '", shard, "', not a file in the folder");
            by_shard[shard].push_back(it.key());
        }
        if (by_shard.empty()) fail(src, ": weight_map is empty");
        for (const auto& [shard, names] : by_shard) {
            const auto path = index_file.parent_path() / shard;
            std::error_code ec;  // a name the file system refuses (too long, ...) is an error, not a throw
            if (!std::filesystem::exists(path, ec))
                fail(src, ": shard '", shard, "' (holding '", names.front(), "') does not exist",
                     ec ? " (" + ec.message() + ")" : std::string());
            add_file(path, names);
        }
    }

    std::filesystem::path source_;
    std::vector<TensorFile> files_;
    std::map<std::string, std::size_t, std::less<>> where_;  // stored name → index in files_
};

}  // namespace ssm
