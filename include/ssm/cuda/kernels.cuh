// ssm/cuda/kernels.cuh — the Mamba-1 and Mamba-2 kernels on the device, each the counterpart of a CPU
// layer and checked against it (tests/cuda/test_cuda_ops.cu). One header per op, as
// `ssm/layers/` has one per layer; this one includes them all:
//
//   common.cuh          DeviceOffsets (packed-sequence offsets on the device), the helpers
//                       every kernel shares
//   embedding.cuh       embedding              ssm::Embedding::forward
//   norm.cuh            add_norm               residual += delta, then ssm::RMSNorm /
//                                              ssm::LayerNorm::forward
//   causal_conv1d.cuh   causal_conv1d          ssm::CausalConv1d::forward (packed
//                                              sequences, carried state)
//                       causal_conv1d_step     ssm::CausalConv1d::step
//   selective_scan.cuh  selective_scan         ssm::SequentialScan / ParallelScan
//                                              (+ softplus(Δ + bias))
//                       selective_state_update ssm::selective_state_update
//   mamba_step.cuh      mamba_decode_step      ssm::MambaMixer::step between in_proj and
//                                              out_proj (conv step, x_proj, dt_proj +
//                                              softplus, state update), fused in two kernels
//   ssd.cuh             ssd_scan               ssm::ChunkedSsd (the Mamba-2 scan, chunked,
//                                              packed sequences, carried state)
//                       ssd_state_update       ssm::ssd_state_update
//   heads.cuh           argmax_rows            greedy sampling (Eigen's maxCoeff: the first
//                                              largest)
//                       gather_last_rows       the last token of every packed sequence
//   convert.cuh         convert, convert_rows  fp32 ↔ bf16 (the bf16 operand of a bf16 GEMM)
//
// Layouts are the CPU's: activations row-major (tokens, features) with a row stride so an
// operand can be a column slice of a wider matrix (xz = [x | z], x_proj's [dt | B | C]);
// conv state (nseq, K−1, E) oldest first; SSM state (nseq, E, N); A (E, N) = −exp(A_log).
// Arithmetic is fp32 throughout; the scan's activations and the decoding step's x_proj and
// dt_proj weights may be bf16 in memory.
//
// Every function takes device pointers, checks its sizes on the host, queues its kernel on
// `stream` and checks the launch. Packed-sequence offsets live on the device
// (`DeviceOffsets`, validated when made).
#pragma once

#include "ssm/cuda/causal_conv1d.cuh"
#include "ssm/cuda/common.cuh"
#include "ssm/cuda/convert.cuh"
#include "ssm/cuda/embedding.cuh"
#include "ssm/cuda/heads.cuh"
#include "ssm/cuda/mamba_step.cuh"
#include "ssm/cuda/norm.cuh"
#include "ssm/cuda/selective_scan.cuh"
#include "ssm/cuda/ssd.cuh"
