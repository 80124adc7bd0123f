// ssm/model/generate.hpp — text generation through the recurrent state: one prefill over
// the prompt, then one constant-cost `step` per new token.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/heads/sampler.hpp"
#include "ssm/model/batch.hpp"
#include "ssm/model/model.hpp"

namespace ssm {

struct GenerateOptions {
    index max_new_tokens = 64;
    SamplingOptions sampling;                  // greedy, temperature, top-k, top-p, seed
    std::optional<std::int32_t> eos_token_id;  // stop once it is generated (it is kept in the output)
    std::vector<std::string> stop_strings;     // stop once the new text contains one (needs token_text)
};

enum class StopReason { MaxNewTokens, Eos, StopString, Caller };

struct Generation {
    std::vector<std::int32_t> tokens;  // the new tokens only
    StopReason reason = StopReason::MaxNewTokens;
    double prefill_seconds = 0;        // the prompt's forward pass
    double decode_seconds = 0;         // every step after it
};

/// Generates up to `max_new_tokens` after `prompt`. `token_text(id)` gives a token's
/// bytes (needed for stop strings); `on_token(id)` is called for each new token as it
/// is chosen and may return false to stop. The prompt's ids are checked against the
/// vocabulary first.
template <class M>
[[nodiscard]] Generation generate(const M& model, std::span<const std::int32_t> prompt, const GenerateOptions& opt,
                                  const std::function<std::string(std::int32_t)>& token_text = {},
                                  const std::function<bool(std::int32_t)>& on_token = {}) {
    require(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
    require(opt.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", opt.max_new_tokens);
    require(opt.stop_strings.empty() || token_text,
            "generate: stop strings need a token_text function to read the generated text");
    for (const auto& s : opt.stop_strings) require(!s.empty(), "generate: a stop string is empty");
    model.embedding().check_ids(prompt);

    using clock = std::chrono::steady_clock;
    Sampler sampler(opt.sampling);
    Generation g;
    if (opt.max_new_tokens == 0) return g;
    Workspace ws;
    auto state = model.make_state(1);
    Batch batch;
    batch.add(prompt);
    const auto t0 = clock::now();
    Matrix logits = model.forward(batch, {Logits::Last, false}, &state, ws).logits;
    const auto t1 = clock::now();
    g.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

    std::string text;  // the new tokens' bytes, for stop strings
    std::size_t longest_stop = 0;
    for (const auto& s : opt.stop_strings) longest_stop = std::max(longest_stop, s.size());
    for (index i = 0; i < opt.max_new_tokens; ++i) {
        const std::int32_t next =
            sampler.sample(std::span<const float>(logits.data(), static_cast<std::size_t>(logits.cols())));
        g.tokens.push_back(next);
        if (on_token && !on_token(next)) {
            g.reason = StopReason::Caller;
            break;
        }
        if (opt.eos_token_id && next == *opt.eos_token_id) {
            g.reason = StopReason::Eos;
            break;
        }
        if (longest_stop) {
            const std::size_t before = text.size();
            text += token_text(next);
            // Only a match that ends in the new bytes is new.
            const std::size_t from = before >= longest_stop ? before - longest_stop + 1 : 0;
            bool hit = false;
            for (const auto& s : opt.stop_strings) hit = hit || text.find(s, from) != std::string::npos;
            if (hit) {
                g.reason = StopReason::StopString;
                break;
            }
        }
        if (i + 1 == opt.max_new_tokens) break;  // no step needed after the last token
        logits = model.step({&next, 1}, state, ws);
    }
    g.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return g;
}

}  // namespace ssm
