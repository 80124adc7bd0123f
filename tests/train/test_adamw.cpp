// AdamW against `torch.optim.AdamW` (tests/data/train/adamw.safetensors, written by
// make_training_reference.py): 5 steps on four small tensors with fixed gradients, two
// configurations between them covering weight decay on some parameters only, global-norm
// clipping that bites on some steps, gradient accumulation, and warmup + cosine (with a
// floor) or linear decay. Then: saving and restoring the state continues bit for bit, and
// bad state files and non-finite gradients are errors that change nothing.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/io/safetensors.hpp"
#include "ssm/train/adamw.hpp"
#include "test_util.hpp"

namespace test_adamw {

namespace {

using ssm::train::AdamW;
using ssm::train::Parameters;

std::vector<double> load_f64(const ssm::SafetensorsFile& f, const std::string& name) {
    REQUIRE(f.info(name).dtype == ssm::DType::F64);
    const auto raw = f.bytes(name);
    std::vector<double> v(raw.size() / sizeof(double));
    std::memcpy(v.data(), raw.data(), v.size() * sizeof(double));
    return v;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');) out.push_back(item);
    return out;
}

/// The reference's four parameters with their own value and gradient storage.
struct Model {
    std::map<std::string, std::vector<float>> value, grad;
    Parameters params;

    Model(const ssm::SafetensorsFile& ref, const std::string& tag) {
        const auto names = split(ref.metadata().at("params"));
        const auto decay = split(ref.metadata().at("decay"));
        REQUIRE(names.size() == decay.size());
        for (const auto& n : names) {  // allocate everything first: spans must stay valid
            const ssm::Tensor t = ref.load_f32(tag + ".init." + n);
            value[n].assign(t.values().begin(), t.values().end());
            grad[n].assign(t.values().size(), 0.0f);
        }
        for (std::size_t i = 0; i < names.size(); ++i) {
            const ssm::Tensor t = ref.load_f32(tag + ".init." + names[i]);
            params.add(names[i], {t.shape().begin(), t.shape().end()}, value[names[i]],
                       grad[names[i]], decay[i] == "1");
        }
    }
    Model(const Model&) = delete;

