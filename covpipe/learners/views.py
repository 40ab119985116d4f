"""What a learner sees of a model: its parameters as one float64 vector theta of length P, and
token log-likelihoods of a fixed training sample with their gradients.

Learners run R parameter vectors side by side (theta of shape (R, P)): the runs of one trial
that differ only in their step size (one per checkpoint when the paper's rule reads the budget
T) share every pass over the data.

- `LinearView`: the autoregressive linear class (paper Eq. 3), pi_theta(. | x, y_<h) =
  softmax(Phi_h theta) with Phi_h = phi(x, y_<h, v) for every candidate v, shape (V, d). Closed
  forms: grad log pi(y_h) = phi(y_h) - E_p[phi] (paper Sec. 2.2), Hessian -Cov_p(phi). numpy.
- `AutogradView`: any torch model, through autograd on `model.token_log_probs`.

`view_of(model, prompt, response)` picks `context.ContextView` (counts) when the model's features
read finitely many contexts, the closed forms of `LinearView` when it offers `candidate_features`
(an `ar_linear` model does), autograd otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from ..softmax import log_softmax
from .base import project

CACHE_BYTES = 1 << 27  # keep Phi of the whole sample in memory up to 128 MiB
CHUNK = 128  # sequences per block where a whole-sample pass would not fit


def view_of(model, prompt: torch.Tensor, response: torch.Tensor):
    """The learner's view of `model` on a training sample (prompt (n, P), response (n, H)): counts
    where its features read finitely many contexts (covpipe.learners.context), else per position."""
    from .context import ContextView, has_context_form

    if has_context_form(model):
        return ContextView(model, [np.asarray(prompt.cpu())], [np.asarray(response.cpu())])
    if hasattr(model, "candidate_features"):
        return LinearView(model, prompt, response)
    return AutogradView(model, prompt, response)


class LinearView:
    """Closed forms for linear softmax models; theta is the model's `theta` (d,)."""

    def __init__(self, model, prompt: torch.Tensor, response: torch.Tensor):
        self.model = model
        self.prompt, self.response = prompt.cpu(), response.cpu()
        self.y = self.response.numpy()  # (n, H)
        self.n, self.horizon = self.y.shape
        self.dim = int(model.theta.numel())
        self._cache = None
        if self.n * self.horizon * model.vocab.vocab_size * self.dim * 8 <= CACHE_BYTES:
            self._cache = self._features(np.arange(self.n))

    def _features(self, idx) -> np.ndarray:
        with torch.no_grad():
            return self.model.candidate_features(self.prompt[idx], self.response[idx]).numpy()

    def phi(self, idx) -> np.ndarray:
        """Candidate features of sequences idx: float64 (k, H, V, d)."""
        idx = np.asarray(idx)
        return self._cache[idx] if self._cache is not None else self._features(idx)

    def initial(self) -> np.ndarray:
        return self.model.theta.detach().cpu().double().numpy().copy()

    def load(self, theta: np.ndarray) -> None:
        with torch.no_grad():
            self.model.theta.copy_(torch.as_tensor(theta, dtype=self.model.theta.dtype))

    def steps(self, theta: np.ndarray, idx) -> np.ndarray:
        """log pi_theta(. | x, y_<h) of sequences idx for each row of theta: (R, k, H, V)."""
        return log_softmax(np.einsum("khvd,rd->rkhv", self.phi(idx), theta))

    def grad(self, theta: np.ndarray, idx, weights=None) -> np.ndarray:
        """sum_{i in idx} sum_h w[r, i, h] grad log pi_theta_r(y_ih | x_i, y_i,<h): (R, P).

        weights: None (all ones) or (R, k, H).
        """
        idx = np.asarray(idx)
        phi = self.phi(idx)  # (k, H, V, d)
        p = np.exp(log_softmax(np.einsum("khvd,rd->rkhv", phi, theta)))  # (R, k, H, V)
        observed = np.take_along_axis(phi, self.y[idx][..., None, None], axis=2)[:, :, 0]  # (k, H, d)
        score = observed[None] - np.einsum("rkhv,khvd->rkhd", p, phi)  # (R, k, H, d)
        if weights is None:
            return score.sum((1, 2))
        return np.einsum("rkh,rkhd->rd", weights, score)

    def token_walk(self, theta: np.ndarray, idx, eta: np.ndarray, radius, record: bool = True):
        """One projected step per token along each row's own sequence (paper Eq. 21):
        theta_m <- Proj(theta_m + eta_m grad log pi_theta_m(y_h | x, y_<h)), h = 1..H.

        theta: (M, P); idx: (M,) the sequence row m walks; eta: (M,).
        Returns (theta after the H steps (M, P), log pi before each step (M, H, V) or None when
        not `record`): the second is exactly the TTT model's next-token distribution along the
        sequence (paper Eq. 22). This loop is the learners' hot spot (H steps of tiny arrays).
        """
        idx = np.asarray(idx)
        theta = theta.copy()
        shared = bool((idx == idx[0]).all())
        phi = self.phi(idx[:1])[0] if shared else self.phi(idx)  # (H, V, d) or (M, H, V, d)
        y = self.y[idx[0]] if shared else self.y[idx]
        rows = np.arange(len(idx))
        out = np.empty((len(idx), self.horizon, phi.shape[-2])) if record else None
        step = eta[:, None]
        for h in range(self.horizon):
            if shared:
                ph = phi[h]  # (V, d)
                logits = theta @ ph.T  # (M, V)
            else:
                ph = phi[:, h]  # (M, V, d)
                logits = np.einsum("mvd,md->mv", ph, theta)
            logits -= logits.max(1, keepdims=True)
            e = np.exp(logits)
            z = e.sum(1, keepdims=True)
            if record:
                out[:, h] = logits - np.log(z)
            if shared:
                g = ph[y[h]] - (e / z) @ ph
            else:
                g = ph[rows, y[:, h]] - np.einsum("mv,mvd->md", e / z, ph)
            theta += step * g
            if radius is not None:
                norm = np.sqrt((theta * theta).sum(1, keepdims=True))
                theta *= np.minimum(1.0, radius / np.maximum(norm, 1e-300))
        return theta, out

    def position(self, theta: np.ndarray, idx, h: int) -> np.ndarray:
        """log pi_theta_m(. | x, y_<h) of row m's sequence idx[m] at position h: (M, V)."""
        phi = self.phi(idx)[:, h]  # (M, V, d)
        return log_softmax(np.einsum("mvd,md->mv", phi, theta))

    def token_step(self, theta: np.ndarray, idx, h: int, eta: np.ndarray, radius) -> np.ndarray:
        """One projected step of each row on log pi(y_h | x, y_<h) of its own sequence: (M, P)."""
        idx = np.asarray(idx)
        phi = self.phi(idx)[:, h]  # (M, V, d)
        p = np.exp(log_softmax(np.einsum("mvd,md->mv", phi, theta)))
        g = phi[np.arange(len(idx)), self.y[idx, h]] - np.einsum("mv,mvd->md", p, phi)
        return project(theta + eta[:, None] * g, radius)

    def log_likelihood(self, theta: np.ndarray, idx) -> np.ndarray:
        """log pi_theta(y_h | x, y_<h) of sequences idx: (k, H)."""
        idx = np.asarray(idx)
        out = []
        for start in range(0, len(idx), CHUNK):
            part = idx[start : start + CHUNK]
            lp = log_softmax(self.phi(part) @ theta)  # (k, H, V)
            out.append(np.take_along_axis(lp, self.y[part][..., None], axis=-1)[..., 0])
        return np.concatenate(out)

    def value_grad_hessian(self, theta: np.ndarray, idx) -> tuple[float, np.ndarray, np.ndarray]:
        """Mean over sequences idx of log pi_theta(y|x), its gradient (d,) and Hessian (d, d)."""
        idx = np.asarray(idx)
        value, grad, hess = 0.0, np.zeros(self.dim), np.zeros((self.dim, self.dim))
        for start in range(0, len(idx), CHUNK):
            phi = self.phi(idx[start : start + CHUNK])  # (k, H, V, d)
            y = self.y[idx[start : start + CHUNK]]
            lp = log_softmax(phi @ theta)  # (k, H, V)
            p = np.exp(lp)
            value += np.take_along_axis(lp, y[..., None], axis=-1).sum()
            mean = np.einsum("khv,khvd->khd", p, phi).reshape(-1, self.dim)  # E_p[phi] per position
            grad += np.take_along_axis(phi, y[..., None, None], axis=2).reshape(-1, self.dim).sum(0) - mean.sum(0)
            flat = phi.reshape(-1, self.dim)
            hess -= flat.T @ (flat * p.reshape(-1, 1)) - mean.T @ mean  # sum of Cov_p(phi), by BLAS
        k = len(idx)
        return value / k, grad / k, hess / k


