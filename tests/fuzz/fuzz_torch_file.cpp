// Fuzzes a PyTorch checkpoint (torch.save's ZIP format, ZIP64, deflated entries and the
// legacy format): the ZIP directory, the unpickler and loading every tensor it describes.
#include "fuzz_util.hpp"
#include "ssm/io/torch_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("pytorch_model.bin", data, size);
    ssm::fuzz::refused_or_read([&] {
        const auto file = ssm::TorchFile::open(path);
        for (const auto& name : file.names()) {
            ssm::fuzz::refused_or_read([&] {
                (void)file.info(name);
                ssm::fuzz::touch(file.load_f32(name));
            });
        }
    });
    return 0;
}
