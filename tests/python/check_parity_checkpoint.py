"""Reads a stagewise sparse parity checkpoint from Python and checks its logits.

Usage: python3 tests/python/check_parity_checkpoint.py CHECKPOINT EXPECTED_JSON
EXPECTED_JSON: {"shapes": {name: shape}, "inputs": [[...]], "logits": [[l0, l1]]} with the Rust
model's logits. The logits are recomputed in numpy float64 from the file's tensors
(fc2(relu(fc1(x)))) and, when torch imports, by the reference's `MLP` module (fc1, relu, fc2)
after `load_state_dict(strict=True)`. Exits non-zero on any mismatch; prints what ran.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def compare(what, got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        fail(f"{what}: logits shape {got.shape} != {want.shape}")
    err = np.abs(got - want).max()
    if not err <= 1e-5 * max(1.0, np.abs(want).max()):
        fail(f"{what}: logits differ by up to {err}")
    return err


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    exp = json.load(open(expected_path))
    sd = load_file(path)
    if sorted(sd) != sorted(exp["shapes"]):
        fail(f"tensor names {sorted(sd)} != {sorted(exp['shapes'])}")
    for name, shape in exp["shapes"].items():
        if list(sd[name].shape) != shape:
            fail(f"{name}: shape {list(sd[name].shape)} != {shape}")
    x = np.array(exp["inputs"], dtype=np.float64)
    w = {k: v.astype(np.float64) for k, v in sd.items()}
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0.0)
    err = compare("numpy", h @ w["fc2.weight"].T + w["fc2.bias"], exp["logits"])
    ran = [f"numpy float64 (max diff {err:.1e})"]
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        ran.append("torch not importable: skipped")
    else:

        class MLP(nn.Module):
            def __init__(self, input_dim, hidden_dim, output_dim=2):
                super().__init__()
                self.fc1 = nn.Linear(input_dim, hidden_dim)
                self.relu = nn.ReLU()
                self.fc2 = nn.Linear(hidden_dim, output_dim)

            def forward(self, x):
                return self.fc2(self.relu(self.fc1(x)))

        hidden, inputs = sd["fc1.weight"].shape
        m = MLP(inputs, hidden)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        with torch.no_grad():
            out = m(torch.tensor(x, dtype=torch.float32)).numpy()
        ran.append(f"torch {torch.__version__} MLP, strict=True (max diff {compare('torch', out, exp['logits']):.1e})")
    print("OK: " + "; ".join(ran))


if __name__ == "__main__":
    main()
