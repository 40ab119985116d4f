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

STACKED maps a model class to two functions:
    inputs(template model, prompt (n, P), response (n, L)) -> {name: (n, ...)}, once per seed, and
    fn(template model, params {name: (S, ...)}, {name: (S, B, ...)}) -> (S, B, L) token log-likelihoods, nats.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

from . import resume
from .distribute import collect, run_trials
from .models import Vocab, build_model
from .models.base import as_tensor
from .seeding import derive_seed
from .sequences import context_windows
from .teachers import build_teacher

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0


# ---- batched log-likelihoods ---------------------------------------------------------------------


CACHE_FLOATS = 2**24  # per seed: precompute the AR-linear norms when they fit in 64 MB


def token_inputs(model, prompt, response) -> dict:
    """Per-sequence inputs of a class that reads tokens: the tokens. prompt (n, P), response (n, L)."""
    return {"prompt": prompt, "response": response}


def ar_linear_inputs(model, prompt, response) -> dict:
    """The AR-linear logits <theta, phi> = B (<theta, c> + <theta, e_v>) / ||c + e_v|| need the norms,
    which do not depend on theta: computed once per training sequence, not once per step."""
    feats = model.features
    windows = torch.from_numpy(
        context_windows(prompt.cpu().numpy(), response.cpu().numpy(), feats.window - 1, model.vocab.bos)
    ).to(response.device)  # (n, L, w-1)
    if windows.shape[-1] == 0 or response.numel() * feats.vocab_size > CACHE_FLOATS:
        return {"windows": windows, "response": response}
    _, norm = feats.sum_and_norms(windows, model.theta.dtype)
    # c itself is cheaper to gather again from the small table each step than to read back from memory
    return {"windows": windows, "norm": norm, "response": response}  # (n, L, w-1), (n, L, V), (n, L)


def ar_linear_token_log_probs(model, params, batch):
    """The AR-linear class (covpipe.models.ar_linear) for S parameter vectors theta (S, d)."""
    feats = model.features
    if "norm" in batch:
        c, norm = feats.context_sum(batch["windows"], params["theta"].dtype), batch["norm"]
    else:
        c, norm = feats.sum_and_norms(batch["windows"], params["theta"].dtype)
    e = feats.table[0, : feats.vocab_size].to(device=c.device, dtype=c.dtype)  # (V, d)
    return _ARLinearLogLik.apply(params["theta"], c, norm, e, batch["response"], feats.scale)


class _ARLinearLogLik(torch.autograd.Function):
    """log pi_theta(y | context) at every position for S thetas, gradient written out.

    The logits are B (<theta, c> + <theta, e_v>) / ||c + e_v|| (covpipe.features), so
    d loss / d theta = B (sum_pos w_pos c_pos + sum_v u_v e_v) with u = (dlogits / norm) and
    w = sum_v u: two passes over the stacked arrays instead of autograd's several (the stack of
    16 seeds does not fit in cache, so passes over memory are the cost).
    theta (S, d); c (S, B, L, d); norm (S, B, L, V); e (V, d); y (S, B, L). Returns (S, B, L).
    """

    @staticmethod
    def forward(ctx, theta, c, norm, e, y, scale):
        s, b, length, d = c.shape
        # <theta_s, c> by one matrix-vector product per seed: the same kernel whatever the group's size
        ct = torch.stack([torch.mv(c[i].view(-1, d), theta[i]) for i in range(s)]).view(s, b, length, 1)
        logits = scale * (ct + (e * theta[:, None, :]).sum(-1)[:, None, None, :]) / norm  # (S, B, L, V)
        lse = logits.logsumexp(-1, keepdim=True)
        out = logits.gather(-1, y.unsqueeze(-1)) - lse
        ctx.save_for_backward(c, norm, e, y, logits.sub_(lse).exp_())  # the softmax, computed in place
        ctx.scale = scale
        return out.squeeze(-1)

    @staticmethod
    def backward(ctx, grad):
        c, norm, e, y, probs = ctx.saved_tensors
        # d out / d logits = onehot(y) - p, times grad; then through the / norm
        u = (probs * -grad[..., None]).scatter_add_(-1, y.unsqueeze(-1), grad.unsqueeze(-1)).div_(norm)
        # per seed or by sums, never one matmul over the stack: a seed's gradient must not depend on its group
        s, _, _, d = c.shape
        w = u.sum(-1)  # (S, B, L)
        d_theta = torch.stack([torch.mv(c[i].view(-1, d).T, w[i].reshape(-1)) for i in range(s)]) + (
            u.sum((1, 2))[:, :, None] * e
        ).sum(1)  # (S, d)
        return ctx.scale * d_theta, None, None, None, None, None


