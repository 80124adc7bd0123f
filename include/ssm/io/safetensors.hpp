// ssm/io/safetensors.hpp — read (mmap, strict validation, zero-copy F32) and write
// (atomic: temp file + rename) the safetensors format.
//
// Format: 8-byte little-endian header length n, n bytes of JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data region; offsets are relative to the data region.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/atomic_file.hpp"
#include "ssm/core/checked.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

/// Where one tensor lives in a safetensors file.
struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<index> shape;
    std::size_t begin = 0, end = 0;  // byte offsets within the data region
};

namespace detail {

/// A read-only memory mapping of a whole file, unmapped when the last owner goes.
class MappedFile {
public:
    explicit MappedFile(const std::filesystem::path& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail(path.string(), ": cannot open: ", std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            fail(path.string(), ": cannot stat: ", std::strerror(e));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            fail(path.string(), ": not a regular file");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                fail(path.string(), ": cannot map: ", std::strerror(e));
            }
            data_ = static_cast<const std::byte*>(p);
        }
        ::close(fd);
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile() {
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    }
    [[nodiscard]] const std::byte* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace detail

/// A validated, memory-mapped safetensors file. Cheap to copy (shares the mapping);
/// tensors loaded from it keep the mapping alive.
class SafetensorsFile {
public:
    static constexpr std::size_t kMaxHeaderBytes = 100u << 20;

    /// Maps and validates `path`; every problem is an `ssm::Error` starting with the path.
    [[nodiscard]] static SafetensorsFile open(const std::filesystem::path& path) {
        SafetensorsFile f;
        f.path_ = path;
        f.map_ = std::make_shared<detail::MappedFile>(path);
        f.parse();
        return f;
    }

    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
    [[nodiscard]] bool contains(std::string_view name) const { return find(name) != nullptr; }

    [[nodiscard]] const TensorInfo& info(std::string_view name) const {
        const TensorInfo* t = find(name);
        if (!t) fail(path_.string(), ": no tensor '", name, "'");
        return *t;
    }

    /// Tensor names, sorted.
    [[nodiscard]] std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(tensors_.size());
        for (const auto& [name, info] : tensors_) out.push_back(name);
        return out;
    }

