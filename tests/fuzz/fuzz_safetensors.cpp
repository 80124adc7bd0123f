// Fuzzes one safetensors file: header, offsets, dtypes, and loading every tensor.
#include "fuzz_util.hpp"
#include "ssm/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("model.safetensors", data, size);
    ssm::fuzz::refused_or_read([&] {
        const auto file = ssm::SafetensorsFile::open(path);
        (void)file.metadata();
        for (const auto& name : file.names()) {
            const auto& info = file.info(name);
            ssm::fuzz::refused_or_read([&] { (void)file.bytes(name); });
            ssm::fuzz::refused_or_read([&] { ssm::fuzz::touch(file.load_f32(name)); });
            if (info.dtype == ssm::DType::I64 || info.dtype == ssm::DType::I32)
                ssm::fuzz::refused_or_read([&] { (void)file.load_i64(name); });
        }
    });
    return 0;
}
