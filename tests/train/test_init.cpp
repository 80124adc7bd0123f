// Initialising a model from scratch (ssm/train/init.hpp). Checked against: the names and
// shapes of the bundled checkpoints (mamba-tiny, mambabyte-tiny, falcon-mamba-tiny,
// mamba2-tiny, mamba2-grouped-torch) and the training registry's order; the closed forms
// of A_log, D, the norms and the biases; the distributions `mamba_ssm` draws from (uniform bounds and standard
// deviations, the log-uniform time steps, the normal embedding) within tolerances set by
// the sample counts; pinned values of the seeded streams; and the library's loader, which
// must open the written folder and run a finite forward.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/io/checkpoint.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/model/mamba.hpp"
#include "ssm/train/init.hpp"
#include "ssm/train/parameters.hpp"
#include "test_util.hpp"

namespace test_init {

namespace fs = std::filesystem;
using ssm::train::InitOptions;
using ssm::train::NamedTensor;

namespace {

/// A transformers-form Mamba-1 config: D 256, E 512, N 16, K 4, R 16, 4 layers, vocab 1000
/// (large enough for the statistics below), with `edits` merged in.
nlohmann::json wide_json(const nlohmann::json& edits = nlohmann::json::object()) {
    nlohmann::json j = {{"model_type", "mamba"}, {"vocab_size", 1000},         {"hidden_size", 256},
                        {"state_size", 16},      {"num_hidden_layers", 4},     {"expand", 2},
                        {"conv_kernel", 4},      {"time_step_rank", "auto"},   {"use_bias", false},
                        {"use_conv_bias", true}, {"tie_word_embeddings", true}};
    j.update(edits);
    return j;
}

InitOptions seeded(std::uint64_t seed) {
    InitOptions o;
    o.seed = seed;
    return o;
}

ssm::MambaConfig config_of(const nlohmann::json& j) {
    return ssm::MambaConfig::from_json(j, "test config");
}

const NamedTensor& tensor_named(const std::vector<NamedTensor>& ts, const std::string& name) {
    const auto it =
        std::find_if(ts.begin(), ts.end(), [&](const NamedTensor& t) { return t.name == name; });
    INFO("tensor " << name);
    REQUIRE(it != ts.end());
    return *it;
}

bool has(const std::vector<NamedTensor>& ts, const std::string& name) {
    return std::any_of(ts.begin(), ts.end(), [&](const NamedTensor& t) { return t.name == name; });
}

std::vector<ssm::index> shape_of(const NamedTensor& t) {
    return {t.value.shape().begin(), t.value.shape().end()};
}

struct Stats {
    double mean = 0, stddev = 0, max_abs = 0, kurtosis = 0;
    std::size_t n = 0;
};

Stats stats(std::span<const float> v) {
    Stats s;
    s.n = v.size();
    for (float x : v) s.mean += x;
    s.mean /= static_cast<double>(s.n);
    double m2 = 0, m4 = 0;
    for (float x : v) {
        const double d = x - s.mean;
        m2 += d * d;
        m4 += d * d * d * d;
        s.max_abs = std::max(s.max_abs, std::abs(static_cast<double>(x)));
    }
    m2 /= static_cast<double>(s.n);
    m4 /= static_cast<double>(s.n);
    s.stddev = std::sqrt(m2);
    s.kurtosis = m4 / (m2 * m2);
    return s;
}

/// U(−b, b): every value within b, the largest near b, mean ≈ 0 and std ≈ b/√3, the
/// tolerances a few standard errors of n draws (the sample std of n uniform draws has a
/// relative standard error of about 0.45/√n).
void check_uniform(std::span<const float> v, double b, const std::string& what) {
    INFO(what << ": bound " << b << ", " << v.size() << " values");
    const Stats s = stats(v);
    const double n = static_cast<double>(s.n);
    CHECK(s.max_abs <= b * (1 + 1e-6));
    CHECK(s.max_abs >= b * 0.95);
    CHECK(std::abs(s.mean) <= 6 * b / std::sqrt(3 * n));
    CHECK(std::abs(s.stddev / (b / std::sqrt(3.0)) - 1) <= 3 / std::sqrt(n));
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

double softplus(double x) {
    return x > 20 ? x : std::log1p(std::exp(x));
}

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Writes `j` as a config.json in a fresh scratch folder and returns the file.
fs::path config_file(const nlohmann::json& j, const std::string& tag) {
    const fs::path dir = ssm::test::scratch_dir(tag);
    std::ofstream(dir / "config.json") << j.dump(2);
    return dir / "config.json";
}

/// The mean next-token cross-entropy of `logits` (T, V) for `ids`.
double mean_nll(const ssm::Matrix& logits, const std::vector<std::int32_t>& ids) {
    double total = 0;
    for (ssm::index t = 0; t + 1 < logits.rows(); ++t) {
        const auto row = logits.row(t).cast<double>();
        const double mx = row.maxCoeff();
        const double lse = mx + std::log((row.array() - mx).exp().sum());
        total += lse - row(ids[static_cast<std::size_t>(t + 1)]);
    }
    return total / static_cast<double>(logits.rows() - 1);
}

}  // namespace

TEST_CASE("initial_parameters: the names and shapes of the bundled transformers checkpoints") {
    for (const char* name : {"mamba-tiny", "mambabyte-tiny"}) {
        INFO(name);
        const fs::path dir = ssm::test::data_dir() / name;
        const auto params =
            ssm::train::initial_parameters(ssm::MambaConfig::load(dir), InitOptions{});
        const auto file = ssm::SafetensorsFile::open(dir / "model.safetensors");
        std::map<std::string, std::vector<ssm::index>> ours, theirs;
        for (const auto& t : params) ours[t.name] = shape_of(t);
        for (const auto& n : file.names()) theirs[n] = file.info(n).shape;
        CHECK(params.size() == ours.size());  // no name twice
        CHECK(ours == theirs);
    }
    // The original (state-spaces) form of mambabyte-tiny's config names the same tensors.
    const auto torch = ssm::train::initial_parameters(
        ssm::MambaConfig::load(ssm::test::data_dir() / "mambabyte-tiny-torch"), InitOptions{});
    const auto hf = ssm::train::initial_parameters(
        ssm::MambaConfig::load(ssm::test::data_dir() / "mambabyte-tiny"), InitOptions{});
    REQUIRE(torch.size() == hf.size());
    for (std::size_t i = 0; i < hf.size(); ++i) {
        CHECK(torch[i].name == hf[i].name);
        CHECK(shape_of(torch[i]) == shape_of(hf[i]));
    }
}

TEST_CASE("initial_parameters: optional tensors follow the biases, the head's tie and the norm") {
    const auto plain = ssm::train::initial_parameters(config_of(wide_json()), InitOptions{});
    for (const char* n : {"lm_head.weight", "backbone.layers.0.mixer.in_proj.bias",
                          "backbone.layers.3.mixer.out_proj.bias", "backbone.layers.0.norm.bias",
                          "backbone.norm_f.bias"})
        CHECK_FALSE(has(plain, n));
    CHECK(has(plain, "backbone.layers.3.mixer.conv1d.bias"));
    CHECK(plain.size() == 1 + 4 * 10 + 1);

    const auto full =
        ssm::train::initial_parameters(config_of(wide_json({{"use_bias", true},
                                                            {"use_conv_bias", false},
                                                            {"tie_word_embeddings", false},
                                                            {"rms_norm", false}})),
                                       InitOptions{});
    CHECK(full.size() == 1 + 4 * (10 + 1 + 2 - 1) + 2 + 1);
    CHECK_FALSE(has(full, "backbone.layers.0.mixer.conv1d.bias"));
    CHECK(shape_of(tensor_named(full, "lm_head.weight")) == std::vector<ssm::index>{1000, 256});
    CHECK(shape_of(tensor_named(full, "backbone.layers.2.mixer.in_proj.bias")) ==
          std::vector<ssm::index>{1024});
    CHECK(shape_of(tensor_named(full, "backbone.layers.2.mixer.out_proj.bias")) ==
          std::vector<ssm::index>{256});
    for (const char* n :
         {"backbone.layers.1.mixer.in_proj.bias", "backbone.layers.1.mixer.out_proj.bias",
          "backbone.layers.1.norm.bias", "backbone.norm_f.bias"}) {
        INFO(n);
        const auto v = tensor_named(full, n).value.values();
        CHECK(std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; }));
    }
    for (const char* n : {"backbone.layers.1.norm.weight", "backbone.norm_f.weight"}) {
        INFO(n);
        const auto v = tensor_named(full, n).value.values();
        CHECK(std::all_of(v.begin(), v.end(), [](float x) { return x == 1.0f; }));
    }
    // The untied head is nn.Linear's default, U(±1/√D).
    check_uniform(tensor_named(full, "lm_head.weight").value.values(), 1 / std::sqrt(256.0),
                  "lm_head.weight");
}

