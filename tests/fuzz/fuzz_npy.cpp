// Fuzzes the .npy reader (header dict, dtypes, byte order, Fortran order, versions 1-3).
#include "fuzz_util.hpp"
#include "ssm/retrieval/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("input.npy", data, size);
    ssm::fuzz::refused_or_read([&] {
        const auto m = ssm::load_npy(path);
        if (m.size() > 0) {
            volatile float sink = m(0, 0);
            sink = m(m.rows() - 1, m.cols() - 1);
            (void)sink;
        }
    });
    return 0;
}
