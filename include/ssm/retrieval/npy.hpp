// ssm/retrieval/npy.hpp — read and write NumPy .npy files holding float matrices (document
// and query embeddings exchanged with Python).
//
// Format (numpy.lib.format, versions 1.0, 2.0 and 3.0): the magic bytes "\x93NUMPY", a
// major and a minor version byte, the header length as a little-endian uint16 (1.0) or
// uint32 (2.0, 3.0), then the header, a Python dict literal such as
// "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" padded with spaces and
// ended by '\n', then the array's bytes.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "ssm/core/atomic_file.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

static_assert(std::endian::native == std::endian::little,
              "ssm/retrieval/npy.hpp reads and writes little-endian data in place");

namespace detail {

inline constexpr std::string_view npy_magic = "\x93NUMPY";

/// What an .npy header says.
struct NpyHeader {
    std::string descr;           // e.g. "<f4"
    bool fortran_order = false;  // column-major data
    std::vector<index> shape;
};

/// Parses the Python dict literal of an .npy header: exactly the keys 'descr' (a string),
/// 'fortran_order' (True / False) and 'shape' (a tuple of non-negative integers).
class NpyHeaderParser {
public:
    NpyHeaderParser(std::string_view text, const std::string& file) : s_(text), file_(file) {}

    [[nodiscard]] NpyHeader parse() {
        NpyHeader h;
        bool seen_descr = false, seen_order = false, seen_shape = false;
        expect('{');
        while (true) {
            skip_space();
            if (peek() == '}') break;
            const std::string key = string_literal();
            expect(':');
            bool* seen = nullptr;
            if (key == "descr") {
                skip_space();
                if (peek() == '[')
                    bad("structured dtypes are not supported (expected '<f4' or '<f8')");
                h.descr = string_literal();
                seen = &seen_descr;
            } else if (key == "fortran_order") {
                h.fortran_order = boolean();
                seen = &seen_order;
            } else if (key == "shape") {
                h.shape = shape_tuple();
                seen = &seen_shape;
            } else {
                bad("unexpected key '" + key + "'");
            }
            if (*seen) bad("key '" + key + "' given twice");
            *seen = true;
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            if (peek() != '}') bad("expected ',' or '}'");
        }
        ++pos_;  // '}'
        skip_space();
        if (pos_ != s_.size()) bad("unexpected text after the dict");
        if (!seen_descr || !seen_order || !seen_shape) {
            bad("the dict must hold 'descr', 'fortran_order' and 'shape'");
        }
        return h;
    }

private:
    [[noreturn]] void bad(const std::string& what) const {
        fail(file_, ": bad .npy header (", what, ") in \"", s_, "\"");
    }
    [[nodiscard]] char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
    void skip_space() {
        while (pos_ < s_.size() &&
               (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
            ++pos_;
        }
    }
    void expect(char c) {
        skip_space();
        if (peek() != c) bad(std::string("expected '") + c + "'");
        ++pos_;
    }
    [[nodiscard]] std::string string_literal() {
        skip_space();
        const char quote = peek();
        if (quote != '\'' && quote != '"') bad("expected a quoted string");
        const std::size_t end = s_.find(quote, pos_ + 1);
        if (end == std::string_view::npos) bad("unterminated string");
        std::string value(s_.substr(pos_ + 1, end - pos_ - 1));
        pos_ = end + 1;
        return value;
    }
    [[nodiscard]] bool boolean() {
        skip_space();
        if (s_.substr(pos_).starts_with("True")) {
            pos_ += 4;
            return true;
        }
        if (s_.substr(pos_).starts_with("False")) {
            pos_ += 5;
            return false;
        }
        bad("'fortran_order' must be True or False");
    }
    [[nodiscard]] std::vector<index> shape_tuple() {
        std::vector<index> shape;
        expect('(');
        while (true) {
            skip_space();
            if (peek() == ')') break;
            if (peek() < '0' || peek() > '9')
                bad("'shape' must be a tuple of non-negative integers");
            index v = 0;
            while (peek() >= '0' && peek() <= '9') {
                const index digit = peek() - '0';
                if (v > (std::numeric_limits<index>::max() - digit) / 10)
                    bad("dimension too large");
                v = v * 10 + digit;
                ++pos_;
            }
            if (peek() == 'L') ++pos_;  // Python 2 long literal
            shape.push_back(v);
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            if (peek() != ')') bad("expected ',' or ')' in 'shape'");
        }
        ++pos_;  // ')'
        return shape;
    }

    std::string_view s_;
    const std::string& file_;
    std::size_t pos_ = 0;
};

/// Reads exactly `bytes` bytes into `dst`, or fails naming `file`.
inline void read_exactly(std::istream& in, char* dst, std::size_t bytes, const std::string& file) {
    if (bytes == 0) return;
    in.read(dst, static_cast<std::streamsize>(bytes));
    if (static_cast<std::size_t>(in.gcount()) != bytes) {
        fail(file, ": truncated: could read only ", in.gcount(), " of ", bytes, " bytes");
    }
}

}  // namespace detail

/// Writes `m` (rows, cols) as a version 1.0 .npy file: dtype '<f4', C order, shape
/// (rows, cols), the data starting on a 64-byte boundary as numpy writes it. The file
/// appears complete or not at all.
inline void save_npy(const std::filesystem::path& path, const Matrix& m) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                         std::to_string(m.rows()) + ", " + std::to_string(m.cols()) + "), }";
    const std::size_t preamble = 10;  // magic (6) + version (2) + uint16 header length (2)
    header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
    header.push_back('\n');
    const auto len = static_cast<std::uint16_t>(header.size());  // < 128: two integers
    const std::size_t bytes = static_cast<std::size_t>(m.size()) * sizeof(float);
    write_file_atomically(path, [&](std::ostream& out) {
        out.write(detail::npy_magic.data(), static_cast<std::streamsize>(detail::npy_magic.size()));
        const char version_and_length[4] = {1, 0, static_cast<char>(len & 0xFF),
                                            static_cast<char>(len >> 8)};
        out.write(version_and_length, 4);
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        if (bytes > 0) {
            out.write(reinterpret_cast<const char*>(m.data()), static_cast<std::streamsize>(bytes));
        }
    });
}

