// ssm/io/json_excerpt.hpp — a JSON value from a file, shown in an error message: short,
// and made without recursion however deeply the value nests.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssm::detail {

/// `v` as JSON text when it is small (at most 16 levels deep and 64 values, the text cut
/// to 80 characters), otherwise its kind and size, e.g. "an array of 1 value (too large or
/// deep to show)". nlohmann's `dump` recurses once per level, so a value nested 200,000
/// deep must never reach it.
[[nodiscard]] inline std::string json_excerpt(const nlohmann::json& v) {
    constexpr std::size_t kMaxDepth = 16, kMaxValues = 64, kMaxChars = 80;
    bool small = true;
    std::size_t seen = 0;
    std::vector<std::pair<const nlohmann::json*, std::size_t>> pending{{&v, 1}};
    while (!pending.empty() && small) {
        const auto [x, depth] = pending.back();
        pending.pop_back();
        if (++seen > kMaxValues || depth > kMaxDepth) small = false;
        if (!x->is_structured()) continue;
        if (x->size() > kMaxValues) {
            small = false;
        } else {
            for (const auto& child : *x) pending.emplace_back(&child, depth + 1);
        }
    }
    if (!small) {
        const std::string n = std::to_string(v.size()), plural = v.size() == 1 ? "" : "s";
        return v.is_array() ? "an array of " + n + " value" + plural + " (too large or deep to show)"
                            : "an object of " + n + " key" + plural + " (too large or deep to show)";
    }
    std::string text = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
    return text;
}

}  // namespace ssm::detail
