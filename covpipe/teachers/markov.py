"""Order-k Markov chain teacher over a vocabulary of V tokens (k = 0: i.i.d. tokens).

Each class has its own transition table, rows drawn from Dirichlet(alpha) with the teacher's
seed. The prompt is empty or a start state of k tokens drawn uniformly; with more than one
class, the prompt opens with a class marker token (id V + class index), so the class is a
function of the prompt and pi_D(y|x) is one conditional.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..sequences import Batch, context_windows, encode_windows
from .base import Teacher, _sample_rows, check_class_weights

MAX_TABLE_ENTRIES = 20_000_000


class MarkovParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["markov"] = "markov"
    vocab_size: int = Field(8, ge=2, le=64, description="V, response tokens")
    order: int = Field(1, ge=0, le=4, description="k, tokens of context")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration of each row")
    prompt: Literal["empty", "start_state"] = Field(
        "start_state", description="empty, or a start state of k tokens drawn uniformly"
    )
    seed: int = Field(0, ge=0, description="seed of the transition tables")
    classes: dict[str, float] = Field(
        default_factory=lambda: {"main": 1.0},
        description="class name -> weight (sum 1); each class has its own tables, marked in the prompt",
    )

    @field_validator("classes")
    @classmethod
    def _class_weights(cls, v):
        return check_class_weights(v)

    @model_validator(mode="after")
    def _table_size(self):
        n_cls = len(self.classes)
        base = self.vocab_size + (n_cls if n_cls > 1 else 0) + 1
        entries = n_cls * base**self.order * self.vocab_size
        if entries > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"order: {self.order} with vocab_size {self.vocab_size} needs {entries:.3g} transition "
                f"probabilities (limit {MAX_TABLE_ENTRIES:.0e})"
            )
        return self


class Markov(Teacher):
    Params = MarkovParams

    def __init__(self, params: MarkovParams):
        self.params = params
        self.vocab_size = params.vocab_size
        self.order = params.order
        self.class_names = tuple(params.classes)
        self.class_weights = np.array(list(params.classes.values()), dtype=np.float64)
        n_cls = len(self.class_names)
        self._marker = n_cls > 1
        self.input_vocab_size = self.vocab_size + (n_cls if self._marker else 0)
        self.prompt_length = int(self._marker) + (self.order if params.prompt == "start_state" else 0)
        self.base = self.input_vocab_size + 1  # window ids include BOS
        n_ctx = self.base**self.order
        rng = np.random.default_rng([params.seed, 0x6D61726B])
        tables = rng.dirichlet(np.full(self.vocab_size, params.alpha), size=(n_cls, n_ctx))
        # Dirichlet draws with small alpha can underflow to exact zeros; keep pi_D positive.
        tables = np.maximum(tables, 1e-300)
        self.log_tables = np.log(tables / tables.sum(-1, keepdims=True))  # (C, V_in+1 ^ k, V)

    def sample_prompts(self, cls, rng):
        n = cls.shape[0]
        parts = []
        if self._marker:
            parts.append((self.vocab_size + cls)[:, None])
        if self.params.prompt == "start_state":
            parts.append(rng.integers(0, self.vocab_size, size=(n, self.order)))
        if not parts:
            return np.zeros((n, 0), dtype=np.int64)
        return np.concatenate(parts, axis=1).astype(np.int64)

    def classes_of(self, prompt: np.ndarray) -> np.ndarray:
        """Class id of each prompt: int64, (n,)."""
        if not self._marker:
            return np.zeros(prompt.shape[0], dtype=np.int64)
        return prompt[:, 0].astype(np.int64) - self.vocab_size

    def step_log_probs(self, prompt, response):
        ctx = encode_windows(context_windows(prompt, response, self.order, self.bos), self.base)  # (n, H)
        cls = self.classes_of(prompt)[:, None]  # (n, 1)
        return self.log_tables[cls, ctx]  # (n, H, V)

    def sample(self, n, horizon, rng, cls=None):
        # Ancestral sampling reads one window per step: O(H) instead of the base class's O(H^2).
        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        prompt = self.sample_prompts(classes, rng)
        history = np.concatenate([np.full((n, self.order), self.bos, np.int64), prompt], axis=1)
        tables = np.exp(self.log_tables)
        response = np.zeros((n, horizon), dtype=np.int64)
        for h in range(horizon):
            window = history[:, history.shape[1] - self.order :] if self.order else history[:, :0]
            probs = tables[classes, encode_windows(window, self.base)]  # (n, V)
            response[:, h] = _sample_rows(probs, rng)
            history = np.concatenate([history, response[:, h : h + 1]], axis=1)
        return Batch(prompt, response, classes)
