// Sampler statistics: temperature 0 and top-k 1 are greedy, a fixed seed repeats, the
// top-k / top-p sets are the right ones, and draws follow the distribution.
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "ssm/heads/sampler.hpp"
#include "test_util.hpp"

namespace test_sampler {

namespace {

std::vector<float> random_logits(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, 2.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

std::vector<std::int32_t> draws(const ssm::SamplingOptions& o, std::span<const float> logits, int n) {
    ssm::Sampler s(o);
    std::vector<std::int32_t> out;
    for (int i = 0; i < n; ++i) out.push_back(s.sample(logits));
    return out;
}

}  // namespace

TEST_CASE("temperature 0, top-k 1 and --greedy all give the argmax", "[sampler]") {
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
        const auto logits = random_logits(500, seed);
        const auto best = ssm::Sampler::argmax(logits);
        CHECK(logits[static_cast<std::size_t>(best)] == *std::max_element(logits.begin(), logits.end()));
        ssm::SamplingOptions t0;
        t0.temperature = 0;
        t0.seed = seed;
        ssm::SamplingOptions k1;
        k1.top_k = 1;
        k1.seed = seed;
        ssm::SamplingOptions g;
        g.greedy = true;
        for (const auto& o : {t0, k1, g})
            for (auto id : draws(o, logits, 5)) CHECK(id == best);
    }
    const float tie[] = {1.0f, 3.0f, 3.0f, 0.0f};
    CHECK(ssm::Sampler::argmax(tie) == 1);  // first of equal maxima, as torch.argmax
}

TEST_CASE("a fixed seed repeats; another seed differs", "[sampler]") {
    const auto logits = random_logits(300, 7);
    ssm::SamplingOptions o;
    o.temperature = 1.5f;
    o.seed = 1234;
    const auto a = draws(o, logits, 200);
    CHECK(a == draws(o, logits, 200));
    o.seed = 1235;
    CHECK(a != draws(o, logits, 200));
}

TEST_CASE("top-k keeps the k largest; top-p keeps the smallest set reaching p", "[sampler]") {
    const auto logits = random_logits(1000, 3);
    ssm::SamplingOptions o;
    o.top_k = 10;
    const auto dk = ssm::Sampler(o).distribution(logits);
    REQUIRE(dk.size() == 10);
    std::vector<float> sorted(logits);
    std::sort(sorted.rbegin(), sorted.rend());
    double total = 0;
    for (std::size_t i = 0; i < dk.size(); ++i) {
        CHECK(logits[static_cast<std::size_t>(dk[i].first)] == sorted[i]);
        total += dk[i].second;
    }
    CHECK(std::abs(total - 1.0) < 1e-12);

    // top-p against a full softmax computed here.
    for (float p : {0.1f, 0.5f, 0.9f, 0.99f}) {
        o = {};
        o.top_p = p;
        o.temperature = 0.7f;
        const auto dp = ssm::Sampler(o).distribution(logits);
        std::vector<double> probs;
        double z = 0;
        const auto weight = [&](float x) {
            return std::exp((double{x} - double{sorted[0]}) / double{o.temperature});
        };
        for (float x : sorted) z += weight(x);
        for (float x : sorted) probs.push_back(weight(x) / z);
        double mass = 0;
        std::size_t n = 0;
        while (mass < p) mass += probs[n++];
        INFO("top_p " << p);
        CHECK(dp.size() == n);                        // smallest set whose mass reaches p
        CHECK(mass - probs[n - 1] < p);               // one fewer would not reach it
        for (std::size_t i = 0; i < dp.size(); ++i)   // renormalised within the kept set
            CHECK(std::abs(dp[i].second - probs[i] / mass) < 1e-9);
    }
}

TEST_CASE("draws follow the sampling distribution", "[sampler]") {
    const float logits[] = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f};
    ssm::SamplingOptions o;
    o.temperature = 0.8f;
    o.top_p = 0.95f;
    o.seed = 99;
    ssm::Sampler s(o);
    const auto dist = s.distribution(logits);
    constexpr int kDraws = 200000;
    std::map<std::int32_t, int> count;
    for (int i = 0; i < kDraws; ++i) ++count[s.sample(logits)];
    double chi2 = 0;
    for (const auto& [id, p] : dist) {
        const double expect = p * kDraws;
        chi2 += (count[id] - expect) * (count[id] - expect) / expect;
    }
    for (const auto& [id, c] : count)  // nothing outside the kept set
        CHECK(std::any_of(dist.begin(), dist.end(), [&](const auto& e) { return e.first == id; }));
    // Fewer than 6 degrees of freedom: chi-square beyond 25 has probability < 1e-4.
    CHECK(chi2 < 25.0);
}

TEST_CASE("bad sampling options are refused by name", "[sampler]") {
    ssm::SamplingOptions o;
    o.temperature = -1;
    CHECK(ssm::test::error_of([&] { ssm::Sampler s(o); }).find("temperature") != std::string::npos);
    o = {};
    o.top_p = 0;
    CHECK(ssm::test::error_of([&] { ssm::Sampler s(o); }).find("top_p") != std::string::npos);
    o = {};
    o.top_k = -2;
    CHECK(ssm::test::error_of([&] { ssm::Sampler s(o); }).find("top_k") != std::string::npos);
}

}  // namespace test_sampler
