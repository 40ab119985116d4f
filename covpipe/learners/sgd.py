"""Learners on mini-batch means of *sequence* gradients g = (1/K) sum_i grad log pi_theta(y_i | x_i)
(the gradient of a sequence sums its H token gradients, paper Remark 5.1), all projected onto
Theta = {||theta|| <= radius}:

seq_sgd         theta <- Proj(theta + eta g)                       paper Eq. (14) (arXiv) = ICLR Eq. (8)
normalized_sgd  theta <- Proj(theta + eta g / (lambda + ||g||))    paper Eqs. (17)-(19), App. I.5
sign_sgd        theta <- Proj(theta + eta sign(g))                 paper Eq. (20)
adam            theta <- Proj(theta + eta m_hat / (sqrt(v_hat) + eps)), Adam's moments of g (ascent)

Default step sizes ('paper'), with B = sup ||phi||, sigma*^2 (Eq. 8), T = updates, M = log N:
seq_sgd         eta = min{1/(2 H B^2), sqrt(2 / (sigma*^2 T))}: Prop. 5.1 needs eta <= 1/(2HB^2), and
                sqrt(2/(sigma*^2 T)) minimizes its bound 4/(eta T) + 2 eta sigma*^2 (the minimization is ours).
                eta_units = k gives eta = k/(HB) instead: k >= 8 and k <= 8 are Lemmas I.6 / I.7's sides.
normalized_sgd  eta = min{1/(128 B), (M / (sigma*^2 T))^(1/4)}, lambda = M / (16 eta) (App. I.5).
sign_sgd, adam  the paper gives no rule: a constant eta (see the params' defaults).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_serializer

from .base import Learner, LearnerParams, Rule, budget_field, level_log, project


class _SequenceGradientLearner(Learner):
    def gradient(self, view, theta, idx) -> np.ndarray:
        """g: the mini-batch mean of sequence gradients, (R, P)."""
        return view.grad(theta, idx) / len(idx)

    def updates(self, budget: int) -> int:
        return max(1, budget // self.batch_size)


class SeqSGDParams(LearnerParams):
    name: Literal["seq_sgd"] = "seq_sgd"
    eta: Rule = budget_field("paper")
    eta_scale: float = Field(1.0, gt=0, description="multiplies the paper's eta (not a number given as eta)")
    batch_size: int = Field(1, ge=1, description="K sequences per update (the paper: 1)")
    eta_units: float | None = Field(
        None,
        gt=0,
        description="eta = eta_units / (H B): a step relative to the "
        "lower-bound threshold 8/(HB) (teachers/sgd_lower_bound.py); not with eta",
    )

    @field_validator("eta_units")
    @classmethod
    def _one_step_size(cls, v, info):
        if v is not None and (info.data.get("eta", "paper") != "paper" or info.data.get("eta_scale", 1.0) != 1.0):
            raise ValueError("give eta_units (eta in units of 1/(HB)) or eta/eta_scale, not both")
        return v

    @model_serializer(mode="wrap")
    def _without_unset_units(self, handler):
        out = handler(self)
        if out.get("eta_units", 0) is None:  # specs of seq_sgd without it stay as they were (no reruns)
            del out["eta_units"]
        return out


class SeqSGD(_SequenceGradientLearner):
    """Single-pass projected SGD on sequence gradients, paper Eq. (14)."""

    Params, name, needs = SeqSGDParams, "seq_sgd", ("bound", "sigma2")

    def budget_dependent(self):
        return super().budget_dependent() and self.params.eta_units is None

    def hyper(self, budget):
        p = self.params
        if p.eta_units is not None:
            return {"eta": p.eta_units / (self.problem.horizon * self.problem.need("bound", self.name, "eta_units"))}
        H, T = self.problem.horizon, self.updates(budget)
        return {"eta": self.step_size(lambda B, s2: min(1 / (2 * H * B**2), math.sqrt(2 / (s2 * T))))}

    def update(self, view, theta, state, idx, hyper):
        return project(theta + hyper["eta"][:, None] * self.gradient(view, theta, idx), self.radius)


class NormalizedSGDParams(LearnerParams):
    name: Literal["normalized_sgd"] = "normalized_sgd"
    eta: Rule = budget_field("paper")
    lam: Rule = Field("paper", description="lambda; 'paper': log N / (16 eta)")
    eta_scale: float = Field(1.0, gt=0, description="multiplies the paper's eta (lambda follows it)")
    level: float = Field(16.0, gt=1, description="N of the coverage the rules are tuned for (M = log N)")
    batch_size: int = Field(8, ge=1, description="K sequences per update")


class NormalizedSGD(_SequenceGradientLearner):
    """Projected steps along g / (lambda + ||g||), paper Eqs. (17)-(19)."""

    Params, name, needs = NormalizedSGDParams, "normalized_sgd", ("bound", "sigma2")

    def hyper(self, budget):
        p = self.params
        M, T = level_log(p.level), self.updates(budget)
        eta = self.step_size(lambda B, s2: min(1 / (128 * B), (M / (s2 * T)) ** 0.25))
        lam = M / (16 * eta) if p.lam == "paper" else float(p.lam)
        return {"eta": eta, "lam": lam}

    def update(self, view, theta, state, idx, hyper):
        g = self.gradient(view, theta, idx)
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        return project(theta + hyper["eta"][:, None] * g / (hyper["lam"][:, None] + norm), self.radius)


class SignSGDParams(LearnerParams):
    name: Literal["sign_sgd"] = "sign_sgd"
    eta: float = Field(0.002, gt=0, description="step per coordinate (the paper gives no rule)")
    batch_size: int = Field(8, ge=1, description="K sequences per update")


class SignSGD(_SequenceGradientLearner):
    """theta <- Proj(theta + eta sign(g)), paper Eq. (20): per-coordinate normalization."""

    Params, name = SignSGDParams, "sign_sgd"

    def hyper(self, budget):
        return {"eta": float(self.params.eta)}

    def update(self, view, theta, state, idx, hyper):
        return project(theta + hyper["eta"][:, None] * np.sign(self.gradient(view, theta, idx)), self.radius)


class AdamParams(LearnerParams):
    name: Literal["adam"] = "adam"
    eta: float = Field(0.01, gt=0, description="learning rate")
    beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first-moment average")
    beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second-moment average")
    eps: float = Field(1e-8, gt=0, description="added to the root of the second moment")
    batch_size: int = Field(8, ge=1, description="K sequences per update")


class Adam(_SequenceGradientLearner):
    """Adam (Kingma & Ba, bias-corrected moments) ascending the mini-batch mean of sequence
    log-likelihoods, projected: the paper's per-coordinate counterpart of Eq. (18) (Sec. 5.2)."""

    Params, name = AdamParams, "adam"

    def hyper(self, budget):
        return {"eta": float(self.params.eta)}

    def init_state(self, view, theta):
        return {"m": np.zeros_like(theta), "v": np.zeros_like(theta), "t": 0}

    def update(self, view, theta, state, idx, hyper):
        p = self.params
        g = self.gradient(view, theta, idx)
        state["t"] += 1
        state["m"] = p.beta1 * state["m"] + (1 - p.beta1) * g
        state["v"] = p.beta2 * state["v"] + (1 - p.beta2) * g * g
        m_hat = state["m"] / (1 - p.beta1 ** state["t"])
        v_hat = state["v"] / (1 - p.beta2 ** state["t"])
        return project(theta + hyper["eta"][:, None] * m_hat / (np.sqrt(v_hat) + p.eps), self.radius)