class StackedGRU(torch.autograd.Function):
    """One GRU layer (PyTorch's gate equations) with a separate weight set per seed.

    x: (T, S, In + 1, B) inputs whose last row is 1 (it carries the input biases); w_in:
    (S, 3H, In + 1) = [w_ih | b_ih + (b_hr, b_hz, 0)]; w_hh: (S, 3H, H) and b_hn: (S, H), rows in
    nn.GRU's order (r, z, n). Returns the hidden states (T, S, H, B).

    Each time step works on contiguous (S, rows, B) blocks that stay in cache, with views made
    once per sequence: at these sizes an op's Python and dispatch overhead, not its arithmetic,
    is the cost, and no tensor of the whole sequence is ever permuted. The backward pass is
    written out: the forward loop stores each step's local derivatives, so a backward step is two
    multiplies and four small batched matmuls, several times fewer ops than autograd's.
    """

    @staticmethod
    def forward(ctx, x, w_in, w_hh, b_hn):
        t_len, s, _, b = x.shape
        h_dim = w_hh.shape[2]
        # w_hh's rows reordered to (n, r, z), so that the derivatives of (gh_n, gh_r, gh_z) and of
        # (gi_r, gi_z, gi_n) are the two overlapping contiguous blocks [0:3] and [1:4] of `coef`.
        w_hh_nrz = torch.cat([w_hh[:, 2 * h_dim :], w_hh[:, : 2 * h_dim]], 1)
        b_hn = b_hn[:, :, None]  # (S, H, 1)
        hs = x.new_zeros(t_len + 1, s, h_dim, b)  # slot 0: h_0 = 0; h_t at slot t + 1
        rz = x.new_empty(t_len, s, 2 * h_dim, b)
        coef = x.new_empty(t_len, s, 4, h_dim, b)  # d/dh_t of the pre-activations gh_n, gh_r, gh_z, gi_n
        n = x.new_empty(s, h_dim, b)
        xs, hs_in, hs_out = x.unbind(0), hs[:-1].unbind(0), hs[1:].unbind(0)
        rzs, rs, zs = rz.unbind(0), rz[:, :, :h_dim].unbind(0), rz[:, :, h_dim:].unbind(0)
        c_n, c_r, c_z, c_i = (coef[:, :, k].unbind(0) for k in range(4))
        for t in range(t_len):
            h, r, z = hs_in[t], rs[t], zs[t]
            gi_rz, gi_n = torch.bmm(w_in, xs[t]).split([2 * h_dim, h_dim], 1)  # biases included
            gh_n, gh_rz = torch.bmm(w_hh_nrz, h).split([h_dim, 2 * h_dim], 1)
            gh_n = gh_n + b_hn
            torch.add(gi_rz, gh_rz, out=rzs[t]).sigmoid_()
            torch.addcmul(gi_n, r, gh_n, out=n).tanh_()
            torch.lerp(n, h, z, out=hs_out[t])  # (1 - z) n + z h
            one_minus_z = 1 - z
            a_n = torch.addcmul(one_minus_z, one_minus_z * n, n, value=-1, out=c_i[t])  # (1 - z)(1 - n^2)
            torch.mul(a_n, r, out=c_n[t])
            torch.mul(a_n * gh_n, torch.addcmul(r, r, r, value=-1), out=c_r[t])  # ... r (1 - r)
            torch.mul(h - n, torch.addcmul(z, z, z, value=-1), out=c_z[t])  # (h_prev - n) z (1 - z)
        ctx.save_for_backward(x, w_in, w_hh_nrz, hs, rz, coef)
        return hs[1:]

    @staticmethod
    def backward(ctx, grad):
        x, w_in, w_hh_nrz, hs, rz, coef = ctx.saved_tensors
        t_len, s, _, h_dim, b = coef.shape
        grad = grad.contiguous()
        d_x = torch.empty_like(x)
        d_w_in, d_w_hh, d_b_hn = torch.zeros_like(w_in), torch.zeros_like(w_hh_nrz), x.new_zeros(s, h_dim)
        w_in_t, w_hh_t = w_in.transpose(1, 2), w_hh_nrz.transpose(1, 2)
        xs_t = x.transpose(2, 3).unbind(0)  # (S, B, In + 1) each
        hs_t = hs[:-1].transpose(2, 3).unbind(0)  # (S, B, H) each
        zs, grads, d_xs = rz[:, :, h_dim:].unbind(0), grad.unbind(0), d_x.unbind(0)
        c_gh, c_gi = coef[:, :, :3].unbind(0), coef[:, :, 1:].unbind(0)
        dh = torch.zeros_like(grads[0])
        for t in range(t_len - 1, -1, -1):
            dh = dh + grads[t]  # total gradient reaching h_t
            dh_ = dh[:, None]
            dgh = (c_gh[t] * dh_).view(s, 3 * h_dim, b)  # rows n, r, z
            dgi = (c_gi[t] * dh_).view(s, 3 * h_dim, b)  # rows r, z, n
            d_w_hh.baddbmm_(dgh, hs_t[t])
            d_w_in.baddbmm_(dgi, xs_t[t])
            torch.bmm(w_in_t, dgi, out=d_xs[t])
            d_b_hn += dgh[:, :h_dim].sum(-1)
            dh = torch.baddbmm(dh * zs[t], w_hh_t, dgh)
        d_w_hh = torch.cat([d_w_hh[:, h_dim:], d_w_hh[:, :h_dim]], 1)  # rows (n, r, z) -> (r, z, n)
        return d_x, d_w_in, d_w_hh, d_b_hn