/// Reads a .npy file (format version 1.0, 2.0 or 3.0) holding a 2-D array of dtype '<f4'
/// or '<f8' (converted to float), in C or Fortran order, as a (rows, cols) matrix. A 1-D
/// array of n values gives an (n, 1) matrix. Anything else — another dtype, big-endian
/// data, 0-D or 3-D and higher arrays, a bad magic or header, data shorter or longer than
/// the shape says — throws `ssm::Error` naming the file.
[[nodiscard]] inline Matrix load_npy(const std::filesystem::path& path) {
    const std::string file = path.string();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        fail(file, std::filesystem::exists(path, ec) ? ": not a regular file" : ": no such file");
    }
    const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
    if (ec) fail(file, ": cannot read its size: ", ec.message());
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(file, ": cannot open");

    char preamble[12];
    if (file_size < 10) fail(file, ": not a .npy file (", file_size, " bytes, too short)");
    detail::read_exactly(in, preamble, 8, file);
    if (std::string_view(preamble, 6) != detail::npy_magic)
        fail(file, ": not a .npy file (bad magic)");
    const int major = static_cast<unsigned char>(preamble[6]);
    const int minor = static_cast<unsigned char>(preamble[7]);
    if (major < 1 || major > 3 || minor != 0) {
        fail(file, ": unsupported .npy format version ", major, ".", minor,
             " (expected 1.0, 2.0 or 3.0)");
    }
    const std::size_t length_bytes = major == 1 ? 2 : 4;
    detail::read_exactly(in, preamble + 8, length_bytes, file);
    std::uint64_t header_len = 0;
    for (std::size_t i = 0; i < length_bytes; ++i) {
        header_len |= std::uint64_t{static_cast<unsigned char>(preamble[8 + i])} << (8 * i);
    }
    const std::uint64_t data_offset = 8 + length_bytes + header_len;
    if (data_offset > file_size) {
        fail(file, ": truncated: the header is ", header_len, " bytes but the file holds ",
             file_size);
    }
    std::string text(static_cast<std::size_t>(header_len), '\0');
    detail::read_exactly(in, text.data(), text.size(), file);
    const detail::NpyHeader h = detail::NpyHeaderParser(text, file).parse();

    std::size_t item = 0;
    if (h.descr == "<f4") {
        item = 4;
    } else if (h.descr == "<f8") {
        item = 8;
    } else if (h.descr == ">f4" || h.descr == ">f8") {
        fail(file, ": dtype '", h.descr,
             "' is big-endian; only little-endian '<f4' and '<f8' are supported");
    } else {
        fail(file, ": unsupported dtype '", h.descr, "' (expected '<f4' or '<f8')");
    }
    if (h.shape.size() != 1 && h.shape.size() != 2) {
        fail(file, ": array of shape ", shape_string(h.shape), " has ", h.shape.size(),
             " dimensions; expected a matrix (2) or a vector (1)");
    }
    const index rows = h.shape[0];
    const index cols = h.shape.size() == 2 ? h.shape[1] : 1;
    const auto max_bytes = static_cast<std::uint64_t>(std::numeric_limits<std::streamsize>::max());
    if (cols > 0 &&
        static_cast<std::uint64_t>(rows) > max_bytes / item / static_cast<std::uint64_t>(cols)) {
        fail(file, ": shape ", shape_string(h.shape), " is too large");
    }
    const std::uint64_t data_bytes =
        static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) * item;
    const std::uint64_t present = file_size - data_offset;
    if (present < data_bytes) {
        fail(file, ": truncated: shape ", shape_string(h.shape), " of '", h.descr, "' needs ",
             data_bytes, " bytes of data, the file holds ", present);
    }
    if (present > data_bytes) {
        fail(file, ": shape ", shape_string(h.shape), " of '", h.descr, "' needs ", data_bytes,
             " bytes of data, the file holds ", present, " (trailing bytes)");
    }

    using ColMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using ColMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    const auto bytes = static_cast<std::size_t>(data_bytes);
    Matrix m(rows, cols);
    if (bytes == 0) return m;  // (n, 0) or (0, n): nothing to read, and nothing to reorder
    if (item == 4 && !h.fortran_order) {
        detail::read_exactly(in, reinterpret_cast<char*>(m.data()), bytes, file);
    } else if (item == 4) {
        ColMajorF f(rows, cols);
        detail::read_exactly(in, reinterpret_cast<char*>(f.data()), bytes, file);
        m = f;
    } else if (!h.fortran_order) {
        RowMajorD d(rows, cols);
        detail::read_exactly(in, reinterpret_cast<char*>(d.data()), bytes, file);
        m = d.cast<float>();
    } else {
        ColMajorD d(rows, cols);
        detail::read_exactly(in, reinterpret_cast<char*>(d.data()), bytes, file);
        m = d.cast<float>();
    }
    return m;
}

}  // namespace ssm