TEST_CASE("initial_parameters: A_log is log(n + 1) in every row and D is 1") {
    const auto params = ssm::train::initial_parameters(config_of(wide_json()), seeded(7));
    for (ssm::index l = 0; l < 4; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l) + ".mixer.";
        const auto& a = tensor_named(params, p + "A_log");
        REQUIRE(shape_of(a) == std::vector<ssm::index>{512, 16});
        const auto v = a.value.values();
        int wrong = 0;
        for (ssm::index e = 0; e < 512; ++e)
            for (ssm::index n = 0; n < 16; ++n)
                wrong += v[static_cast<std::size_t>(e * 16 + n)] !=
                         static_cast<float>(std::log(n + 1.0));
        CHECK(wrong == 0);
        CHECK(v[0] == 0.0f);
        CHECK(v[15] == static_cast<float>(std::log(16.0)));
        const auto d = tensor_named(params, p + "D").value.values();
        CHECK(std::all_of(d.begin(), d.end(), [](float x) { return x == 1.0f; }));
    }
}

TEST_CASE("initial_parameters: softplus(dt_proj.bias) is log-uniform in [dt_min, dt_max]") {
    const InitOptions o;  // dt in [0.001, 0.1], floor 1e-4
    const auto params = ssm::train::initial_parameters(config_of(wide_json()), o);
    std::vector<double> log_dt;
    for (ssm::index l = 0; l < 4; ++l)
        for (float b :
             tensor_named(params, "backbone.layers." + std::to_string(l) + ".mixer.dt_proj.bias")
                 .value.values())
            log_dt.push_back(std::log(softplus(b)));
    REQUIRE(log_dt.size() == 2048);
    const double lo = std::log(o.dt_min), hi = std::log(o.dt_max), width = hi - lo;
    const auto [mn, mx] = std::minmax_element(log_dt.begin(), log_dt.end());
    // float32 rounding of the bias moves dt by about 1e-7 relative.
    CHECK(*mn >= lo - 1e-5);
    CHECK(*mx <= hi + 1e-5);
    // Spread over the whole range: 2048 draws leave no gap of 2% at either end.
    CHECK(*mn <= lo + 0.02 * width);
    CHECK(*mx >= hi - 0.02 * width);
    // Uniform in log dt: mean at the midpoint (standard error width/√(12·2048) ≈ 0.03),
    // and about half below it.
    double mean = 0;
    std::size_t below = 0;
    for (double x : log_dt) {
        mean += x;
        below += x < (lo + hi) / 2;
    }
    mean /= static_cast<double>(log_dt.size());
    CHECK(std::abs(mean - (lo + hi) / 2) < 0.15);
    CHECK(std::abs(static_cast<double>(below) / 2048.0 - 0.5) < 0.06);
    // ... and not a different law with the same mean: the variance of U(lo, hi) is width²/12.
    double var = 0;
    for (double x : log_dt) var += (x - mean) * (x - mean);
    var /= static_cast<double>(log_dt.size());
    CHECK(std::abs(var / (width * width / 12) - 1) < 0.1);
}