def gru_token_log_probs(model, params, batch):
    """The GRU class (covpipe.models.gru) for S weight sets, any number of layers."""
    prompt, response = batch["prompt"], batch["response"]
    s, b, p = prompt.shape
    bos = torch.full((s, b, 1), model.vocab.bos, dtype=torch.int64, device=prompt.device)
    tokens = torch.cat([bos, prompt, response[..., :-1]], dim=-1).permute(2, 0, 1)  # (T, S, B)
    table = params["embed.weight"]  # (S, V_in + 1, E): one flat table, seed s's rows offset by s (V_in + 1)
    offset = (torch.arange(s, device=prompt.device) * table.shape[1])[None, :, None]
    x = F.embedding(tokens + offset, table.reshape(-1, table.shape[-1])).transpose(2, 3)  # (T, S, E, B)
    for k in range(model.rnn.num_layers):
        w_ih, b_ih, w_hh, b_hh = (params[f"rnn.{w}_l{k}"] for w in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))
        h_dim = w_hh.shape[2]
        # The input biases (b_ih, and b_hh's r and z parts, which add to the same pre-activations)
        # ride on a constant input row of ones; b_hn stays apart, it sits inside r * (...).
        bias = b_ih + torch.cat([b_hh[:, : 2 * h_dim], torch.zeros_like(b_hh[:, 2 * h_dim :])], 1)
        ones = x.new_ones(x.shape[0], s, 1, b)
        x = StackedGRU.apply(
            torch.cat([x, ones], 2), torch.cat([w_ih, bias[:, :, None]], 2), w_hh, b_hh[:, 2 * h_dim :]
        )
    states = x[p:].permute(1, 2, 0, 3).reshape(s, h_dim, -1)  # (S, H, L*B)
    logits = torch.baddbmm(params["head.bias"][:, :, None], params["head.weight"], states)  # (S, V, L*B)
    steps = torch.log_softmax(logits.view(s, logits.shape[1], -1, b), dim=1)  # (S, V, L, B)
    picked = steps.gather(1, response.permute(0, 2, 1).unsqueeze(1)).squeeze(1)  # (S, L, B)
    return picked.transpose(1, 2)  # (S, B, L)


