"""PyTorch baseline for `stagewise bench train`: the reference's L2H4 regression transformer
(DTransformer with its double residual, fused per-head QKV, positional lookup through the
transposed Linear weight) and its training step (data sampling, MSE, Adam, OneCycleLR), eager.

Usage: python3 bench/torch_train.py --batch 256 --threads 2 [--steps 30] [--k 16]
                                   [--device cpu|cuda] [--compile]
(--compile: torch.compile(mode="reduce-overhead") of the model, CUDA graphs included.)
Prints one JSON line: {"batch":..., "threads":..., "device":..., "steps_per_s":...}.
"""
import argparse, json, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, c, heads, t):
        super().__init__()
        self.h, self.c = heads, c
        self.attention = nn.Linear(c, 3 * c, bias=False)
        self.output = nn.Linear(c, c, bias=False)
        self.register_buffer("causal_mask", torch.log(torch.tril(torch.ones(t, t))))

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.h
        qkv = self.attention(x).view(b, t, self.h, 3 * hs).transpose(1, 2)
        q, k, v = qkv.split(hs, dim=-1)
        a = q @ k.transpose(-2, -1) / math.sqrt(hs) + self.causal_mask[:t, :t]
        y = torch.softmax(a, dim=-1) @ v
        return self.output(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, c, mlp, heads, t):
        super().__init__()
        self.attention = Attention(c, heads, t)
        self.compute = nn.Sequential(nn.Linear(c, mlp), nn.ReLU(), nn.Linear(mlp, c))
        self.layer_norms = nn.ModuleList([nn.LayerNorm(c), nn.LayerNorm(c)])

    def forward(self, x):
        h = x + self.attention(self.layer_norms[0](x))
        return h + self.compute(self.layer_norms[1](h))


class DTransformer(nn.Module):
    def __init__(self, d1, t, c=64, mlp=64, heads=4, layers=2):
        super().__init__()
        self.token_embedding = nn.Linear(d1, c, bias=False)
        self.postn_embedding = nn.Linear(t, c, bias=False)
        self.blocks = nn.ModuleList([Block(c, mlp, heads, t) for _ in range(layers)])
        self.unembedding = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, d1))

    def forward(self, toks):
        t = toks.shape[1]
        x = self.token_embedding(toks) + self.postn_embedding.weight.T[:t, :]
        for block in self.blocks:
            x = x + block(x)  # the reference's double residual
        return self.unembedding(x)


def batch(b, k, d, noise_var, device="cpu"):
    ws = torch.randn(b, d, device=device)
    xs = torch.randn(b, k, d, device=device)
    ys = xs @ ws.view(b, d, 1) + torch.randn(b, k, 1, device=device) * math.sqrt(noise_var)
    toks = torch.cat([torch.zeros_like(ys), xs, ys, torch.zeros_like(xs)], dim=-1).view(b, 2 * k, d + 1)
    return toks, ys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = 4
    model = DTransformer(d + 1, 2 * a.k).to(a.device)
    forward = torch.compile(model, mode="reduce-overhead") if a.compile else model
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=500_000, pct_start=0.5, anneal_strategy="linear",
        div_factor=249_999.0, final_div_factor=249_999.0, cycle_momentum=False)

    def step():
        toks, ys = batch(a.batch, a.k, d, 0.125, a.device)
        pred = forward(toks)[:, 0::2, :1]
        loss = F.mse_loss(ys, pred)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    for _ in range(20 if a.compile else 3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    print(json.dumps({"batch": a.batch, "threads": a.threads, "device": a.device,
                      "compile": a.compile, "steps_per_s": a.steps / dt}))


if __name__ == "__main__":
    main()