    [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

    /// The raw bytes of a tensor (little-endian, its stored dtype).
    [[nodiscard]] std::span<const std::byte> bytes(std::string_view name) const {
        const TensorInfo& t = info(name);
        return {map_->data() + data_start_ + t.begin, t.end - t.begin};
    }

    /// The tensor as float32: a zero-copy view for aligned F32 data, otherwise a
    /// converted copy (F16, BF16, F64, I64, I32).
    [[nodiscard]] Tensor load_f32(std::string_view name) const {
        const TensorInfo& t = info(name);
        const auto raw = bytes(name);
        if (t.dtype == DType::F32 && reinterpret_cast<std::uintptr_t>(raw.data()) % alignof(float) == 0)
            return Tensor::view(reinterpret_cast<const float*>(raw.data()), t.shape, map_);
        Tensor out = Tensor::zeros(t.shape);
        if (!convert_to_f32(t.dtype, raw.data(), out.mutable_data(), static_cast<std::size_t>(out.size())))
            fail(path_.string(), ": tensor '", name, "' has dtype ", dtype_name(t.dtype),
                 ", which has no float32 reading");
        return out;
    }

    /// An integer tensor (I64 or I32) as int64 values.
    [[nodiscard]] std::vector<std::int64_t> load_i64(std::string_view name) const {
        const TensorInfo& t = info(name);
        const auto raw = bytes(name);
        const std::size_t n = raw.size() / dtype_size(t.dtype);
        std::vector<std::int64_t> out(n);
        if (t.dtype == DType::I64) {
            std::memcpy(out.data(), raw.data(), raw.size());
        } else if (t.dtype == DType::I32) {
            for (std::size_t i = 0; i < n; ++i) {
                std::int32_t v;
                std::memcpy(&v, raw.data() + 4 * i, 4);
                out[i] = v;
            }
        } else {
            fail(path_.string(), ": tensor '", name, "' has dtype ", dtype_name(t.dtype),
                 ", expected I64 or I32");
        }
        return out;
    }

private:
    [[nodiscard]] const TensorInfo* find(std::string_view name) const {
        auto it = tensors_.find(std::string(name));
        return it == tensors_.end() ? nullptr : &it->second;
    }

    void parse() {
        const std::string file = path_.string();
        const std::size_t size = map_->size();
        if (size < 8) fail(file, ": file is ", size, " bytes, too short for a safetensors header");
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(map_->data()[i]);
        if (n > kMaxHeaderBytes) fail(file, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
        if (n > size - 8)
            fail(file, ": header length ", n, " runs past the end of the file (", size, " bytes): truncated?");
        data_start_ = 8 + static_cast<std::size_t>(n);
        const std::size_t data_size = size - data_start_;
        const char* text = reinterpret_cast<const char*>(map_->data() + 8);
        nlohmann::json header;
        try {
            header = nlohmann::json::parse(text, text + n);
        } catch (const nlohmann::json::exception& e) {
            fail(file, ": header is not valid JSON: ", e.what());
        }
        if (!header.is_object()) fail(file, ": header is not a JSON object");

        std::vector<const TensorInfo*> by_offset;
        for (auto it = header.begin(); it != header.end(); ++it) {
            const std::string& name = it.key();
            const nlohmann::json& v = it.value();
            if (name == "__metadata__") {
                if (!v.is_object()) fail(file, ": __metadata__ is not an object");
                for (auto m = v.begin(); m != v.end(); ++m) {
                    if (!m.value().is_string()) fail(file, ": __metadata__ entry '", m.key(), "' is not a string");
                    metadata_[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            const auto where = [&](auto&&... what) { fail(file, ": tensor '", name, "': ", what...); };
            if (!v.is_object()) where("entry is not an object");
            if (!v.contains("dtype") || !v["dtype"].is_string()) where("missing or non-string dtype");
            if (!v.contains("shape") || !v["shape"].is_array()) where("missing or non-array shape");
            if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
                where("missing data_offsets [begin, end]");
            TensorInfo t;
            t.name = name;
            const auto dt = parse_dtype(v["dtype"].get<std::string>());
            if (!dt) where("unknown dtype '", v["dtype"].get<std::string>(), "'");
            t.dtype = *dt;
            for (const auto& d : v["shape"]) {
                if (!d.is_number_integer() || d.get<std::int64_t>() < 0) where("shape has a non-integer or negative dimension");
                t.shape.push_back(static_cast<index>(d.get<std::int64_t>()));
            }
            // Every dimension counts, those after a zero too, and the byte size may not wrap.
            const auto count = checked_elements(std::span<const index>(t.shape));
            const auto needed = count ? checked_bytes(*count, dtype_size(t.dtype)) : std::nullopt;
            if (!needed) where("shape ", shape_string(t.shape), " of ", dtype_name(t.dtype), " is too large");
            for (const auto& o : v["data_offsets"])
                if (!o.is_number_integer() || o.get<std::int64_t>() < 0) where("data_offsets are not non-negative integers");
            const auto begin = v["data_offsets"][0].get<std::uint64_t>();
            const auto end = v["data_offsets"][1].get<std::uint64_t>();
            if (begin > end) where("data_offsets begin ", begin, " > end ", end);
            if (end > data_size)
                where("data_offsets [", begin, ", ", end, "] lie outside the data region of ", data_size, " bytes");
            if (end - begin != *needed)
                where("holds ", end - begin, " bytes, but shape ", shape_string(t.shape), " of ",
                      dtype_name(t.dtype), " needs ", *needed);
            t.begin = static_cast<std::size_t>(begin);
            t.end = static_cast<std::size_t>(end);
            auto [pos, fresh] = tensors_.emplace(name, std::move(t));
            if (!fresh) where("appears twice");
            if (end > begin) by_offset.push_back(&pos->second);  // empty tensors occupy no bytes
        }
        std::sort(by_offset.begin(), by_offset.end(),
                  [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
        for (std::size_t i = 1; i < by_offset.size(); ++i)
            if (by_offset[i]->begin < by_offset[i - 1]->end)
                fail(file, ": tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name,
                     "' overlap in the data region");
    }

    std::filesystem::path path_;
    std::shared_ptr<detail::MappedFile> map_;
    std::size_t data_start_ = 0;
    std::map<std::string, TensorInfo, std::less<>> tensors_;
    std::map<std::string, std::string> metadata_;
};

/// One tensor to write: its bytes must be product(shape) × dtype size.
struct TensorToWrite {
    std::string name;
    DType dtype = DType::F32;
    std::vector<index> shape;
    std::span<const std::byte> data;
};

/// A float32 tensor to write, viewing `values` (which must outlive the write).
[[nodiscard]] inline TensorToWrite f32_tensor(std::string name, std::vector<index> shape,
                                              std::span<const float> values) {
    return {std::move(name), DType::F32, std::move(shape), std::as_bytes(values)};
}

/// Writes a safetensors file atomically: everything goes to a temporary file in the
/// same folder, which is renamed onto `path` only once complete. On failure nothing
/// is left under either name and an `ssm::Error` names the path.
inline void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    const std::string file = path.string();
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::size_t offset = 0;
    std::map<std::string, int> seen;
    for (const auto& t : tensors) {
        if (seen[t.name]++) fail(file, ": tensor '", t.name, "' given twice");
        if (t.name == "__metadata__") fail(file, ": '__metadata__' is not a tensor name");
        std::size_t count = 1;
        for (index d : t.shape) {
            if (d < 0) fail(file, ": tensor '", t.name, "' has a negative dimension");
            count *= static_cast<std::size_t>(d);
        }
        if (count * dtype_size(t.dtype) != t.data.size())
            fail(file, ": tensor '", t.name, "' has ", t.data.size(), " bytes, shape ",
                 shape_string(t.shape), " of ", dtype_name(t.dtype), " needs ", count * dtype_size(t.dtype));
        header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                          {"shape", t.shape},
                          {"data_offsets", {offset, offset + t.data.size()}}};
        offset += t.data.size();
    }
    std::string text = header.dump();
    text.append((8 - (text.size() % 8)) % 8, ' ');  // data starts 8-byte aligned

    write_file_atomically(path, [&](std::ostream& out) {
        unsigned char len[8];
        const std::uint64_t n = text.size();
        for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
        out.write(reinterpret_cast<const char*>(len), 8);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        for (const auto& t : tensors)
            out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
    });
}

}  // namespace ssm