STACKED = {  # class: (per-sequence inputs, computed once per seed; batched token log-likelihoods)
    "ar_linear": (ar_linear_inputs, ar_linear_token_log_probs),
    "gru": (token_inputs, gru_token_log_probs),
}


def supports(spec: dict) -> bool:
    """Whether the job trains vectorized: a class of STACKED (where it pays, measured by bench/run.py)
    fitted by train_trial's optimizer loop (a registered learner, covpipe.learners, fits its own way).
    The stacked AR-linear path reads context windows: a teacher whose own feature map has none (the
    hard instances' table features) trains seed by seed."""
    train = spec["train"] or {}
    if spec["model"]["class"] not in STACKED or train.get("learner") or train.get("schedule", "constant") != "constant":
        return False
    if spec["model"]["class"] == "ar_linear":
        from .teachers import build_teacher

        features = getattr(build_teacher(spec["teacher"]), "features", None)
        return features is None or hasattr(features, "window")
    return True


# ---- training --------------------------------------------------------------------------------------


def train_seeds(
    spec: dict,
    seeds: list,
    batches: list,
    *,
    backend: str = "serial",
    address: str = "local",
    threads: int = 1,
    device: str = "cpu",
    resume_dir=None,
) -> list:
    """Every seed of one job, vectorized: results in seed order, as `train.train_trial` returns them.

    Serial: one group of all seeds. Ray: one task per seed, the trials Ray fans out over a cluster
    (a group of one; its numbers equal the serial group's bit for bit).
    A failing seed (NaN loss) lets its group finish, then TrialsFailed names every failure.
    With `resume_dir`, each seed's state is saved there as train_trial saves it (covpipe.resume).
    """
    n_groups = 1 if backend == "serial" else len(seeds)
    parts = [list(a) for a in np.array_split(np.arange(len(seeds)), n_groups)]
    trials = [(spec, [seeds[i] for i in part], [batches[i] for i in part], device, resume_dir) for part in parts]
    log.info(
        "%s H=%d: %d seeds trained vectorized in %d group(s)",
        spec["model_name"],
        spec["horizon"],
        len(seeds),
        len(trials),
    )
    grouped = run_trials(
        train_group,
        trials,
        backend=backend,
        address=address,
        num_cpus=threads,
        num_gpus=1 if device != "cpu" else 0,
        names=[f"{spec['model_name']} H={spec['horizon']} seeds {t[1]}" for t in trials],
    )
    outcomes = [o for group in grouped for o in group]
    return collect(outcomes, [f"{spec['model_name']} H={spec['horizon']} seed {s}" for s in seeds])


