"""Items 2, 3 and 8: the training step.

2. covpipe's training loop (train.train_trial) against a bare PyTorch loop on the same model,
   batches and optimizer; achieved FLOP/s of the step against this machine's matmul FLOP/s.
3. Vectorized seeds (covpipe.vectorized) against the same seeds trained one after another.
8. The graph transformer on the faithful edge-list prompts: batches grouped by padding (the
   default) against one plain padded batch.
All at one thread, as a workflow job runs.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from common import (
    Figure,
    default_study,
    graph_batch,
    graph_teacher,
    interleaved,
    one_thread,
    quiet_stderr,
    transformer_spec,
)


def _graph_spec(horizon: int, steps: int, prompt_format: str = "layers") -> dict:
    from covpipe import specs

    study = default_study("graph_horizon")
    study["teacher"] = {**study["teacher"], "prompt_format": prompt_format}
    study["train"] = {**study["train"], "steps": steps, "checkpoints": [steps]}
    return specs.train_spec("graph_horizon", study, "transformer", horizon)


def _bare_loop(spec, batch, steps):
    """The same model, initialization, batches and optimizer in a plain PyTorch loop.
    Returns (one_step, run): run() trains `steps` steps from a fresh initialization, like train_trial."""
    from covpipe.models import Vocab, build_model
    from covpipe.seeding import derive_seed
    from covpipe.teachers import build_teacher

    teacher = build_teacher(spec["teacher"])
    prompt, response = torch.from_numpy(batch.prompt), torch.from_numpy(batch.response)
    cfg = spec["train"]
    state = {}

    def fresh():
        torch.manual_seed(derive_seed(spec["study"], "init", spec["model_name"], spec["horizon"], 0))
        state["model"] = build_model(spec["model"], Vocab.of(teacher, spec["horizon"]), teacher=teacher)
        state["opt"] = torch.optim.AdamW(state["model"].parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        state["gen"] = torch.Generator().manual_seed(
            derive_seed(spec["study"], "batches", spec["model_name"], spec["horizon"], 0)
        )

    def step():
        model, opt = state["model"], state["opt"]
        idx = torch.randint(0, len(batch), (cfg["batch_size"],), generator=state["gen"])
        y = response[idx]
        loss = F.nll_loss(model.step_log_probs(prompt[idx], y).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run():
        fresh()
        for _ in range(steps):
            step()

    fresh()
    return step, run


def matmul_flops(size: int = 1024, repeats: int = 5) -> float:
    """This machine's fp32 matmul FLOP/s at the current thread count (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _profile_step(step) -> list[tuple[str, float]]:
    """Share of one training step's CPU time by kind of op: [(kind, fraction)]."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:  # the profiler's start/stop lines
        for _ in range(3):
            step()
    kinds = {
        "matmul": ("mm", "addmm", "bmm", "matmul", "linear", "baddbmm"),
        "attention": ("scaled_dot_product", "flash_attention"),
        "norm/activation/softmax": ("layer_norm", "gelu", "softmax", "log_softmax", "nll_loss"),
        "optimizer": ("adam", "_foreach", "lerp", "addcdiv", "sqrt"),
        "embedding/indexing": ("embedding", "index", "gather", "cat", "randint"),
    }
    totals: dict[str, float] = {}
    everything = 0.0
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        everything += e.self_cpu_time_total
        kind = next((k for k, pats in kinds.items() if any(p in e.key for p in pats)), "other elementwise/copies")
        totals[kind] = totals.get(kind, 0.0) + e.self_cpu_time_total
    return sorted(((k, v / everything) for k, v in totals.items()), key=lambda kv: -kv[1])


def overhead(quick: bool = False) -> list[Figure]:
    from torch.utils.flop_counter import FlopCounterMode

    from covpipe import train

    one_thread()
    horizon, steps = 16, (20 if quick else 40)
    spec = _graph_spec(horizon, steps)
    batch = graph_batch(graph_teacher(), 4000, horizon, seed=1)
    bare_step, bare_run = _bare_loop(spec, batch, steps)

    def covpipe_run():
        train.train_trial(spec, 0, batch)

    best = interleaved({"covpipe": covpipe_run, "bare": bare_run}, repeats=3 if quick else 5)
    rate_cov, rate_bare = steps / best["covpipe"], steps / best["bare"]
    with FlopCounterMode(display=False) as counter:
        bare_step()
    flops = counter.get_total_flops()
    peak = matmul_flops()
    achieved = flops * rate_cov
    shares = _profile_step(bare_step)
    print(
        f"  default transformer, graph H = {horizon} (layers prompts), batch {spec['train']['batch_size']}, "
        f"{steps} steps: covpipe {rate_cov:.1f} steps/s, bare loop {rate_bare:.1f} steps/s"
    )
    print(
        f"  one step = {flops / 1e9:.2f} GFLOP (forward + backward); achieved {achieved / 1e9:.1f} GFLOP/s against "
        f"{peak / 1e9:.0f} GFLOP/s for a 1024^2 fp32 matmul on one thread ({achieved / peak:.0%})"
    )
    print("  step time by kind of op: " + ", ".join(f"{k} {v:.0%}" for k, v in shares))
    ratio = rate_cov / rate_bare
    return [
        Figure(
            2,
            "training step: covpipe vs bare PyTorch loop (throughput)",
            ">= 0.95",
            f"{rate_cov:.1f} vs {rate_bare:.1f} steps/s",
            ratio,
            ratio >= 0.95,
        ),
        Figure(
            2,
            "transformer step FLOP/s vs machine matmul FLOP/s (1 thread)",
            "reported",
            f"{achieved / 1e9:.1f} of {peak / 1e9:.0f} GFLOP/s",
            achieved / peak,
            None,
        ),
    ]


def _markov_spec(model_name: str, horizon: int, steps: int, seeds: int) -> tuple[dict, list]:
    from covpipe import specs
    from covpipe.teachers import build_teacher

    study = default_study("markov_horizon")
    study["seeds"] = seeds
    study["train"] = {**study["train"], "steps": steps, "checkpoints": [steps]}
    if "train" in study["models"][model_name]:
        study["models"][model_name]["train"] = {
            **study["models"][model_name]["train"],
            "steps": steps,
            "checkpoints": [steps],
        }
    spec = specs.train_spec("markov_horizon", study, model_name, horizon)
    teacher = build_teacher(study["teacher"])
    n = study["data"]["n_train"]
    batches = [teacher.sample(n, horizon, np.random.default_rng(s)) for s in range(seeds)]
    return spec, batches


def vectorized_seeds(quick: bool = False) -> list[Figure]:
    from covpipe import train, vectorized

    one_thread()
    seeds = 16
    figures = []
    # Steps enough that a group's one-time set-up (stacking, the AR-linear norms) is amortized as in a
    # workflow job (600 steps), few enough that one-after-another takes seconds.
    cases = [("gru", 32, 30), ("gru", 128, 20), ("ar_linear", 32, 100), ("ar_linear", 128, 100)]
    if quick:
        cases = [("gru", 32, 15), ("ar_linear", 32, 30)]
    for model_name, horizon, steps in cases:
        spec, batches = _markov_spec(model_name, horizon, steps, seeds)
        out = {}

        def one_by_one():
            out["alone"] = [train.train_trial(spec, s, b) for s, b in enumerate(batches)]

        def together():
            out["together"] = vectorized.train_seeds(spec, list(range(seeds)), batches)

        best = interleaved({"alone": one_by_one, "together": together}, repeats=1 if quick else 2)
        diff = max(
            (a["checkpoints"][steps][k] - b["checkpoints"][steps][k]).abs().max().item()
            for a, b in zip(out["alone"], out["together"])
            for k in a["checkpoints"][steps]
        )
        ratio = best["alone"] / best["together"]
        print(
            f"  {model_name} (markov study sizes) H = {horizon}, S = {seeds} seeds x {steps} steps: one after another "
            f"{seeds * steps / best['alone']:.0f} seed-steps/s, vectorized {seeds * steps / best['together']:.0f} "
            f"seed-steps/s; max |param difference| {diff:.1e}"
        )
        figures.append(
            Figure(
                3,
                f"vectorized seeds, {model_name} H={horizon}, S={seeds} (throughput ratio)",
                ">= 4x",
                f"{seeds * steps / best['together']:.0f} vs {seeds * steps / best['alone']:.0f} seed-steps/s",
                ratio,
                ratio >= 4,
            )
        )
    figures += _tables_and_transformer(quick)
    return figures


def _tables_and_transformer(quick: bool) -> list[Figure]:
    """Why the other classes are not vectorized: count fits are milliseconds, the transformer is arithmetic-bound."""
    from torch.func import functional_call, vmap

    from covpipe import train
    from covpipe.models import Vocab, build_model

    spec, batches = _markov_spec("table_per_position", 128, 1, 16)
    started = time.perf_counter()
    for s, b in enumerate(batches):
        train.train_trial(spec, s, b)
    per_fit = (time.perf_counter() - started) / len(batches)
    print(
        f"  table_per_position H = 128: closed-form fit (+ training NLL) {per_fit * 1e3:.0f} ms per seed: "
        f"nothing to vectorize"
    )

    # The transformer through torch.func (stacked parameters, vmap over functional_call) at S seeds.
    seeds, horizon, steps = 4, 8, (3 if quick else 6)
    teacher = graph_teacher()
    vocab = Vocab.of(teacher, horizon)
    models = [build_model(transformer_spec(), vocab, teacher=teacher) for _ in range(seeds)]
    batch = graph_batch(teacher, 2000, horizon)
    prompt, response = torch.from_numpy(batch.prompt), torch.from_numpy(batch.response)
    idx = torch.randint(0, len(batch), (seeds, 64), generator=torch.Generator().manual_seed(0))
    template = models[0]
    params = {
        k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]).requires_grad_()
        for k, _ in template.named_parameters()
    }

    def batched_logp(p, x, y):
        return functional_call(template, p, (x, y), strict=False)

    template.forward = lambda x, y: template._forward(x, y, 0, None)  # layers prompts: no padding to group
    stacked = vmap(batched_logp)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in models]
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)

    def alone():
        for _ in range(steps):
            for s, m in enumerate(models):
                loss = -m.token_log_probs(prompt[idx[s]], response[idx[s]]).mean()
                opts[s].zero_grad()
                loss.backward()
                opts[s].step()

    def together():
        for _ in range(steps):
            logp = stacked(params, prompt[idx], response[idx]).gather(-1, response[idx].unsqueeze(-1))
            opt.zero_grad()
            (-logp.mean((1, 2, 3)).sum()).backward()
            opt.step()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vmap's note that attention has no batching rule
        best = interleaved({"alone": alone, "together": together}, repeats=1 if quick else 2)
    ratio = best["alone"] / best["together"]
    print(
        f"  transformer (graph H = {horizon}), S = {seeds} via torch.func vmap: {ratio:.2f}x the seeds one after "
        f"another: the step is arithmetic-bound (item 2), so it stays per seed"
    )
    return [
        Figure(
            3,
            f"vectorized seeds, transformer via vmap, S={seeds} (not used: does not pay)",
            "pays or is not used",
            f"{ratio:.2f}x",
            ratio,
            None,
        )
    ]


def _steps_loop(model, batch, steps: int, forward=None):
    """`steps` AdamW steps of batch 64 on `batch`; forward(prompt, response) -> (n, L, V) log-probs."""
    forward = forward or model.step_log_probs
    prompt, response = torch.from_numpy(batch.prompt), torch.from_numpy(batch.response)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)

    def run():
        for _ in range(steps):
            idx = torch.randint(0, len(batch), (64,), generator=gen)
            y = response[idx]
            loss = -forward(prompt[idx], y).gather(-1, y.unsqueeze(-1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def graph_training(quick: bool = False) -> list[Figure]:
    from covpipe.models import Vocab, build_model

    one_thread()
    figures = []
    steps = 3 if quick else 6
    for horizon in (8, 16, 24):
        teacher = graph_teacher("edges")
        torch.manual_seed(0)
        model = build_model(transformer_spec(), Vocab.of(teacher, horizon), teacher=teacher)
        batch = graph_batch(teacher, 640, horizon)
        # plain padded: every row at the full prompt length, pads attended (covpipe before grouping)
        best = interleaved(
            {
                "padded": _steps_loop(model, batch, steps, lambda x, y: model._forward(x, y, 0, None)),
                "grouped": _steps_loop(model, batch, steps),
            },
            repeats=2 if quick else 3,
        )
        padded, grouped = steps / best["padded"], steps / best["grouped"]
        lengths = batch.prompt.shape[1] - model.leading_pads(torch.from_numpy(batch.prompt))
        # For reference, the default study's `layers` prompts at this H (one length, nothing to group).
        teacher_l = graph_teacher("layers")
        model_l = build_model(transformer_spec(), Vocab.of(teacher_l, horizon), teacher=teacher_l)
        batch_l = graph_batch(teacher_l, 640, horizon)
        layers = steps / min(_timed(_steps_loop(model_l, batch_l, steps)) for _ in range(2))
        print(
            f"  H = {horizon}: edge-list prompts of {int(lengths.min())} to {int(lengths.max())} tokens "
            f"(mean {lengths.float().mean():.0f}); padded {padded:.2f} steps/s, grouped {grouped:.2f} steps/s "
            f"(the default study's layers prompts, {batch_l.prompt.shape[1]} tokens: {layers:.1f} steps/s)"
        )
        ratio = grouped / padded
        figures.append(
            Figure(
                8,
                f"graph training H={horizon} (edges): grouped by padding vs padded batch",
                "print the ratio; default = the faster",
                f"{grouped:.2f} vs {padded:.2f} steps/s",
                ratio,
                ratio >= 1.0,
            )
        )
    return figures
