// Fuzzes a sharded checkpoint's model.safetensors.index.json; the shards beside it are
// the bundled four of tests/data/mamba-tiny-bf16-sharded (copied in at start-up), so the
// index can name real files, missing files and files outside the folder.
#include "fuzz_util.hpp"
#include "ssm/io/checkpoint.hpp"

#ifndef SSM_FUZZ_DATA_DIR
#error "SSM_FUZZ_DATA_DIR (tests/data) must be defined"
#endif

namespace {
std::filesystem::path folder() {
    static const std::filesystem::path dir = [] {
        auto d = ssm::fuzz::scratch() / "sharded";
        std::filesystem::create_directories(d);
        const std::filesystem::path from = std::filesystem::path(SSM_FUZZ_DATA_DIR) / "mamba-tiny-bf16-sharded";
        for (const auto& e : std::filesystem::directory_iterator(from))
            if (e.path().extension() == ".safetensors" && e.path().filename() != "reference.safetensors")
                std::filesystem::copy_file(e.path(), d / e.path().filename(),
                                           std::filesystem::copy_options::overwrite_existing);
        return d;
    }();
    return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto dir = folder();
    ssm::fuzz::write_file(dir / "model.safetensors.index.json", {reinterpret_cast<const char*>(data), size});
    ssm::fuzz::refused_or_read([&] {
        const auto checkpoint = ssm::Checkpoint::open(dir);
        for (const auto& name : checkpoint.names()) {
            ssm::fuzz::refused_or_read([&] {
                const auto& info = checkpoint.info(name);
                ssm::fuzz::touch(checkpoint.load_f32(name, info.shape));
            });
        }
    });
    return 0;
}
