"""Reads a stagewise checkpoint from Python and checks it against what Rust says it wrote.

Usage: python3 tests/python/check_checkpoint.py CHECKPOINT EXPECTED_JSON
EXPECTED_JSON holds {"names": [...], "shapes": {name: shape}, "sums": {name: float},
"first": {name: [first values]}, "step": int} and, optionally, a batch with the Rust model's
predictions ("tokens", "ys_pred") and the architecture ("task_size", "max_examples",
"embed_size", "mlp_size", "num_heads", "num_layers"): when torch is importable the
script also loads the file into the reference architecture with load_state_dict(strict=True)
and compares predictions. Exits non-zero with a message on any mismatch.
"""
import json
import math
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    exp = json.load(open(expected_path))
    tensors = load_file(path)
    if sorted(tensors) != sorted(exp["names"]):
        fail(f"names differ: {sorted(set(tensors) ^ set(exp['names']))}")
    for name, shape in exp["shapes"].items():
        t = tensors[name]
        if list(t.shape) != shape:
            fail(f"{name}: shape {list(t.shape)} != {shape}")
        if t.dtype != np.float32:
            fail(f"{name}: dtype {t.dtype}")
    for name, s in exp["sums"].items():
        got = float(tensors[name].astype(np.float64).sum())
        if not math.isclose(got, s, rel_tol=1e-9, abs_tol=1e-9):
            fail(f"{name}: sum {got} != {s}")
    for name, first in exp["first"].items():
        got = tensors[name].reshape(-1)[: len(first)].tolist()
        if got != first:
            fail(f"{name}: first values {got} != {first}")
    mask_names = [n for n in tensors if n.endswith("causal_mask")]
    for n in mask_names:
        m = tensors[n]
        if not (np.all(m[np.tril_indices(m.shape[0])] == 0) and np.all(np.isneginf(m[np.triu_indices(m.shape[0], 1)]))):
            fail(f"{n}: not log(tril(ones))")
    with safe_open(path, "np") as f:
        meta = f.metadata()
    if meta.get("format") != "pt" or int(meta["step"]) != exp["step"]:
        fail(f"metadata {meta}")
    json.loads(meta["config"])
    checked = "names, shapes, dtypes, values, causal masks, metadata"
    if "tokens" in exp:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            sys.path.insert(0, "bench")
            from torch_train import DTransformer
            import safetensors.torch

            d, k = exp["task_size"], exp["max_examples"]

            class InContextRegressionTransformer(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.token_sequence_transformer = DTransformer(
                        d + 1, 2 * k, exp["embed_size"], exp["mlp_size"], exp["num_heads"], exp["num_layers"])

            model = InContextRegressionTransformer()
            model.load_state_dict(safetensors.torch.load_file(path), strict=True)
            toks = torch.tensor(exp["tokens"], dtype=torch.float32)
            with torch.no_grad():
                pred = model.token_sequence_transformer(toks)[:, 0::2, 0]
            want = torch.tensor(exp["ys_pred"], dtype=torch.float32)
            err = (pred - want).abs().max().item()
            if err > 1e-4 * (1 + want.abs().max().item()):
                fail(f"torch predictions differ from stagewise's by {err}")
            checked += f", torch strict load + predictions (max diff {err:.2e})"
    print(f"OK: {len(tensors)} tensors ({checked})")


if __name__ == "__main__":
    main()
