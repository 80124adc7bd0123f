// Fuzzes config.json in every form the library reads: HF transformers (MambaConfig),
// the original mamba_ssm (d_model, ssm_cfg) and lit-gpt / SAMBA (n_embd, ...).
#include "fuzz_util.hpp"
#include "ssm/io/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("config.json", data, size);
    ssm::fuzz::refused_or_read([&] {
        const auto config = ssm::MambaConfig::load(path);
        config.validate(path.string());
    });
    return 0;
}
