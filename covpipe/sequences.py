"""Token sequences as covpipe passes them around, and the context windows models read.

A batch of n examples is a prompt x of shape (n, P) and a response y of shape (n, H), both
int64 token ids, plus the class id of each example, shape (n,). Response tokens lie in
[0, V); prompt tokens lie in [0, V_in) with V_in >= V (a teacher may use extra prompt
symbols such as class markers). Id V_in is reserved as BOS, the padding that fills a context
window reaching before the start of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Prompts (n, P), responses (n, H) and class ids (n,), all int64."""

    prompt: np.ndarray
    response: np.ndarray
    cls: np.ndarray

    def __post_init__(self):
        n = self.response.shape[0]
        if self.prompt.shape[0] != n or self.cls.shape != (n,):
            raise ValueError(
                f"Batch: inconsistent sizes: prompt {self.prompt.shape}, "
                f"response {self.response.shape}, cls {self.cls.shape}"
            )

    def __len__(self) -> int:
        return int(self.response.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.response.shape[1])

    def take(self, idx) -> Batch:
        return Batch(self.prompt[idx], self.response[idx], self.cls[idx])


def context_windows(prompt: np.ndarray, response: np.ndarray, order: int, bos: int) -> np.ndarray:
    """The `order` tokens before each response position, oldest first.

    prompt: int, (n, P); response: int, (n, H); bos: the padding id.
    Returns: int64, (n, H, order): window[:, h] = (x ++ y)[P + h - order : P + h], BOS-padded.
    """
    n, h = response.shape
    if order == 0:
        return np.zeros((n, h, 0), dtype=np.int64)
    pad = np.full((n, order), bos, dtype=np.int64)
    history = np.concatenate([pad, prompt.astype(np.int64), response.astype(np.int64)], axis=1)
    start = prompt.shape[1]  # history index of the first window's first token
    windows = np.lib.stride_tricks.sliding_window_view(history, order, axis=1)  # (n, L-order+1, order)
    return windows[:, start : start + h].copy()


def encode_windows(windows: np.ndarray, base: int) -> np.ndarray:
    """Mixed-radix index of each window: sum_j w[..., j] * base**j. Shape (...,)."""
    order = windows.shape[-1]
    powers = base ** np.arange(order, dtype=np.int64)
    return (windows * powers).sum(axis=-1)
