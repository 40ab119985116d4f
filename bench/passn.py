"""Item 1: exact Pass@N (teacher forcing over the correct responses) against the sampling estimator.

One graph-task transformer is trained briefly (the default study's model and optimizer at H = 8)
and compared at two checkpoints: step 150, where p_correct is spread out, and step 300, where
Pass@8 is nearly saturated. On the same n prompts, Pass@8 is computed

- exactly: p_correct(x) = the model's total probability of x's correct responses (at most 16 per
  prompt, one teacher-forced pass), Pass@N = mean_x 1 - (1 - p_correct(x))^N. Its Monte Carlo
  error is zero: it is the model's Pass@N on these prompts.
- by sampling: k responses per prompt from the model, c of them correct, the unbiased estimator
  1 - C(k - c, N) / C(k, N) averaged over prompts. Its standard error given the prompts is
  sqrt(sum_x Var_k(x)) / n with Var_k(x) exact under c ~ Binomial(k, p_correct(x)); k is the
  smallest k >= N with standard error <= 0.01. Both estimators share the prompts, so the
  prompt-sampling error (printed) is the same for both and is not counted.

Sampling is timed with both of covpipe's samplers on the same draws, the KV-cached one
(`Transformer.sample`, what covpipe uses) and one full forward pass per response token
(`Model.sample`), and exact is compared with the faster. One teacher-forced pass over the n k
sampled sequences (evaluation's chunked scoring) is printed beside it for scale; it was taken as
the floor of any sampler before the KV cache, which now beats it where responses are short
(its 512-row batches against scoring's 64).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from common import Figure, default_study, graph_batch, graph_teacher, one_thread

N = 8
TARGET_SE = 0.01


def mc_standard_error(p: np.ndarray, k: int, n_level: int = N) -> float:
    """Standard error, given the prompts, of the mean unbiased pass@N estimator with k samples each:
    sqrt(sum_x Var[1 - C(k - c, N) / C(k, N)]) / n, c ~ Binomial(k, p(x))."""
    from scipy.stats import binom

    c = np.arange(k + 1)
    est = 1.0 - np.array([math.comb(k - ci, n_level) for ci in c], dtype=np.float64) / math.comb(k, n_level)  # (k+1,)
    pmf = binom.pmf(c[None, :], k, p[:, None])  # (n, k+1)
    var = np.maximum(pmf @ est**2 - (pmf @ est) ** 2, 0.0)
    return float(np.sqrt(var.sum()) / len(p))


def required_k(p: np.ndarray) -> int:
    k = N
    while mc_standard_error(p, k) > TARGET_SE:
        k = k + max(1, k // 4)
    lo = max(N, k - max(1, (k - 1) // 5))
    while lo < k and mc_standard_error(p, lo) > TARGET_SE:
        lo += 1
    return lo


def train_graph_models(horizon: int, steps: list[int], n_train: int):
    """The default study's transformer and optimizer, checkpoints at `steps`, on n_train sequences."""
    from covpipe import specs, train
    from covpipe.models import Vocab, build_model

    study = default_study("graph_horizon")
    study["train"] = {**study["train"], "steps": max(steps), "checkpoints": sorted(steps)}
    spec = specs.train_spec("graph_horizon", study, "transformer", horizon)
    teacher = graph_teacher()
    batch = graph_batch(teacher, n_train, horizon, seed=1)
    started = time.perf_counter()
    out = train.train_trial(spec, 0, batch)
    seconds = time.perf_counter() - started
    models = {}
    for step, state in out["checkpoints"].items():
        models[step] = build_model(spec["model"], Vocab.of(teacher, horizon), teacher=teacher)
        models[step].load_state_dict(state)
        models[step].eval()
    return teacher, models, seconds


def run(quick: bool = False) -> list[Figure]:
    one_thread()
    horizon, n_prompts, steps = 8, (300 if quick else 600), [150, 300]
    teacher, models, train_s = train_graph_models(horizon, steps, n_train=4000)
    batch = graph_batch(teacher, n_prompts, horizon, seed=2)
    # The correct responses (the reward) are a property of the prompts, shared by both estimators:
    # exact scoring reads them, the sampler's verifier compares against them. Not timed on either side.
    correct = teacher.correct_responses(batch.prompt, batch.cls)
    print(
        f"  the default graph transformer at H = {horizon}, trained in {train_s:.0f} s, checkpoints at steps "
        f"{steps}; {n_prompts} prompts, {np.mean([len(c) for c in correct]):.2f} correct responses per prompt"
    )
    figures = []
    for step, model in models.items():
        figures += _compare(step, model, batch, correct)
    return figures