TEST_CASE("initial_parameters: time steps below the floor are raised to it") {
    InitOptions o;
    o.dt_min = 1e-6;
    o.dt_max = 1e-2;
    o.dt_init_floor = 1e-4;  // half of log-uniform [1e-6, 1e-2] lies below 1e-4
    const auto params = ssm::train::initial_parameters(config_of(wide_json()), o);
    std::size_t at_floor = 0, n = 0;
    for (float b : tensor_named(params, "backbone.layers.0.mixer.dt_proj.bias").value.values()) {
        const double dt = softplus(b);
        CHECK(dt >= 1e-4 * (1 - 1e-5));
        CHECK(dt <= 1e-2 * (1 + 1e-5));
        at_floor += std::abs(dt / 1e-4 - 1) < 1e-5;
        ++n;
    }
    CHECK(std::abs(static_cast<double>(at_floor) / static_cast<double>(n) - 0.5) < 0.1);
}

TEST_CASE("initial_parameters: uniform tensors have nn.Linear's and Conv1d's default bounds") {
    const auto params = ssm::train::initial_parameters(config_of(wide_json()), seeded(3));
    const double D = 256, E = 512, K = 4, R = 16;
    for (ssm::index l = 0; l < 4; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l) + ".mixer.";
        check_uniform(tensor_named(params, p + "in_proj.weight").value.values(), 1 / std::sqrt(D),
                      p + "in_proj.weight");
        check_uniform(tensor_named(params, p + "x_proj.weight").value.values(), 1 / std::sqrt(E),
                      p + "x_proj.weight");
        check_uniform(tensor_named(params, p + "conv1d.weight").value.values(), 1 / std::sqrt(K),
                      p + "conv1d.weight");
        check_uniform(tensor_named(params, p + "conv1d.bias").value.values(), 1 / std::sqrt(K),
                      p + "conv1d.bias");
        check_uniform(tensor_named(params, p + "dt_proj.weight").value.values(), 1 / std::sqrt(R),
                      p + "dt_proj.weight");
        // rescale_prenorm_residual: kaiming_uniform, then divided by √(4 layers).
        check_uniform(tensor_named(params, p + "out_proj.weight").value.values(),
                      1 / std::sqrt(E) / 2, p + "out_proj.weight");
    }
    CHECK(shape_of(tensor_named(params, "backbone.layers.0.mixer.x_proj.weight")) ==
          std::vector<ssm::index>{16 + 32, 512});
    CHECK(shape_of(tensor_named(params, "backbone.layers.0.mixer.conv1d.weight")) ==
          std::vector<ssm::index>{512, 1, 4});

    InitOptions o;
    o.rescale_prenorm_residual = false;
    o.dt_scale = 0.5;
    const auto plain = ssm::train::initial_parameters(config_of(wide_json()), o);
    check_uniform(tensor_named(plain, "backbone.layers.1.mixer.out_proj.weight").value.values(),
                  1 / std::sqrt(E), "out_proj.weight, not rescaled");
    check_uniform(tensor_named(plain, "backbone.layers.1.mixer.dt_proj.weight").value.values(),
                  0.5 / std::sqrt(R), "dt_proj.weight, dt_scale 0.5");

    o.dt_init = ssm::train::DtInit::constant;
    const auto constant = ssm::train::initial_parameters(config_of(wide_json()), o);
    const auto w = tensor_named(constant, "backbone.layers.1.mixer.dt_proj.weight").value.values();
    CHECK(std::all_of(w.begin(), w.end(),
                      [&](float x) { return x == static_cast<float>(0.5 / std::sqrt(R)); }));
}

