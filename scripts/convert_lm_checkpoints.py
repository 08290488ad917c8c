"""Converts TransformerLens / PyTorch language-model checkpoints (the paper's released LM
checkpoints, which you download yourself, or any run of the reference's train.py) into a
stagewise run folder, so that stagewise's evaluations, LLC, essential dynamics and stages run on
exactly those models.

Usage:
  python3 scripts/convert_lm_checkpoints.py CHECKPOINT... --out RUN_FOLDER
      [--trainset PATH] [--testset PATH] [--tokenizer PATH] [--step-from-name]

CHECKPOINT: `.pt` / `.bin` files saved by `torch.save` (a bare state dict, or the reference's
checkpoint dict with the state dict under "model"), or `.safetensors`; a folder is read for
such files. The step of each is the last integer in its file name (the reference names them
`<step>.pt`). Keys may carry torch.compile's `_orig_mod.` prefix; TransformerLens' `attn.mask`
and `attn.IGNORE` buffers are dropped. The architecture (layers, d_model, heads, d_head, n_ctx,
vocabulary) is read off the shapes and written to RUN_FOLDER/config.yaml with the reference's
training settings; checkpoints go to RUN_FOLDER/checkpoints/<step>.safetensors (float32, with
the metadata stagewise reads). Reading `.pt` needs no torch: the zip archive's pickle is read
with a restricted unpickler into numpy arrays (only tensors, plain containers and numbers are
accepted).
"""
import argparse
import io
import json
import os
import pickle
import re
import sys
import zipfile

import numpy as np
from safetensors.numpy import load_file, save_file

DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, name, key):
        self.name, self.key = name, key


def _rebuild_tensor(storage, offset, size, stride, *rest):
    data = storage.array
    if not size:
        return data[offset:offset + 1].reshape(())
    strides = [s * data.itemsize for s in stride]
    return np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=strides).copy()


def _rebuild_parameter(data, *rest):
    return data


class _Unpickler(pickle.Unpickler):
    """torch.save's pickle, restricted to tensors, containers and numbers."""

    def __init__(self, f, zf, prefix):
        super().__init__(f)
        self.zf, self.prefix = zf, prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        if module == "torch" and name in ("device", "Size"):
            return lambda *a: None
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a tensor or container)")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        _, storage_type, key, _, _ = pid
        name = storage_type if isinstance(storage_type, str) else str(storage_type)
        dtype = DTYPES.get(name)
        raw = self.zf.read(f"{self.prefix}/data/{key}")
        if dtype is None:  # bfloat16: widen to float32
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dtype)
        s = _Storage(name, key)
        s.array = arr
        return s


def load_pt(path):
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
        if not pkl:
            sys.exit(f"{path}: not a torch.save zip archive (no data.pkl)")
        prefix = pkl[0][: -len("/data.pkl")]
        return _Unpickler(io.BytesIO(zf.read(pkl[0])), zf, prefix).load()


def state_dict(path):
    if path.endswith(".safetensors"):
        sd = load_file(path)
    else:
        obj = load_pt(path)
        sd = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            sys.exit(f"{path}: expected a state dict or a dict with one under 'model'")
    out = {}
    for k, v in sd.items():
        k = k.replace("_orig_mod.", "")
        if k.endswith(".mask") or k.endswith(".IGNORE"):
            continue
        out[k] = np.ascontiguousarray(np.asarray(v, dtype=np.float32))
    return out


def architecture(sd, path):
    need = ["embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.attn.W_Q"]
    missing = [k for k in need if k not in sd]
    if missing:
        sys.exit(f"{path}: not a TransformerLens attention-only model (missing {missing})")
    if any(".mlp." in k or ".ln2." in k for k in sd):
        sys.exit(f"{path}: the model has MLPs; only attention-only models (the reference's) convert")
    layers = len({int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
    nh, c, dh = sd["blocks.0.attn.W_Q"].shape
    return {
        "n_layers": layers, "d_model": int(c), "d_head": int(dh), "n_heads": int(nh),
        "n_ctx": int(sd["pos_embed.W_pos"].shape[0]), "d_vocab": int(sd["embed.W_E"].shape[0]),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--trainset", default="data/dsir-pile-10m")
    p.add_argument("--testset", default="data/dsir-pile-10k")
    p.add_argument("--tokenizer", default="data/TinyStories-tokenizer-5k/tokenizer.json")
    a = p.parse_args()
    files = []
    for c in a.checkpoints:
        if os.path.isdir(c):
            files += [os.path.join(c, f) for f in sorted(os.listdir(c))
                      if f.endswith((".pt", ".bin", ".safetensors"))]
        else:
            files.append(c)
    if not files:
        sys.exit("no checkpoint files given")
    steps = {}
    for f in files:
        nums = re.findall(r"\d+", os.path.basename(f).rsplit(".", 1)[0])
        if not nums:
            sys.exit(f"{f}: no step number in the file name")
        steps[int(nums[-1])] = f
    if len(steps) != len(files):
        sys.exit("two checkpoint files name the same step")
    if os.path.exists(a.out) and os.listdir(a.out):
        sys.exit(f"{a.out}: exists and is not empty")
    os.makedirs(os.path.join(a.out, "checkpoints"), exist_ok=True)
    arch = None
    for step in sorted(steps):
        sd = state_dict(steps[step])
        this = architecture(sd, steps[step])
        if arch is None:
            arch = this
        elif this != arch:
            sys.exit(f"{steps[step]}: architecture {this} differs from the first file's {arch}")
        config = {"num_steps": max(steps) + 1, "transformer_config": dict(arch)}
        meta = {"format": "pt", "step": str(step), "steps_done": str(step + 1),
                "config": json.dumps(config), "producer": "convert_lm_checkpoints.py"}
        final = os.path.join(a.out, "checkpoints", f"{step}.safetensors")
        save_file(sd, final + ".tmp", metadata=meta)
        os.replace(final + ".tmp", final)
    yaml = [
        "# Converted by scripts/convert_lm_checkpoints.py; the reference's training settings.",
        f"num_steps: {max(steps) + 1}",
        "batch_size: 100",
        "transformer_config:",
        *[f"  {k}: {v}" for k, v in arch.items()],
        "optimizer_config: {optimizer_type: AdamW, lr: 0.001, betas: [0.9, 0.999], weight_decay: 0.05}",
        f"trainset: {a.trainset}",
        f"testset: {a.testset}",
        f"tokenizer: {a.tokenizer}",
    ]
    with open(os.path.join(a.out, "config.yaml.tmp"), "w") as f:
        f.write("\n".join(yaml) + "\n")
    os.replace(os.path.join(a.out, "config.yaml.tmp"), os.path.join(a.out, "config.yaml"))
    print(f"OK: {len(steps)} checkpoints (steps {min(steps)}..{max(steps)}) of {arch} in {a.out}")


if __name__ == "__main__":
    main()