def _compare(step, model, batch, correct) -> list[Figure]:
    from covpipe import metrics
    from covpipe.evaluate import _p_correct
    from covpipe.models.scoring import model_step_log_probs

    owner = np.repeat(np.arange(len(batch)), [len(r) for r in correct])
    responses = np.concatenate(correct)
    exact_s = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        p = _p_correct(model, batch, owner, responses)
        pass_exact = float(metrics.pass_at_n_exact(p, [N])[0])
        exact_s = min(exact_s, time.perf_counter() - started)
    k = required_k(p)
    se_k = mc_standard_error(p, k)
    prompt_se = float(np.std(1 - (1 - p) ** N) / np.sqrt(len(p)))

    # k responses per prompt (chunks of 512 sequences, one generator: reproducible), then verify.
    prompts = torch.from_numpy(np.repeat(batch.prompt, k, axis=0))
    length = batch.response.shape[1]
    # Two samplers, timed on the same draws: the KV-cached one (Transformer.sample, what covpipe
    # uses) and the full pass per token (Model.sample); the comparison is against the best.
    timed = {}
    for cached in (True, False):
        gen = torch.Generator().manual_seed(0)
        started = time.perf_counter()
        draws = torch.cat(
            [model.sample(prompts[i : i + 512], length, gen, cached=cached) for i in range(0, len(prompts), 512)]
        )
        draws = draws.numpy().reshape(len(batch), k, length)
        hits = [int((d[:, None, :] == c[None]).all(-1).any(-1).sum()) for d, c in zip(draws, correct)]
        pass_sampled = float(np.mean([metrics.pass_at_k_unbiased(k, h, N) for h in hits]))
        timed[cached] = (time.perf_counter() - started, pass_sampled)
    sample_s, pass_sampled = min(timed.values())
    full_s, cached_s = timed[False][0], timed[True][0]
    # For scale: one teacher-forced pass (evaluation's chunked scoring) over the n k sequences.
    started = time.perf_counter()
    model_step_log_probs(model, prompts, torch.from_numpy(draws.reshape(-1, length)))
    floor_s = time.perf_counter() - started

    z = (pass_sampled - pass_exact) / se_k if se_k > 0 else 0.0
    ratio = sample_s / exact_s
    spread = np.mean((p > 0.01) & (p < 0.99))
    print(
        f"  step {step}: p_correct mean {p.mean():.3f} ({spread:.0%} of prompts between 0.01 and 0.99); exact Pass@{N} = "
        f"{pass_exact:.4f} in {exact_s * 1e3:.0f} ms (Monte Carlo error 0; prompt-sampling SE {prompt_se:.4f}, "
        "the same for both)"
    )
    print(
        f"    sampling needs k = {k} per prompt ({k * len(batch)} samples; k >= N = {N} for the unbiased estimator) "
        f"for SE {se_k:.4f} <= {TARGET_SE}: Pass@{N} = {pass_sampled:.4f} in {sample_s:.1f} s (z = {z:+.2f} against "
        f"exact), the best sampler: KV-cached {cached_s:.1f} s, full pass per token {full_s:.1f} s; one "
        f"teacher-forced pass over those samples: {floor_s:.2f} s = {floor_s / exact_s:.0f}x exact"
    )
    return [
        Figure(
            1,
            f"Pass@{N} exact vs the best sampler (KV-cached) to SE {TARGET_SE} (checkpoint {step}), time ratio",
            ">= 100x, agree within sampling error",
            f"exact {exact_s * 1e3:.0f} ms; sampling k={k}/prompt ({k * len(batch)} samples) {sample_s:.1f} s "
            f"(full pass per token {full_s:.1f} s); "
            f"|z| = {abs(z):.1f}",
            ratio,
            ratio >= 100 and abs(z) <= 3,
        ),
        Figure(
            1,
            f"Pass@{N} exact vs one teacher-forced pass over the samples (checkpoint {step})",
            "reported",
            f"{floor_s:.2f} s for the same samples",
            floor_s / exact_s,
            None,
        ),
    ]
