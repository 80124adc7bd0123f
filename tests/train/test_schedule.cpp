// Learning-rate schedules against transformers' own lambdas (tests/data/train/
// adamw.safetensors, `schedule.*`, written by make_training_reference.py from
// `get_{constant,linear,cosine}_schedule_with_warmup` and the cosine with `min_lr_rate`).
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/io/safetensors.hpp"
#include "ssm/train/schedule.hpp"
#include "test_util.hpp"

namespace test_schedule {

namespace {

std::vector<double> load_f64(const ssm::SafetensorsFile& f, const std::string& name) {
    REQUIRE(f.info(name).dtype == ssm::DType::F64);
    const auto raw = f.bytes(name);
    std::vector<double> v(raw.size() / sizeof(double));
    std::memcpy(v.data(), raw.data(), v.size() * sizeof(double));
    return v;
}

}  // namespace

TEST_CASE("LrSchedule: factors equal transformers' schedules step by step") {
    const auto ref =
        ssm::SafetensorsFile::open(ssm::test::data_dir() / "train" / "adamw.safetensors");
    int checked = 0;
    for (const auto& [key, value] : ref.metadata()) {
        if (key.rfind("schedule.", 0) != 0) continue;
        // "kind,warmup,total,floor"
        std::stringstream in(value);
        std::string kind, warmup, total, floor;
        std::getline(in, kind, ',');
        std::getline(in, warmup, ',');
        std::getline(in, total, ',');
        std::getline(in, floor, ',');
        const ssm::index w = std::stol(warmup), t = std::stol(total);
        const double fl = std::stod(floor);
        const ssm::train::LrSchedule s = kind == "constant" ? ssm::train::LrSchedule::constant(w)
                                         : kind == "linear"
                                             ? ssm::train::LrSchedule::linear(w, t, fl)
                                             : ssm::train::LrSchedule::cosine(w, t, fl);
        CHECK(s.name() == kind);
        const auto expect = load_f64(ref, key);
        REQUIRE(expect.size() == 13);
        for (std::size_t step = 0; step < expect.size(); ++step) {
            INFO(key << " step " << step);
            CHECK(std::abs(s.factor(static_cast<ssm::index>(step)) - expect[step]) <= 1e-15);
        }
        ++checked;
    }
    CHECK(checked == 5);
}

TEST_CASE("LrSchedule: closed forms and a floor on the linear decay") {
    const auto lin = ssm::train::LrSchedule::linear(2, 6, 0.25);
    CHECK(lin.factor(0) == 0.0);
    CHECK(lin.factor(1) == 0.5);
    CHECK(lin.factor(2) == 1.0);
    CHECK(lin.factor(4) == 0.5 * 0.75 + 0.25);
    CHECK(lin.factor(6) == 0.25);
    CHECK(lin.factor(100) == 0.25);
    const auto cos = ssm::train::LrSchedule::cosine(0, 4);
    CHECK(std::abs(cos.factor(2) - 0.5) < 1e-15);
    CHECK(cos.factor(4) < 1e-15);
    CHECK(ssm::train::LrSchedule::constant().factor(0) == 1.0);
}

TEST_CASE("LrSchedule: bad settings are errors naming them") {
    CHECK(ssm::test::error_of([] {
              (void)ssm::train::LrSchedule::linear(5, 3);
          }).find("total steps (3)") != std::string::npos);
    CHECK(ssm::test::error_of([] {
              (void)ssm::train::LrSchedule::cosine(0, 0);
          }).find("total steps (0)") != std::string::npos);
    CHECK(ssm::test::error_of([] {
              (void)ssm::train::LrSchedule::cosine(0, 10, 1.5);
          }).find("floor must be in [0, 1]") != std::string::npos);
    CHECK(ssm::test::error_of([] {
              (void)ssm::train::LrSchedule::constant(-1);
          }).find("warmup steps must be >= 0") != std::string::npos);
    CHECK(ssm::test::error_of([] {
              (void)ssm::train::LrSchedule::constant().factor(-2);
          }).find("step must be >= 0") != std::string::npos);
}

}  // namespace test_schedule
