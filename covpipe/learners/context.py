"""Closed forms on sufficient statistics, for AR-linear models whose feature map reads one of
finitely many contexts (a window of the last w-1 tokens, or a table row per prompt type and
position): phi(x, y_<h, v) = table[c_h, v] with c_h = the context id of position h.

Then pi_theta(. | x, y_<h) = softmax(table[c_h] @ theta) depends on the position only through c_h,
and every quantity a learner needs is a sum over (context, token) counts:

    sum_i log pi_theta(y_i | x_i)       = sum_{c,v} N[c, v] log p_theta[c, v]
    sum_i grad log pi_theta(y_i | x_i)  = sum_{c,v} N[c, v] table[c, v] - sum_c n[c] mu_theta[c]
    Hessian                             = -sum_c n[c] Cov_{p_theta[c]}(table[c])

with N[c, v] the number of positions of the sequences with context c and token v, n[c] = sum_v N[c, v],
p_theta[c] = softmax(table[c] @ theta) (V,) and mu_theta[c] = E_{p_theta[c]}[table[c, v]] (d,). A step
costs O(K V d) per parameter vector (K contexts), whatever H and the mini-batch size: that is what
makes 2^17-sequence sweeps and H = 256 cheap. Token-level SGD cannot use counts (theta moves after
every token), so its walk gathers table rows per token.

`ContextView` holds the training samples of S seeds at once. theta has S * J rows, seed-major
(row r belongs to seed r // J): the seeds of one job and the runs of each seed (one per checkpoint
when the paper's rule reads T) are one batched computation. Sequence indices are per seed: row r
at index i reads sequence i of its own seed's sample.
"""

from __future__ import annotations

import numpy as np
import torch

from ..features import MAX_CONTEXT_TABLE
from ..softmax import fast_log_softmax, log_softmax
from .base import project
from .kernels import compiled_walk

MAX_CONTEXTS = MAX_CONTEXT_TABLE  # beyond this many contexts the per-position view (views.LinearView) is used


def has_context_form(model) -> bool:
    """Whether `model`'s features read finitely many contexts (few enough for `ContextView`)."""
    f = getattr(model, "features", None)
    return hasattr(model, "candidate_features") and hasattr(f, "context_table") and f.context_count() <= MAX_CONTEXTS


