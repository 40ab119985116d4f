"""The paper's hard instances for learners of the autoregressive linear class (Sec. 2.2, Eq. 3).

Both are linear softmax teachers pi(y_h | x, y_<h) proportional to exp(<theta*, phi(x, h, y_h)>)
whose features read only the prompt type x and the position h, never earlier response tokens:
phi comes from a small table (`TableFeatures`), so exact likelihoods, sampling and sigma*^2
are closed forms. An `ar_linear` model fitted to them uses the same table (well-specified).

kl_lower_bound (paper Prop. 3.2, App. G): d = 1, Theta = [-1, 1], V = {-1, +1} (token ids 0, 1).
    x = 0 ("uninformative", weight 1 - 1/(2n)): phi = 0, every token uniform.
    x = 1 ("informative", weight 1/(2n)):       phi(1, y_1..h) = B y_h, theta* = +-1.
    With probability >= 1/2 no x = 1 appears among n samples; a proper learner then cannot
    know the sign of theta*, and each of the H tokens of x = 1 adds KL: KL grows like H/n while
    Cov_N stays near 1/(2n).

sgd_two_scales (after paper App. I.4, Lemmas I.6-I.7; a reconstruction, see docs/results-interventions.md): V = {-1, 0, +1}
(token ids 0, 1, 2), d = 3, theta* = (0, b, c) with ||theta*|| <= 1.
    x = 0 ("loud", weight 1 - p): every position reads phi(-1) = (-B, 0, -C), phi(0) = 0,
        phi(+1) = (B, 0, -C). pi_D emits 0 with probability 1/(1 + 2 e^{-Cc}): near-deterministic
        (small sigma*^2), but a model that tilts along e_1 gets a sequence gradient of size ~HB.
    x = 1 ("rare", weight p): the first k positions read phi(y) = (0, Bbar y, 0), the rest 0
        (uniform tokens, nothing to learn). Its gradient has size ~k Bbar, whatever H is.
    Sequence-level SGD needs eta <~ 1/(HB) to stay stable on the loud prompts, and then the rare
    prompts (p T of them) move theta_2 by ~eta k Bbar each: too slowly once H grows.
    One instance for every step, started at theta = 0: kept as a documented extra beside
    teachers/sgd_lower_bound.py, which builds App. I.4's instances per side of eta = 8/(HB), each
    with its own starting point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..features import context_variances
from ..lazy import tensor_of
from ..sequences import Batch
from .base import Teacher, _sample_rows

if TYPE_CHECKING:
    import torch


class TableFeatures:
    """A feature map that reads only a context id per position: phi = table[ctx, v], (K, V, d).

    `context_of(prompt, response) -> (n, H) int64` maps each position to its row of the table.
    Offers the interface `ar_linear` models use (contexts, logits, candidates, dim, bound).
    """

    table = tensor_of("table_array")  # (K, V, d) float64, as a torch tensor

    def __init__(self, table: np.ndarray, context_of):
        self.table_array = np.asarray(table, dtype=np.float64)  # (K, V, d)
        self.vocab_size, self.dim = int(self.table_array.shape[1]), int(self.table_array.shape[2])
        self._context_of = context_of

    @property
    def bound(self) -> float:
        """B = max ||phi|| over the table (Assumption 2.2)."""
        return float(self.table.norm(dim=-1).max())

    def position_inputs(self, prompt: np.ndarray, response: np.ndarray, bos: int) -> torch.Tensor:
        import torch

        return torch.from_numpy(self._context_of(np.asarray(prompt), np.asarray(response)))

    def context_ids(self, prompt: np.ndarray, response: np.ndarray, bos: int) -> np.ndarray:
        """The finite-context form (covpipe.learners.context): each position's table row, int64 (n, H)."""
        return np.asarray(self._context_of(np.asarray(prompt), np.asarray(response)), dtype=np.int64)

    def context_count(self) -> int:
        return int(self.table_array.shape[0])

    def context_table(self) -> torch.Tensor:
        """phi of every context id and candidate: float64 (K, V, d)."""
        return self.table

    def candidates(self, ctx: torch.Tensor, dtype=None) -> torch.Tensor:
        return self.table.to(dtype or self.table.dtype)[ctx]  # (..., V, d), float64 unless `dtype`

    def logits(self, theta: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.candidates(ctx, theta.dtype) @ theta  # (..., V)


class _TableTeacher(Teacher):
    """A linear softmax teacher on `TableFeatures`; subclasses build the table and theta*."""

    features: TableFeatures
    theta = tensor_of("theta_array")  # theta*, (d,) float64

    def _build(self, params, classes: dict[str, float], table: np.ndarray, context_of, theta) -> None:
        """Set the teacher up: one prompt token (the class id), V = the table's candidates (K, V, d),
        classes {name: weight}, `TableFeatures(table, context_of)` and theta* (d,)."""
        self.params = params
        self.vocab_size = self.input_vocab_size = int(table.shape[1])
        self.prompt_length = 1
        self.class_names, self.class_weights = tuple(classes), np.array(list(classes.values()))
        self.features = TableFeatures(table, context_of)
        self.theta_array = np.array(theta, dtype=np.float64)

    def sample_prompts(self, cls, rng):
        return cls.astype(np.int64)[:, None]  # the prompt is the type: one token

    def step_log_probs(self, prompt, response):
        import torch

        ctx = self.features.position_inputs(prompt, response, self.bos)
        return torch.log_softmax(self.features.logits(self.theta, ctx), dim=-1).numpy()  # (n, H, V)

    def sample(self, n, horizon, rng, cls=None):
        # phi ignores earlier tokens, so all positions are drawn at once: O(H), not O(H^2).
        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        prompt = self.sample_prompts(classes, rng)
        probs = np.exp(self.step_log_probs(prompt, np.zeros((n, horizon), np.int64)))  # (n, H, V)
        response = _sample_rows(probs.reshape(n * horizon, -1), rng).reshape(n, horizon)
        return Batch(prompt, response, classes)

    def inherent_variance(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """sigma*^2 terms E_{v ~ pi_D}||phi_v - E phi||^2 per position (paper Eq. 8): float64 (n, H)."""
        # phi reads a table row per position: one term per row, read per position
        per_row = context_variances(self.features.table, self.theta)  # (K,)
        return per_row[self.features.context_ids(prompt, response, self.bos)]


class KLLowerBoundParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["kl_lower_bound"] = "kl_lower_bound"
    n: int = Field(256, ge=1, description="the sample size the instance is built for: mu(x = 1) = 1/(2n)")
    scale: float = Field(1.0, gt=0, description="B: phi(1, y_1..h) = B y_h (Prop. 3.2 has B = 1)")
    theta_sign: Literal[-1, 1] = Field(1, description="theta* = +1 or -1")


class KLLowerBound(_TableTeacher):
    Params = KLLowerBoundParams

    def __init__(self, params: KLLowerBoundParams):
        rare = 1.0 / (2 * params.n)
        table = np.zeros((2, 2, 1))  # (x, v, d)
        table[1, :, 0] = [-params.scale, params.scale]  # token 0 is y = -1, token 1 is y = +1

        def context_of(prompt, response):  # the prompt type, at every position
            return np.broadcast_to(prompt[:, :1].astype(np.int64), response.shape).copy()

        classes = {"uninformative": 1 - rare, "informative": rare}
        self._build(params, classes, table, context_of, [float(params.theta_sign)])

    def uninformed_kl(self, horizon: int) -> float:
        """Sequence KL (nats) of the symmetric guess theta = 0, the MLE when no x = 1 was seen:
        mu(1) H KL(pi*(.|1) || uniform)."""
        import torch

        p = torch.softmax(self.features.table[1] @ self.theta, dim=-1).numpy()
        return float(self.class_weights[1] * horizon * np.sum(p * np.log(p * 2)))


class SGDTwoScalesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["sgd_two_scales"] = "sgd_two_scales"
    loud_scale: float = Field(8.0, gt=0, description="B: the loud prompts' e_1 feature scale")
    confidence: float = Field(8.0, gt=0, description="C: the loud prompts' e_3 feature scale (near-determinism)")
    rare_scale: float = Field(4.0, gt=0, description="Bbar: the rare prompts' e_2 feature scale")
    rare_weight: float = Field(0.05, gt=0, lt=1, description="p: probability of the rare prompt type")
    rare_tokens: int = Field(4, ge=1, description="k: informative positions of a rare prompt")
    theta_rare: float = Field(0.6, ge=-1, le=1, description="b = theta*_2")
    theta_det: float = Field(0.8, ge=0, le=1, description="c = theta*_3")

    @model_validator(mode="after")
    def _in_unit_ball(self):
        if self.theta_rare**2 + self.theta_det**2 > 1 + 1e-12:
            raise ValueError(
                f"theta_rare: theta* = (0, {self.theta_rare:g}, {self.theta_det:g}) has norm > 1 (Assumption 2.2)"
            )
        return self


class SGDTwoScales(_TableTeacher):
    Params = SGDTwoScalesParams

    def __init__(self, params: SGDTwoScalesParams):
        B, C, Bbar = params.loud_scale, params.confidence, params.rare_scale
        table = np.zeros((3, 3, 3))  # rows: loud, rare head, rare tail; (v, d); v = 0, 1, 2 is y = -1, 0, +1
        table[0, 0], table[0, 2] = (-B, 0, -C), (B, 0, -C)
        table[1, 0], table[1, 2] = (0, -Bbar, 0), (0, Bbar, 0)
        k = params.rare_tokens

        def context_of(prompt, response):
            rare = prompt[:, :1].astype(np.int64) == 1  # (n, 1)
            tail = np.arange(response.shape[1])[None, :] >= k  # (1, H)
            return np.where(rare, np.where(tail, 2, 1), 0).astype(np.int64)

        classes = {"loud": 1 - params.rare_weight, "rare": params.rare_weight}
        self._build(params, classes, table, context_of, [0.0, params.theta_rare, params.theta_det])
