"""The fixed, seeded feature map phi(x, y_1..h) of the autoregressive linear class (paper Sec. 2.2).

phi reads a window of the last w tokens of x ++ y_1..h, the candidate token y_h included:

    s = E[0, y_h] + sum_{j=1}^{w-1} E[j, token j places back],   phi = B * s / ||s||,

with E a seeded Gaussian table of shape (w, V_in + 1, d). So ||phi|| = B exactly, meeting
Assumption 2.2 (sup ||phi|| <= B), and the model class is non-Markovian only through the window.
Logits <theta, phi> are computed without materialising phi for every candidate:
with c = the context part of s (shape (..., d)) and e_v = E[0, v],
<theta, phi_v> = B * (<theta, c> + <theta, e_v>) / ||c + e_v||.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .lazy import tensor_of
from .sequences import context_windows, encode_windows

if TYPE_CHECKING:
    import torch


class WindowFeatures:
    table = tensor_of("table_array")  # E as a torch tensor, (w, V_in + 1, d) float64

    @staticmethod
    def table_bytes(input_vocab_size: int, window: int, dim: int) -> int:
        """Bytes of the table E (float64), a few copies while it is drawn."""
        return 3 * 8 * window * (input_vocab_size + 1) * dim

    def __init__(self, vocab_size: int, input_vocab_size: int, window: int, dim: int, scale: float, seed: int):
        self.vocab_size, self.window, self.dim, self.scale = vocab_size, window, dim, float(scale)
        rng = np.random.default_rng([seed, 0x66656174])
        table = rng.standard_normal((window, input_vocab_size + 1, dim)) / np.sqrt(dim)
        self.table_array = table  # (w, V_in + 1, d), float64

    def _parts(self, windows: torch.Tensor, dtype):
        """Context sums c (..., d), candidate rows e (V, d), and norms ||c + e_v|| (..., V)."""
        import torch

        table = self.table.to(dtype)
        e = table[0, : self.vocab_size]  # (V, d)
        c = torch.zeros(*windows.shape[:-1], self.dim, dtype=dtype)
        for j in range(windows.shape[-1]):
            # Windows are oldest first: column j holds the token w-1-j places back.
            c = c + table[self.window - 1 - j][windows[..., j]]
        sq = (c * c).sum(-1, keepdim=True) + 2 * c @ e.T + (e * e).sum(-1)  # (..., V)
        return c, e, sq.clamp_min(1e-24).sqrt()

    @property
    def bound(self) -> float:
        """B: sup ||phi|| (Assumption 2.2); here ||phi|| = B for every window and candidate."""
        return self.scale

    def position_inputs(self, prompt: np.ndarray, response: np.ndarray, bos: int) -> torch.Tensor:
        """What phi reads at each response position: the w-1 previous tokens, (n, H, w-1) int64."""
        import torch

        return torch.from_numpy(context_windows(prompt, response, self.window - 1, bos))

    def context_ids(self, prompt: np.ndarray, response: np.ndarray, bos: int) -> np.ndarray:
        """The finite-context form (covpipe.learners.context): each position's window as one id in
        [0, (V_in + 1)^(w-1)), int64 (n, H); row id of `context_table`."""
        windows = context_windows(np.asarray(prompt), np.asarray(response), self.window - 1, bos)
        return encode_windows(windows, self.table_array.shape[1])

    def context_count(self) -> int:
        """K = (V_in + 1)^(w-1): the windows phi can read (BOS included)."""
        return int(self.table_array.shape[1]) ** (self.window - 1)

    def context_table(self) -> torch.Tensor:
        """phi(window, v) of every window id and candidate: float64 (K, V, d)."""
        import torch

        base, order = int(self.table_array.shape[1]), self.window - 1
        ids = np.arange(base**order, dtype=np.int64)
        windows = np.stack([(ids // base**j) % base for j in range(order)], axis=-1) if order else ids[:, None][:, :0]
        return self.candidates(torch.from_numpy(windows))

    def candidates(self, windows: torch.Tensor, dtype=None) -> torch.Tensor:
        """phi(window, v) for every candidate v, explicitly: (..., V, d), float64 unless `dtype`
        says otherwise. Learners' closed forms use it."""
        c, e, norm = self._parts(windows, dtype or self.table.dtype)
        return self.scale * (c[..., None, :] + e) / norm[..., None]

    def logits(self, theta: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """<theta, phi(window, v)> for every candidate v.

        theta: (d,); windows: int64 (..., w-1), oldest first. Returns (..., V) in theta's dtype.
        """
        c, e, norm = self._parts(windows, theta.dtype)
        return self.scale * ((c @ theta)[..., None] + e @ theta) / norm

    def context_sum(self, windows: torch.Tensor, dtype) -> torch.Tensor:
        """The context part c (..., d) of s alone (what `_parts` computes first, the same numbers)."""
        table = self.table.to(dtype=dtype, device=windows.device)

        def rows(j):  # index_select: a plain row gather, several times faster than advanced indexing
            return table[self.window - 1 - j].index_select(0, windows[..., j].reshape(-1)).view(*windows.shape[:-1], -1)

        c = rows(0)
        for j in range(1, windows.shape[-1]):
            c = c + rows(j)
        return c

    def sum_and_norms(self, windows: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The theta-independent parts of the logits: context sums c (..., d), norms ||c + e_v|| (..., V)."""
        c, _, norm = self._parts(windows, dtype)
        return c, norm

    def mean_feature_sq_norm(self, log_probs: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """||E_{v ~ p}[phi(window, v)]||^2 for next-token log-probs p of shape (..., V)."""
        c, e, norm = self._parts(windows, log_probs.dtype)
        w = log_probs.exp() / norm  # (..., V): p_v / ||c + e_v||
        mean = self.scale * (c * w.sum(-1, keepdim=True) + w @ e)  # (..., d)
        return (mean * mean).sum(-1)


MAX_CONTEXT_TABLE = 4096  # contexts up to which per-context tables are used (covpipe.learners.context too)


def context_variances(table: torch.Tensor, theta: torch.Tensor) -> np.ndarray:
    """Per context c: E_{v ~ p_c} ||phi(c, v) - E_{p_c} phi||^2 with p_c = softmax(table[c] @ theta),
    the sigma*^2 term (paper Eq. 8) of any position whose context is c. table (K, V, d): float64 (K,)."""
    import torch

    table, theta = table.double(), theta.double()
    p = torch.softmax(table @ theta, dim=-1)  # (K, V)
    mean = (p[..., None] * table).sum(-2)  # (K, d)
    return ((p * (table * table).sum(-1)).sum(-1) - (mean * mean).sum(-1)).numpy()
