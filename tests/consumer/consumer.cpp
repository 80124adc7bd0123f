// A user's program: load a checkpoint folder, run three tokens, decode one more.
#include <cstdio>
#include <ssm/ssm.hpp>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer MODEL_DIR\n");
        return 2;
    }
    try {
        const auto model = ssm::MambaLM::load(argv[1]);
        auto state = model.make_state(1);
        const auto r = model.forward(ssm::Batch::of({{3, 17, 5}}), {ssm::Logits::Last, false}, &state);
        const std::int32_t next[] = {42};
        const ssm::Matrix logits = model.step(next, state);
        std::printf("logits %lldx%lld, step %lldx%lld\n", static_cast<long long>(r.logits.rows()),
                    static_cast<long long>(r.logits.cols()), static_cast<long long>(logits.rows()),
                    static_cast<long long>(logits.cols()));
        return r.logits.cols() == model.vocab_size() && logits.allFinite() ? 0 : 1;
    } catch (const ssm::Error& e) {
        std::fprintf(stderr, "consumer: %s\n", e.what());
        return 1;
    }
}