TEST_CASE("initial_parameters: the embedding is N(0, initializer_range²)") {
    for (const double range : {0.02, 0.1}) {
        InitOptions o;
        o.initializer_range = range;
        const auto params = ssm::train::initial_parameters(config_of(wide_json()), o);
        const auto& emb = tensor_named(params, "backbone.embeddings.weight");
        REQUIRE(shape_of(emb) == std::vector<ssm::index>{1000, 256});
        const Stats s = stats(emb.value.values());
        INFO("range " << range << ": mean " << s.mean << " std " << s.stddev << " kurtosis "
                      << s.kurtosis);
        const double n = static_cast<double>(s.n);  // 256000
        CHECK(std::abs(s.mean) < 6 * range / std::sqrt(n));
        CHECK(std::abs(s.stddev / range - 1) < 6 / std::sqrt(2 * n));
        // A normal's kurtosis is 3 (a uniform's 1.8): the standard error is √(24/n) ≈ 0.01.
        CHECK(std::abs(s.kurtosis - 3) < 0.06);
        CHECK(s.max_abs > 4 * range);  // tails: P(|z| > 4) · 256000 ≈ 16 values expected
        CHECK(s.max_abs < 7 * range);
    }
}

TEST_CASE("initial_parameters: a seed gives the same values everywhere; another seed others") {
    const auto config = config_of(wide_json());
    const auto a = ssm::train::initial_parameters(config, seeded(11));
    const auto b = ssm::train::initial_parameters(config, seeded(11));
    const auto c = ssm::train::initial_parameters(config, seeded(12));
    REQUIRE(a.size() == b.size());
    REQUIRE(a.size() == c.size());
    const auto bytes_equal = [](const NamedTensor& x, const NamedTensor& y) {
        const auto u = x.value.values(), v = y.value.values();
        return u.size() == v.size() &&
               std::memcmp(u.data(), v.data(), u.size() * sizeof(float)) == 0;
    };
    for (std::size_t i = 0; i < a.size(); ++i) {
        INFO(a[i].name);
        CHECK(bytes_equal(a[i], b[i]));
        const bool random = a[i].name.find("norm") == std::string::npos &&
                            a[i].name.find("A_log") == std::string::npos &&
                            !a[i].name.ends_with(".mixer.D");
        CHECK(bytes_equal(a[i], c[i]) == !random);
    }
    // Each tensor has its own stream: layer 0 does not depend on how many layers follow
    // (out_proj's scale does, by design).
    const auto two = ssm::train::initial_parameters(
        config_of(wide_json({{"num_hidden_layers", 2}})), seeded(11));
    for (const char* n :
         {"backbone.embeddings.weight", "backbone.layers.0.mixer.in_proj.weight",
          "backbone.layers.1.mixer.dt_proj.bias", "backbone.layers.1.mixer.conv1d.weight"}) {
        INFO(n);
        CHECK(bytes_equal(tensor_named(two, n), tensor_named(a, n)));
    }
    // Pinned values of the uniform streams, which involve no math library (seed 0), as
    // tests/data/init_stream_reference.py computes them from the scheme init.hpp describes:
    // a change here changes every checkpoint made from a seed.
    const auto tiny = ssm::train::initial_parameters(
        ssm::MambaConfig::load(ssm::test::data_dir() / "mamba-tiny"), InitOptions{});
    const auto in0 = tensor_named(tiny, "backbone.layers.0.mixer.in_proj.weight").value.values();
    const auto conv2 = tensor_named(tiny, "backbone.layers.2.mixer.conv1d.weight").value.values();
    const float pinned_in[] = {-0.0312677659f, -0.00384280598f, -0.00113451737f, 0.118480161f};
    const float pinned_conv[] = {-0.409562916f, -0.453214765f, 0.350459605f, -0.0505789816f};
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(in0[i] == pinned_in[i]);
        CHECK(conv2[i] == pinned_conv[i]);
    }
}

