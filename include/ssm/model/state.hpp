// ssm/model/state.hpp — the recurrent state of a whole model for a batch of sequences.
#pragma once

#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm {

/// One state object per layer, for `batch` sequences. Prefill fills it; each decoding
/// step consumes and advances it, at a cost independent of how many tokens came before.
template <class LayerState>
struct State {
    index batch = 0;
    std::vector<LayerState> layers;
};

}  // namespace ssm
