// ssm/model/mamba.hpp — ready-made Mamba-1 models composed from the policies.
#pragma once

#include <filesystem>
#include <span>
#include <utility>

#include "ssm/heads/bi_encoder.hpp"
#include "ssm/heads/lm_head.hpp"
#include "ssm/heads/reranker.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/layer_norm.hpp"
#include "ssm/layers/mamba2_mixer.hpp"
#include "ssm/layers/mamba_mixer.hpp"
#include "ssm/layers/rms_norm.hpp"
#include "ssm/model/hybrid.hpp"
#include "ssm/model/model.hpp"
#include "ssm/model/residual.hpp"
#include "ssm/model/stack.hpp"
#include "ssm/scan/discretization.hpp"
#include "ssm/scan/selective_scan.hpp"
#include "ssm/scan/ssd.hpp"

namespace ssm {

/// A Mamba-1 language model with the given norm: the layout of every HuggingFace
/// `MambaForCausalLM` and state-spaces `MambaLMHeadModel` checkpoint.
template <Norm NormT, Discretization Disc = MambaDiscretization, Scan ScanT = ParallelScan>
using MambaLMWith = Model<Stack<Residual<NormT, MambaMixer<Disc, ScanT>>>, LmHead>;

/// Mamba-1 LM with RMSNorm (state-spaces/mamba-*, *-hf).
using MambaLM = MambaLMWith<RMSNorm>;

/// Mamba-1 LM with LayerNorm (`rms_norm: false` checkpoints, e.g. MambaByte).
using MambaLMLayerNorm = MambaLMWith<LayerNorm>;

/// A Mamba-1 backbone with any head, for either norm.
template <class Head, Norm NormT = RMSNorm, Discretization Disc = MambaDiscretization, Scan ScanT = ParallelScan>
using MambaWith = Model<Stack<Residual<NormT, MambaMixer<Disc, ScanT>>>, Head>;

/// Dense retrieval (Mamba Retriever): L2-normalised final hidden state at the appended EOS.
using MambaRetriever = MambaWith<BiEncoderHead<LastToken>>;

/// Reranking (RankMamba): `score.weight · h_EOS + score.bias`.
using MambaReranker = MambaWith<RerankerHead>;

/// A Mamba-2 language model (HuggingFace `Mamba2ForCausalLM`, state-spaces `mamba2-*`).
/// Falcon-Mamba checkpoints load as `MambaLM`: its mixer reads the family from the config.
template <SsdScan ScanT = ChunkedSsd<>>
using Mamba2LMWith = Model<Stack<Residual<RMSNorm, Mamba2Mixer<ScanT>>>, LmHead>;
using Mamba2LM = Mamba2LMWith<>;

/// A Mamba-2 backbone with any head.
template <class Head, SsdScan ScanT = ChunkedSsd<>>
using Mamba2With = Model<Stack<Residual<RMSNorm, Mamba2Mixer<ScanT>>>, Head>;

/// Loads the checkpoint as `MambaWith<Head, RMSNorm>` (Mamba-1 and Falcon-Mamba),
/// `MambaWith<Head, LayerNorm>`, `Mamba2With<Head>` or, for a SAMBA hybrid,
/// `SambaWith<Head>`, whichever its config's family and norm ask for, and calls `f(model)` (a non-const model, so a head's
/// settings can be changed); returns what `f` returns. `extra` names safetensors files
/// whose tensors are added to the checkpoint's (e.g. a separately trained head).
template <class Head, class F>
decltype(auto) with_mamba(const std::filesystem::path& dir, F&& f,
                          std::span<const std::filesystem::path> extra = {}) {
    const MambaConfig config = MambaConfig::load(dir);
    Checkpoint ckpt = Checkpoint::open(dir);
    for (const auto& file : extra) ckpt.add_extra(file);
    if (config.is_hybrid()) {
        auto model = SambaWith<Head>::load(ckpt, config);
        return std::forward<F>(f)(model);
    }
    if (config.family == ModelFamily::Mamba2) {
        auto model = Mamba2With<Head>::load(ckpt, config);
        return std::forward<F>(f)(model);
    }
    if (config.norm == NormKind::LayerNorm) {
        auto model = MambaWith<Head, LayerNorm>::load(ckpt, config);
        return std::forward<F>(f)(model);
    }
    auto model = MambaWith<Head, RMSNorm>::load(ckpt, config);
    return std::forward<F>(f)(model);
}

/// `with_mamba<LmHead>`: the language model in whichever norm its config asks for.
template <class F>
decltype(auto) with_mamba_lm(const std::filesystem::path& dir, F&& f) {
    return with_mamba<LmHead>(dir, std::forward<F>(f));
}

}  // namespace ssm
