"""PyTorch baseline for `stagewise bench lm`: the reference's language model (TransformerLens'
attention-only shortformer: LN1, Q and K from LN1(x) + W_pos, V from LN1(x), causal softmax
attention, single residual, final LN, unembedding with bias) and its training step (next-token
cross-entropy, AdamW lr 1e-3, weight decay 0.05), eager, float32, on random token batches.

Attention is `F.scaled_dot_product_attention(is_causal=True)` (PyTorch's fused CPU kernel), or
with --attention einsum TransformerLens' own formulation (einsum scores, masked softmax).

Usage: python3 bench/torch_lm.py --layers 2 --d-model 256 --heads 8 --d-head 32 --ctx 1024
        --vocab 5000 --batch 4 --threads 2 [--steps 5] [--attention sdpa|einsum]
Prints one JSON line: {"steps_per_s": ...}.
"""
import argparse, json, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w = nn.Parameter(torch.ones(c))
        self.b = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * self.w + self.b


class Attn(nn.Module):
    def __init__(self, c, nh, dh, sdpa):
        super().__init__()
        std = 0.8 / c ** 0.5
        self.W_Q = nn.Parameter(torch.randn(nh, c, dh) * std)
        self.W_O = nn.Parameter(torch.randn(nh, dh, c) * std)
        self.b_Q = nn.Parameter(torch.zeros(nh, dh))
        self.b_O = nn.Parameter(torch.zeros(c))
        self.W_K = nn.Parameter(torch.randn(nh, c, dh) * std)
        self.W_V = nn.Parameter(torch.randn(nh, c, dh) * std)
        self.b_K = nn.Parameter(torch.zeros(nh, dh))
        self.b_V = nn.Parameter(torch.zeros(nh, dh))
        self.sdpa = sdpa

    def forward(self, xqk, x):
        q = torch.einsum("btm,hme->bhte", xqk, self.W_Q) + self.b_Q[None, :, None]
        k = torch.einsum("btm,hme->bhte", xqk, self.W_K) + self.b_K[None, :, None]
        v = torch.einsum("btm,hme->bhte", x, self.W_V) + self.b_V[None, :, None]
        if self.sdpa:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            t = q.shape[2]
            s = torch.einsum("bhqe,bhke->bhqk", q, k) / q.shape[-1] ** 0.5
            s = s.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool)), float("-inf"))
            z = torch.einsum("bhqk,bhke->bhqe", s.softmax(-1), v)
        return torch.einsum("bhqe,hem->bqm", z, self.W_O) + self.b_O


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        c, std = a.d_model, 0.8 / a.d_model ** 0.5
        self.W_E = nn.Parameter(torch.randn(a.vocab, c) * std)
        self.W_pos = nn.Parameter(torch.randn(a.ctx, c) * std)
        self.lns = nn.ModuleList([LN(c) for _ in range(a.layers)])
        self.attns = nn.ModuleList([Attn(c, a.heads, a.d_head, a.attention == "sdpa") for _ in range(a.layers)])
        self.ln_final = LN(c)
        self.W_U = nn.Parameter(torch.randn(c, a.vocab) * std)
        self.b_U = nn.Parameter(torch.zeros(a.vocab))

    def forward(self, tokens):
        resid = self.W_E[tokens]
        pos = self.W_pos[: tokens.shape[1]]
        for ln, attn in zip(self.lns, self.attns):
            x = ln(resid)
            resid = resid + attn(x + pos, x)
        return self.ln_final(resid) @ self.W_U + self.b_U


def main():
    p = argparse.ArgumentParser()
    for name, d in [("layers", 2), ("d-model", 256), ("heads", 8), ("d-head", 32), ("ctx", 1024),
                    ("vocab", 5000), ("batch", 4), ("threads", 1), ("steps", 5)]:
        p.add_argument("--" + name, type=int, default=d)
    p.add_argument("--attention", choices=["sdpa", "einsum"], default="sdpa")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Model(a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    gen = torch.Generator().manual_seed(1)

    def step():
        tokens = torch.randint(0, a.vocab, (a.batch, a.ctx), generator=gen)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    print(json.dumps({"steps_per_s": a.steps / (time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