TEST_CASE("InitOptions::from_config reads both config forms") {
    // transformers' MambaConfig writes its own (non-mamba_ssm) defaults into config.json.
    const auto hf = InitOptions::from_config(ssm::test::data_dir() / "mamba-tiny", 5);
    CHECK(hf.initializer_range == 0.1);
    CHECK_FALSE(hf.rescale_prenorm_residual);
    CHECK(hf.dt_min == 0.001);
    CHECK(hf.dt_max == 0.1);
    CHECK(hf.dt_init_floor == 0.0001);
    CHECK(hf.dt_scale == 1.0);
    CHECK(hf.dt_init == ssm::train::DtInit::random);
    CHECK(hf.seed == 5);

    const auto original = config_file(
        {{"d_model", 64},
         {"n_layer", 2},
         {"vocab_size", 100},
         {"ssm_cfg",
          {{"dt_min", 0.002},
           {"dt_max", 0.05},
           {"dt_init_floor", 0.001},
           {"dt_scale", 2.0},
           {"dt_init", "constant"}}},
         {"initializer_cfg", {{"initializer_range", 0.05}, {"rescale_prenorm_residual", false}}}},
        "init-original");
    const auto o = InitOptions::from_config(original);
    CHECK(o.dt_min == 0.002);
    CHECK(o.dt_max == 0.05);
    CHECK(o.dt_init_floor == 0.001);
    CHECK(o.dt_scale == 2.0);
    CHECK(o.dt_init == ssm::train::DtInit::constant);
    CHECK(o.initializer_range == 0.05);
    CHECK_FALSE(o.rescale_prenorm_residual);
    // Absent keys keep mamba_ssm's defaults.
    const auto bare_file =
        config_file({{"d_model", 64}, {"n_layer", 2}, {"vocab_size", 100}}, "init-bare");
    const auto bare = InitOptions::from_config(bare_file);
    CHECK(bare.initializer_range == 0.02);
    CHECK(bare.rescale_prenorm_residual);
    CHECK(bare.dt_min == 0.001);

    const auto bad_scheme =
        config_file(wide_json({{"time_step_init_scheme", "xavier"}}), "init-scheme");
    const std::string scheme_msg =
        ssm::test::error_of([&] { (void)InitOptions::from_config(bad_scheme); });
    INFO(scheme_msg);
    CHECK(contains(scheme_msg, bad_scheme.string()));
    CHECK(contains(scheme_msg, "xavier"));
    const auto bad_range =
        config_file(wide_json({{"time_step_min", 0.5}, {"time_step_max", 0.1}}), "init-range");
    const std::string range_msg =
        ssm::test::error_of([&] { (void)InitOptions::from_config(bad_range); });
    INFO(range_msg);
    CHECK(contains(range_msg, bad_range.string()));
    CHECK(contains(range_msg, "dt_max"));
    for (const auto& f : {original, bare_file, bad_scheme, bad_range})
        fs::remove_all(f.parent_path());
}

TEST_CASE("InitOptions: out-of-range options are refused") {
    const auto msg = [](auto edit) {
        InitOptions o;
        edit(o);
        const std::string m = ssm::test::error_of([&] { o.validate(); });
        UNSCOPED_INFO(m);
        return m;
    };
    CHECK(contains(msg([](InitOptions& o) { o.dt_min = 0; }), "dt_min"));
    CHECK(contains(msg([](InitOptions& o) { o.dt_max = 0.0001; }), "dt_max"));
    CHECK(contains(msg([](InitOptions& o) { o.dt_init_floor = -1; }), "dt_init_floor"));
    CHECK(contains(msg([](InitOptions& o) { o.dt_scale = std::nan(""); }), "dt_scale"));
    CHECK(
        contains(msg([](InitOptions& o) { o.initializer_range = HUGE_VAL; }), "initializer_range"));
}

