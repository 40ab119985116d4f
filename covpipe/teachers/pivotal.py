"""An autoregressive linear teacher whose inherent variance sigma*^2 does not grow with H: its
randomness sits in the first k ("pivotal") positions, the rest is near-deterministic.

Every stationary teacher of the AR-linear class has sigma*^2 proportional to H (each position adds
about the same score variance), so the paper's horizon-free bounds (in sigma*^2, not H) cannot show
as flat curves on it. Here they can. phi reads the position's segment and the previous token of
x ++ y (so the model is autoregressive), through a table (`TableFeatures`): with d = d_a + 1,

    pivotal positions h < k:   phi(h, prev, v) = B_p u[h, prev, v]     (u: seeded unit vectors in R^{d_a} x {0})
    tail positions h >= k:     phi(prev, v)    = +B e_d  if v = prev + 1 mod V,   -B e_d otherwise

and theta* = (sqrt(1 - c^2) w, c) with w a seeded unit vector of R^{d_a}, ||theta*|| = 1 (Assumption
2.2: ||phi|| <= B since B_p <= B). A tail token is the successor of the previous one with probability
1 / (1 + (V - 1) e^{-2Bc}) (1 - 3e-11 at the defaults): each tail position adds about
(V - 1) e^{-2Bc} (2B)^2 to sigma*^2, nothing in practice, while each pivotal position adds
E||u - E u||^2 B_p^2 of order B_p^2. So sigma*^2 ~ k B_p^2 whatever H, but sequence-level SGD's
step is still tied to the worst-case smoothness 1/(H B^2): the tail's gradients grow with H.

The prompt is one uniform token (the first position's `prev`). Exact sigma*^2 per prefix comes
from the table (`_TableTeacher.inherent_variance`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..sequences import Batch
from .base import _sample_rows
from .hard_instances import TableFeatures, _TableTeacher


class PivotalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["pivotal"] = "pivotal"
    vocab_size: int = Field(8, ge=2, le=64, description="V, response (and prompt) tokens")
    dim: int = Field(8, ge=2, description="d: d - 1 dimensions for the pivotal positions, one for the tail")
    pivotal_tokens: int = Field(4, ge=1, description="k: positions h < k carry the randomness")
    pivot_scale: float = Field(4.0, gt=0, description="B_p: norm of the pivotal positions' features")
    scale: float = Field(16.0, gt=0, description="B: norm of the tail features (and the class's bound)")
    tail_weight: float = Field(0.8, gt=0, lt=1, description="c = theta*_d: the tail's logit gap is 2 B c")
    seed: int = Field(0, ge=0, description="seed of theta* and the feature table")

    @model_validator(mode="after")
    def _bounded(self):
        if self.pivot_scale > self.scale:
            raise ValueError(
                f"pivot_scale: B_p = {self.pivot_scale:g} exceeds scale B = {self.scale:g}; "
                "Assumption 2.2 bounds every feature by B"
            )
        return self


class Pivotal(_TableTeacher):
    Params = PivotalParams

    def __init__(self, params: PivotalParams):
        self.params = params
        V, d, k = params.vocab_size, params.dim, params.pivotal_tokens
        self.vocab_size = self.input_vocab_size = V
        self.prompt_length = 1
        self.class_names, self.class_weights = ("main",), np.ones(1)
        rng = np.random.default_rng([params.seed, 0x7069766F])
        u = rng.standard_normal((k, V, V, d - 1))
        table = np.zeros((k + 1, V, V, d))  # (segment, prev, v, d): segment k is the tail
        table[:k, ..., : d - 1] = params.pivot_scale * u / np.linalg.norm(u, axis=-1, keepdims=True)
        successor = (np.arange(V)[:, None] + 1) % V == np.arange(V)[None, :]  # (prev, v)
        table[k, ..., d - 1] = np.where(successor, params.scale, -params.scale)
        w = rng.standard_normal(d - 1)
        theta = np.append(np.sqrt(1 - params.tail_weight**2) * w / np.linalg.norm(w), params.tail_weight)
        self.theta_array = theta  # (d,) float64
        self.features = TableFeatures(table.reshape((k + 1) * V, V, d), self._context_of)

    def _context_of(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """Table row of each position: segment * V + previous token of x ++ y, int64 (n, H)."""
        k, V = self.params.pivotal_tokens, self.vocab_size
        prev = np.concatenate([prompt[:, -1:], response[:, :-1]], axis=1).astype(np.int64)
        segment = np.minimum(np.arange(response.shape[1]), k)[None, :]
        return segment * V + prev

    def sample_prompts(self, cls, rng):
        return rng.integers(0, self.vocab_size, size=(cls.shape[0], 1)).astype(np.int64)

    def sample(self, n, horizon, rng, cls=None):
        """Autoregressive: each position's context is the previous token. O(H) with the per-row
        next-token table log pi_D(. | row) (K, V)."""
        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        prompt = self.sample_prompts(classes, rng)
        import torch

        per_row = torch.log_softmax(self.features.table @ self.theta, dim=-1).numpy()  # (K, V)
        k, V = self.params.pivotal_tokens, self.vocab_size
        response = np.zeros((n, horizon), dtype=np.int64)
        prev = prompt[:, 0]
        for h in range(horizon):
            response[:, h] = _sample_rows(np.exp(per_row[min(h, k) * V + prev]), rng)
            prev = response[:, h]
        return Batch(prompt, response, classes)
