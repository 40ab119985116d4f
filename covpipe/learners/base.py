"""What every learner shares: its parameters, the quantities the paper's step-size rules read,
and the single pass over the training sample.

A learner is a single-pass algorithm (paper Sec. 5-6): it reads the training sequences in order,
K at a time, each once. Budgets and checkpoints count *sequences* (T K for a mini-batch learner),
so every learner of a study is compared at the same sample size. A checkpoint at s sequences is
the learner's output after s sequences; when its rule reads the budget T (normalized SGD, token
SGD, truncated distillation: eta depends on T), each checkpoint is the output of its own run
with that budget, from the same start on the same first s sequences. Runs that differ only in
eta share every pass over the data (`views`: theta of shape (R, P)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator


def _rule(value: Any):
    if value == "paper":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise ValueError(f"expected 'paper' or a positive number, got {value!r}")


Rule = Annotated[Any, PlainValidator(_rule)]  # 'paper' (the paper's rule) or a positive number


class LearnerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    radius: Literal["auto"] | float | None = Field(
        "auto",
        description="projection radius of Theta = {||theta|| <= radius}; auto: 1 (Assumption 2.2) for "
        "models with a feature bound B (ar_linear), none for other models; null: no projection",
    )


@dataclass
class Iterate:
    """A learner's output at a checkpoint: the last iterate theta_T (P,), the average iterate
    (1/T) sum_{t=1..T} theta_t of the T points its updates were computed at (theta_1 = the start;
    the online-to-batch average the paper's SGD, normalized-SGD, distillation and TTT bounds are
    about), and the resolved hyperparameters (plain floats)."""

    theta: np.ndarray
    average: np.ndarray | None
    hyper: dict


@dataclass
class Problem:
    """What the paper's rules read. horizon H; bound B = sup ||phi|| (None for models without
    one); sigma2 = sigma*^2 (paper Eq. 8), estimated on the training sample y ~ pi_D (None where
    the teacher cannot compute it); teacher_steps = log pi_D(. | x, y_<h) of the training sample,
    (n, H, V), for distillation (computed on demand)."""

    horizon: int
    bound: float | None
    sigma2: float | None
    teacher_steps: object = field(default=None, repr=False)  # callable () -> (n, H, V) ndarray

    def need(self, name: str, learner: str, key: str):
        value = getattr(self, name)
        if value is None:
            what = {
                "bound": "a model with a feature bound B (ar_linear)",
                "sigma2": "a teacher that computes sigma*^2 (ar_linear, kl_lower_bound, sgd_two_scales)",
            }[name]
            raise ValueError(f"{key}: the paper's rule of {learner} needs {what}; give a number")
        return value


class Learner:
    """Base class. Subclasses set `Params`, `name`, and implement `hyper` and `update`
    (or override `run`, as the exact MLE does)."""

    Params = LearnerParams
    name = "learner"
    needs: tuple[str, ...] = ()  # Problem fields the default ("paper") rules read

    def __init__(self, params, problem: Problem, has_bound: bool):
        self.params, self.problem = params, problem
        r = params.radius
        self.radius = (1.0 if has_bound else None) if r == "auto" else r

    @property
    def batch_size(self) -> int:
        """K, sequences per update."""
        return int(getattr(self.params, "batch_size", 1))

    def budget_dependent(self) -> bool:
        """Whether `hyper` reads the budget T: then each checkpoint is its own run. By default, where
        eta is the paper's rule (the rules of normalized SGD, token SGD and distillation read T)."""
        return getattr(self.params, "eta", None) == "paper"

    def hyper(self, budget: int) -> dict:
        """The resolved hyperparameters (plain floats) for a run over `budget` sequences."""
        return {}

    def step_size(self, paper) -> float:
        """eta: the configured number, or the paper's rule `paper(B, sigma*^2)` times eta_scale,
        with B = sup ||phi|| and sigma*^2 (nats^0: a variance of features) floored at 1e-12, where a
        teacher is deterministic. The one formula is each learner's own (paper Sec. 5-6)."""
        p = self.params
        if p.eta != "paper":
            return float(p.eta)
        bound = self.problem.need("bound", self.name, "eta")
        sigma2 = max(self.problem.need("sigma2", self.name, "eta"), 1e-12)
        return rule(p.eta, paper(bound, sigma2), p.eta_scale)

    def init_state(self, view, theta: np.ndarray) -> dict:
        return {}

    def update(self, view, theta: np.ndarray, state: dict, idx: np.ndarray, hyper: dict) -> np.ndarray:
        """One update on the sequences idx (K,) for every run: theta (R, P) -> (R, P)."""
        raise NotImplementedError

    def run(self, view, theta0: np.ndarray, checkpoints: list[int]) -> list[dict[int, Iterate]]:
        """Per seed of the view (one, or S for a `ContextView`): {checkpoint s: Iterate}.
        theta0: the start, (P,) for every seed or (S, P).

        The rows of theta are seed-major, (S * J, P): J runs per seed, one per distinct set of
        hyperparameters (checkpoints whose runs coincide on every seed share one run).
        """
        problems = getattr(self, "problems", None) or [self.problem]
        seeds = getattr(view, "seeds", 1)
        if len(problems) != seeds:
            raise ValueError(f"{len(problems)} problems for a view of {seeds} seeds")
        per_seed = []  # per seed: the resolved hyperparameters of each checkpoint's run
        for problem in problems:
            self.problem = problem  # the rules read the problem of the seed at hand
            per_seed.append([self.hyper(s if self.budget_dependent() else checkpoints[-1]) for s in checkpoints])
        groups: dict[tuple, list[int]] = {}
        for j, s in enumerate(checkpoints):
            key = tuple(tuple(sorted(h[j].items())) for h in per_seed)
            groups.setdefault(key, []).append(s)
        runs = list(groups.values())  # J runs, each a list of checkpoints
        first = [checkpoints.index(points[0]) for points in runs]
        keys = list(per_seed[0][0])
        hyper = {k: np.array([per_seed[s][j][k] for s in range(seeds) for j in first], dtype=np.float64) for k in keys}
        J = len(runs)
        theta0 = np.asarray(theta0, dtype=np.float64)
        theta = np.repeat(np.broadcast_to(theta0, (seeds, theta0.shape[-1])), J, axis=0)  # one start or (S, P)
        last = np.tile([points[-1] for points in runs], seeds)
        total, updates = np.zeros_like(theta), 0  # online-to-batch: sum of the iterates the gradients were taken at
        state = self.init_state(view, theta)
        out: list[dict[int, Iterate]] = [{} for _ in range(seeds)]
        K = self.batch_size
        for start in range(0, int(last.max()), K):
            active = last > start
            total += theta  # rows past their budget are frozen and never read again
            updates += 1
            new = self.update(view, theta, state, np.arange(start, start + K), hyper)
            theta = np.where(active[:, None], new, theta)
            for j, points in enumerate(runs):
                if start + K in points:
                    for s in range(seeds):
                        r = s * J + j
                        resolved = {**per_seed[s][checkpoints.index(start + K)], **self.common(start + K, problems[s])}
                        out[s][start + K] = Iterate(theta[r].copy(), total[r] / updates, resolved)
        self.problem = problems[0]
        return out

    def common(self, budget: int, problem: Problem | None = None) -> dict:
        """Settings every run records beside its own: radius, B, sigma*^2, T."""
        p = problem or self.problem
        return {"radius": self.radius, "bound": p.bound, "sigma_star_sq": p.sigma2, "steps": budget // self.batch_size}


def project(theta: np.ndarray, radius) -> np.ndarray:
    """Proj onto the ball {||theta|| <= radius}, row-wise: theta (..., P). radius None: identity."""
    if radius is None:
        return theta
    norm = np.linalg.norm(theta, axis=-1, keepdims=True)
    return theta * np.minimum(1.0, radius / np.maximum(norm, 1e-300))


def level_log(level: float) -> float:
    """M = log N, the coverage budget the paper's rules are tuned for (nats)."""
    return math.log(level)


def rule(value: Rule, paper: float, scale: float) -> float:
    """The paper's value (times `scale`) unless the config gives a number."""
    return float(value) if value != "paper" else paper * scale


def budget_field(default):
    return Field(default, description="'paper' for the paper's rule, or a number")
