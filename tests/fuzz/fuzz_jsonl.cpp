// Fuzzes the JSON Lines reader (every line an object, errors as FILE:LINE).
#include "fuzz_util.hpp"
#include "ssm/retrieval/jsonl.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("records.jsonl", data, size);
    ssm::fuzz::refused_or_read([&] {
        std::size_t keys = 0;
        ssm::for_each_jsonl(path, [&](const nlohmann::json& object, std::int64_t) { keys += object.size(); });
    });
    return 0;
}
