"""Truncated ("KL-budgeted") distillation SGD (paper Sec. 6.2, Eqs. 24-27; ICLR Eqs. 35-38).

With the teacher's next-token distributions on the training sequence, a_h = KL(pi_D(.|x, y_<h) ||
pi_theta(.|x, y_<h)) and A = log N, the token weights (Lemma I.4, S_<h = sum_{j<h} a_j)

    alpha_h = 1                   if S_<h + a_h <= A,
            = 0                   if S_<h > A,
            = (A - S_<h) / a_h    otherwise,

satisfy sum_h alpha_h a_h = min{A, sum_h a_h}. One sequence per step:

    g = sum_h alpha_h grad log pi_theta(y_h | x, y_<h),    theta <- Proj(theta + eta g).

Default eta ('paper', Thm 6.2): min{1/((64 log N + 2) B^2), (1/(T sigma*^2 log N))^(1/2)}, T = sequences.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from .base import Learner, LearnerParams, Rule, budget_field, level_log, project


def truncation_weights(a: np.ndarray, budget: float) -> np.ndarray:
    """alpha_h of Eq. (25) / Lemma I.4 along the last axis of a (per-position KLs, nats, >= 0).

    a: float, (..., H); budget: A = log N > 0. Returns alpha in [0, 1], same shape, with
    sum_h alpha_h a_h = min(A, sum_h a_h).

    >>> truncation_weights(np.array([1.0, 1.0, 1.0]), 1.5).tolist()
    [1.0, 0.5, 0.0]
    """
    a = np.maximum(np.asarray(a, dtype=np.float64), 0.0)
    before = np.cumsum(a, axis=-1) - a  # S_<h
    left = budget - before  # budget not yet spent before h
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(a > 0, np.clip(left / a, 0.0, 1.0), (left >= 0).astype(np.float64))
    return alpha


class DistillTruncatedParams(LearnerParams):
    name: Literal["distill_truncated"] = "distill_truncated"
    eta: Rule = budget_field("paper")
    eta_scale: float = Field(1.0, gt=0, description="multiplies the paper's eta (not a number given as eta)")
    level: float = Field(16.0, gt=1, description="N: the KL budget per sequence is A = log N")


class DistillTruncated(Learner):
    Params, name, needs = DistillTruncatedParams, "distill_truncated", ("bound", "sigma2")

    def hyper(self, budget):
        M = level_log(self.params.level)
        eta = self.step_size(lambda B, s2: min(1 / ((64 * M + 2) * B**2), math.sqrt(1 / (budget * s2 * M))))
        return {"eta": eta, "budget_nats": M}

    def init_state(self, view, theta):
        if hasattr(view, "teacher_context"):  # log pi_D per context (ContextView of a well-specified model)
            return {"teacher_context": view.teacher_context}  # (K, V)
        return {"teacher": self.problem.teacher_steps()}  # (n, H, V), log pi_D

    def update(self, view, theta, state, idx, hyper):
        with np.errstate(invalid="ignore"):  # 0 log 0 where pi_D puts no mass
            if "teacher_context" in state:
                # a_h depends on the position only through its context: one KL per (row, context)
                lt = state["teacher_context"]
                per_context = np.nansum(np.exp(lt) * (lt - view.log_probs(theta)), axis=-1)  # (R, K)
                a = view.context_values(per_context, idx)  # (R, k, H)
            else:
                teacher = state["teacher"][idx][None]  # (1, k, H, V)
                steps = view.steps(theta, idx)  # (R, k, H, V), log pi_theta
                a = np.nansum(np.exp(teacher) * (teacher - steps), axis=-1)  # (R, k, H)
        alpha = truncation_weights(a, hyper["budget_nats"][:, None, None])
        return project(theta + hyper["eta"][:, None] * view.grad(theta, idx, alpha), self.radius)
