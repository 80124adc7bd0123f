#!/usr/bin/env python3
"""Write the PyTorch-format (`torch.save`) test files in tests/data/.

The C++ loader `ssm::TorchFile` reads `pytorch_model.bin` / `.pt` files without Python.
This script makes the files its tests read, with real `torch.save`, so the tests check
the loader against what PyTorch actually writes:

  mambabyte-tiny-torch/    the mambabyte-tiny weights as an original state-spaces
                           (`mamba_ssm`) checkpoint: config.json with d_model / n_layer
                           / ssm_cfg, pytorch_model.bin with `backbone.embedding.weight`
                           and an `lm_head.weight` that shares the embedding's storage
                           (a tied head, saved once). Its outputs must equal
                           mambabyte-tiny/reference.safetensors.
  mamba2-tiny-torch/       the mamba2-tiny weights as an original mamba_ssm Mamba-2
                           checkpoint (`ssm_cfg: {"layer": "Mamba2", "headdim", ...}`,
                           `dt_limit` holding the bare `Infinity` json.dumps writes).
                           Its outputs must equal mamba2-tiny/reference.safetensors.
  torch/tensors-torch<major>.pt
                           one tensor per dtype (F32, F64, F16, BF16, I64, I32), a 0-d
                           tensor, an empty one, and views: a transpose (strided), a
                           row (storage offset), a strided slice, two views of one
                           storage, a non-contiguous 3-d permute; plus a bool tensor
                           (no float reading). Written by whichever torch runs this
                           script, so running it under torch 1.x and 2.x gives both
                           writers' files.
  torch/tensors.expected.safetensors
                           the same tensors, contiguous float32 (the bool one left out).
  torch/nested.pt          {"state_dict": {...}, "step": 7, "args": argparse.Namespace}:
                           a training checkpoint with non-tensor objects.
  torch/parameters.pt      nn.Parameter values (pickled through _rebuild_parameter).
  torch/protocol4.pt       the tensors of nested.pt's state dict, pickle protocol 4.
  torch/zip64.pt           tensors-torch2.pt rewritten with every size and offset in
                           ZIP64 records (read back by zipfile and torch.load to check).
  torch/deflated.pt        tensors-torch2.pt repacked with compressed entries (an error).
  torch/big-endian.pt      tensors-torch2.pt with its byteorder record saying "big" (an error).
  torch/legacy.pt          the pre-1.6 format (_use_new_zipfile_serialization=False; an error).

Usage (torch, numpy; no transformers or safetensors package needed):
  python3 tests/data/make_torch_checkpoints.py             # everything, with this torch
  python3 tests/data/make_torch_checkpoints.py --tensors-only   # only tensors-torch<major>.pt
"""
import argparse
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def read_safetensors(path):
    """name -> float32/int numpy array, from a safetensors file (F32/BF16/I64 only)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        if t["dtype"] == "F32":
            a = np.frombuffer(data[b:e], dtype="<f4")
        elif t["dtype"] == "I64":
            a = np.frombuffer(data[b:e], dtype="<i8")
        else:
            raise SystemExit(f"{path}: {name}: dtype {t['dtype']} not handled here")
        out[name] = a.reshape(t["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    """Writes float32 numpy arrays as a safetensors file."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def mambabyte_torch():
    src = HERE / "mambabyte-tiny"
    dst = HERE / "mambabyte-tiny-torch"
    dst.mkdir(exist_ok=True)
    hf = json.loads((src / "config.json").read_text())
    weights = read_safetensors(src / "model.safetensors")
    config = {
        "d_model": hf["hidden_size"],
        "n_layer": hf["num_hidden_layers"],
        "vocab_size": hf["vocab_size"],
        "ssm_cfg": {"d_state": hf["state_size"], "d_conv": hf["conv_kernel"], "expand": hf["expand"],
                    "dt_rank": hf["time_step_rank"]},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": True,
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {}
    for name, a in weights.items():
        name = name.replace("backbone.embeddings.weight", "backbone.embedding.weight")
        state[name] = torch.from_numpy(a)
    state["lm_head.weight"] = state["backbone.embedding.weight"]  # tied: one storage, saved once
    torch.save(state, dst / "pytorch_model.bin")


def mamba2_torch():
    """mamba2-tiny as an original mamba_ssm Mamba-2 checkpoint (as state-spaces/mamba2-*):
    `ssm_cfg.layer` "Mamba2", `dt_limit` with the bare `Infinity` Python's json writes."""
    src = HERE / "mamba2-tiny"
    dst = HERE / "mamba2-tiny-torch"
    dst.mkdir(exist_ok=True)
    hf = json.loads((src / "config.json").read_text())
    weights = read_safetensors(src / "model.safetensors")
    assert hf["num_heads"] * hf["head_dim"] == hf["expand"] * hf["hidden_size"]
    config = {
        "d_model": hf["hidden_size"],
        "d_intermediate": 0,
        "n_layer": hf["num_hidden_layers"],
        "vocab_size": hf["vocab_size"],
        "ssm_cfg": {"layer": "Mamba2", "d_state": hf["state_size"], "d_conv": hf["conv_kernel"],
                    "expand": hf["expand"], "headdim": hf["head_dim"], "ngroups": hf["n_groups"],
                    "chunk_size": hf["chunk_size"], "dt_limit": [0.0, float("inf")]},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": True,
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {}
    for name, a in weights.items():
        name = name.replace("backbone.embeddings.weight", "backbone.embedding.weight")
        state[name] = torch.from_numpy(a)
    state["lm_head.weight"] = state["backbone.embedding.weight"]  # tied: one storage, saved once
    torch.save(state, dst / "pytorch_model.bin")


def pattern(shape, seed, dtype=torch.float32):
    """Values k/16 with |k| <= 50: exact in every float dtype, the same under any torch."""
    n = int(np.prod(shape)) if len(shape) else 1
    k = (np.arange(n) * 37 + seed * 11) % 101 - 50
    return torch.from_numpy((k / 16.0).reshape(shape)).to(dtype)


def tensor_cases():
    base = pattern((6, 5), 1)
    cube = pattern((2, 3, 4), 2)
    return {
        "f32": pattern((4, 3), 3),
        "f64": pattern((5,), 4, torch.float64),
        "f16": pattern((2, 3), 5, torch.float16),
        "bf16": pattern((3, 2), 6, torch.bfloat16),
        "i64": torch.arange(-3, 5, dtype=torch.int64).reshape(2, 4),
        "i32": torch.arange(7, dtype=torch.int32) * 1000 - 2000,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "base": base,
        "transposed": base.t(),
        "row": base[4],
        "strided": base[1::2, ::2],
        "column": base[:, 3],
        "permuted": cube.permute(2, 0, 1),
    }


def tensors_file():
    out = HERE / "torch"
    out.mkdir(exist_ok=True)
    t = tensor_cases()
    saved = dict(t)
    saved["mask"] = torch.tensor([True, False, True])
    major = torch.__version__.split(".")[0]
    torch.save(saved, out / f"tensors-torch{major}.pt")
    write_safetensors(out / "tensors.expected.safetensors",
                      {k: v.to(torch.float32).contiguous().numpy() for k, v in t.items()})


def repack(src, dst, compression=zipfile.ZIP_STORED, byteorder=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if byteorder is not None and info.filename.endswith("/byteorder"):
                data = byteorder.encode()
            entry = zipfile.ZipInfo(info.filename)
            entry.compress_type = compression
            with zout.open(entry, "w") as f:
                f.write(data)


def write_zip64(src, dst):
    """Rewrites a stored ZIP archive with every size and offset in ZIP64 records (the form
    archives past 4 GiB take): 0xffffffff in the headers, the values in ZIP64 extra fields,
    and a ZIP64 end record with its locator. Checked by reading it back with zipfile."""
    import zlib
    with zipfile.ZipFile(src) as zin:
        entries = [(i.filename.encode(), zin.read(i.filename)) for i in zin.infolist()]
    out, central = bytearray(), bytearray()
    for name, data in entries:
        offset, crc, n = len(out), zlib.crc32(data), len(data)
        extra = struct.pack("<HHQQ", 1, 16, n, n)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), len(extra)) + name + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, n, n, offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(name), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + name + cextra
    cd_offset = len(out)
    out += central
    end64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central),
                       cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    Path(dst).write_bytes(bytes(out))
    with zipfile.ZipFile(dst) as z:
        assert [(i.filename.encode(), z.read(i)) for i in z.infolist()] == entries


