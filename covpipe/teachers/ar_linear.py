"""The paper's autoregressive linear teacher (Sec. 2.2, Eq. 3):

    pi(y_h | x, y_<h) proportional to exp(<theta*, phi(x, y_1..h)>),

with the seeded window feature map of `covpipe.features` (||phi|| = B) and a seeded theta* of
norm `theta_norm` <= 1. The prompt is w-1 uniform tokens, so the first window is full.
Also gives the inherent variance sigma*^2 (paper Eq. 8) per prefix, exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..features import MAX_CONTEXT_TABLE, WindowFeatures, context_variances
from ..lazy import tensor_of
from ..sequences import Batch, context_windows, encode_windows
from .base import Teacher, _sample_rows

if TYPE_CHECKING:
    import torch


class ARLinearParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["ar_linear"] = "ar_linear"
    vocab_size: int = Field(8, ge=2, le=256, description="V, response tokens")
    dim: int = Field(16, ge=1, description="d, feature dimension")
    window: int = Field(2, ge=1, le=8, description="w, tokens read by phi, the candidate included")
    scale: float = Field(3.0, gt=0, description="B, the norm of every feature vector")
    theta_norm: float = Field(1.0, gt=0, le=1, description="||theta*||")
    seed: int = Field(0, ge=0, description="seed of theta* and the feature map")


class ARLinear(Teacher):
    Params = ARLinearParams
    theta = tensor_of("theta_array")  # theta*, (d,) float64

    @classmethod
    def build_bytes(cls, params) -> int:
        return WindowFeatures.table_bytes(params.vocab_size, params.window, params.dim)

    def __init__(self, params: ARLinearParams):
        self.params = params
        self.vocab_size = self.input_vocab_size = params.vocab_size
        self.prompt_length = params.window - 1
        self.class_names, self.class_weights = ("main",), np.ones(1)
        self.features = WindowFeatures(
            params.vocab_size, self.input_vocab_size, params.window, params.dim, params.scale, params.seed
        )
        theta = np.random.default_rng([params.seed, 0x74686574]).standard_normal(params.dim)
        self.theta_array = theta * params.theta_norm / np.linalg.norm(theta)  # (d,)

    def sample_prompts(self, cls, rng):
        return rng.integers(0, self.vocab_size, size=(cls.shape[0], self.prompt_length)).astype(np.int64)

    def _windows(self, prompt, response) -> torch.Tensor:
        import torch

        return torch.from_numpy(context_windows(prompt, response, self.params.window - 1, self.bos))

    def step_log_probs(self, prompt, response):
        import torch

        logits = self.features.logits(self.theta, self._windows(prompt, response))  # (n, H, V)
        return torch.log_softmax(logits, dim=-1).numpy()

    def sample(self, n, horizon, rng, cls=None):
        """As Teacher.sample (the same random stream), but each step reads a precomputed
        log pi_D(. | window) per window id instead of rescoring the prefix: O(H), not O(H^2)."""
        import torch

        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        prompt = self.sample_prompts(classes, rng)
        per_window = torch.log_softmax(self.features.context_table() @ self.theta, dim=-1).numpy()  # (K, V)
        response = np.zeros((n, horizon), dtype=np.int64)
        order, base = self.params.window - 1, self.input_vocab_size + 1
        history = (
            np.concatenate([np.full((n, order), self.bos, np.int64), prompt], axis=1)[:, -order:] if order else None
        )
        for h in range(horizon):
            ids = encode_windows(history, base) if order else np.zeros(n, np.int64)
            response[:, h] = _sample_rows(np.exp(per_window[ids]), rng)
            if order:
                history = np.concatenate([history[:, 1:], response[:, h : h + 1]], axis=1)
        return Batch(prompt, response, classes)

    def inherent_variance(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """sigma*^2 terms ||phi - E_{pi_D}[phi]||^2 averaged over y_h, per prefix.

        Exactly E_{v ~ pi_D(.|prefix)} ||phi(v) - phi_bar||^2 = B^2 - ||phi_bar||^2, since ||phi|| = B.
        Returns: float64, (n, H); its per-sequence sum averaged over y ~ pi_D is sigma*^2.
        """
        f = self.features
        if f.context_count() <= MAX_CONTEXT_TABLE:  # one term per window id, read per position: O(nH)
            return context_variances(f.context_table(), self.theta)[f.context_ids(prompt, response, self.bos)]
        import torch

        windows = self._windows(prompt, response)
        log_probs = torch.log_softmax(self.features.logits(self.theta, windows), dim=-1)
        return (self.params.scale**2 - self.features.mean_feature_sq_norm(log_probs, windows)).numpy()
