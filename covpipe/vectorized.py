"""Vectorized multi-seed training: the S seeds of one (study, model, horizon) job trained as one
batched computation, for the small model classes where per-step overhead, not arithmetic, is
the cost (`ar_linear`, `gru`).

Each seed keeps what `covpipe.train.train_trial` gives it: its own initialization (same torch
seed), its own mini-batch stream (same generator) and its own optimizer state. The S parameter
sets are stacked along a leading seed axis, shape (S, ...); one step runs one batched forward
and backward over all seeds and sums the S losses, so the gradient with respect to seed s's
slice is seed s's own gradient. Adam, AdamW and SGD are elementwise, so one optimizer over the
stacked tensors is S independent optimizers. Results equal per-seed training within float
tolerance, not bit for bit: the batched kernels sum in another order (tests/test_vectorized.py).
A seed's result does not depend on which other seeds share its group.

Not vectorized: count classes (closed-form fits take milliseconds), reference models, and the
transformer, whose training step is arithmetic-bound already (bench/run.py vectorized_seeds).

STACKED maps a model class to its batched token log-likelihood
    fn(template model, params {name: (S, ...)}, prompt (S, B, P), response (S, B, L)) -> (S, B, L) nats.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

from .distribute import collect, run_trials
from .models import Vocab, build_model
from .models.base import as_tensor
from .seeding import derive_seed
from .sequences import context_windows
from .teachers import build_teacher

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0


# ---- batched log-likelihoods ---------------------------------------------------------------------


def ar_linear_token_log_probs(model, params, prompt, response):
    """The AR-linear class (covpipe.models.ar_linear) for S parameter vectors theta (S, d)."""
    s, b, _ = prompt.shape
    feats = model.features
    windows = context_windows(prompt.reshape(s * b, -1).numpy(), response.reshape(s * b, -1).numpy(),
                              feats.window - 1, model.vocab.bos)
    windows = torch.from_numpy(windows).view(s, b, *windows.shape[1:])  # (S, B, L, w-1)
    steps = torch.log_softmax(feats.stacked_logits(params["theta"], windows), dim=-1)  # (S, B, L, V)
    return steps.gather(-1, response.unsqueeze(-1)).squeeze(-1)


class StackedGRU(torch.autograd.Function):
    """One GRU layer (PyTorch's gate equations) with a separate weight set per seed.

    Layout puts gates and units before the batch, so every per-step slice is contiguous in its
    inner (units, batch) block: gi (S, 3H, T, B) input gates incl. b_ih; w_hh (S, 3H, H);
    b_hh (S, 3H). Returns the hidden states (T, S, H, B). The backward pass is written out:
    per time step it does one small batched matmul and two elementwise ops; every other term
    is computed for all steps at once (autograd through the loop costs 3x more here).
    """

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh):
        s, g, t_len, b = gi.shape
        h_dim = g // 3
        bias = b_hh[:, :, None]
        hs, rz = gi.new_empty(t_len, s, h_dim, b), gi.new_empty(t_len, s, 2 * h_dim, b)
        n, gh = gi.new_empty(t_len, s, h_dim, b), gi.new_empty(t_len, s, 3 * h_dim, b)
        h = gi.new_zeros(s, h_dim, b)
        for t in range(t_len):
            torch.baddbmm(bias, w_hh, h, out=gh[t])  # (S, 3H, B)
            torch.add(gi[:, : 2 * h_dim, t], gh[t, :, : 2 * h_dim], out=rz[t]).sigmoid_()  # r, z
            torch.addcmul(gi[:, 2 * h_dim :, t], rz[t, :, :h_dim], gh[t, :, 2 * h_dim :], out=n[t]).tanh_()
            h = torch.lerp(n[t], h, rz[t, :, h_dim:], out=hs[t])  # (1 - z) n + z h
        ctx.save_for_backward(w_hh, hs, rz, n, gh)
        return hs

    @staticmethod
    def backward(ctx, grad):
        w_hh, hs, rz, n, gh = ctx.saved_tensors
        t_len, s, h_dim, b = hs.shape
        grad = grad.contiguous()
        r, z = rz[:, :, :h_dim], rz[:, :, h_dim:]
        h_prev = torch.cat([hs.new_zeros(1, s, h_dim, b), hs[:-1]])
        a_n = (1 - z) * (1 - n * n)  # d pre_n / d h_t
        # d(r, z, gh_n pre-activations) / d h_t, for every step at once: (T, S, 3, H, B)
        coef = torch.stack([a_n * gh[:, :, 2 * h_dim :] * (r - r * r), (h_prev - n) * (z - z * z), a_n * r], 2)
        dh_all = hs.new_empty(t_len, s, h_dim, b)
        dh = hs.new_zeros(s, h_dim, b)
        w_t = w_hh.transpose(1, 2)
        for t in range(t_len - 1, -1, -1):
            dh = torch.add(dh, grad[t], out=dh_all[t])  # total gradient reaching h_t
            dgh = (coef[t] * dh[:, None]).view(s, 3 * h_dim, b)
            dh = torch.baddbmm(dh * z[t], w_t, dgh)
        dgh = coef * dh_all[:, :, None]  # (T, S, 3, H, B)
        d_w = torch.einsum("tsgub,tshb->sguh", dgh, h_prev).reshape(s, 3 * h_dim, h_dim)
        d_b = dgh.sum((0, 4)).reshape(s, 3 * h_dim)
        d_gi = torch.cat([dgh[:, :, :2].reshape(t_len, s, 2 * h_dim, b), a_n * dh_all], 2)  # (T, S, 3H, B)
        return d_gi.permute(1, 2, 0, 3), d_w, d_b


def gru_token_log_probs(model, params, prompt, response):
    """The GRU class (covpipe.models.gru) for S weight sets, any number of layers."""
    s, b, p = prompt.shape
    bos = torch.full((s, b, 1), model.vocab.bos, dtype=torch.int64, device=prompt.device)
    tokens = torch.cat([bos, prompt, response[..., :-1]], dim=-1).transpose(1, 2)  # (S, T, B)
    t_len = tokens.shape[1]
    table = params["embed.weight"]  # (S, V_in + 1, E): one flat table, seed s's rows offset by s (V_in + 1)
    offset = (torch.arange(s, device=prompt.device) * table.shape[1])[:, None, None]
    x = F.embedding(tokens + offset, table.reshape(-1, table.shape[-1]))  # (S, T, B, E)
    layer_in = x.reshape(s, t_len * b, -1).transpose(1, 2)  # (S, E, T*B)
    for k in range(model.rnn.num_layers):
        gi = torch.baddbmm(params[f"rnn.bias_ih_l{k}"][:, :, None], params[f"rnn.weight_ih_l{k}"], layer_in)
        hs = StackedGRU.apply(gi.view(s, -1, t_len, b), params[f"rnn.weight_hh_l{k}"], params[f"rnn.bias_hh_l{k}"])
        layer_in = hs.permute(1, 2, 0, 3).reshape(s, -1, t_len * b)  # (S, H, T*B)
    states = hs[p:].permute(1, 2, 0, 3).reshape(s, hs.shape[2], -1)  # (S, H, L*B)
    logits = torch.baddbmm(params["head.bias"][:, :, None], params["head.weight"], states)  # (S, V, L*B)
    steps = torch.log_softmax(logits.view(s, logits.shape[1], -1, b), dim=1)  # (S, V, L, B)
    picked = steps.gather(1, response.permute(0, 2, 1).unsqueeze(1)).squeeze(1)  # (S, L, B)
    return picked.transpose(1, 2)  # (S, B, L)


STACKED = {
    "ar_linear": ar_linear_token_log_probs,
    "gru": gru_token_log_probs,
}


def supports(spec: dict) -> bool:
    """Whether the job's model class trains vectorized (where it pays, measured by bench/run.py)."""
    return spec["model"]["class"] in STACKED


# ---- training --------------------------------------------------------------------------------------


def train_seeds(spec: dict, seeds: list, batches: list, *, backend: str = "serial", address: str = "local",
                threads: int = 1, device: str = "cpu") -> list:
    """Every seed of one job, vectorized: results in seed order, as `train.train_trial` returns them.

    Serial: one group of all seeds. Ray: the seeds split into `threads` groups, one task each.
    A failing seed (NaN loss) lets its group finish, then TrialsFailed names every failure.
    """
    n_groups = 1 if backend == "serial" else max(1, min(threads, len(seeds)))
    parts = [list(a) for a in np.array_split(np.arange(len(seeds)), n_groups)]
    trials = [(spec, [seeds[i] for i in part], [batches[i] for i in part], device) for part in parts]
    grouped = run_trials(train_group, trials, backend=backend, address=address, num_cpus=threads,
                         num_gpus=1 if device != "cpu" else 0,
                         names=[f"{spec['model_name']} H={spec['horizon']} seeds {t[1]}" for t in trials])
    outcomes = [o for group in grouped for o in group]
    return collect(outcomes, [f"{spec['model_name']} H={spec['horizon']} seed {s}" for s in seeds])


def train_group(spec: dict, seeds: list, batches: list, device: str = "cpu") -> list:
    """Train `seeds` together. Returns [(True, {"checkpoints", "log"}) or (False, error text)] per seed."""
    teacher = build_teacher(spec["teacher"])
    vocab = Vocab.of(teacher, spec["horizon"])
    models = []
    for seed in seeds:  # each seed's initialization exactly as train_trial draws it
        torch.manual_seed(derive_seed(spec["study"], "init", spec["model_name"], spec["horizon"], seed))
        models.append(build_model(spec["model"], vocab, teacher=teacher))
    template = models[0].to(device)
    if any(True for _ in template.buffers()):
        raise ValueError(f"{spec['model']['class']}: vectorized training stacks parameters only; this class has buffers")
    params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).to(device).requires_grad_()
              for name, _ in template.named_parameters()}
    token_log_probs = STACKED[spec["model"]["class"]]
    cfg = spec["train"]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    opt = opt_cls(list(params.values()), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    gens = [torch.Generator().manual_seed(derive_seed(spec["study"], "batches", spec["model_name"], spec["horizon"], s))
            for s in seeds]
    prompts = [as_tensor(b.prompt).to(device) for b in batches]
    responses = [as_tensor(b.response).to(device) for b in batches]
    wanted = set(cfg["checkpoints"])
    n = len(seeds)
    alive = torch.ones(n, dtype=torch.bool)
    errors: dict[int, str] = {}
    checkpoints, rows = [{} for _ in seeds], [[] for _ in seeds]
    running, count = torch.zeros(n, dtype=torch.float64), 0
    name = f"{spec['model_name']} H={spec['horizon']} seeds {seeds[0]}-{seeds[-1]}"
    started = last_report = time.perf_counter()
    for step in range(1, cfg["steps"] + 1):
        idx = [torch.randint(0, len(b), (cfg["batch_size"],), generator=g).to(device) for b, g in zip(batches, gens)]
        prompt = torch.stack([p[i] for p, i in zip(prompts, idx)])  # (S, B, P)
        response = torch.stack([r[i] for r, i in zip(responses, idx)])  # (S, B, L)
        losses = -token_log_probs(template, params, prompt, response).mean((1, 2))  # (S,), nats/token
        values = losses.detach().double().cpu()
        for i in torch.nonzero(alive & ~torch.isfinite(values)).flatten().tolist():
            # What train_trial raises, per seed; the other seeds go on (their slices never mix).
            errors[i] = "".join(traceback.format_exception_only(FloatingPointError(
                f"{spec['model_name']} horizon {spec['horizon']} seed {seeds[i]}: loss is {values[i].item()} at step {step}")))
            alive[i] = False
        if not alive.any():
            break
        opt.zero_grad(set_to_none=True)
        losses[alive.to(losses.device)].sum().backward()
        opt.step()
        running, count = running + torch.where(alive, values, 0.0), count + 1
        now = time.perf_counter()
        if now - last_report >= PROGRESS_SECONDS:
            rate = step / (now - started)
            log.info("%s: step %d/%d, mean loss %.4f nats/token, %.1f steps/s (%d seeds), ETA %.0f s", name, step,
                     cfg["steps"], values[alive].mean().item(), rate, int(alive.sum()), (cfg["steps"] - step) / rate)
            last_report = now
        if step in wanted:
            seconds = time.perf_counter() - started  # the group's wall time: its seeds share every step
            for i in torch.nonzero(alive).flatten().tolist():
                checkpoints[i][step] = {k: v[i].detach().to("cpu", copy=True) for k, v in params.items()}
                rows[i].append({"seed": seeds[i], "step": step, "train_loss": running[i].item() / count,
                                "seconds": seconds})
            running, count = torch.zeros(n, dtype=torch.float64), 0
    return [(False, errors[i]) if i in errors else (True, {"checkpoints": checkpoints[i], "log": rows[i]})
            for i in range(n)]