def other_files():
    import argparse as ap
    out = HERE / "torch"
    state = {"encoder.weight": pattern((3, 4), 8), "encoder.bias": pattern((3,), 9)}
    torch.save({"state_dict": state, "step": 7, "args": ap.Namespace(lr=0.1, name="run")}, out / "nested.pt")
    params = {"w": torch.nn.Parameter(pattern((2, 2), 10)),
              "b": torch.nn.Parameter(pattern((2,), 11), requires_grad=False)}
    torch.save(params, out / "parameters.pt")
    write_safetensors(out / "nested.expected.safetensors",
                      {**{k: v.numpy() for k, v in state.items()},
                       **{"param." + k: v.detach().numpy() for k, v in params.items()}})
    torch.save(state, out / "protocol4.pt", pickle_protocol=4)
    major = torch.__version__.split(".")[0]
    src = out / f"tensors-torch{major}.pt"
    write_zip64(src, out / "zip64.pt")
    a, b = torch.load(src), torch.load(out / "zip64.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    repack(src, out / "deflated.pt", compression=zipfile.ZIP_DEFLATED)
    repack(src, out / "big-endian.pt", byteorder="big")
    torch.save(state, out / "legacy.pt", _use_new_zipfile_serialization=False)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tensors-only", action="store_true", help="write only torch/tensors-torch<major>.pt")
    args = p.parse_args()
    tensors_file()
    if not args.tensors_only:
        mambabyte_torch()
        mamba2_torch()
        other_files()
    print(f"written with torch {torch.__version__}")


if __name__ == "__main__":
    main()
