#!/usr/bin/env python3
"""Replay a stagewise run folder into a W&B run (online, or offline for `wandb sync` later).

    python scripts/wandb_replay.py RUN [--project P] [--entity E] [--name N] [--mode offline]

Reads RUN/config.yaml (the run's config, as W&B's run config), RUN/metrics.csv, RUN/train.csv
and RUN/llc/<sampler>/llc.csv (as `llc/<sampler>/<column>`), merges them by step and logs one
W&B step per training step, in increasing order as W&B requires. Needs only `wandb` (and the
PyYAML it brings). NaN and infinite values are left out, as in the MLflow export. Prints a JSON
summary: the run's id, its directory, the steps and keys logged.
"""

import argparse
import csv
import json
import math
import os
import sys


def read_table(path):
    """(header, rows) of a stagewise CSV table, or None when absent."""
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [[float(x) for x in r] for r in rows[1:]]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a stagewise run folder")
    p.add_argument("--project", default="stagewise")
    p.add_argument("--entity", default=None)
    p.add_argument("--name", default=None, help="W&B run name (default: the folder's name)")
    p.add_argument("--mode", default=None, choices=["online", "offline", "disabled"],
                   help="W&B mode (default: WANDB_MODE, else online)")
    a = p.parse_args()

    import wandb
    import yaml

    with open(os.path.join(a.run, "config.yaml")) as f:
        config = yaml.safe_load(f)
    tables = []
    for name, prefix in [("metrics.csv", ""), ("train.csv", "")]:
        t = read_table(os.path.join(a.run, name))
        if t:
            tables.append((prefix, t))
    llc_root = os.path.join(a.run, "llc")
    if os.path.isdir(llc_root):
        for sampler in sorted(os.listdir(llc_root)):
            t = read_table(os.path.join(llc_root, sampler, "llc.csv"))
            if t:
                tables.append((f"llc/{sampler}/", t))
    by_step = {}
    for prefix, (header, rows) in tables:
        for row in rows:
            values = by_step.setdefault(int(row[0]), {})
            for key, v in zip(header[1:], row[1:]):
                if math.isfinite(v):
                    values[prefix + key] = v

    run = wandb.init(project=a.project, entity=a.entity, mode=a.mode,
                     name=a.name or os.path.basename(os.path.normpath(a.run)),
                     config=config, job_type="stagewise-replay")
    keys = set()
    for step in sorted(by_step):
        run.log(by_step[step], step=step)
        keys.update(by_step[step])
    summary = {"id": run.id, "dir": run.dir, "steps": len(by_step), "keys": len(keys)}
    run.finish()
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    main()
