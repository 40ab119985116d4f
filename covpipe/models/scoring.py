"""Scoring a model on given sequences by teacher forcing, in inference mode and in chunks: what
evaluation, selection and the benchmarks read a model's likelihoods with."""

from __future__ import annotations

import numpy as np
import torch

from .base import as_tensor

EVAL_CHUNK = 64  # sequences per forward pass: the fastest on CPU for the graph transformer (bench/run.py
# eval_throughput; a whole eval set in one pass is up to 2x slower, its activations overflow the caches)
GPU_EVAL_CHUNK = 1024  # on a GPU small passes leave it idle between kernel launches; 1024 of the longest
# graph sequences (H = 24, 470 tokens, width 384) take about 3 GB of activations


def _chunk(tensor, chunk: int | None) -> int:
    """Sequences per forward pass: `chunk`, else EVAL_CHUNK on the CPU and GPU_EVAL_CHUNK elsewhere."""
    return chunk or (EVAL_CHUNK if tensor.device.type == "cpu" else GPU_EVAL_CHUNK)


def model_step_log_probs(model, prompt, response, chunk: int | None = None) -> np.ndarray:
    """log pi_hat(. | x, y_<h) of every sequence, float64 (n, L, V), nats: inference mode (no
    autograd), `chunk` sequences per forward pass (default: by the prompt's device)."""
    chunk = _chunk(prompt, chunk)
    with torch.inference_mode():
        return np.concatenate(
            [
                model.step_log_probs(prompt[i : i + chunk], response[i : i + chunk]).double().cpu().numpy()
                for i in range(0, len(prompt), chunk)
            ]
        )


def sequence_log_probs(model, prompt, response, chunk: int | None = None) -> np.ndarray:
    """log pi_hat(y|x) of each row, by teacher forcing in inference mode: float64 (n,), nats."""
    device = next(iter(model.state_dict().values())).device
    prompt, response = as_tensor(prompt).to(device), as_tensor(response).to(device)
    chunk = _chunk(prompt, chunk)
    out = []
    with torch.inference_mode():
        for i in range(0, len(prompt), chunk):
            out.append(
                model.token_log_probs(prompt[i : i + chunk], response[i : i + chunk]).double().sum(1).cpu().numpy()
            )
    return np.concatenate(out) if out else np.zeros(0)