TEST_CASE(
    "write_initial_checkpoint: a folder the library loads, a copy of the config, the tensors") {
    const fs::path src = ssm::test::data_dir() / "mamba-tiny" / "config.json";
    const fs::path root = ssm::test::scratch_dir("init-write");
    const fs::path dir = root / "fresh" / "model";  // parents are created
    ssm::train::write_initial_checkpoint(src, dir, seeded(21));
    CHECK(read_bytes(dir / "config.json") == read_bytes(src));
    std::vector<fs::path> entries;
    for (const auto& e : fs::directory_iterator(root / "fresh")) entries.push_back(e.path());
    CHECK(entries == std::vector<fs::path>{dir});  // no temporary folder left beside it

    // The file holds exactly initial_parameters' tensors, in float32.
    const auto params = ssm::train::initial_parameters(ssm::MambaConfig::load(src), seeded(21));
    {
        const auto file = ssm::SafetensorsFile::open(dir / "model.safetensors");
        CHECK(file.names().size() == params.size());
        CHECK(file.metadata().at("format") == "pt");
        CHECK(contains(file.metadata().at("ssm.init"), "seed=21"));
        for (const auto& t : params) {
            INFO(t.name);
            CHECK(file.info(t.name).dtype == ssm::DType::F32);
            const auto v = file.load_f32(t.name).values();
            CHECK(std::equal(v.begin(), v.end(), t.value.values().begin(), t.value.values().end()));
        }
    }

    // The library loads it; a forward is finite, and a fresh model predicts close to
    // uniformly (logits of about 0.02·√D): the mean cross-entropy is near ln V.
    const std::vector<std::int32_t> ids = {1, 5, 900, 42, 7, 7, 300, 999, 0, 12, 64, 128};
    const double nll = ssm::with_mamba_lm(dir, [&](const auto& model) {
        const auto r = model.forward(ssm::Batch::of({ids}));
        CHECK(r.logits.rows() == static_cast<ssm::index>(ids.size()));
        CHECK(r.logits.allFinite());
        return mean_nll(r.logits, ids);
    });
    CHECK(std::abs(nll - std::log(1000.0)) < 0.3);

    // Registering it for training lists the same names in the same order.
    {
        auto model = ssm::MambaLM::load(dir);
        ssm::train::Parameters registry;
        model.register_parameters(registry);
        std::vector<std::string> names;
        for (const auto& p : registry) names.push_back(p.name);
        std::vector<std::string> ours;
        for (const auto& t : params) ours.push_back(t.name);
        CHECK(names == ours);
    }

    // The same seed writes the same bytes; another seed does not.
    const fs::path again = root / "again/";  // a trailing separator names the folder
    ssm::train::write_initial_checkpoint(src, again, seeded(21));
    CHECK(read_bytes(again / "model.safetensors") == read_bytes(dir / "model.safetensors"));
    const fs::path other = root / "other";
    fs::create_directory(other);  // an existing empty folder is fine
    ssm::train::write_initial_checkpoint(src, other, seeded(22));
    CHECK(read_bytes(other / "model.safetensors") != read_bytes(dir / "model.safetensors"));

    // A folder that holds anything is never overwritten.
    const auto before = read_bytes(dir / "model.safetensors");
    const auto msg =
        ssm::test::error_of([&] { ssm::train::write_initial_checkpoint(src, dir, seeded(23)); });
    INFO(msg);
    CHECK(contains(msg, dir.string()));
    CHECK(contains(msg, "not an empty folder"));
    CHECK(read_bytes(dir / "model.safetensors") == before);
    fs::remove_all(root);
}

TEST_CASE("write_initial_checkpoint: LayerNorm, untied, biased and conv-bias-free configs load") {
    const fs::path root = ssm::test::scratch_dir("init-variants");
    const nlohmann::json small = {
        {"hidden_size", 32}, {"num_hidden_layers", 2}, {"vocab_size", 64}};
    const std::vector<nlohmann::json> edits = {
        {{"rms_norm", false}},
        {{"tie_word_embeddings", false}, {"use_bias", true}},
        {{"use_conv_bias", false}, {"rms_norm", false}, {"tie_word_embeddings", false}},
    };
    int k = 0;
    for (nlohmann::json e : edits) {
        e.update(small);
        INFO(e.dump());
        const fs::path cfg = root / ("config-" + std::to_string(k) + ".json");
        std::ofstream(cfg) << wide_json(e).dump();
        const fs::path dir = root / ("model-" + std::to_string(k++));
        ssm::train::write_initial_checkpoint(cfg, dir, InitOptions{});
        const auto file = ssm::SafetensorsFile::open(dir / "model.safetensors");
        const auto names = file.names();
        const auto listed = [&](const std::string& n) {
            return std::find(names.begin(), names.end(), n) != names.end();
        };
        CHECK(listed("lm_head.weight") == !e.value("tie_word_embeddings", true));
        CHECK(listed("backbone.norm_f.bias") == !e.value("rms_norm", true));
        CHECK(listed("backbone.layers.1.mixer.in_proj.bias") == e.value("use_bias", false));
        CHECK(listed("backbone.layers.1.mixer.conv1d.bias") == e.value("use_conv_bias", true));
        const bool finite = ssm::with_mamba_lm(dir, [](const auto& model) {
            return model.forward(ssm::Batch::of({{1, 2, 3, 60, 4}})).logits.allFinite();
        });
        CHECK(finite);
    }
    fs::remove_all(root);
}

TEST_CASE("write_initial_checkpoint: a SAMBA config is refused") {
    const fs::path root = ssm::test::scratch_dir("init-refuse");
    const fs::path config = ssm::test::data_dir() / "samba-tiny";  // a folder: its lit_config.json
    const fs::path dir = root / "samba";
    const auto msg = ssm::test::error_of(
        [&] { ssm::train::write_initial_checkpoint(config, dir, InitOptions{}); });
    INFO(msg);
    CHECK(contains(msg, ssm::train::detail::config_file_of(config).string()));
    CHECK(contains(msg, "a samba model"));
    CHECK(contains(msg, "only Mamba-1, Falcon-Mamba and Mamba-2"));
    CHECK_FALSE(fs::exists(dir));
    CHECK(fs::is_empty(root));  // nothing left behind, not even a temporary folder
    const auto samba = ssm::MambaConfig::load(config);
    CHECK(contains(
        ssm::test::error_of([&] { (void)ssm::train::initial_parameters(samba, InitOptions{}); }),
        "samba"));
    fs::remove_all(root);
}

