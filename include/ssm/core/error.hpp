// ssm/core/error.hpp — the one exception type the library throws.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ssm {

/// Every failure the library reports (bad file, missing tensor, shape mismatch, bad
/// argument) is an `ssm::Error` whose message names the file / tensor / position and
/// what was expected. Programs print `what()` on one line and exit non-zero.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <class... Args>
[[nodiscard]] std::string concat(Args&&... args) {
    std::ostringstream os;
    (os << ... << std::forward<Args>(args));
    return os.str();
}
}  // namespace detail

/// Throws `ssm::Error` with the streamed concatenation of `args`.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
    throw Error(detail::concat(std::forward<Args>(args)...));
}

/// Throws `ssm::Error` built from `args` when `condition` is false.
template <class... Args>
void require(bool condition, Args&&... args) {
    if (!condition) fail(std::forward<Args>(args)...);
}

}  // namespace ssm
