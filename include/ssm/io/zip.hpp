// ssm/io/zip.hpp — the table of contents of a ZIP archive whose entries are stored
// uncompressed (as `torch.save` writes them), with ZIP64 for archives past 4 GiB.
//
// Only what reading an entry in place needs: each entry's name, where its bytes start in
// the file and how many there are. Every offset and size is checked against the file; a
// compressed or encrypted entry is an error naming it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "ssm/core/error.hpp"

namespace ssm {

namespace detail {
/// The `n`-byte (n ≤ 8) little-endian unsigned integer at `b[at]`; the caller checks bounds.
[[nodiscard]] inline std::uint64_t load_le(std::span<const std::byte> b, std::size_t at, int n) noexcept {
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(b[at + static_cast<std::size_t>(i)]);
    return v;
}
}  // namespace detail

/// One stored entry: its bytes are `file[offset, offset + size)`.
struct ZipEntry {
    std::string name;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};

/// The entries of a ZIP archive held in memory (e.g. a mapped file), by name.
class ZipDirectory {
public:
    /// Reads the central directory of `bytes`; `file` names the archive in errors.
    [[nodiscard]] static ZipDirectory read(std::span<const std::byte> bytes, const std::string& file) {
        ZipDirectory z;
        z.bytes_ = bytes;
        z.file_ = file;
        z.parse();
        return z;
    }

    [[nodiscard]] const ZipEntry* find(std::string_view name) const {
        auto it = entries_.find(name);
        return it == entries_.end() ? nullptr : &it->second;
    }
    [[nodiscard]] const std::map<std::string, ZipEntry, std::less<>>& entries() const noexcept { return entries_; }

    /// The bytes of an entry.
    [[nodiscard]] std::span<const std::byte> data(const ZipEntry& e) const {
        return bytes_.subspan(static_cast<std::size_t>(e.offset), static_cast<std::size_t>(e.size));
    }

    /// True when `bytes` begin like a ZIP archive (a local file header).
    [[nodiscard]] static bool looks_like_zip(std::span<const std::byte> bytes) noexcept {
        return bytes.size() >= 4 && u32_at(bytes, 0) == kLocalHeader;
    }

private:
    static constexpr std::uint32_t kLocalHeader = 0x04034b50;
    static constexpr std::uint32_t kCentralHeader = 0x02014b50;
    static constexpr std::uint32_t kEnd = 0x06054b50;
    static constexpr std::uint32_t kEnd64Locator = 0x07064b50;
    static constexpr std::uint32_t kEnd64 = 0x06064b50;
    static constexpr std::size_t kEndSize = 22, kEnd64LocatorSize = 20, kEnd64Size = 56;
    static constexpr std::size_t kCentralSize = 46, kLocalSize = 30;

    static std::uint64_t le(std::span<const std::byte> b, std::size_t at, int n) noexcept {
        return detail::load_le(b, at, n);
    }
    static std::uint32_t u32_at(std::span<const std::byte> b, std::size_t at) noexcept {
        return static_cast<std::uint32_t>(le(b, at, 4));
    }

    template <class... Args>
    [[noreturn]] void broken(const Args&... what) const {
        fail(file_, ": not a readable ZIP archive: ", what...);
    }

    // The end-of-central-directory record: the last 22+ bytes, before a comment of up
    // to 65535 bytes.
    [[nodiscard]] std::size_t find_end() const {
        const std::size_t n = bytes_.size();
        if (n < kEndSize) broken("file is ", n, " bytes, too short for the end record");
        const std::size_t lowest = n - kEndSize > 65535 ? n - kEndSize - 65535 : 0;
        for (std::size_t at = n - kEndSize + 1; at-- > lowest;)
            if (u32_at(bytes_, at) == kEnd && at + kEndSize + le(bytes_, at + 20, 2) == n) return at;
        broken("no end-of-central-directory record (truncated?)");
    }

