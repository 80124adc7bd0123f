// ssm/core/progress.hpp — a progress bar for long work: count, rate and ETA, redrawn in
// place on a terminal at most ten times a second; silent when the stream is not a terminal.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "ssm/core/tensor.hpp"

namespace ssm {

class Progress {
public:
    /// `total` units of work (e.g. tokens); `unit` names them in the rate ("tok/s").
    /// Draws on `stream` (stderr by default) only if it is a terminal, unless `force`.
    Progress(std::string label, index total, std::string unit = "it", std::FILE* stream = stderr, bool force = false)
        : label_(std::move(label)), unit_(std::move(unit)), total_(std::max<index>(total, 0)), stream_(stream),
          enabled_(force || (stream != nullptr && ::isatty(::fileno(stream)) != 0)),
          start_(clock::now()), last_draw_(start_) {}

    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    ~Progress() { finish(); }

    [[nodiscard]] bool enabled() const noexcept { return enabled_; }
    [[nodiscard]] index done() const noexcept { return done_; }

    /// Adds `n` finished units; redraws if enough time has passed.
    void advance(index n) {
        done_ = std::min(total_, done_ + n);
        if (!enabled_) return;
        const auto now = clock::now();
        if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
        last_draw_ = now;
        draw(now);
    }

    /// Text shown after the rate and ETA (e.g. "loss 2.31 lr 3.0e-4"); drawn at the next
    /// redraw.
    void set_note(std::string note) { note_ = std::move(note); }

    /// Draws the final state and ends the line (once).
    void finish() {
        if (!enabled_ || finished_) return;
        finished_ = true;
        draw(clock::now());
        std::fputc('\n', stream_);
        std::fflush(stream_);
    }

    /// The line a draw shows, e.g. "encode [#####-----] 500/1000 50% 1.2k tok/s ETA 0:01".
    [[nodiscard]] std::string line(double seconds) const {
        constexpr int kWidth = 24;
        const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
        const int filled = static_cast<int>(frac * kWidth);
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar.append(static_cast<std::size_t>(kWidth - filled), '-');
        const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s [%s] %lld/%lld %3.0f%% %s %s/s", label_.c_str(), bar.c_str(),
                      static_cast<long long>(done_), static_cast<long long>(total_), frac * 100,
                      human(rate).c_str(), unit_.c_str());
        std::string s = buf;
        if (done_ < total_ && rate > 0) s += " ETA " + clock_time(static_cast<double>(total_ - done_) / rate);
        else s += " in " + clock_time(seconds);
        if (!note_.empty()) s += "  " + note_;
        return s;
    }

    /// 1234 → "1.23k", 2.5e6 → "2.50M".
    [[nodiscard]] static std::string human(double v) {
        const char* suffix[] = {"", "k", "M", "G"};
        int i = 0;
        while (v >= 1000 && i < 3) {
            v /= 1000;
            ++i;
        }
        char buf[32];
        std::snprintf(buf, sizeof buf, i == 0 ? "%.1f%s" : "%.2f%s", v, suffix[i]);
        return buf;
    }

    /// Seconds as "m:ss" or "h:mm:ss".
    [[nodiscard]] static std::string clock_time(double seconds) {
        const long long s = static_cast<long long>(seconds + 0.5);
        char buf[32];
        if (s >= 3600)
            std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
        else
            std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
        return buf;
    }

private:
    using clock = std::chrono::steady_clock;

    void draw(clock::time_point now) {
        const double seconds = std::chrono::duration<double>(now - start_).count();
        std::fprintf(stream_, "\r%s\033[K", line(seconds).c_str());
        std::fflush(stream_);
    }

    std::string label_, unit_, note_;
    index total_, done_ = 0;
    std::FILE* stream_;
    bool enabled_, finished_ = false;
    clock::time_point start_, last_draw_;
};

}  // namespace ssm
