// Fuzzes ssm-train's Tevatron JSON Lines reader ({"query_id", "query",
// "positive_passages": [...], "negative_passages": [...]} a line) and the seeded draw of
// each group's positive and negatives from what it read.
#include "fuzz_util.hpp"
#include "ssm/train/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("train.jsonl", data, size);
    ssm::fuzz::refused_or_read([&] {
        const auto groups = ssm::train::read_tevatron_jsonl(path);
        for (std::size_t i = 0; i < groups.size(); ++i) {
            const auto draw = ssm::train::draw_group(groups[i], 4, 7, 0, static_cast<ssm::index>(i));
            std::size_t bytes = draw.positive->text.size();
            for (const auto* n : draw.negatives) bytes += n->text.size() + n->title.size();
            (void)bytes;
        }
    });
    return 0;
}