    void parse() {
        const std::size_t end = find_end();
        std::uint64_t count = le(bytes_, end + 10, 2);
        std::uint64_t dir_size = le(bytes_, end + 12, 4);
        std::uint64_t dir_offset = le(bytes_, end + 16, 4);
        if (le(bytes_, end + 4, 2) != 0 || le(bytes_, end + 6, 2) != 0) broken("archives split over several disks are not read");
        if (count == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) {
            if (end < kEnd64LocatorSize || u32_at(bytes_, end - kEnd64LocatorSize) != kEnd64Locator)
                broken("ZIP64 sizes are used but the ZIP64 locator is missing");
            const std::uint64_t at = le(bytes_, end - kEnd64LocatorSize + 8, 8);
            if (at > bytes_.size() || bytes_.size() - at < kEnd64Size || u32_at(bytes_, static_cast<std::size_t>(at)) != kEnd64)
                broken("the ZIP64 end record is not where its locator says (offset ", at, ")");
            const auto a = static_cast<std::size_t>(at);
            count = le(bytes_, a + 32, 8);
            dir_size = le(bytes_, a + 40, 8);
            dir_offset = le(bytes_, a + 48, 8);
        }
        if (dir_offset > bytes_.size() || dir_size > bytes_.size() - dir_offset)
            broken("central directory [", dir_offset, ", +", dir_size, ") lies outside the file");
        if (count > dir_size / kCentralSize) broken(count, " entries cannot fit a central directory of ", dir_size, " bytes");

        std::size_t at = static_cast<std::size_t>(dir_offset);
        const std::size_t dir_end = at + static_cast<std::size_t>(dir_size);
        for (std::uint64_t i = 0; i < count; ++i) {
            if (dir_end - at < kCentralSize || u32_at(bytes_, at) != kCentralHeader)
                broken("central directory entry ", i, " is damaged");
            const auto flags = le(bytes_, at + 8, 2);
            const auto method = le(bytes_, at + 10, 2);
            std::uint64_t packed = le(bytes_, at + 20, 4);
            std::uint64_t size = le(bytes_, at + 24, 4);
            const auto name_len = static_cast<std::size_t>(le(bytes_, at + 28, 2));
            const auto extra_len = static_cast<std::size_t>(le(bytes_, at + 30, 2));
            const auto comment_len = static_cast<std::size_t>(le(bytes_, at + 32, 2));
            std::uint64_t local = le(bytes_, at + 42, 4);
            if (dir_end - at - kCentralSize < name_len + extra_len + comment_len)
                broken("central directory entry ", i, " runs past the directory");
            std::string name(reinterpret_cast<const char*>(bytes_.data() + at + kCentralSize), name_len);
            read_zip64_extra(bytes_.subspan(at + kCentralSize + name_len, extra_len), name, size, packed, local);
            at += kCentralSize + name_len + extra_len + comment_len;

            if (flags & 1u) fail(file_, ": entry '", name, "' is encrypted");
            if (method != 0)
                fail(file_, ": entry '", name, "' is compressed (method ", method,
                     "); only stored entries are read, as torch.save writes them");
            if (packed != size) broken("entry '", name, "' is stored but its sizes differ (", packed, " vs ", size, ")");
            if (local > bytes_.size() || bytes_.size() - local < kLocalSize ||
                u32_at(bytes_, static_cast<std::size_t>(local)) != kLocalHeader)
                broken("entry '", name, "': no local header at offset ", local);
            const auto l = static_cast<std::size_t>(local);
            const std::uint64_t data = local + kLocalSize + le(bytes_, l + 26, 2) + le(bytes_, l + 28, 2);
            if (data > bytes_.size() || size > bytes_.size() - data)
                broken("entry '", name, "' (", size, " bytes at offset ", data, ") runs past the end of the file (",
                       bytes_.size(), " bytes): truncated?");
            ZipEntry e{name, data, size};
            if (!entries_.emplace(name, std::move(e)).second) broken("entry '", name, "' appears twice");
        }
    }

    // ZIP64 extended information (header 0x0001): the 64-bit values of the fields that
    // hold 0xffffffff, in the order size, packed size, local header offset.
    void read_zip64_extra(std::span<const std::byte> extra, const std::string& name, std::uint64_t& size,
                          std::uint64_t& packed, std::uint64_t& local) const {
        std::size_t at = 0;
        while (extra.size() - at >= 4) {
            const auto id = le(extra, at, 2);
            const auto len = static_cast<std::size_t>(le(extra, at + 2, 2));
            if (extra.size() - at - 4 < len) broken("entry '", name, "': extra field runs past its end");
            if (id == 0x0001) {
                std::size_t p = at + 4;
                for (std::uint64_t* field : {&size, &packed, &local}) {
                    if (*field != 0xffffffff) continue;
                    if (p + 8 > at + 4 + len) broken("entry '", name, "': ZIP64 field is too short");
                    *field = le(extra, p, 8);
                    p += 8;
                }
                return;
            }
            at += 4 + len;
        }
        if (size == 0xffffffff || packed == 0xffffffff || local == 0xffffffff)
            broken("entry '", name, "' needs ZIP64 sizes but has none");
    }

    std::span<const std::byte> bytes_;
    std::string file_;
    std::map<std::string, ZipEntry, std::less<>> entries_;
};

}  // namespace ssm
