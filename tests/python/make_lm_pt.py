"""Writes reference-style language-model checkpoints with PyTorch, for the converter's test.

Usage: python3 tests/python/make_lm_pt.py OUT_DIR CONFIG_JSON
Saves OUT_DIR/<step>.pt for steps 0 and 250 as the reference's train.py does (a dict with the
torch.compile'd model's state dict under "model", with TransformerLens' mask/IGNORE buffers, the
AdamW state, the RNG state, epoch and batch), and OUT_DIR/expected.json with a token batch and
each checkpoint's logits. Exits 3 when torch is not importable.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
except ImportError:
    print("torch not importable")
    sys.exit(3)
import lm_reference  # noqa: E402


def main():
    out, cfg = sys.argv[1], json.loads(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = lm_reference.torch_model(cfg)
    with torch.no_grad():  # TransformerLens' "gpt2" init (torch_model leaves W_* empty)
        for name, p in model.named_parameters():
            if ".W_" in name or name.startswith(("embed.", "pos_embed.", "unembed.W")):
                p.normal_(0.0, 0.8 / cfg["d_model"] ** 0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    tokens = torch.randint(0, cfg["d_vocab"], (2, cfg["n_ctx"]))
    expected = {"tokens": tokens.tolist(), "logits": {}}
    for step in (0, 250):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, cfg["d_vocab"]), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            expected["logits"][str(step)] = model(tokens).tolist()
        sd = {"_orig_mod." + k: v.detach().clone() for k, v in model.state_dict().items()}
        n = cfg["n_ctx"]
        for l in range(cfg["n_layers"]):
            sd[f"_orig_mod.blocks.{l}.attn.mask"] = torch.tril(torch.ones(n, n, dtype=torch.bool))
            sd[f"_orig_mod.blocks.{l}.attn.IGNORE"] = torch.tensor(-float("inf"))
        ckpt = {"model": sd, "optimizer": opt.state_dict(), "rng_state": torch.get_rng_state(),
                "epoch": 0, "batch": step}
        torch.save(ckpt, os.path.join(out, f"{step}.pt"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    print("OK")


if __name__ == "__main__":
    main()
