// Generation through the recurrent state: greedy output equals transformers'
// `generate.output` exactly for the token and the byte model; EOS, stop strings,
// callbacks and limits stop it where they should.
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_generate {

using ssm::test::ids_of;

TEST_CASE("greedy generate() reproduces generate.output exactly", "[generate]") {
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny", "mamba-tiny-bf16-sharded"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const auto prompt = ids_of(ref, "generate.prompt");
        const auto expected = ids_of(ref, "generate.output");
        ssm::with_mamba_lm(dir, [&](const auto& model) {
            ssm::GenerateOptions o;
            o.max_new_tokens = static_cast<ssm::index>(expected.size() - prompt.size());
            o.sampling.greedy = true;  // EOS stopping off, as the reference was made
            const auto g = ssm::generate(model, prompt, o);
            CHECK(g.reason == ssm::StopReason::MaxNewTokens);
            const std::vector<std::int32_t> tail(expected.begin() + static_cast<std::ptrdiff_t>(prompt.size()),
                                                 expected.end());
            CHECK(g.tokens == tail);
            return 0;
        });
    }
}

TEST_CASE("generate() stops at EOS, a stop string, the caller, or the limit", "[generate]") {
    const auto dir = ssm::test::data_dir() / "mambabyte-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto prompt = ids_of(ref, "generate.prompt");
    const auto expected = ids_of(ref, "generate.output");
    const std::vector<std::int32_t> tail(expected.begin() + static_cast<std::ptrdiff_t>(prompt.size()), expected.end());
    REQUIRE(tail.size() >= 6);
    const auto model = ssm::MambaLM::load(dir);
    ssm::GenerateOptions o;
    o.sampling.greedy = true;
    o.max_new_tokens = 20;

    SECTION("EOS: the first occurrence of a chosen id ends it, and is kept") {
        o.eos_token_id = tail[3];
        const auto g = ssm::generate(model, prompt, o);
        CHECK(g.reason == ssm::StopReason::Eos);
        const auto first = std::find(tail.begin(), tail.end(), tail[3]) - tail.begin();
        CHECK(g.tokens == std::vector<std::int32_t>(tail.begin(), tail.begin() + first + 1));
    }
    SECTION("stop string spanning two tokens") {
        const auto text = [](std::int32_t id) { return std::string(1, static_cast<char>(id)); };
        o.stop_strings = {std::string{static_cast<char>(tail[2]), static_cast<char>(tail[3])}};
        const auto g = ssm::generate(model, prompt, o, text);
        CHECK(g.reason == ssm::StopReason::StopString);
        std::string made;
        for (auto id : g.tokens) made += text(id);
        CHECK(made.find(o.stop_strings[0]) == made.size() - 2);  // first occurrence, at the end
    }
    SECTION("the caller") {
        int seen = 0;
        const auto g = ssm::generate(model, prompt, o, {}, [&](std::int32_t) { return ++seen < 4; });
        CHECK(g.reason == ssm::StopReason::Caller);
        CHECK(g.tokens == std::vector<std::int32_t>(tail.begin(), tail.begin() + 4));
    }
    SECTION("limits and bad input") {
        o.max_new_tokens = 0;
        CHECK(ssm::generate(model, prompt, o).tokens.empty());
        o.max_new_tokens = 1;
        CHECK(ssm::generate(model, prompt, o).tokens == std::vector<std::int32_t>{tail[0]});
        CHECK(ssm::test::error_of([&] { (void)ssm::generate(model, std::vector<std::int32_t>{}, o); })
                  .find("empty") != std::string::npos);
        CHECK(ssm::test::error_of([&] { (void)ssm::generate(model, std::vector<std::int32_t>{1, 256}, o); })
                  .find("256") != std::string::npos);
        o.stop_strings = {"x"};
        CHECK(ssm::test::error_of([&] { (void)ssm::generate(model, prompt, o); }).find("token_text") !=
              std::string::npos);
    }
}

TEST_CASE("sampled generation with a seed repeats exactly", "[generate]") {
    const auto model = ssm::MambaLM::load(ssm::test::data_dir() / "mamba-tiny");
    ssm::GenerateOptions o;
    o.max_new_tokens = 30;
    o.sampling.temperature = 1.0f;
    o.sampling.top_p = 0.9f;
    o.sampling.seed = 5;
    const std::vector<std::int32_t> prompt{5, 6, 7};
    const auto a = ssm::generate(model, prompt, o).tokens;
    CHECK(a.size() == 30);
    CHECK(a == ssm::generate(model, prompt, o).tokens);
}

}  // namespace test_generate
