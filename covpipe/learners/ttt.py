"""Test-time training (dynamic evaluation) with token-level SGD: the model pi^TTT_theta of paper
Sec. 6.1, Eqs. (22)-(23), for a model trained by `token_sgd` (Eq. 21) with the same eta:

    vartheta_0 = theta                                   (reset for every prompt)
    for h = 1..H:
        y_h ~ pi_{vartheta_{h-1}}(. | x, y_<h)            (sampling) or read y_h (scoring)
        vartheta_h = Proj(vartheta_{h-1} + eta grad log pi_{vartheta_{h-1}}(y_h | x, y_<h))
    pi^TTT(y_h | x, y_<h) := pi_{vartheta_{h-1}}(y_h | x, y_<h).

It is an improper model (not in the class). Teacher-forced along any y, the same recursion gives
its exact next-token distributions, so KL, Cov_N and Pass@N of pi^TTT are exact like every
other model's. Scoring is batched over sequences (one vartheta per sequence).
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.base import Model
from .views import view_of

CHUNK = 256  # sequences scored together (bounds the candidate-feature memory)


class TTT(Model):
    """pi^TTT around a trained model `base` (its state is theta); eta and radius as in training."""

    trainable = False

    def __init__(self, base: Model, eta: float, radius):
        super().__init__(base.vocab)
        self.base, self.eta, self.radius = base, float(eta), radius

    @torch.inference_mode(False)
    @torch.enable_grad()  # the autograd view needs gradients even when called under inference mode
    def step_log_probs(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """log pi^TTT(. | x, y_<h), teacher-forced along y: float64 (n, H, V)."""
        view = view_of(self.base, prompt.cpu(), response.cpu())
        theta0 = view.initial()
        out = []
        for start in range(0, view.n, CHUNK):
            idx = np.arange(start, min(start + CHUNK, view.n))
            _, steps = view.token_walk(
                np.repeat(theta0[None], len(idx), 0), idx, np.full(len(idx), self.eta), self.radius
            )
            out.append(steps)
        view.load(theta0)  # the autograd view moved the base model's weights
        return torch.from_numpy(np.concatenate(out))

    @torch.inference_mode(False)
    @torch.enable_grad()
    def sample_with_log_probs(self, prompt: torch.Tensor, horizon: int, generator: torch.Generator):
        """Responses y ~ pi^TTT(.|x) and log pi^TTT(y_h | x, y_<h) of each sampled token:
        (int64 (n, H), float64 (n, H)). O(H) views of the growing sequences; fine at test sizes."""
        n = prompt.shape[0]
        response = torch.zeros(n, horizon, dtype=torch.int64)
        logp = np.zeros((n, horizon))
        rows = np.arange(n)
        theta = None
        for h in range(horizon):
            view = view_of(self.base, prompt, response)  # position h reads only y_<h
            if theta is None:
                theta0 = view.initial()
                theta = np.repeat(theta0[None], n, 0)
            lp = view.position(theta, rows, h)  # (n, V)
            y = torch.multinomial(torch.from_numpy(np.exp(lp)), 1, generator=generator).squeeze(-1)
            response[:, h] = y
            logp[:, h] = lp[rows, y.numpy()]
            theta = view_of(self.base, prompt, response).token_step(theta, rows, h, np.full(n, self.eta), self.radius)
        view.load(theta0)
        return response, logp

    def sample(self, prompt: torch.Tensor, horizon: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_with_log_probs(prompt, horizon, generator)[0]
