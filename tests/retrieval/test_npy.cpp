// .npy files: our own round trip (bit-exact), files written by numpy (see
// tests/data/retrieval/generate_metrics_data.py: C and Fortran order, float32 and float64,
// 1-D, empty, format versions 2.0 and 3.0) against the formulas that made them, and every
// unsupported or broken file rejected with an ssm::Error naming it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ssm/retrieval/npy.hpp"
#include "test_util.hpp"

namespace test_npy {

namespace fs = std::filesystem;

namespace {

fs::path npy_dir() {
    return ssm::test::data_dir() / "retrieval" / "npy";
}

std::string read_bytes(const fs::path& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

/// Loading `path` fails with a message naming it and containing `what`.
void expect_rejected(const fs::path& path, const std::string& what) {
    const auto msg = ssm::test::error_of([&] { (void)ssm::load_npy(path); });
    INFO(msg);
    CHECK(contains(msg, path.string()));
    CHECK(contains(msg, what));
}

/// A version 1.0 .npy file with `header` (padded to 64 bytes) followed by `data`.
std::string npy_v1(std::string header, const std::string& data) {
    header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
    header.push_back('\n');
    std::string bytes = "\x93NUMPY";
    bytes += '\x01';
    bytes += '\x00';
    bytes += static_cast<char>(header.size() & 0xFF);
    bytes += static_cast<char>(header.size() >> 8);
    return bytes + header + data;
}

}  // namespace

TEST_CASE("save_npy then load_npy gives back the same floats, bit for bit", "[npy]") {
    const auto dir = ssm::test::scratch_dir("npy");
    const std::vector<std::pair<ssm::index, ssm::index>> shapes = {{3, 4}, {1, 1},    {0, 5},
                                                                   {5, 0}, {100, 33}, {1, 768}};
    std::uint64_t seed = 1;
    for (const auto& [rows, cols] : shapes) {
        ssm::Matrix m(rows, cols);
        const auto v =
            ssm::test::random_floats(static_cast<std::size_t>(rows * cols), -1e3f, 1e3f, seed++);
        std::copy(v.begin(), v.end(), m.data());
        const auto path = dir / "m.npy";
        ssm::save_npy(path, m);
        const ssm::Matrix back = ssm::load_npy(path);
        REQUIRE(back.rows() == rows);
        REQUIRE(back.cols() == cols);
        CHECK(std::equal(back.data(), back.data() + back.size(), m.data()));
    }
    // Special values survive too.
    ssm::Matrix special(1, 4);
    special << std::numeric_limits<float>::infinity(), -0.0f,
        std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max();
    ssm::save_npy(dir / "special.npy", special);
    const ssm::Matrix back = ssm::load_npy(dir / "special.npy");
    CHECK(std::memcmp(back.data(), special.data(), sizeof(float) * 4) == 0);

    // Nothing but the two files is left in the folder (the write went through a temp file).
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 2);
    fs::remove_all(dir);
}

TEST_CASE("save_npy writes numpy's own header: version 1.0, '<f4', C order, 64-byte aligned",
          "[npy]") {
    const auto dir = ssm::test::scratch_dir("npy-header");
    ssm::Matrix m(3, 4);
    for (ssm::index i = 0; i < 12; ++i) m.data()[i] = static_cast<float>(i) * 0.5f - 1.0f;
    ssm::save_npy(dir / "m.npy", m);
    const std::string ours = read_bytes(dir / "m.npy");
    // tests/data/retrieval/npy/f4_c.npy is numpy's np.save of the same array.
    CHECK(ours == read_bytes(npy_dir() / "f4_c.npy"));
    CHECK(ours.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
    CHECK(contains(ours, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
    CHECK((ours.size() - 12 * sizeof(float)) % 64 == 0);
    fs::remove_all(dir);
}

TEST_CASE("files written by numpy load with the values numpy wrote", "[npy]") {
    const auto d = npy_dir();
    SECTION("float32, C order, and the same array in format versions 2.0 and 3.0") {
        for (const char* name : {"f4_c.npy", "f4_v2.npy", "f4_v3.npy"}) {
            INFO(name);
            const ssm::Matrix m = ssm::load_npy(d / name);
            REQUIRE(m.rows() == 3);
            REQUIRE(m.cols() == 4);
            for (ssm::index i = 0; i < 3; ++i)
                for (ssm::index j = 0; j < 4; ++j)
                    CHECK(m(i, j) == static_cast<float>(i * 4 + j) * 0.5f - 1.0f);
        }
    }
    SECTION("float64, C order, converted to float") {
        const ssm::Matrix m = ssm::load_npy(d / "f8_c.npy");
        REQUIRE(m.rows() == 2);
        REQUIRE(m.cols() == 5);
        for (ssm::index i = 0; i < 2; ++i)
            for (ssm::index j = 0; j < 5; ++j)
                CHECK(m(i, j) == static_cast<float>(static_cast<double>(i * 5 + j) / 3.0));
    }
    SECTION("float32 and float64 in Fortran order") {
        const ssm::Matrix f4 = ssm::load_npy(d / "f4_fortran.npy");
        REQUIRE(f4.rows() == 4);
        REQUIRE(f4.cols() == 3);
        for (ssm::index i = 0; i < 4; ++i)
            for (ssm::index j = 0; j < 3; ++j)
                CHECK(f4(i, j) == static_cast<float>(10 * i + j) - 7.25f);
        const ssm::Matrix f8 = ssm::load_npy(d / "f8_fortran.npy");
        REQUIRE(f8.rows() == 3);
        REQUIRE(f8.cols() == 2);
        for (ssm::index i = 0; i < 3; ++i)
            for (ssm::index j = 0; j < 2; ++j)
                CHECK(f8(i, j) ==
                      static_cast<float>((static_cast<double>(i * 2 + j) + 0.1) * -2.0));
    }
    SECTION("a 1-D array is one column; an empty (0, 3) array has no rows") {
        const ssm::Matrix v = ssm::load_npy(d / "f4_1d.npy");
        REQUIRE(v.rows() == 5);
        REQUIRE(v.cols() == 1);
        for (ssm::index i = 0; i < 5; ++i) CHECK(v(i, 0) == static_cast<float>(i) * 1.5f);
        const ssm::Matrix e = ssm::load_npy(d / "f4_empty.npy");
        CHECK(e.rows() == 0);
        CHECK(e.cols() == 3);
    }
}

TEST_CASE("other dtypes, big-endian data, other ranks and truncated numpy files are rejected",
          "[npy]") {
    const auto d = npy_dir();
    expect_rejected(d / "i4.npy", "'<i4'");
    expect_rejected(d / "f4_big_endian.npy", "big-endian");
    expect_rejected(d / "f4_3d.npy", "3 dimensions");
    expect_rejected(d / "f4_0d.npy", "0 dimensions");
    expect_rejected(d / "f4_truncated.npy", "truncated");
}

TEST_CASE("broken files are errors naming the file and what is wrong", "[npy]") {
    const auto dir = ssm::test::scratch_dir("npy-bad");
    const auto path = dir / "bad.npy";
    const std::string good = read_bytes(npy_dir() / "f4_c.npy");
    const auto expect = [&](const std::string& bytes, const std::string& what) {
        ssm::test::write_bytes(path, bytes);
        expect_rejected(path, what);
    };
    expect_rejected(dir / "absent.npy", "no such file");
    expect_rejected(dir, "not a regular file");
    expect("", "too short");
    expect("\x93NUMPY\x01", "too short");
    expect("PK\x03\x04 this is a zip file", "bad magic");
    expect(std::string("\x93NUMPY\x04\x00", 8) + good.substr(8), "version 4.0");
    expect(good.substr(0, 40), "truncated");
    expect(good + "xy", "trailing bytes");
    expect(good.substr(0, good.size() - 4), "truncated");
    const std::string data(12 * 4, '\0');
    expect(npy_v1("{'descr': '<f4', 'shape': (3, 4), }", data), "'fortran_order'");
    expect(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'extra': 1, }", data),
           "'extra'");
    expect(npy_v1("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3, 4), }", data),
           "True or False");
    expect(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3, -4), }", data),
           "non-negative");
    expect(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4) ", data),
           "expected ',' or '}'");
    expect(
        npy_v1("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", data),
        "twice");
    expect(npy_v1("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", data),
           "structured");
    expect(npy_v1("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }", data), "'<f2'");
    expect(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
                  data),
           "too large");
    expect(npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } junk", data),
           "after the dict");
    // Regression: a Fortran-order (2^62, 0) array holds no bytes and passed every check,
    // then the copy into a row-major matrix looped 2^62 times over empty rows. An empty
    // array is returned without a copy, in either order.
    for (const char* order : {"True", "False"}) {
        for (const char* shape : {"(4611686018427387904, 0)", "(0, 4611686018427387904)"}) {
            ssm::test::write_bytes(path, npy_v1(std::string("{'descr': '<f8', 'fortran_order': ") + order +
                                                    ", 'shape': " + shape + ", }",
                                                ""));
            const ssm::Matrix e = ssm::load_npy(path);
            CHECK(e.size() == 0);
            CHECK(e.rows() + e.cols() == ssm::index{1} << 62);
        }
    }
    // A header that says 64 KiB but the file ends first.
    expect(std::string("\x93NUMPY\x01\x00\xff\xff", 10) + "{'descr'", "truncated");

    // The same handwritten header with correct data loads (the helper itself is right).
    std::string floats(12 * 4, '\0');
    for (int i = 0; i < 12; ++i) {
        const float v = static_cast<float>(i);
        std::memcpy(floats.data() + 4 * i, &v, 4);
    }
    ssm::test::write_bytes(
        path, npy_v1("{\"shape\": (4, 3), \"fortran_order\": True, \"descr\": \"<f4\"}", floats));
    const ssm::Matrix m = ssm::load_npy(path);
    REQUIRE(m.rows() == 4);
    CHECK(m(1, 0) == 1.0f);
    CHECK(m(0, 1) == 4.0f);
    fs::remove_all(dir);
}

}  // namespace test_npy
