"""Memory estimates of each stage job from its config slice alone, in bytes, so that a study
whose largest job cannot fit is refused before any job starts (and validation itself never
builds anything: a model's size comes from its class's `numel`, computed from its params).

The estimates are deliberately rough (within a factor of about 2, on the high side): they count
the arrays a job holds at its peak, which dominate at any size that could fail. Each term names
the config keys it grows with, and the refusal names them:

    studies.s.data.n_eval: the evaluate job of model gru at horizon 128 needs about 1.9e+03 GiB
    (per-token log-probs: data.n_eval x classes x horizon x vocabulary); the limit is 23 GiB
    (execution.memory_gb, default: this machine's memory)
"""

from __future__ import annotations

import os

GIB = 1 << 30
LEARNER_CACHE = 1 << 27  # views.CACHE_BYTES: the per-position view keeps up to 128 MiB of features


def machine_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def limit_bytes(execution: dict) -> tuple[int | None, str]:
    """The memory a job may use and where that number comes from."""
    if execution.get("memory_gb") is not None:
        return int(execution["memory_gb"] * GIB), "execution.memory_gb"
    return machine_bytes(), "execution.memory_gb, default: this machine's memory"


def gib(n: float) -> str:
    return f"{n / GIB:.2g} GiB" if n < 1000 * GIB else f"{n / GIB:.2e} GiB"


def _width(params) -> tuple[int, int, int]:
    """(per-token hidden width, layers, attention heads) of a model's params; 1s where absent."""
    width = max([getattr(params, k, 0) or 0 for k in ("width", "hidden", "embed", "dim")] + [1])
    return width, getattr(params, "layers", 1) or 1, getattr(params, "heads", 0) or 0


# Typical values of the factors (the default study's): a term blames the factor furthest above its own.
TYPICAL = {
    "data.n_train": 256,
    "data.n_eval": 2000,
    "seeds": 5,
    "horizons": 128,
    "train.batch_size": 32,
    "models": 64,
    "teacher.dim": 16,
    "train.checkpoints": 25,
}


def _larger(*pairs) -> str:
    """The key of the (value, key) pair furthest above its typical value: the factor to blame."""
    return max(pairs, key=lambda p: p[0] / TYPICAL[p[1]])[1]


def study_terms(
    study: dict, teacher, model_params, numel: int, vocab, fit: dict, seeds: int, stacked: bool = True
) -> dict[str, list[tuple[float, str, str]]]:
    """Peak bytes of each stage job of one (model, horizon) cell, as (bytes, key, what) terms.

    fit: the train section that fits this model (or the finetune one); seeds: its trial count;
    numel: the model's parameters and buffers; stacked: its seeds train as one batch (vectorized).
    """
    v, t_len, r_len = vocab.vocab_size, vocab.prompt_length + vocab.horizon, vocab.horizon
    classes = len(teacher.class_names)
    n_train, n_eval = study["data"]["n_train"], study["data"]["n_eval"]
    n_ev = classes * n_eval
    t_dim = getattr(getattr(teacher, "features", None), "dim", 0)
    width, layers, heads = _width(model_params)
    ckpts, batch = len(fit["checkpoints"]), fit["batch_size"]
    act_tok = 4 * (4 * v + 16 * width * layers) + 8 * heads * t_len * layers  # bytes per token in one pass
    stored = 2 * t_len  # int16 tokens of one sequence in a table
    live = 8 * 2 * t_len  # int64 tokens of one sequence being sampled or trained on, a copy
    samples = 1 if study["data"].get("shared_across_seeds") else seeds
    learner = fit.get("learner") is not None
    rows = min(n_train, 128) if learner else batch  # learners score their sample in chunks (views.CHUNK)
    together = seeds if stacked or learner else 1  # vectorized classes and learners train every seed at once
    return {
        "data": [
            (
                stored * (samples * n_train + n_ev) + live * max(n_train, n_eval),
                _larger((n_train, "data.n_train"), (samples, "seeds"), (n_eval, "data.n_eval"), (t_len, "horizons")),
                "sequences: data.n_train x seeds + data.n_eval x classes, x tokens",
            ),
            (
                8 * 2 * max(n_train, n_eval) * r_len * (2 * v + t_dim),
                _larger(
                    (n_train, "data.n_train"), (n_eval, "data.n_eval"), (r_len, "horizons"), (t_dim, "teacher.dim")
                ),
                "teacher log-probs: data.n_train or data.n_eval x horizon x vocabulary",
            ),
        ],
        "train": [
            (4 * numel * (4 + seeds * ckpts), "models", "model parameters x (optimizer state + seeds x checkpoints)"),
            (
                live * seeds * n_train,
                _larger((n_train, "data.n_train"), (seeds, "seeds"), (t_len, "horizons")),
                "training sequences: data.n_train x seeds x tokens",
            ),
            (
                together * rows * t_len * act_tok,
                _larger(
                    (rows, "data.n_train" if learner else "train.batch_size"),
                    (t_len, "horizons"),
                    (width * layers, "models"),
                    (together, "seeds"),
                ),
                "activations: "
                + ("a learner's chunk of 128 sequences" if learner else "train.batch_size")
                + " x seeds x tokens x model width",
            ),
            *(
                [
                    (
                        seeds * n_train * t_len * 12 + LEARNER_CACHE,
                        _larger((n_train, "data.n_train"), (seeds, "seeds"), (t_len, "horizons")),
                        "a learner's index arrays (12 bytes a token: covpipe.learners.context) and feature cache",
                    )
                ]
                if learner
                else []
            ),
        ],
        "evaluate": [
            (
                8 * 3 * n_ev * r_len * v,
                _larger((n_eval, "data.n_eval"), (r_len, "horizons")),
                "per-token log-probs: data.n_eval x classes x horizon x vocabulary",
            ),
            (
                8 * n_ev * r_len * t_dim,
                _larger((n_eval, "data.n_eval"), (r_len, "horizons"), (t_dim, "teacher.dim")),
                "teacher features: data.n_eval x classes x horizon x dim",
            ),
            (
                8 * 4 * seeds * ckpts * n_ev,
                _larger((n_eval, "data.n_eval"), (seeds * ckpts, "train.checkpoints")),
                "log-ratios: seeds x checkpoints x data.n_eval x classes",
            ),
            (
                64 * t_len * act_tok,
                _larger((t_len, "horizons"), (width * layers, "models")),
                "activations of a chunk of 64 sequences: tokens x model width",
            ),
            (4 * numel * seeds * ckpts, "models", "checkpoints: model parameters x seeds x checkpoints"),
        ],
    }


def check_cell(
    study: dict, teacher, model_params, numel: int, horizon: int, vocab, fit: dict, seeds: int, limit: int
) -> None:
    """Raise ValueError('<key>: ...') if a stage job of this cell would need more than `limit` bytes."""
    from .models import MODELS

    stacked = getattr(MODELS.get(getattr(model_params, "cls", None)), "stacked", False)
    for stage, terms in study_terms(study, teacher, model_params, numel, vocab, fit, seeds, stacked).items():
        total = sum(b for b, _, _ in terms)
        if total > limit:
            _, key, what = max(terms)
            raise ValueError(
                f"{key}: the {stage} job at horizon {horizon} would need about {gib(total)}, mostly {what}"
            )