class AutogradView:
    """Any torch model: theta is `parameters_to_vector(model.parameters())` in float64."""

    def __init__(self, model, prompt: torch.Tensor, response: torch.Tensor):
        self.model = model
        self.prompt, self.response = prompt, response
        self.n, self.horizon = response.shape
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.dim = sum(p.numel() for p in self.params)

    def initial(self) -> np.ndarray:
        return torch.nn.utils.parameters_to_vector(self.params).detach().cpu().double().numpy().copy()

    def load(self, theta: np.ndarray) -> None:
        ref = self.params[0]
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.as_tensor(theta, dtype=ref.dtype, device=ref.device), self.params)

    def steps(self, theta: np.ndarray, idx) -> np.ndarray:
        idx = torch.as_tensor(np.asarray(idx))
        out = []
        for row in theta:
            self.load(row)
            with torch.no_grad():
                out.append(self.model.step_log_probs(self.prompt[idx], self.response[idx]).double().cpu().numpy())
        return np.stack(out)

    def _flat_grad(self) -> np.ndarray:
        return (
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])
            .double()
            .cpu()
            .numpy()
        )

    def grad(self, theta: np.ndarray, idx, weights=None) -> np.ndarray:
        idx = torch.as_tensor(np.asarray(idx))
        out = []
        for r, row in enumerate(theta):
            self.load(row)
            self.model.zero_grad(set_to_none=True)
            lp = self.model.token_log_probs(self.prompt[idx], self.response[idx])  # (k, H)
            w = 1.0 if weights is None else torch.as_tensor(weights[r], dtype=lp.dtype, device=lp.device)
            (lp * w).sum().backward()
            out.append(self._flat_grad())
        return np.stack(out)

    def token_walk(self, theta: np.ndarray, idx, eta: np.ndarray, radius, record: bool = True):
        """As `LinearView.token_walk`, by autograd: a forward pass over the whole sequence per
        token, O(H) per step (the closed forms are O(1))."""
        theta = theta.copy()
        out = []
        for m, i in enumerate(np.asarray(idx)):
            x, y = self.prompt[i : i + 1], self.response[i : i + 1]
            rows = []
            for h in range(self.horizon):
                self.load(theta[m])
                self.model.zero_grad(set_to_none=True)
                steps = self.model.step_log_probs(x, y)[0, h]  # (V,)
                rows.append(steps.detach().double().cpu().numpy())
                steps[y[0, h]].backward()
                theta[m] = project(theta[m] + eta[m] * self._flat_grad(), radius)
            out.append(np.stack(rows))
        return theta, np.stack(out)

    def position(self, theta: np.ndarray, idx, h: int) -> np.ndarray:
        out = []
        for row, i in zip(theta, np.asarray(idx)):
            self.load(row)
            with torch.no_grad():
                out.append(
                    self.model.step_log_probs(self.prompt[i : i + 1], self.response[i : i + 1])[0, h]
                    .double()
                    .cpu()
                    .numpy()
                )
        return np.stack(out)

    def token_step(self, theta: np.ndarray, idx, h: int, eta: np.ndarray, radius) -> np.ndarray:
        theta = theta.copy()
        for m, i in enumerate(np.asarray(idx)):
            self.load(theta[m])
            self.model.zero_grad(set_to_none=True)
            self.model.step_log_probs(self.prompt[i : i + 1], self.response[i : i + 1])[
                0, h, self.response[i, h]
            ].backward()
            theta[m] = project(theta[m] + eta[m] * self._flat_grad(), radius)
        return theta

    def log_likelihood(self, theta: np.ndarray, idx) -> np.ndarray:
        self.load(theta)
        idx = torch.as_tensor(np.asarray(idx))
        with torch.no_grad():
            return self.model.token_log_probs(self.prompt[idx], self.response[idx]).double().cpu().numpy()

    def value_and_grad(self, theta: np.ndarray, idx) -> tuple[float, np.ndarray]:
        """Mean over sequences idx of log pi_theta(y|x) and its gradient (P,)."""
        idx = np.asarray(idx)
        value, grad = 0.0, np.zeros(self.dim)
        for start in range(0, len(idx), CHUNK):
            part = torch.as_tensor(idx[start : start + CHUNK])
            self.load(theta)
            self.model.zero_grad(set_to_none=True)
            lp = self.model.token_log_probs(self.prompt[part], self.response[part]).double().sum()
            lp.backward()
            value, grad = value + lp.item(), grad + self._flat_grad()
        return value / len(idx), grad / len(idx)
