"""What every teacher pi_D offers: exact next-token distributions, exact sequence
log-likelihoods, a seeded sampler, and a mixture of named classes with weights.

A teacher's class is a function of the prompt (classes partition the prompts), so
pi_D(y|x) is a single conditional and metrics can be reported per class and reweighted.
All probabilities are float64 numpy arrays in nats.
"""

from __future__ import annotations

import numpy as np

from ..sequences import Batch


def check_class_weights(weights: dict[str, float]) -> dict[str, float]:
    """Class weights of a teacher config: non-empty, non-negative, summing to 1 (to 1e-6)."""
    if not weights:
        raise ValueError("empty; give at least one class with weight 1")
    for name, w in weights.items():
        if not w >= 0:
            raise ValueError(f"weight of class '{name}' must be >= 0, got {w}")
    total = sum(weights.values())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"weights must sum to 1, got {total:g}")
    return weights


class Teacher:
    """Base class. Subclasses set the attributes below and implement
    `sample_prompts` and `step_log_probs`."""

    vocab_size: int  # V: response tokens are 0..V-1
    input_vocab_size: int  # V_in >= V: prompt tokens are 0..V_in-1; V_in is BOS
    prompt_length: int  # P
    class_names: tuple[str, ...]
    class_weights: np.ndarray  # (n_classes,), sums to 1

    @property
    def bos(self) -> int:
        return self.input_vocab_size

    @classmethod
    def build_bytes(cls, params) -> int:
        """Memory that building this teacher allocates, from its params alone (checked before building)."""
        return 0

    def check_horizon(self, horizon: int) -> None:
        """Raise ValueError (naming the parameter) if this teacher cannot make sequences of `horizon`."""

    def response_length(self, horizon: int) -> int:
        """Tokens in a response at this horizon (the graph teacher adds source and target)."""
        return horizon

    def prompt_length_for(self, horizon: int) -> int:
        return self.prompt_length

    def sample_prompts(self, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Prompts for the given class ids. cls: (n,) -> int64 (n, P)."""
        raise NotImplementedError

    def step_log_probs(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """log pi_D(. | x, y_<h) for every position h of y.

        prompt: int, (n, P); response: int, (n, H) (y_h itself is not read at position h).
        Returns: float64, (n, H, V), nats; each row logsumexps to 0.
        """
        raise NotImplementedError

    # ---- derived, shared by all teachers -------------------------------------------------

    def token_log_probs(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """log pi_D(y_h | x, y_<h): float64, (n, H), nats."""
        steps = self.step_log_probs(prompt, response)  # (n, H, V)
        return np.take_along_axis(steps, response[..., None].astype(np.int64), axis=-1)[..., 0]

    def sequence_log_probs(self, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """log pi_D(y | x) summed over the H tokens: float64, (n,), nats."""
        return self.token_log_probs(prompt, response).sum(axis=1)

    def next_token_log_probs(self, prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """log pi_D(. | x, prefix) after a prefix of any length h >= 0: float64, (n, V)."""
        n = prompt.shape[0]
        padded = np.concatenate([prefix, np.zeros((n, 1), dtype=np.int64)], axis=1)
        return self.step_log_probs(prompt, padded)[:, -1]

    def sample_classes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Class ids drawn from the class weights: int64, (n,)."""
        return rng.choice(len(self.class_names), size=n, p=self.class_weights).astype(np.int64)

    def sample(self, n: int, horizon: int, rng: np.random.Generator, cls=None) -> Batch:
        """n examples (x, y) with y ~ pi_D(.|x) of length `horizon`.

        cls: None draws classes from the weights; an int draws every example from that class.
        Autoregressive by default (H calls of step_log_probs); teachers may override.
        """
        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        prompt = self.sample_prompts(classes, rng)
        response = np.zeros((n, horizon), dtype=np.int64)
        for h in range(horizon):
            probs = np.exp(self.next_token_log_probs(prompt, response[:, :h]))
            response[:, h] = _sample_rows(probs, rng)
        return Batch(prompt, response, classes)


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of probs (n, V) by inverse CDF: int64, (n,)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1).astype(np.int64)
