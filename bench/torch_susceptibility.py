"""PyTorch baseline for `stagewise bench susceptibility`: a per-head susceptibility scan of the
L2H4 regression transformer at one checkpoint, run as devinterp 2.0 runs it: one sampling run
per weight restriction ("full" and each attention head), chains one after another (a deep copy
of the model, SGLD whose update is masked to the restriction), the per-token losses of every
observable stored at every draw, then `compute_susceptibilities`' formulas over the stored draws.
Eager mode.

Usage: python3 bench/torch_susceptibility.py --chains 4 --draws 10 --batch 256 --sequences 96
                                             --threads 2 [--k 16] [--observables 2] [--device cuda]
Prints one JSON line: {..., "seconds": wall time of the scan, "restriction_chain_draws_per_s": ...}.
"""
import argparse, copy, json, math, time

import torch
import torch.nn.functional as F

from torch_train import DTransformer, batch


def head_masks(model, heads=4):
    """devinterp-style param masks: {name: mask or None}; per head, its rows of each layer's
    fused per-head QKV weight (rows [h 3c, (h+1) 3c))."""
    out = {"full": {n: None for n, _ in model.named_parameters()}}
    for l, block in enumerate(model.blocks):
        w = block.attention.attention.weight
        rows = w.shape[0] // heads
        for h in range(heads):
            m = torch.zeros_like(w, dtype=torch.bool)
            m[h * rows:(h + 1) * rows] = True
            out[f"L{l}H{h}"] = {f"blocks.{l}.attention.attention.weight": m}
    return out


def sample(model, masks, data, observables, a, eps=1e-3, nbeta=60.0, gamma=6.0):
    """One restriction's chains, one after another; returns {obs: [chain, draw, seq, k]}."""
    toks, ys = data
    named = dict(model.named_parameters())
    dev = toks.device
    stored = {o: torch.empty(a.chains, a.draws, *observables[o][1].shape[:2], device=dev)
              for o in observables}
    for c in range(a.chains):
        m = copy.deepcopy(model)
        params = dict(m.named_parameters())
        init = {n: p.detach().clone() for n, p in params.items()}
        moving = {n: masks.get(n, False) for n in params if n in masks}
        g = torch.Generator(device=dev).manual_seed(100 + c)
        for d in range(a.draws):
            idx = torch.randint(0, toks.shape[0], (a.batch,), generator=g, device=dev)
            pred = m(toks[idx])[:, 0::2, :1]
            loss = F.mse_loss(pred, ys[idx])
            m.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for n, mask in moving.items():
                    p = params[n]
                    dw = -0.5 * eps * (nbeta * p.grad + gamma * (p - init[n]))
                    dw += math.sqrt(eps) * torch.randn_like(p)
                    p.add_(dw if mask is None else dw * mask)
                for o, (otoks, oys) in observables.items():
                    opred = m(otoks)[:, 0::2, 0]
                    stored[o][c, d] = (opred - oys[..., 0]) ** 2
    return stored


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sequences", type=int, default=96)
    ap.add_argument("--observables", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = 4
    model = DTransformer(d + 1, 2 * a.k).to(dev)
    data = tuple(t.to(dev) for t in batch(16384, a.k, d, 0.125))
    observables = {}
    for o in range(a.observables):
        toks, ys = batch(a.sequences, a.k, d, 0.125)
        observables["pretrain" if o == 0 else f"obs{o}"] = (toks.to(dev), ys.to(dev))
    masks = head_masks(model)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():  # L(w*) over the whole data set, as stagewise computes it
        init_loss = sum(float(F.mse_loss(model(data[0][i:i + 1024])[:, 0::2, :1], data[1][i:i + 1024]))
                        for i in range(0, data[0].shape[0], 1024)) / (data[0].shape[0] // 1024)
    runs = {name: sample(model, m, data, observables, a) for name, m in masks.items()}
    # compute_susceptibilities over the stored draws.
    full = runs["full"]
    full_sampling_mean = float(full["pretrain"].mean())
    sus = {}
    for name, r in runs.items():
        if name == "full":
            continue
        pt_mean = r["pretrain"].mean(dim=(-2, -1))
        phi = pt_mean - init_loss
        e_phi, e_phi_wr = float(phi.mean()), float((phi * pt_mean).mean())
        for o in observables:
            if o == "pretrain":
                continue
            full_delta = full_sampling_mean - full[o].mean(dim=(0, 1))
            e_phi_probe = (phi[:, :, None, None] * r[o]).mean(dim=(0, 1))
            sus[(name, o)] = e_phi_wr - e_phi_probe - e_phi * full_delta
    sync()
    dt = time.perf_counter() - t0
    work = len(masks) * a.chains * a.draws
    print(json.dumps({"restrictions": len(masks), "chains": a.chains, "draws": a.draws,
                      "batch": a.batch, "threads": a.threads, "device": a.device, "seconds": dt,
                      "restriction_chain_draws_per_s": work / dt, "values": len(sus)}))


if __name__ == "__main__":
    main()
