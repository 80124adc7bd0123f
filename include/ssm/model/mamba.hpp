// ssm/model/mamba.hpp — ready-made Mamba-1 models composed from the policies.
#pragma once

#include <filesystem>
#include <utility>

#include "ssm/heads/lm_head.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/layer_norm.hpp"
#include "ssm/layers/mamba_mixer.hpp"
#include "ssm/layers/rms_norm.hpp"
#include "ssm/model/model.hpp"
#include "ssm/model/residual.hpp"
#include "ssm/model/stack.hpp"
#include "ssm/scan/discretization.hpp"
#include "ssm/scan/selective_scan.hpp"

namespace ssm {

/// A Mamba-1 language model with the given norm: the layout of every HuggingFace
/// `MambaForCausalLM` and state-spaces `MambaLMHeadModel` checkpoint.
template <Norm NormT, Discretization Disc = MambaDiscretization, Scan ScanT = ParallelScan>
using MambaLMWith = Model<Stack<Residual<NormT, MambaMixer<Disc, ScanT>>>, LmHead>;

/// Mamba-1 LM with RMSNorm (state-spaces/mamba-*, *-hf).
using MambaLM = MambaLMWith<RMSNorm>;

/// Mamba-1 LM with LayerNorm (`rms_norm: false` checkpoints, e.g. MambaByte).
using MambaLMLayerNorm = MambaLMWith<LayerNorm>;

/// Loads the checkpoint at `dir` as whichever of `MambaLM` / `MambaLMLayerNorm` its
/// config asks for and calls `f(model)`; returns what `f` returns.
template <class F>
decltype(auto) with_mamba_lm(const std::filesystem::path& dir, F&& f) {
    const MambaConfig config = MambaConfig::load(dir);
    const Checkpoint ckpt = Checkpoint::open(dir);
    if (config.norm == NormKind::LayerNorm) {
        const auto model = MambaLMLayerNorm::load(ckpt, config);
        return std::forward<F>(f)(model);
    }
    const auto model = MambaLM::load(ckpt, config);
    return std::forward<F>(f)(model);
}

}  // namespace ssm
