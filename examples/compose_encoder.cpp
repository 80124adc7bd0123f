// compose-encoder: build retrieval encoders from the library's policies — the ready-made
// ssm::MambaRetriever by hand, one with mean pooling, and one with a pooling policy
// written here — and compare what they make of the same texts.
//
//   compose-encoder tests/data/mamba-tiny
#include <cstdio>

#include <ssm/ssm.hpp>

// A user-defined pooling policy: the element-wise maximum over the sequence. Anything
// with a static `pool(hidden, begin, end, out)` satisfies the ssm::Pooling concept.
struct MaxPool {
    static void pool(ssm::ConstStridedMap hidden, ssm::index begin, ssm::index end,
                     Eigen::Ref<Eigen::RowVectorXf> out) {
        out = hidden.middleRows(begin, end - begin).colwise().maxCoeff();
    }
};

using Mixer = ssm::MambaMixer<ssm::MambaDiscretization, ssm::ParallelScan>;
using Backbone = ssm::Stack<ssm::Residual<ssm::RMSNorm, Mixer>>;
using ByHand = ssm::Model<Backbone, ssm::BiEncoderHead<ssm::LastToken>>;  // == ssm::MambaRetriever
using MeanEncoder = ssm::Model<Backbone, ssm::BiEncoderHead<ssm::Mean>>;
using MaxEncoder = ssm::Model<Backbone, ssm::BiEncoderHead<MaxPool>>;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: compose-encoder CHECKPOINT_DIR\n");
        return 2;
    }
    try {
        // Three token sequences, each ending in the EOS (id 0 in the bundled checkpoints).
        const auto batch = ssm::Batch::of({{3, 17, 5, 99, 42, 0}, {3, 17, 5, 98, 0}, {400, 401, 402, 0}});
        const ssm::Matrix ready = ssm::MambaRetriever::load(argv[1]).encode(batch);
        const ssm::Matrix by_hand = ByHand::load(argv[1]).encode(batch);
        const ssm::Matrix mean = MeanEncoder::load(argv[1]).encode(batch);
        const ssm::Matrix max = MaxEncoder::load(argv[1]).encode(batch);
        std::printf("by hand vs ssm::MambaRetriever: max |difference| %.3g\n", (ready - by_hand).cwiseAbs().maxCoeff());
        const auto show = [](const char* name, const ssm::Matrix& e) {
            const ssm::Matrix cos = e * e.transpose();  // rows are unit vectors
            std::printf("%-10s cos(0,1) %.4f  cos(0,2) %.4f  cos(1,2) %.4f\n", name, cos(0, 1), cos(0, 2), cos(1, 2));
        };
        show("last", ready);
        show("mean", mean);
        show("max", max);
        const bool ok = (ready - by_hand).cwiseAbs().maxCoeff() == 0.0f && (ready - mean).norm() > 0 &&
                        (mean - max).norm() > 0;
        return ok ? 0 : 1;
    } catch (const ssm::Error& e) {
        std::fprintf(stderr, "compose-encoder: error: %s\n", e.what());
        return 1;
    }
}
