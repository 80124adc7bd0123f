// examples/cli.hpp — the small command-line layer the example programs share:
// `--flag value` parsing, `--help`, and one-line errors with a non-zero exit.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/io/config.hpp"

#if defined(__GLIBC__)
#include <malloc.h>

#include <climits>
#endif

namespace ssm::cli {

/// Asks the C library to keep freed blocks for reuse instead of handing them back to the
/// kernel. A program that allocates the same activation buffers every step would otherwise
/// fault their pages in again each time: 13% of a step of `ssm-train retriever` at the byte
/// retriever's shape went to the kernel (page faults), 2% with this (docs/benchmarks.md).
/// Blocks up to 32 MiB (glibc's largest threshold on 64-bit; a 32-bit glibc refuses it and
/// only the trimming changes) then come from the heap, and the heap is never trimmed: resident
/// memory stays at its peak, which in that measurement was what it had been (644 MB, 646
/// MB after). Elsewhere than glibc: nothing.
inline void keep_freed_memory() noexcept {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

/// A usage error: printed with a hint to run --help, exit status 2.
struct UsageError : Error {
    using Error::Error;
};

/// Parsed `--name value` options and `--switch` flags.
class Args {
public:
    /// `valued`: options that take a value; `switches`: options that do not.
    Args(int argc, char** argv, std::set<std::string> valued, std::set<std::string> switches) {
        for (int i = 1; i < argc; ++i) {
            std::string a = argv[i];
            if (a == "-h") a = "--help";
            if (a.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + a + "'");
            std::string name = a.substr(2), value;
            const auto eq = name.find('=');
            const bool inline_value = eq != std::string::npos;
            if (inline_value) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
            }
            if (name == "help" || switches.count(name)) {
                if (inline_value) throw UsageError("--" + name + " takes no value");
                flags_.insert(name);
            } else if (valued.count(name)) {
                if (!inline_value) {
                    if (i + 1 >= argc) throw UsageError("--" + name + " needs a value");
                    value = argv[++i];
                }
                if (values_.count(name)) throw UsageError("--" + name + " given twice");
                values_[name] = value;
            } else {
                throw UsageError("unknown option '--" + name + "'");
            }
        }
    }

    [[nodiscard]] bool flag(const std::string& name) const { return flags_.count(name) > 0; }
    [[nodiscard]] std::optional<std::string> get(const std::string& name) const {
        auto it = values_.find(name);
        if (it == values_.end()) return std::nullopt;
        return it->second;
    }
    [[nodiscard]] std::string required(const std::string& name) const {
        auto v = get(name);
        if (!v) throw UsageError("missing required option --" + name);
        return *v;
    }
    /// A real option within [lo, hi] (finite, the whole value a number), or `fallback`
    /// when absent.
    [[nodiscard]] double real(const std::string& name, double fallback, double lo, double hi) const {
        const auto v = get(name);
        if (!v) return fallback;
        double x = 0;
        try {
            std::size_t used = 0;
            x = std::stod(*v, &used);
            if (used != v->size()) throw std::invalid_argument("trailing characters");
        } catch (const std::exception&) {
            throw UsageError("--" + name + " must be a number, got '" + *v + "'");
        }
        if (!std::isfinite(x) || x < lo || x > hi) {
            std::ostringstream s;
            s << "--" << name << " must be in [" << lo << ", " << hi << "], got '" << *v << "'";
            throw UsageError(s.str());
        }
        return x;
    }

    /// An integer option within [lo, hi], or `fallback` when absent.
    [[nodiscard]] long long integer(const std::string& name, long long fallback, long long lo,
                                    long long hi) const {
        auto v = get(name);
        if (!v) return fallback;
        long long x = 0;
        const auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
        if (ec != std::errc() || p != v->data() + v->size() || x < lo || x > hi)
            throw UsageError("--" + name + " must be an integer in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "], got '" + *v + "'");
        return x;
    }

private:
    std::map<std::string, std::string> values_;
    std::set<std::string> flags_;
};

/// Parses "3,17,5" into ids; names the offending item on error.
[[nodiscard]] inline std::vector<std::int32_t> parse_ids(std::string_view text, std::string_view option) {
    std::vector<std::int32_t> ids;
    std::size_t pos = 0, item = 0;
    if (text.find_first_not_of(" \t") == std::string_view::npos)
        throw UsageError(std::string(option) + " is empty: give at least one token id");
    while (pos <= text.size()) {
        const std::size_t comma = std::min(text.find(',', pos), text.size());
        std::string_view tok = text.substr(pos, comma - pos);
        while (!tok.empty() && tok.front() == ' ') tok.remove_prefix(1);
        while (!tok.empty() && tok.back() == ' ') tok.remove_suffix(1);
        long long v = 0;
        const auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
        if (tok.empty() || ec != std::errc() || p != tok.data() + tok.size() || v < INT32_MIN ||
            v > INT32_MAX)
            throw UsageError(std::string(option) + ": item " + std::to_string(item + 1) + " ('" +
                             std::string(tok) + "') is not an integer token id");
        ids.push_back(static_cast<std::int32_t>(v));
        pos = comma + 1;
        ++item;
    }
    return ids;
}

/// Runs `body()`, turning errors into one line on stderr and an exit status:
/// 0 success, 1 runtime error (bad file, bad input), 2 usage error.
/// One line naming a checkpoint's architecture and sizes, for the programs' reports.
inline std::string describe(const MambaConfig& c, bool tied_head) {
    const auto n = [](index v) { return std::to_string(v); };
    const std::string tail = ", vocab " + n(c.vocab_size) + ", " + (tied_head ? "tied" : "untied") + " head";
    const std::string norm = c.norm == NormKind::RMSNorm ? "RMSNorm" : "LayerNorm";
    if (c.family == ModelFamily::Mamba2)
        return "Mamba-2, " + norm + ", " + n(c.num_hidden_layers) + " layers, hidden " + n(c.hidden_size) +
               ", inner " + n(c.intermediate_size) + ", " + n(c.mamba2.num_heads) + " heads of " +
               n(c.mamba2.head_dim) + ", " + n(c.mamba2.n_groups) + " groups, state " + n(c.state_size) + tail;
    if (c.family == ModelFamily::FalconMamba)
        return "Falcon-Mamba, " + norm + ", " + n(c.num_hidden_layers) + " layers, hidden " + n(c.hidden_size) +
               ", inner " + n(c.intermediate_size) + ", state " + n(c.state_size) + tail;
    if (!c.is_hybrid())
        return "Mamba-1, " + norm + ", " + n(c.num_hidden_layers) + " layers, hidden " + n(c.hidden_size) +
               ", inner " + n(c.intermediate_size) + ", state " + n(c.state_size) + tail;
    const auto mamba = std::count(c.layer_kinds.begin(), c.layer_kinds.end(), LayerKind::Mamba);
    return "SAMBA hybrid, " + n(c.num_hidden_layers) + " layers (" + n(mamba) + " Mamba-1, " +
           n(c.num_hidden_layers - mamba) + " attention), hidden " + n(c.hidden_size) + ", Mamba inner " +
           n(c.intermediate_size) + ", state " + n(c.state_size) + ", " + n(c.num_attention_heads) + " heads (" +
           n(c.num_key_value_heads) + " key/value) of " + n(c.head_dim) + ", window " +
           (c.sliding_window > 0 ? n(c.sliding_window) : std::string("none")) + ", RoPE on " + n(c.rotary_dim) +
           ", SwiGLU " + n(c.mlp_size) + tail;
}

/// Writes a whole error line in one call, so that under mpirun, where every rank's standard
/// error reaches the terminal through one pipe, another rank's progress never lands inside it.
inline void error_line(const std::string& line) {
    std::fflush(stdout);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

template <class Body>
int run_main(std::string_view program, Body&& body) {
    try {
        return body();
    } catch (const UsageError& e) {
        error_line(std::string(program) + ": error: " + e.what() + " (see " + std::string(program) + " --help)\n");
        return 2;
    } catch (const std::exception& e) {
        error_line(std::string(program) + ": error: " + e.what() + "\n");
        return 1;
    }
}

}  // namespace ssm::cli