TEST_CASE("initial_parameters: Falcon-Mamba and Mamba-2 name and shape every tensor of their checkpoints") {
    // transformers' falcon-mamba-tiny and mamba2-tiny (safetensors), and mamba_ssm's
    // mamba2-grouped-torch (pytorch_model.bin: 2 groups, d_ssm 48 of d_inner 64, an untied
    // head), read through the loader's names.
    for (const char* name : {"falcon-mamba-tiny", "mamba2-tiny", "mamba2-grouped-torch"}) {
        INFO(name);
        const fs::path dir = ssm::test::data_dir() / name;
        const auto params =
            ssm::train::initial_parameters(ssm::MambaConfig::load(dir), InitOptions{});
        const auto ckpt = ssm::Checkpoint::open(dir);
        std::map<std::string, std::vector<ssm::index>> ours;
        for (const auto& t : params) ours[t.name] = shape_of(t);
        CHECK(params.size() == ours.size());  // no name twice
        CHECK(params.size() == ckpt.names().size());
        for (const auto& [n, shape] : ours) {
            INFO(n);
            REQUIRE(ckpt.contains(n));
            CHECK(ckpt.info(n).shape == shape);
        }
    }
}

TEST_CASE("initial_parameters: a Mamba-2 layer is drawn as mamba_ssm's Mamba2 draws it") {
    // 8 heads of 32 (d_ssm 256 = d_inner), 2 groups of N 16, 3 layers.
    const nlohmann::json j = {{"model_type", "mamba2"}, {"vocab_size", 512},   {"hidden_size", 128},
                              {"state_size", 16},       {"num_hidden_layers", 3}, {"expand", 2},
                              {"conv_kernel", 4},       {"num_heads", 8},     {"head_dim", 32},
                              {"n_groups", 2},          {"chunk_size", 64},   {"use_bias", false},
                              {"use_conv_bias", true},  {"tie_word_embeddings", true}};
    InitOptions o = seeded(9);
    o.a_init_min = 2.0;
    o.a_init_max = 8.0;
    const auto params = ssm::train::initial_parameters(config_of(j), o);
    CHECK(params.size() == 1 + 3 * 9 + 1);  // embedding, 9 a layer (its norm, 8 of the mixer), norm_f
    const ssm::index C = 256 + 2 * 2 * 16, W = 2 * 256 + 2 * 2 * 16 + 8;
    std::vector<float> a_all, dt_all;
    for (ssm::index l = 0; l < 3; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l) + ".mixer.";
        INFO(p);
        CHECK(shape_of(tensor_named(params, p + "conv1d.weight")) == std::vector<ssm::index>{C, 1, 4});
        CHECK(shape_of(tensor_named(params, p + "in_proj.weight")) == std::vector<ssm::index>{W, 128});
        check_uniform(tensor_named(params, p + "in_proj.weight").value.values(), 1 / std::sqrt(128.0),
                      p + "in_proj.weight");
        check_uniform(tensor_named(params, p + "conv1d.weight").value.values(), 0.5, p + "conv1d.weight");
        // out_proj: U(±1/√E) divided by √L (rescale_prenorm_residual, mamba_ssm's default)
        check_uniform(tensor_named(params, p + "out_proj.weight").value.values(),
                      1 / std::sqrt(256.0) / std::sqrt(3.0), p + "out_proj.weight");
        for (const char* ones : {"D", "norm.weight"}) {
            const auto v = tensor_named(params, p + ones).value.values();
            CHECK(std::all_of(v.begin(), v.end(), [](float x) { return x == 1.0f; }));
        }
        CHECK(shape_of(tensor_named(params, p + "D")) == std::vector<ssm::index>{8});
        CHECK(shape_of(tensor_named(params, p + "norm.weight")) == std::vector<ssm::index>{256});
        for (float x : tensor_named(params, p + "A_log").value.values()) a_all.push_back(x);
        for (float x : tensor_named(params, p + "dt_bias").value.values()) dt_all.push_back(x);
    }
    // exp(A_log) in [2, 8] (24 draws): inside the range, spread over it.
    double lo = 1e9, hi = 0, mean = 0;
    for (float x : a_all) {
        const double a = std::exp(static_cast<double>(x));
        lo = std::min(lo, a);
        hi = std::max(hi, a);
        mean += a / static_cast<double>(a_all.size());
    }
    CHECK(lo >= 2.0 * (1 - 1e-6));
    CHECK(hi <= 8.0 * (1 + 1e-6));
    CHECK(hi - lo > 3.0);
    CHECK(std::abs(mean - 5.0) < 6 * std::sqrt(3.0) / std::sqrt(static_cast<double>(a_all.size())));
    // softplus(dt_bias) is a time step in [dt_min, dt_max].
    for (float x : dt_all) {
        const double dt = softplus(x);
        CHECK(dt >= 0.001 * (1 - 1e-5));
        CHECK(dt <= 0.1 * (1 + 1e-5));
    }
    // Different heads, layers and seeds draw different values.
    const auto again = ssm::train::initial_parameters(config_of(j), o);
    CHECK(tensor_named(again, "backbone.layers.1.mixer.A_log").value.values()[3] ==
          tensor_named(params, "backbone.layers.1.mixer.A_log").value.values()[3]);
    CHECK(std::set<float>(a_all.begin(), a_all.end()).size() == a_all.size());

    // D per channel (mamba_ssm's D_has_hdim) and no gated norm (rmsnorm false), original form.
    const nlohmann::json original = {
        {"d_model", 32}, {"n_layer", 2}, {"vocab_size", 64}, {"d_intermediate", 0},
        {"ssm_cfg", {{"layer", "Mamba2"}, {"d_state", 8}, {"headdim", 8}, {"ngroups", 1},
                     {"D_has_hdim", true}, {"rmsnorm", false}, {"chunk_size", 8}}}};
    const auto variant = ssm::train::initial_parameters(config_of(original), InitOptions{});
    CHECK(shape_of(tensor_named(variant, "backbone.layers.1.mixer.D")) == std::vector<ssm::index>{64});
    CHECK_FALSE(has(variant, "backbone.layers.1.mixer.norm.weight"));
}

