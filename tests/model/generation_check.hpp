// tests/model/generation_check.hpp — the reference check of greedy generation, shared by the
// CPU parity tests and the CUDA model tests: a full forward over generate.output, then the
// prompt prefilled into a state and decoded one token at a time, every step's logits
// against generate.full_logits and the tokens against generate.output.
#pragma once

#include <cstdint>
#include <vector>

#include "ssm/model/batch.hpp"
#include "ssm/model/model.hpp"
#include "test_util.hpp"

namespace ssm::test {

template <class Model>
void check_generation(Model&& model, const SafetensorsFile& ref, double tol) {
    const auto prompt = ids_of(ref, "generate.prompt");
    const auto expected = ids_of(ref, "generate.output");
    const Tensor full_logits = ref.load_f32("generate.full_logits");  // (len(expected), vocab)
    const index V = model.vocab_size();
    REQUIRE(expected.size() > prompt.size());

    // Full forward over the whole output.
    const auto full = model.forward(Batch::of({expected}), {Logits::All, false});
    CHECK(rel_error(span_of(full.logits), full_logits.values()) < tol);

    // Prefill the prompt into a state, then greedy decoding one token at a time.
    auto state = model.make_state(1);
    const auto pre = model.forward(Batch::of({prompt}), {Logits::All, false}, &state);
    CHECK(rel_error(span_of(pre.logits),
                    full_logits.values().subspan(0, prompt.size() * static_cast<std::size_t>(V))) < tol);
    std::vector<std::int32_t> out = prompt;
    Matrix logits = pre.logits.bottomRows(1);
    while (out.size() < expected.size()) {
        index next = 0;
        logits.row(0).maxCoeff(&next);
        out.push_back(static_cast<std::int32_t>(next));
        const std::int32_t tok[] = {static_cast<std::int32_t>(next)};
        logits = model.step(tok, state);
        if (out.size() < expected.size()) {
            INFO("decode step at position " << out.size() - 1);
            CHECK(rel_error(span_of(logits), full_logits.values().subspan((out.size() - 1) * static_cast<std::size_t>(V),
                                                                          static_cast<std::size_t>(V))) < tol);
        }
    }
    CHECK(out == expected);
}

}  // namespace ssm::test
