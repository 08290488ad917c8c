"""PyTorch baseline for `stagewise bench sgld`: the reference's SGLD sampler on the L2H4 model,
chains run one after another as in timaeus-research/icl (deep-copied model, a fresh SGLD
optimizer per chain, minibatches of a fixed dataset), eager mode.

Usage: python3 bench/torch_sgld.py --chains 8 --batch 1024 --threads 2 [--draws 10] [--k 16]
                                  [--device cpu|cuda]
Prints one JSON line: {"chains":..., "batch":..., "threads":..., "chain_draws_per_s":...}.
"""
import argparse, copy, json, math, time

import torch
import torch.nn.functional as F

from torch_train import DTransformer, batch


def sgld_step(params, init, lr, nbeta, gamma):
    with torch.no_grad():
        for p, p0 in zip(params, init):
            dw = nbeta * p.grad + gamma * (p - p0)
            p.add_(dw, alpha=-0.5 * lr)
            p.add_(torch.randn_like(p), alpha=math.sqrt(lr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = 4
    model = DTransformer(d + 1, 2 * a.k).to(a.device)
    toks, ys = batch(a.n, a.k, d, 0.125, a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    eps, nbeta, gamma = 1e-3, 60.0, 6.0

    def chain(draws):
        m = copy.deepcopy(model)
        params = list(m.parameters())
        init = [p.detach().clone() for p in params]
        for _ in range(draws):
            idx = torch.randint(0, a.n, (a.batch,), device=a.device)
            pred = m(toks[idx])[:, 0::2, :1]
            loss = F.mse_loss(pred, ys[idx])
            m.zero_grad(set_to_none=True)
            loss.backward()
            sgld_step(params, init, eps, nbeta, gamma)

    chain(2)
    sync()
    t0 = time.perf_counter()
    for _ in range(a.chains):
        chain(a.draws)
    sync()
    dt = time.perf_counter() - t0
    print(json.dumps({"chains": a.chains, "batch": a.batch, "threads": a.threads,
                      "chain_draws_per_s": a.chains * a.draws / dt}))


if __name__ == "__main__":
    main()
