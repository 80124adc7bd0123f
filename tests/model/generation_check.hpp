// tests/model/generation_check.hpp — the reference check of greedy generation, shared by the
// CPU parity tests and the CUDA model tests: a full forward over generate.output, then the
// prompt prefilled into a state and decoded one token at a time, every step's logits
// against generate.full_logits and the tokens against generate.output.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "ssm/model/batch.hpp"
#include "ssm/model/model.hpp"
#include "test_util.hpp"

namespace ssm::test {

/// Compares a greedy continuation `got` with `expected` (generate.output), token by token.
/// With `tie_band` = 0 they must be equal. With `tie_band` > 0 — for a model whose
/// arithmetic is knowingly coarser than the reference's, such as bf16 activations — they may
/// part at a near-tie: at the first differing position the reference's logits (`full_logits`,
/// (len(expected), V)) for the two tokens must lie within `tie_band` of each other, and the
/// comparison ends there, since the continuations no longer share a prefix.
/// Returns the length of the common prefix.
inline std::size_t check_tokens(std::span<const std::int32_t> got,
                                std::span<const std::int32_t> expected, const Tensor& full_logits,
                                index V, double tie_band) {
    const std::size_t n = std::min(got.size(), expected.size());
    for (std::size_t i = 0; i < n; ++i) {
        if (got[i] == expected[i]) continue;
        const auto logits = full_logits.values();  // row i − 1 predicts token i
        REQUIRE(i > 0);
        const auto row = (i - 1) * static_cast<std::size_t>(V);
        const double gap = static_cast<double>(logits[row + static_cast<std::size_t>(expected[i])]) -
                           static_cast<double>(logits[row + static_cast<std::size_t>(got[i])]);
        INFO("position " << i << ": generate.output has token " << expected[i] << ", this model "
                         << got[i] << "; the reference's logits for the two differ by " << gap
                         << " (near-tie band " << tie_band << ")");
        CHECK(tie_band > 0);
        CHECK(gap <= tie_band);
        WARN("greedy output parts from generate.output at a near-tie, position " << i);
        return i;
    }
    CHECK(got.size() == expected.size());
    return n;
}

/// The whole generation check; `tol` bounds every logits comparison (relative), `tie_band`
/// is as in `check_tokens` (0: the tokens must equal generate.output).
template <class Model>
void check_generation(Model&& model, const SafetensorsFile& ref, double tol, double tie_band = 0) {
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
        if (out.back() != expected[out.size() - 1]) {  // parted: at a near-tie, or a failure
            (void)check_tokens(out, expected, full_logits, V, tie_band);
            return;
        }
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
