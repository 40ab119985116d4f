"""Probes for issue 13, item 5: can a small transformer pre-trained on the Figure 1 mixture learn to
choose its two branches consistently (branch agreement >= 0.75; ideal 5/6, independent 1/2)?

Each probe pre-trains covpipe's transformer (AdamW, batch 64, one fixed dataset of 20,000
graphs, one core) under one lever and prints branch agreement on 512 held-out prompts of the
uniform G_1/G_2/G_3 mixture every `--every` steps, then a Markdown row for docs/results-default.md
("Branch agreement: probes"):

    python scripts/branch_probes.py baseline curriculum share schedule pairs rule_curriculum

Levers: `curriculum` trains on G_1/G_2 alone (agreement 1 in the data) for the first half, then
on the mixture; `share` pre-trains on 0.45 / 0.45 / 0.1 (a departure from the paper's 1/3 each);
`schedule` uses 100 warm-up steps and cosine decay; `pairs` the edge-pair response format;
`rule_*` the layers prompt with the match node first (`pair_order: rule`).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from covpipe.evaluate import _branch_diagnostics
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher

UNIFORM = {"match": 1 / 3, "mismatch": 1 / 3, "uniform4": 1 / 3}
PROBES = {
    "baseline": {},
    "curriculum": {"curriculum": True},
    "share": {"classes": {"match": 0.45, "mismatch": 0.45, "uniform4": 0.1}},
    "schedule": {"schedule": True},
    "pairs": {"teacher": {"response_format": "pairs"}},
    "rule_curriculum": {"teacher": {"pair_order": "rule"}, "curriculum": True},
    "rule_share_schedule": {
        "teacher": {"pair_order": "rule"},
        "schedule": True,
        "classes": {"match": 0.45, "mismatch": 0.45, "uniform4": 0.1},
    },
}


def teacher_of(probe, classes):
    return build_teacher(
        {
            "name": "graph",
            "num_nodes": 50,
            "prompt_format": "layers",
            "response_format": "path",
            **probe.get("teacher", {}),
            "classes": classes,
        }
    )


def agreement(model, teacher, batch) -> float:
    paths = teacher.branch_choice_paths(batch.prompt)
    return float(np.mean(_branch_diagnostics(model, batch, paths)["branch_agreement"]))


def run(name, steps, every, lr, seed=0):
    probe = PROBES[name]
    horizon, rng = 8, np.random.default_rng(seed)
    mixture = teacher_of(probe, probe.get("classes", UNIFORM))
    data = mixture.sample(20000, horizon, rng)
    consistent = teacher_of(probe, {"match": 0.5, "mismatch": 0.5}).sample(20000, horizon, rng)
    held_out = teacher_of(probe, UNIFORM).sample(512, horizon, np.random.default_rng(seed + 1))
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = build_model(
        {"class": "transformer", "layers": 2, "heads": 2, "width": 64}, Vocab.of(mixture, horizon), teacher=mixture
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    started, trace = time.perf_counter(), []
    for step in range(1, steps + 1):
        if probe.get("schedule"):
            scale = min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr * max(scale, 0.01)
        source = consistent if probe.get("curriculum") and step <= steps // 2 else data
        idx = rng.integers(len(source.prompt), size=64)
        loss = -model.token_log_probs(as_tensor(source.prompt[idx]), as_tensor(source.response[idx])).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            with torch.inference_mode():
                trace.append((step, agreement(model, teacher_of(probe, UNIFORM), held_out)))
            print(
                f"{name}: step {step}, loss {loss.item():.4f}, agreement {trace[-1][1]:.3f}, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    minutes = (time.perf_counter() - started) / 60
    best = max(a for _, a in trace)
    print(f"| {name} | {steps} | {lr:g} | {minutes:.1f} | {trace[-1][1]:.3f} | {best:.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probes", nargs="+", choices=sorted(PROBES))
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.003)
    args = parser.parse_args()
    print("| probe | steps | lr | minutes | agreement (last) | agreement (best) |\n|---|---|---|---|---|---|")
    for name in args.probes:
        run(name, args.steps, args.every, args.lr)


if __name__ == "__main__":
    main()