TEST_CASE("InitOptions::from_config reads Mamba-2's A_init_range; a bad one is refused") {
    const auto original = config_file(
        {{"d_model", 32}, {"n_layer", 2}, {"vocab_size", 64},
         {"ssm_cfg", {{"layer", "Mamba2"}, {"headdim", 8}, {"A_init_range", {0.5, 4}}}}},
        "init-a-range");
    const auto o = InitOptions::from_config(original);
    CHECK(o.a_init_min == 0.5);
    CHECK(o.a_init_max == 4.0);
    const auto hf = InitOptions::from_config(ssm::test::data_dir() / "mamba2-tiny");
    CHECK(hf.a_init_min == 1.0);  // mamba_ssm's default, which transformers' config lacks
    CHECK(hf.a_init_max == 16.0);
    for (const nlohmann::json& bad : {nlohmann::json{4, 0.5}, nlohmann::json{0, 4},
                                      nlohmann::json{1}, nlohmann::json("1,16")}) {
        INFO(bad.dump());
        const auto file = config_file(
            {{"d_model", 32}, {"n_layer", 2}, {"vocab_size", 64},
             {"ssm_cfg", {{"layer", "Mamba2"}, {"headdim", 8}, {"A_init_range", bad}}}},
            "init-a-range-bad");
        const auto msg = ssm::test::error_of([&] { (void)InitOptions::from_config(file); });
        INFO(msg);
        CHECK(contains(msg, file.string()));
        CHECK(contains(msg, "A_init_range"));
    }
}

TEST_CASE("write_initial_checkpoint: Mamba-2 and Falcon-Mamba folders load, train's registry agrees") {
    const fs::path root = ssm::test::scratch_dir("init-mamba2");
    for (const char* name : {"mamba2-tiny", "mamba2-grouped-torch", "falcon-mamba-tiny"}) {
        INFO(name);
        const fs::path src = ssm::test::data_dir() / name / "config.json";
        const fs::path dir = root / name;
        const auto options = InitOptions::from_config(src, 4);
        ssm::train::write_initial_checkpoint(src, dir, options);
        CHECK(read_bytes(dir / "config.json") == read_bytes(src));
        const auto params = ssm::train::initial_parameters(ssm::MambaConfig::load(src), options);
        const auto file = ssm::SafetensorsFile::open(dir / "model.safetensors");
        CHECK(file.names().size() == params.size());
        // The library opens it as the config's family and runs a finite forward near
        // uniform prediction (vocab 256: ln 256 ≈ 5.55); its training registry lists the
        // same names in the same order.
        const std::vector<std::int32_t> ids = {1, 5, 200, 42, 7, 7, 100, 255, 0, 12, 64, 128};
        const auto [nll, registered] = ssm::with_mamba_lm(dir, [&](auto& model) {
            const auto r = model.forward(ssm::Batch::of({ids}));
            CHECK(r.logits.allFinite());
            ssm::train::Parameters registry;
            model.register_parameters(registry);
            std::vector<std::string> names;
            for (const auto& p : registry) names.push_back(p.name);
            return std::pair{mean_nll(r.logits, ids), names};
        });
        CHECK(std::abs(nll - std::log(256.0)) < 0.5);
        std::vector<std::string> ours;
        for (const auto& t : params) ours.push_back(t.name);
        CHECK(registered == ours);
    }
    fs::remove_all(root);
}

}  // namespace test_init