class ContextView:
    """The learner view (see views.LinearView for the interface) of S seeds' samples, by counts.

    prompts, responses: per seed, (n, P) and (n, H) int arrays; every seed has the same n.
    """

    def __init__(self, model, prompts, responses):
        self.model = model
        f = model.features
        self.table = f.context_table().double().numpy()  # (K, V, d)
        self.K, self.V, self.dim = self.table.shape
        self.flat = self.table.reshape(self.K * self.V, self.dim)  # row c * V + v
        bos = model.vocab.bos
        # int32 (12 bytes a token a seed in all): a 2^17-sequence sample of 8 seeds stays in memory
        self.ctx = np.stack(
            [f.context_ids(np.asarray(p), np.asarray(r), bos).astype(np.int32) for p, r in zip(prompts, responses)]
        )
        self.y = np.stack([np.asarray(r, dtype=np.int32) for r in responses])  # (S, n, H)
        self.seeds, self.n, self.horizon = self.y.shape
        self.pair = self.ctx * np.int32(self.V) + self.y  # (S, n, H): the (context, token) cell of each position
        self._prompts, self._responses = prompts, responses

    # ---- what every view offers ----------------------------------------------------------------

    def initial(self) -> np.ndarray:
        return self.model.theta.detach().cpu().double().numpy().copy()

    def load(self, theta: np.ndarray) -> None:
        with torch.no_grad():
            self.model.theta.copy_(torch.as_tensor(theta, dtype=self.model.theta.dtype))

    def seed_view(self, s: int) -> ContextView:
        """The view of seed s alone (shares the arrays)."""
        view = object.__new__(ContextView)
        view.__dict__.update(self.__dict__)
        view.ctx, view.y, view.pair = self.ctx[s : s + 1], self.y[s : s + 1], self.pair[s : s + 1]
        view.seeds = 1
        view._prompts, view._responses = [self._prompts[s]], [self._responses[s]]
        return view

    def _seed_of_rows(self, rows: int) -> np.ndarray:
        if rows % self.seeds:
            raise ValueError(f"{rows} parameter rows do not split evenly over {self.seeds} seeds")
        return np.repeat(np.arange(self.seeds), rows // self.seeds)

    def log_probs(self, theta: np.ndarray) -> np.ndarray:
        """log p_theta[c, v] of every context for each row of theta (R, d): (R, K, V)."""
        return fast_log_softmax((theta @ self.flat.T).reshape(len(theta), self.K, self.V))

    def mean_features(self, p: np.ndarray) -> np.ndarray:
        """mu[c] = E_{p[c]}[table[c, v]] for probabilities p (R, K, V): (R, K, d)."""
        return np.einsum("rkv,kvd->rkd", p, self.table)

    def counts(self, idx, weights=None) -> np.ndarray:
        """N[c, v] of sequences idx (k,) of each seed, (S, K V); with weights (R, k, H) per row, (R, K V)."""
        idx = np.asarray(idx)
        cells = self.pair[:, idx]  # (S, k, H)
        size = self.K * self.V
        if weights is None:
            offset = (np.arange(self.seeds) * size)[:, None, None]
            return np.bincount((cells + offset).ravel(), minlength=self.seeds * size).reshape(self.seeds, size)
        seed = self._seed_of_rows(len(weights))
        offset = (np.arange(len(weights)) * size)[:, None, None]
        return np.bincount(
            (cells[seed] + offset).ravel(), weights=weights.ravel(), minlength=len(weights) * size
        ).reshape(len(weights), size)

    def grad(self, theta: np.ndarray, idx, weights=None) -> np.ndarray:
        """sum over sequences idx of (weighted) sequence gradients, each row on its own seed: (R, d).
        weights: None (all ones) or (R, k, H)."""
        R = len(theta)
        counts = self.counts(idx, weights).astype(np.float64)
        if weights is None:
            counts = counts[self._seed_of_rows(R)]
        p = np.exp(self.log_probs(theta))  # (R, K, V)
        per_context = counts.reshape(R, self.K, self.V).sum(-1, keepdims=True)  # n[c]
        # sum_{c,v} (N[c, v] - n[c] p[c, v]) table[c, v]: one matrix product
        return (counts - (per_context * p).reshape(R, -1)) @ self.flat

    def steps(self, theta: np.ndarray, idx) -> np.ndarray:
        """log pi_theta(. | x, y_<h) of sequences idx of each row's seed: (R, k, H, V)."""
        return self.context_values(self.log_probs(theta), idx)

    def context_values(self, values: np.ndarray, idx) -> np.ndarray:
        """Per-context values (R, K) read at every position of sequences idx of each row's seed: (R, k, H)."""
        ctx = self.ctx[:, np.asarray(idx)][self._seed_of_rows(len(values))]  # (R, k, H)
        return values[np.arange(len(values))[:, None, None], ctx]

    def log_likelihood(self, theta: np.ndarray, idx) -> np.ndarray:
        """log pi_theta(y_h | x, y_<h) of sequences idx of seed 0 for one theta (d,): (k, H)."""
        lp = self.log_probs(theta[None])[0].reshape(-1)
        return lp[self.pair[0, np.asarray(idx)]]

    def value_grad_hessian(self, theta: np.ndarray, idx) -> tuple[float, np.ndarray, np.ndarray]:
        """Mean over sequences idx (of a one-seed view) of log pi_theta(y|x), its gradient (d,) and
        Hessian (d, d), from counts: O(K V d^2), whatever the number of sequences."""
        idx = np.asarray(idx)
        counts = np.bincount(self.pair[0, idx].ravel(), minlength=self.K * self.V).astype(np.float64)
        lp = self.log_probs(theta[None])[0]  # (K, V)
        p = np.exp(lp)
        n_c = counts.reshape(self.K, self.V).sum(-1)  # (K,)
        mu = self.mean_features(p[None])[0]  # (K, d)
        value = float(counts @ lp.reshape(-1))
        grad = counts @ self.flat - n_c @ mu
        second = np.einsum("kv,kvd,kve->de", p * n_c[:, None], self.table, self.table)
        hess = -(second - np.einsum("k,kd,ke->de", n_c, mu, mu))
        k = len(idx)
        return value / k, grad / k, hess / k

    # ---- token-level walks (token SGD, TTT) --------------------------------------------------------

    def token_walk(self, theta: np.ndarray, idx, eta: np.ndarray, radius, record: bool = True, compiled: bool = True):
        """As views.LinearView.token_walk: row m walks sequence idx[m] of its own seed, one projected
        step per token (paper Eq. 21). Returns (theta (M, d), log pi before each step (M, H, V) or None).
        compiled: the numba loop (kernels.compiled_walk) where available, else the numpy loop below."""
        idx = np.asarray(idx)
        M = len(theta)
        seed = self._seed_of_rows(M)
        ctx, y = self.ctx[seed, idx], self.y[seed, idx]  # (M, H)
        theta = np.array(theta, dtype=np.float64)  # a copy
        if compiled and compiled_walk is not None:
            out = np.empty((M, self.horizon, self.V)) if record else np.empty((0, 0, 0))
            compiled_walk(
                self.table,
                ctx,
                y,
                theta,
                np.ascontiguousarray(eta, dtype=np.float64),
                -1.0 if radius is None else float(radius),
                out,
                record,
            )
            return theta, (out if record else None)
        out = np.empty((M, self.horizon, self.V)) if record else None
        step = eta[:, None]
        observed = self.table[ctx, y]  # (M, H, d): phi(y_h) along each walk
        for h in range(self.horizon):
            ph = self.table[ctx[:, h]]  # (M, V, d)
            lp = fast_log_softmax(np.matmul(ph, theta[:, :, None])[..., 0])  # (M, V)
            if record:
                out[:, h] = lp
            theta += step * (observed[:, h] - np.matmul(np.exp(lp)[:, None, :], ph)[:, 0])
            if radius is not None:
                norm = np.sqrt(np.square(theta) @ np.ones(self.dim))[:, None]
                theta *= np.minimum(1.0, radius / np.maximum(norm, 1e-300))
        return theta, out

    def position(self, theta: np.ndarray, idx, h: int) -> np.ndarray:
        """log pi_theta_m(. | x, y_<h) of row m's sequence idx[m] at position h: (M, V)."""
        ctx = self.ctx[self._seed_of_rows(len(theta)), np.asarray(idx), h]
        return log_softmax(np.einsum("mvd,md->mv", self.table[ctx], theta))

    def token_step(self, theta: np.ndarray, idx, h: int, eta: np.ndarray, radius) -> np.ndarray:
        """One projected step of each row on log pi(y_h | x, y_<h) of its own sequence: (M, d)."""
        idx = np.asarray(idx)
        seed = self._seed_of_rows(len(theta))
        ph = self.table[self.ctx[seed, idx, h]]  # (M, V, d)
        p = np.exp(log_softmax(np.einsum("mvd,md->mv", ph, theta)))
        g = ph[np.arange(len(idx)), self.y[seed, idx, h]] - np.einsum("mv,mvd->md", p, ph)
        return project(theta + eta[:, None] * g, radius)
