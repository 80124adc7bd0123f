// compose-model: build a Mamba language model by hand from the library's policies, check
// that it is the ready-made ssm::MambaLM, then swap one policy and see the effect.
//
//   compose-model tests/data/mamba-tiny
#include <cstdio>

#include <ssm/ssm.hpp>

// 1. The pieces. Each is a policy type checked by a concept where it is used:
//    - how (Δ, A, B, x) become (Ā, B̄x):  ssm::MambaDiscretization (what checkpoints use),
//      ssm::ZeroOrderHold, ssm::Bilinear
//    - how the recurrence runs over time: ssm::SequentialScan, ssm::ParallelScan
//    - the norm in front of each mixer:   ssm::RMSNorm, ssm::LayerNorm
using Mixer = ssm::MambaMixer<ssm::MambaDiscretization, ssm::ParallelScan>;
using Layer = ssm::Residual<ssm::RMSNorm, Mixer>;  // x += Mixer(RMSNorm(x))
using ByHand = ssm::Model<ssm::Stack<Layer>, ssm::LmHead>;

// 2. The same with the paper's zero-order-hold input discretization and the sequential scan.
using ZohLM = ssm::Model<
    ssm::Stack<ssm::Residual<ssm::RMSNorm, ssm::MambaMixer<ssm::ZeroOrderHold, ssm::SequentialScan>>>,
    ssm::LmHead>;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: compose-model CHECKPOINT_DIR\n");
        return 2;
    }
    try {
        const auto batch = ssm::Batch::of({{3, 17, 5, 99, 42}, {7, 7, 7}});
        const auto ready = ssm::MambaLM::load(argv[1]).forward(batch);
        const auto by_hand = ByHand::load(argv[1]).forward(batch);
        const auto zoh = ZohLM::load(argv[1]).forward(batch);
        const double same = (ready.logits - by_hand.logits).norm() / ready.logits.norm();
        const double diff = (ready.logits - zoh.logits).norm() / ready.logits.norm();
        std::printf("by hand vs ssm::MambaLM:          relative difference %.3g\n", same);
        std::printf("zero-order hold vs Mamba's Euler:  relative difference %.3g\n", diff);
        return same == 0.0 && diff > 0.0 ? 0 : 1;
    } catch (const ssm::Error& e) {
        std::fprintf(stderr, "compose-model: error: %s\n", e.what());
        return 1;
    }
}
