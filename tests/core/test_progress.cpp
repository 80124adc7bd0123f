// The progress bar: what a line shows, number and time formats, and silence off a terminal.
#include <cstdio>
#include <string>

#include "ssm/core/progress.hpp"
#include "test_util.hpp"

namespace test_progress {

TEST_CASE("Progress formats count, percentage, rate and ETA", "[progress]") {
    ssm::Progress p("encode", 1000, "tok", nullptr, false);
    CHECK_FALSE(p.enabled());
    p.advance(250);
    const std::string l = p.line(2.0);
    CHECK(l.find("encode [######------------------] 250/1000  25%") == 0);
    CHECK(l.find("125.0 tok/s") != std::string::npos);
    CHECK(l.find("ETA 0:06") != std::string::npos);
    p.advance(10'000);  // clamped at the total
    CHECK(p.done() == 1000);
    CHECK(p.line(4.0).find("in 0:04") != std::string::npos);
}

TEST_CASE("Progress number and time formats", "[progress]") {
    CHECK(ssm::Progress::human(12.34) == "12.3");
    CHECK(ssm::Progress::human(1234) == "1.23k");
    CHECK(ssm::Progress::human(2.5e6) == "2.50M");
    CHECK(ssm::Progress::clock_time(59.4) == "0:59");
    CHECK(ssm::Progress::clock_time(61) == "1:01");
    CHECK(ssm::Progress::clock_time(3725) == "1:02:05");
}

TEST_CASE("Progress draws nothing on a stream that is not a terminal", "[progress]") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
        ssm::Progress p("x", 10, "it", f);
        CHECK_FALSE(p.enabled());
        p.advance(10);
    }
    CHECK(std::ftell(f) == 0);
    {
        ssm::Progress p("x", 10, "it", f, /*force=*/true);
        p.advance(10);
    }
    CHECK(std::ftell(f) > 0);
    std::fclose(f);
}

}  // namespace test_progress
