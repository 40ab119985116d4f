"""The exact maximum-likelihood estimate (paper Sec. 2.1: pi_hat = argmax_{pi in Pi} L_n(pi), with
L_n(theta) = sum_i sum_h log pi_theta(y^i_h | x^i, y^i_<h)), optionally over Theta = {||theta|| <= R}.

For the autoregressive linear class L_n is concave (Sec. 2.2), and Newton's method with exact
Hessians (-sum Cov_p(phi)) and a backtracking line search reaches the optimum to a gradient norm
of `tol`. The ball constraint is met exactly through its KKT condition: the constrained
maximizer is the maximizer of L_n(theta)/n - mu ||theta||^2 / 2 for the mu >= 0 at which
||theta|| = R (or mu = 0 when the unconstrained optimum lies inside), found by bisection on mu.
Other differentiable models use L-BFGS (torch) for the same penalized objective: a stationary
point, exact only where the objective is concave.

Checkpoint s: the MLE of the first s training sequences.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import Iterate, Learner, LearnerParams


class MLEExactParams(LearnerParams):
    name: Literal["mle_exact"] = "mle_exact"
    tol: float = Field(1e-9, gt=0, description="stop when ||grad|| of the mean sequence log-likelihood is below this")
    max_iter: int = Field(200, ge=1, description="Newton (or L-BFGS) iterations per solve")


class MLEExact(Learner):
    Params, name = MLEExactParams, "mle_exact"

    @property
    def batch_size(self) -> int:
        return 1

    def run(self, view, theta0, checkpoints):
        """Per seed: {s: Iterate} with the MLE of the first s sequences (no iterates: no average)."""
        problems = getattr(self, "problems", None) or [self.problem]
        out = []
        starts = np.broadcast_to(np.asarray(theta0, dtype=np.float64), (len(problems), np.shape(theta0)[-1]))
        for seed, problem in enumerate(problems):
            self.problem = problem
            one = view.seed_view(seed) if getattr(view, "seeds", 1) > 1 else view
            found = {}
            for s in checkpoints:
                theta, info = self.solve(one, starts[seed].copy(), np.arange(s))
                found[s] = Iterate(theta, None, {**info, **self.common(s)})
            out.append(found)
        self.problem = problems[0]
        return out

    # ---- the solver ---------------------------------------------------------------------

    def solve(self, view, theta0: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, dict]:
        """argmax over ||theta|| <= radius of the mean log-likelihood of sequences idx.
        Returns (theta, {"mu": multiplier, "grad_norm": ||grad L - mu theta||})."""
        theta, ok = self._penalized(view, theta0, idx, 0.0)
        R = self.radius
        if R is None or (ok and np.linalg.norm(theta) <= R * (1 + 1e-12)):
            if not ok:
                raise FloatingPointError(
                    "mle_exact: no maximizer found (the likelihood may be maximized at infinity); set a radius"
                )
            return theta, {"mu": 0.0, "grad_norm": self._grad_norm(view, theta, idx, 0.0)}
        # The ball is active: find mu > 0 with ||theta(mu)|| = R, theta(mu) = argmax L - mu ||theta||^2 / 2.
        # Newton on psi(mu) = 1/R - 1/||theta(mu)|| (nearly linear in mu, as in trust-region solvers),
        # safeguarded by bisection; d theta / d mu = (Hess L - mu I)^{-1} theta.
        lo, hi = 0.0, np.inf
        mu = 0.0 if ok else 1.0
        for _ in range(100):
            if mu > 0:
                theta, _ = self._penalized(view, theta, idx, mu)
            norm = np.linalg.norm(theta)
            if abs(norm - R) <= 1e-7 * R:  # theta itself is only as exact as tol allows
                break
            if norm > R:
                lo = mu
            else:
                hi = mu
            hess = self._hessian(view, theta, idx)
            new = np.nan
            if hess is not None:
                dtheta = np.linalg.lstsq(hess - mu * np.eye(len(theta)), theta, rcond=None)[0]
                dpsi = (theta @ dtheta) / norm**3  # d(-1/||theta||)/d mu < 0
                if dpsi < 0:
                    new = mu - (1 / R - 1 / norm) / dpsi
            if not (lo < new < hi):  # safeguard: expand the bracket, or bisect it
                new = (4 * mu if mu > 0 else 1.0) if hi == np.inf else (hi / 8 if lo == 0 else np.sqrt(lo * hi))
            if abs(new - mu) <= 1e-13 * mu:
                break  # mu is exact to float precision; theta(mu) as exact as the inner solver allows
            mu = new
        if np.linalg.norm(theta) > R:  # stay feasible at float precision
            theta = theta * (R / np.linalg.norm(theta))
        return theta, {"mu": float(mu), "grad_norm": self._grad_norm(view, theta, idx, mu)}

    @staticmethod
    def _hessian(view, theta, idx):
        return view.value_grad_hessian(theta, idx)[2] if hasattr(view, "value_grad_hessian") else None

    def _grad_norm(self, view, theta, idx, mu) -> float:
        return float(np.linalg.norm(self._value_grad(view, theta, idx)[1] - mu * theta))

    @staticmethod
    def _value_grad(view, theta, idx):
        if hasattr(view, "value_grad_hessian"):
            v, g, _ = view.value_grad_hessian(theta, idx)
            return v, g
        return view.value_and_grad(theta, idx)

    def _penalized(self, view, theta, idx, mu) -> tuple[np.ndarray, bool]:
        """Maximize F(theta) = L(theta) - mu ||theta||^2 / 2 from theta; (theta, converged)."""
        if hasattr(view, "value_grad_hessian"):
            return self._newton(view, theta.copy(), idx, mu)
        return self._lbfgs(view, theta.copy(), idx, mu)

    def _newton(self, view, theta, idx, mu):
        tol, eye = self.params.tol, np.eye(len(theta))
        value, grad, hess = view.value_grad_hessian(theta, idx)
        f, g = value - 0.5 * mu * theta @ theta, grad - mu * theta
        for _ in range(self.params.max_iter):
            if np.linalg.norm(g) <= tol:
                return theta, True
            neg_hess = -(hess - mu * eye)  # positive semi-definite
            step = np.linalg.lstsq(neg_hess + 1e-14 * max(1.0, np.abs(neg_hess).max()) * eye, g, rcond=None)[0]
            decrement = g @ step  # Newton decrement^2: twice the predicted gain
            if decrement <= 1e-15 * max(1.0, abs(f)):
                return theta, True  # the optimum to float precision: no step can gain more
            t = 1.0
            while decrement > 1e-6:  # far from the optimum: backtrack (Armijo); near it full steps converge
                cand = theta + t * step
                cv = view.value_grad_hessian(cand, idx)[0] - 0.5 * mu * cand @ cand
                if cv >= f + 1e-4 * t * decrement or t < 1e-10:
                    break
                t *= 0.5
            theta = theta + t * step
            value, grad, hess = view.value_grad_hessian(theta, idx)
            f, g = value - 0.5 * mu * theta @ theta, grad - mu * theta
        return theta, np.linalg.norm(g) <= tol

    def _lbfgs(self, view, theta, idx, mu):
        import torch  # only here: the registry (and config validation) stays torch-free

        x = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [x],
            lr=1,
            max_iter=self.params.max_iter,
            tolerance_grad=self.params.tol,
            tolerance_change=1e-15,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            value, grad = view.value_and_grad(x.detach().numpy(), idx)
            xs = x.detach().numpy()
            x.grad = torch.from_numpy(-(grad - mu * xs))
            return torch.tensor(-(value - 0.5 * mu * xs @ xs))

        opt.step(closure)
        theta = x.detach().numpy().copy()
        return theta, self._grad_norm(view, theta, idx, mu) <= max(self.params.tol, 1e-6)
