// ssm/io/checkpoint.hpp — a checkpoint's tensors across one or many safetensors files,
// looked up by canonical (HuggingFace) name with the aliases other exports use.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/io/safetensors.hpp"

namespace ssm {

/// The names a canonical tensor name may be stored under, canonical first:
/// original state-spaces checkpoints say `backbone.embedding.weight`; some exports drop
/// the `backbone.` prefix or use `model.` instead.
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
    return names;
}

/// All tensors of a checkpoint: a folder with `model.safetensors`, a folder with shards
/// listed in `model.safetensors.index.json`, or a single `.safetensors` file.
class Checkpoint {
public:
    [[nodiscard]] static Checkpoint open(const std::filesystem::path& dir_or_file) {
        namespace fs = std::filesystem;
        Checkpoint c;
        c.source_ = dir_or_file;
        if (!fs::exists(dir_or_file)) fail(dir_or_file.string(), ": no such file or folder");
        if (!fs::is_directory(dir_or_file)) {
            c.add_file(dir_or_file, std::nullopt);
            return c;
        }
        const auto index_file = dir_or_file / "model.safetensors.index.json";
        const auto single = dir_or_file / "model.safetensors";
        if (fs::exists(index_file)) {
            c.open_index(index_file);
        } else if (fs::exists(single)) {
            c.add_file(single, std::nullopt);
        } else if (fs::exists(dir_or_file / "pytorch_model.bin")) {
            fail(dir_or_file.string(), ": holds pytorch_model.bin, which is not read; convert it to "
                 "model.safetensors (e.g. with the safetensors package) first");
        } else {
            fail(dir_or_file.string(), ": no model.safetensors or model.safetensors.index.json in the folder");
        }
        return c;
    }

    /// Adds the tensors of another safetensors file (e.g. a head trained apart from the
    /// backbone). A name the checkpoint already holds is an error naming both files.
    void add_extra(const std::filesystem::path& file) {
        auto extra = SafetensorsFile::open(file);
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
        const SafetensorsFile& f = files_[where_.at(name)];
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
    [[nodiscard]] const SafetensorsFile& file(std::string_view canonical) const {
        return files_[where_.at(stored(canonical))];
    }

    void add_file(const std::filesystem::path& path, const std::optional<std::vector<std::string>>& expected) {
        files_.push_back(SafetensorsFile::open(path));
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
            if (!std::filesystem::exists(path))
                fail(src, ": shard '", shard, "' (holding '", names.front(), "') does not exist");
            add_file(path, names);
        }
    }

    std::filesystem::path source_;
    std::vector<SafetensorsFile> files_;
    std::map<std::string, std::size_t, std::less<>> where_;  // stored name → index in files_
};

}  // namespace ssm
