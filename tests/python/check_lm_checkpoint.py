"""Reads a stagewise language-model checkpoint from Python and checks its logits.

Usage: python3 tests/python/check_lm_checkpoint.py CHECKPOINT EXPECTED_JSON
EXPECTED_JSON: {"config": {n_layers, d_model, n_heads, d_head, n_ctx, d_vocab}, "names": [...],
"tokens": [[...]], "logits": [[[...]]]} with the Rust model's logits. The logits are recomputed
by an independent numpy float64 implementation, by a torch module with TransformerLens' names
(when torch imports) and by TransformerLens itself (when it imports); each is loaded from the
file and compared. Exits non-zero with a message on any mismatch; prints what ran.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_reference  # noqa: E402


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def compare(what, got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        fail(f"{what}: logits shape {got.shape} != {want.shape}")
    err = np.abs(got - want).max()
    if not err <= 1e-4 * max(1.0, np.abs(want).max()):
        fail(f"{what}: logits differ by up to {err}")
    return err


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    exp = json.load(open(expected_path))
    cfg, tokens, want = exp["config"], np.array(exp["tokens"]), np.array(exp["logits"])
    sd = load_file(path)
    if sorted(sd) != sorted(exp["names"]):
        fail(f"names differ: {sorted(set(sd) ^ set(exp['names']))}")
    ran = [f"numpy float64 (max |diff| {compare('numpy', lm_reference.numpy_logits(sd, tokens, cfg['n_layers']), want):.2e})"]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        model = lm_reference.torch_model(cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        with torch.no_grad():
            got = model(torch.from_numpy(tokens).long()).numpy()
        ran.append(f"torch (strict load, max |diff| {compare('torch', got, want):.2e})")
        tl = lm_reference.transformer_lens_model(cfg)
        if tl is not None:
            missing, unexpected = tl.load_state_dict(
                {k: torch.from_numpy(v) for k, v in sd.items()}, strict=False
            )
            if unexpected or any(not (m.endswith(".mask") or m.endswith(".IGNORE")) for m in missing):
                fail(f"TransformerLens load: missing {missing}, unexpected {unexpected}")
            with torch.no_grad():
                got = tl(torch.from_numpy(tokens).long()).numpy()
            ran.append(f"TransformerLens (max |diff| {compare('TransformerLens', got, want):.2e})")
        else:
            ran.append("TransformerLens not importable: skipped")
    else:
        ran.append("torch not importable: torch and TransformerLens skipped")
    print("OK: " + "; ".join(ran))


if __name__ == "__main__":
    main()