    /// Adds the reference gradients of step k, micro-batch m.
    void add_gradients(const ssm::SafetensorsFile& ref, const std::string& tag, int k, int m) {
        for (auto& [n, g] : grad) {
            const ssm::Tensor t = ref.load_f32(tag + ".grad." + std::to_string(k) + "." +
                                               std::to_string(m) + "." + n);
            for (std::size_t i = 0; i < g.size(); ++i) g[i] += t.values()[i];
        }
    }
};

struct Config {
    ssm::train::AdamWOptions options;
    ssm::train::LrSchedule schedule;
    int accumulation = 1;
};

Config config_of(const ssm::SafetensorsFile& ref, const std::string& tag) {
    const auto& meta = ref.metadata();
    const auto num = [&](const std::string& key) { return std::stod(meta.at(tag + "." + key)); };
    Config c;
    c.options.lr = num("lr");
    c.options.beta1 = num("beta1");
    c.options.beta2 = num("beta2");
    c.options.eps = num("eps");
    c.options.weight_decay = num("weight_decay");
    c.options.max_grad_norm = num("max_grad_norm");
    const auto warmup = static_cast<ssm::index>(num("warmup_steps"));
    const auto total = static_cast<ssm::index>(num("total_steps"));
    const std::string kind = meta.at(tag + ".schedule");
    c.schedule = kind == "cosine" ? ssm::train::LrSchedule::cosine(warmup, total, num("floor"))
                                  : ssm::train::LrSchedule::linear(warmup, total, num("floor"));
    c.accumulation = static_cast<int>(num("accumulation"));
    return c;
}

const ssm::SafetensorsFile& reference() {
    static const auto ref =
        ssm::SafetensorsFile::open(ssm::test::data_dir() / "train" / "adamw.safetensors");
    return ref;
}

}  // namespace

TEST_CASE(
    "AdamW: 5 steps equal torch.optim.AdamW (decay groups, clipping, accumulation, schedules)") {
    const auto& ref = reference();
    const int steps = std::stoi(ref.metadata().at("steps"));
    REQUIRE(steps == 5);
    for (const std::string tag : {"a", "b"}) {
        const Config c = config_of(ref, tag);
        Model model(ref, tag);
        AdamW opt(c.options, c.schedule);
        const auto lrs = load_f64(ref, tag + ".lr");
        const auto norms = load_f64(ref, tag + ".grad_norm");
        int clipped = 0;
        for (int k = 0; k < steps; ++k) {
            INFO("config " << tag << " step " << k);
            model.params.zero_grad();
            for (int m = 0; m < c.accumulation; ++m) model.add_gradients(ref, tag, k, m);
            const auto report = opt.step(model.params, c.accumulation);
            CHECK(std::abs(report.lr - lrs[static_cast<std::size_t>(k)]) <= 1e-15);
            CHECK(std::abs(report.grad_norm - norms[static_cast<std::size_t>(k)]) <=
                  1e-6 * norms[static_cast<std::size_t>(k)]);
            if (c.options.max_grad_norm > 0 && report.grad_norm > c.options.max_grad_norm)
                ++clipped;
            CHECK(opt.steps_taken() == k + 1);
            for (const auto& [n, v] : model.value) {
                const ssm::Tensor expect =
                    ref.load_f32(tag + ".after." + std::to_string(k) + "." + n);
                INFO("parameter " << n);
                double max_diff = 0;
                for (std::size_t i = 0; i < v.size(); ++i)
                    max_diff = std::max(max_diff,
                                        std::abs(static_cast<double>(v[i]) - expect.values()[i]));
                CHECK(max_diff <= 1e-6);
                CHECK(ssm::test::rel_error(v, expect.values()) < 1e-6);
            }
        }
        if (tag == "a")
            CHECK(clipped == 2);  // steps 2 and 5 exceed max_grad_norm, the others do not
    }
}

TEST_CASE("AdamW: weight decay only where Parameter::decay is set, decoupled from the gradient") {
    // one step with zero gradients: m = v = 0, so the Adam term is 0 and only decay acts
    std::vector<float> a = {1.0f, -2.0f}, b = {3.0f}, ga(2, 0.0f), gb(1, 0.0f);
    Parameters params;
    params.add("a", {2}, a, ga, true);
    params.add("b", {1}, b, gb, false);
    AdamW opt({.lr = 0.1, .weight_decay = 0.5});
    (void)opt.step(params);
    CHECK(a[0] == static_cast<float>(1.0 * 0.95f));
    CHECK(a[1] == -2.0f * 0.95f);
    CHECK(b[0] == 3.0f);
}

TEST_CASE(
    "AdamW: save, load into a fresh optimizer and continue equals the uninterrupted run, bit for "
    "bit") {
    const auto& ref = reference();
    const Config c = config_of(ref, "a");
    const auto dir = ssm::test::scratch_dir("adamw");
    const auto path = dir / "optimizer.safetensors";

    Model straight(ref, "a");
    AdamW opt(c.options, c.schedule);
    for (int k = 0; k < 5; ++k) {
        straight.params.zero_grad();
        for (int m = 0; m < c.accumulation; ++m) straight.add_gradients(ref, "a", k, m);
        (void)opt.step(straight.params, c.accumulation);
    }

    std::map<std::string, std::vector<float>> saved_values;
    {
        Model first(ref, "a");
        AdamW o(c.options, c.schedule);
        for (int k = 0; k < 3; ++k) {
            first.params.zero_grad();
            for (int m = 0; m < c.accumulation; ++m) first.add_gradients(ref, "a", k, m);
            (void)o.step(first.params, c.accumulation);
        }
        o.save(path, first.params);
        saved_values = first.value;
        const auto file = ssm::SafetensorsFile::open(path);
        CHECK(file.metadata().at("format") == "ssm.adamw");
        CHECK(file.load_i64("step").at(0) == 3);
        CHECK(file.contains("exp_avg.w"));
        CHECK(file.contains("exp_avg_sq.A_log"));
    }
    Model resumed(ref, "a");
    for (auto& [n, v] : resumed.value)
        v = saved_values.at(n);  // as a checkpoint would restore them (same storage)
    AdamW o(c.options, c.schedule);
    o.load(path, resumed.params);
    CHECK(o.steps_taken() == 3);
    CHECK(o.next_lr() == c.options.lr * c.schedule.factor(3));
    for (int k = 3; k < 5; ++k) {
        resumed.params.zero_grad();
        for (int m = 0; m < c.accumulation; ++m) resumed.add_gradients(ref, "a", k, m);
        (void)o.step(resumed.params, c.accumulation);
    }
    for (const auto& [n, v] : straight.value) {
        INFO("parameter " << n);
        CHECK(resumed.value.at(n) == v);
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("AdamW: bad state files and non-finite gradients are errors that change nothing") {
    const auto& ref = reference();
    const auto dir = ssm::test::scratch_dir("adamw-bad");
    Model model(ref, "b");
    AdamW opt;
    model.add_gradients(ref, "b", 0, 0);
    (void)opt.step(model.params);
    opt.save(dir / "ok.safetensors", model.params);

    // a model with one parameter more than the file has state for
    std::vector<float> extra(3, 1.0f), gextra(3, 0.0f);
    Parameters more;
    for (const auto& p : model.params) more.add(p.name, p.shape, p.value, p.grad, p.decay);
    more.add("extra", {3}, extra, gextra, true);
    AdamW fresh;
    CHECK(ssm::test::error_of([&] {
              fresh.load(dir / "ok.safetensors", more);
          }).find("no optimizer state 'exp_avg.extra'") != std::string::npos);
    CHECK(fresh.steps_taken() == 0);

    // a file with state for a parameter the model lacks
    opt.save(dir / "more.safetensors", more);
    CHECK(ssm::test::error_of([&] {
              fresh.load(dir / "more.safetensors", model.params);
          }).find("'exp_avg.extra' belongs to no parameter") != std::string::npos);

    // a shape that disagrees
    std::vector<float> w2(12, 0.0f), gw2(12, 0.0f);
    Parameters reshaped;
    for (const auto& p : model.params)
        if (p.name == "w")
            reshaped.add("w", {4, 3}, w2, gw2, true);
        else
            reshaped.add(p.name, p.shape, p.value, p.grad, p.decay);
    CHECK(ssm::test::error_of([&] {
              fresh.load(dir / "ok.safetensors", reshaped);
          }).find("'exp_avg.w' is F32 [3, 4], parameter w is F32 [4, 3]") != std::string::npos);

    // a non-finite gradient: an error naming it, and no parameter moves
    const auto before = model.value;
    model.params.zero_grad();
    model.grad.at("A_log")[4] = std::numeric_limits<float>::quiet_NaN();
    CHECK(ssm::test::error_of([&] {
              (void)opt.step(model.params);
          }).find("gradient of A_log is not finite (nan at element 4)") != std::string::npos);
    CHECK(model.value == before);
    CHECK(opt.steps_taken() == 1);
    std::filesystem::remove_all(dir);
}

}  // namespace test_adamw
