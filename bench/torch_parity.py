"""PyTorch baseline for `stagewise bench parity`: multitask sparse parity runs trained one after
another, as the reference trains them (one `train(config)` per run): the reference's MLP
(Linear -> ReLU -> Linear to 2 logits), cross-entropy, Adam lr 3e-3, batches of the task mixture.
Batches are generated vectorised (the reference draws every sample in Python through a
DataLoader, which is far slower; this baseline does not count that).

Usage: python3 bench/torch_parity.py --runs 16 --steps 200 --threads 2
        [--tasks 8 --features 16 --bits 3 --hidden 50 --batch 1024]
Prints one JSON line: {"run_steps_per_s": ...}.
"""
import argparse, json, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.fc1 = nn.Linear(i, h)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(h, 2)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def run(a, seed, alpha, steps):
    torch.manual_seed(seed)
    mask = torch.zeros(a.tasks, a.features)
    for t in range(a.tasks):
        mask[t, torch.randperm(a.features)[: a.bits]] = 1.0
    w = 1 / torch.arange(1, a.tasks + 1, dtype=torch.float) ** alpha
    freqs = w / w.sum()
    model = MLP(a.tasks + a.features, a.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.multinomial(freqs, a.batch, replacement=True)
        bits = torch.randint(0, 2, (a.batch, a.features)).float()
        labels = ((bits * mask[idx]).sum(1) % 2).long()
        x = torch.cat([F.one_hot(idx, a.tasks).float(), bits], dim=1)
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--batch", type=int, default=1024)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    alphas = [0.5, 0.8, 1.0, 2.0, 3.0, 4.0]
    run(a, 0, 0.5, 3)  # warm-up
    t0 = time.perf_counter()
    for r in range(a.runs):
        run(a, r, alphas[r % len(alphas)], a.steps)
    dt = time.perf_counter() - t0
    print(json.dumps({"run_steps_per_s": a.runs * a.steps / dt}))


if __name__ == "__main__":
    main()