def train_group(spec: dict, seeds: list, batches: list, device: str = "cpu", resume_dir=None) -> list:
    """Train `seeds` together. Returns [(True, {"checkpoints", "log"}) or (False, error text)] per seed.

    With `resume_dir`: every seed's state is saved at each checkpoint and at most every
    resume.SAVE_SECONDS, one file per seed in train_trial's format; a group whose seeds all have a
    state of the same step continues from it and ends bit-identical to an uninterrupted run.
    """
    teacher = build_teacher(spec["teacher"])
    vocab = Vocab.of(teacher, spec["horizon"])
    models = []
    for seed in seeds:  # each seed's initialization exactly as train_trial draws it
        torch.manual_seed(derive_seed(spec["study"], "init", spec["model_name"], spec["horizon"], seed))
        models.append(build_model(spec["model"], vocab, teacher=teacher))
    template = models[0].to(device)
    if any(True for _ in template.buffers()):
        raise ValueError(
            f"{spec['model']['class']}: vectorized training stacks parameters only; this class has buffers"
        )
    params = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).to(device).requires_grad_()
        for name, _ in template.named_parameters()
    }
    make_inputs, token_log_probs = STACKED[spec["model"]["class"]]
    cfg = spec["train"]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    opt = opt_cls(list(params.values()), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    gens = [
        torch.Generator().manual_seed(derive_seed(spec["study"], "batches", spec["model_name"], spec["horizon"], s))
        for s in seeds
    ]
    with torch.no_grad():
        inputs = [
            make_inputs(template, as_tensor(b.prompt).to(device), as_tensor(b.response).to(device)) for b in batches
        ]
    if len({len(b) for b in batches}) == 1:  # one gather per step instead of one per seed
        inputs = {k: torch.stack([x[k] for x in inputs]) for k in inputs[0]}  # (S, n, ...)
    seed_axis, n_rows = torch.arange(len(seeds), device=device)[:, None], len(batches[0])
    wanted = set(cfg["checkpoints"])
    n = len(seeds)
    alive = torch.ones(n, dtype=torch.bool)
    errors: dict[int, str] = {}
    checkpoints, rows = [{} for _ in seeds], [[] for _ in seeds]
    running, count = torch.zeros(n, dtype=torch.float64), 0
    name = f"{spec['model_name']} H={spec['horizon']} seeds {seeds[0]}-{seeds[-1]}"
    started = last_report = last_saved = time.perf_counter()
    paths = [None if resume_dir is None else resume.trial_path(resume_dir, s) for s in seeds]
    first = 1
    if (saved := _saved_states(paths, spec, seeds)) is not None:
        running, count = _restore(saved, params, opt, gens)
        checkpoints, rows = [st["checkpoints"] for st in saved], [st["rows"] for st in saved]
        first, started = saved[0]["step"] + 1, started - saved[0]["seconds"]
        for s, path in zip(seeds, paths):
            log.info(
                "%s H=%d seed %d: resumed at step %d/%d from %s",
                spec["model_name"],
                spec["horizon"],
                s,
                saved[0]["step"],
                cfg["steps"],
                path,
            )
    for step in range(first, cfg["steps"] + 1):
        idx = [torch.randint(0, len(b), (cfg["batch_size"],), generator=g).to(device) for b, g in zip(batches, gens)]
        if isinstance(inputs, dict):  # rows of the flattened (S * n, ...) inputs: a plain row copy
            flat_rows = (seed_axis * n_rows + torch.stack(idx)).view(-1)
            batch = {
                k: v.view(-1, *v.shape[2:]).index_select(0, flat_rows).view(n, -1, *v.shape[2:])
                for k, v in inputs.items()
            }  # (S, B, ...)
        else:
            batch = {k: torch.stack([x[k][i] for x, i in zip(inputs, idx)]) for k in inputs[0]}
        losses = -token_log_probs(template, params, batch).mean((1, 2))  # (S,), nats/token
        values = losses.detach().double().cpu()
        for i in torch.nonzero(alive & ~torch.isfinite(values)).flatten().tolist():
            # What train_trial raises, per seed; the other seeds go on (their slices never mix).
            errors[i] = "".join(
                traceback.format_exception_only(
                    FloatingPointError(
                        f"{spec['model_name']} horizon {spec['horizon']} seed {seeds[i]}: loss is {values[i].item()} at step {step}"
                    )
                )
            )
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
            log.info(
                "%s: step %d/%d, mean loss %.4f nats/token, %.1f steps/s (%d seeds), ETA %.0f s",
                name,
                step,
                cfg["steps"],
                values[alive].mean().item(),
                rate,
                int(alive.sum()),
                (cfg["steps"] - step) / rate,
            )
            last_report = now
        if step in wanted:
            seconds = time.perf_counter() - started  # the group's wall time: its seeds share every step
            for i in torch.nonzero(alive).flatten().tolist():
                checkpoints[i][step] = {k: v[i].detach().to("cpu", copy=True) for k, v in params.items()}
                rows[i].append(
                    {"seed": seeds[i], "step": step, "train_loss": running[i].item() / count, "seconds": seconds}
                )
            running, count = torch.zeros(n, dtype=torch.float64), 0
        if resume_dir is not None and (step in wanted or now - last_saved >= resume.SAVE_SECONDS):
            for i in torch.nonzero(alive).flatten().tolist():
                resume.save(
                    paths[i],
                    spec=spec,
                    seed=seeds[i],
                    step=step,
                    model=_SeedState(params, i),
                    optimizer=_SeedState(opt.state_dict(), i),
                    generator=gens[i],
                    checkpoints=checkpoints[i],
                    rows=rows[i],
                    running=(running[i].item(), count),
                    seconds=time.perf_counter() - started,
                )
            last_saved = now
    return [
        (False, errors[i]) if i in errors else (True, {"checkpoints": checkpoints[i], "log": rows[i]}) for i in range(n)
    ]


class _SeedState:
    """state_dict() of seed i's slice of stacked parameters or of a stacked optimizer's state:
    what a per-seed model or optimizer would hold, so the saved state is train_trial's format."""

    def __init__(self, stacked: dict, i: int):
        self.stacked, self.i = stacked, i

    def state_dict(self) -> dict:
        if "param_groups" not in self.stacked:  # parameters {name: (S, ...)}
            return {k: v[self.i].detach() for k, v in self.stacked.items()}
        # a copy, not a view: torch.save would write the whole stack's storage (step counts are 0-d)
        pick = lambda v: v[self.i].clone() if torch.is_tensor(v) and v.dim() > 0 else v  # noqa: E731
        return {
            "state": {j: {k: pick(v) for k, v in st.items()} for j, st in self.stacked["state"].items()},
            "param_groups": self.stacked["param_groups"],
        }


def _saved_states(paths, spec, seeds):
    """Every seed's saved state when all exist at one step, else None (the group then starts over:
    a group saves all its seeds together, so mixed steps mean a kill between two writes)."""
    if paths[0] is None:
        return None
    saved = [resume.load(p, spec=spec, seed=s) for p, s in zip(paths, seeds)]
    if any(st is None for st in saved) or len({st["step"] for st in saved}) != 1:
        if any(st is not None for st in saved):
            log.warning(
                "%s H=%d: saved states of seeds %s are not all at one step; training from step 0",
                spec["model_name"],
                spec["horizon"],
                seeds,
            )
        return None
    return saved


def _restore(saved, params, opt, gens):
    """Stack the seeds' saved parameters, optimizer moments and generators back; return (running, count)."""
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.stack([st["model"][name] for st in saved]).to(p.device))
    state = {}
    for j, first in saved[0]["optimizer"]["state"].items():
        state[j] = {
            k: torch.stack([st["optimizer"]["state"][j][k] for st in saved])
            if torch.is_tensor(v) and v.dim() > 0
            else v
            for k, v in first.items()
        }
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    for g, st in zip(gens, saved):
        g.set_state(st["batch_rng"])
    torch.set_rng_state(saved[0]["torch_rng"])
    return torch.tensor([st["running"][0] for st in saved], dtype=torch.float64), saved[0]["running"][1]
