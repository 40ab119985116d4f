"""Paper App. I.4's lower-bound instances for sequence-level SGD (Prop. 5.1, Lemmas I.6 and I.7),
rebuilt from the paper's description: d = 2, V = {-1, 0, +1}, one instance per side of the step-size
threshold, each with its own starting point. The appendix text is not at hand; what follows is our
construction with the stated mechanism (docs/results-interventions.md, "The lower-bound
instances", lists what is ours).

Both are linear softmax teachers on `TableFeatures` (token ids 0, 1, 2 are y = -1, 0, +1): the
features read only the prompt type x and the position h, so the tokens of a response are independent
given x and likelihoods, sigma*^2 (Eq. 8) and Cov_N are exact closed forms (`coverage`, by
enumerating token counts). An instance is built for one (H, T, N): params `horizon`, `n` (T, the
sequences SGD sees) and `level` (N); a study holding it may use only that horizon (`check_horizon`).
`start` is the starting point theta_0 an `ar_linear` model trained on it begins from (default: the
lemma's); the validated config, and so every checkpoint's spec, records it.

Step sizes are counted in units of 1/(HB), k = eta H B (seq_sgd's `eta_units`), B = sup ||phi||.

lemma "I.6" (for k >= 8: large steps oscillate). One prompt type, every position:
    phi(y) = (B y, C 1{y = 0}),  theta* = (0, 1),  pi_D(0) = e^C / (e^C + 2),  theta_0 = v_1 = e_1.
    C is the smallest value with P(all T H tokens of T samples are 0) >= 1/2 and sigma*^2 <= 1;
    B = C / ratio. Bad caps R_+ = {theta_1 >= cap}, R_- = {theta_1 <= -cap} (v_+-1 = +-e_1 in them).
    Defining property: on the typical sample (every token 0) one SGD step with any k >= 8 maps R_+
    into R_- and R_- into R_+ (the e_1 gradient is about -+HB, the step overshoots and the
    projection lands on the far side; the e_2 push, ratio of it, keeps it inside the cap), and on R_+-
    the model gives token 0 probability <= e^{-(B cap - C sqrt(1 - cap^2))}, so Cov_N ~ 1.
    So w.p. >= 1/2 (all T samples typical) Cov_N(theta_t) ~ 1 for every t.

lemma "I.7" (for k <= 8: small steps are too slow on rare prompts). Two prompt types:
    loud (weight 1 - p), every position:      phi(y) = (B y, 0)
    rare (weight p), position 1 only:         phi(y) = (0, Bbar y); later positions phi = 0 (uniform)
    theta* = (a, b), a = sqrt(1 - b^2);  theta_0 = (a, -b): loud prompts exact, rare ones confidently wrong.
    A rare sample moves theta_2 by at most 2 eta Bbar <= 16 Bbar/(HB); a loud sample whose tokens are
    all +1 moves only theta_1, and theta_2 only through the projection (`drift`, tiny: B makes loud
    tokens near-deterministic). theta_c: the largest theta_2 at which a rare response with y_1 = +1
    is still uncovered at level N (log pi_D - log pi_theta >= log N). So fewer than
    R = ceil((theta_c + b - drift) H B / (16 Bbar)) rare samples cannot cover the rare prompts, and p is
    the largest R'/T (R' <= R - 1) with P(Bin(T, p) <= R - 1, every loud token +1) >= 1/2.
    Defining property: w.p. >= 1/2, for every t <= T, Cov_N(theta_t) >= p pi_D(+1 | rare) = `floor`,
    and p grows like H B / (T Bbar), the paper's frequency ~ B H / (T Bbar^2 log N) up to its constants.
    B: the smallest (>= Bbar, step 0.5) with T H (1 - pi_D(+1 | loud)) <= 0.01, loud sigma*^2 <= 1/2 and
    R >= 3 (two rare samples or more cannot cover the rare prompts).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..lazy import tensor_of
from .hard_instances import TableFeatures, _TableTeacher

THRESHOLD = 8.0  # k = eta H B at which Lemma I.6 takes over from Lemma I.7


class SGDLowerBoundParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["sgd_lower_bound"] = "sgd_lower_bound"
    lemma: Literal["I.6", "I.7"] = Field(description="I.6: for eta >= 8/(HB); I.7: for eta <= 8/(HB)")
    horizon: int = Field(ge=1, description="H the instance is built for (the study's only horizon)")
    n: int = Field(1024, ge=1, description="T, the sequences SGD sees (train.steps)")
    level: float = Field(16.0, gt=1, description="N the instance is built for (I.7's rare frequency)")
    ratio: float = Field(0.25, gt=0, le=0.3, description="I.6: C/B, the e_2 push relative to the e_1 overshoot")
    cap: float = Field(0.9, ge=0.8, lt=1, description="I.6: the bad caps are {+-theta_1 >= cap}")
    rare_scale: float = Field(8.0, gt=0, description="I.7: Bbar, the rare prompts' feature scale")
    theta_rare: float = Field(0.8, gt=0, lt=1, description="I.7: b = theta*_2")
    start: list[float] | None = Field(None, validate_default=True, description="theta_0 (d = 2); default: the lemma's")

    @field_validator("start")
    @classmethod
    def _start(cls, v, info):
        if v is None:  # filled in, so the validated config (and every checkpoint's spec) records theta_0
            b = info.data.get("theta_rare", 0.8)
            return [1.0, 0.0] if info.data.get("lemma") == "I.6" else [math.sqrt(1 - b * b), -b]
        if len(v) != 2 or math.hypot(*v) > 1 + 1e-9:
            raise ValueError(f"expected 2 numbers in the unit ball, got {v}")
        return v


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax by logaddexp, not covpipe.softmax's: the instances' constants are searched by
    thresholds on these values, and another rounding could move them (and every table)."""
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def iid_coverage(teacher_logp: np.ndarray, model_logp: np.ndarray, length: int, level: float) -> float:
    """Exact Cov_N = P_{y ~ pi_D}[sum_h log pi_D(y_h) - log pi(y_h) >= log N] for `length` i.i.d.
    tokens over V = 3 (enumerates the (n_-1, n_0, n_+1) counts: O(length^2)).

    teacher_logp, model_logp: float, shape (3,), nats. Returns a probability in [0, 1].
    """
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, length + 1)))])  # log k!, (length + 1,)
    i, j = np.meshgrid(np.arange(length + 1), np.arange(length + 1), indexing="ij")
    ok = i + j <= length
    i, j = i[ok], j[ok]
    k = length - i - j
    counts = np.stack([i, j, k], axis=-1).astype(np.float64)  # (m, 3)
    log_mult = lf[length] - lf[i] - lf[j] - lf[k] + counts @ np.where(np.isfinite(teacher_logp), teacher_logp, 0)
    ratio = counts @ (teacher_logp - model_logp)
    # ratio >= log N up to rounding: counts of equal ratio must not flip on the last bit
    return float(np.exp(log_mult)[ratio >= math.log(level) - 1e-9].sum())


class SGDLowerBound(_TableTeacher):
    Params = SGDLowerBoundParams
    initial_theta = tensor_of("initial_theta_array")  # where an ar_linear model starts: (d,) float64

    def __init__(self, params: SGDLowerBoundParams):
        self.params = params
        self.vocab_size = self.input_vocab_size = 3
        self.prompt_length = 1
        H, T = params.horizon, params.n
        if params.lemma == "I.6":
            self._build_oscillation(H, T)
        else:
            self._build_rare(H, T)
        self.initial_theta_array = np.array(params.start, dtype=np.float64)  # ar_linear starts here

    # ---- Lemma I.6 ---------------------------------------------------------------------------

    def _build_oscillation(self, H, T):
        p = self.params
        # P(all T H tokens are 0) = pi_D(0)^{TH} >= 1/2  <=>  2 e^{-C} <= expm1(log 2 / (T H))
        C = math.log(2 / math.expm1(math.log(2) / (T * H)))
        while self._oscillation_sigma2(C, C / p.ratio, H) > 1:
            C += 0.25
        self.confidence, self.scale = C, C / p.ratio
        self.class_names, self.class_weights = ("loud",), np.array([1.0])
        self._set_table(self._oscillation_table(C, self.scale), rare=False)
        self.theta_array = np.array([0.0, 1.0])
        self.typical_probability = math.exp(-T * H * math.log1p(2 * math.exp(-C)))

    @staticmethod
    def _oscillation_table(C, B):
        table = np.zeros((3, 3, 2))  # rows: loud, rare head, zero; (v, d)
        table[0] = [(-B, 0), (0, C), (B, 0)]
        return table

    @classmethod
    def _oscillation_sigma2(cls, C, B, H):
        phi = cls._oscillation_table(C, B)[0]  # (V, d)
        q = np.exp(_log_softmax(phi @ np.array([0.0, 1.0])))
        mean = q @ phi
        return H * float(q @ ((phi - mean) ** 2).sum(-1))

    # ---- Lemma I.7 ---------------------------------------------------------------------------

    def _build_rare(self, H, T):
        p = self.params
        Bbar, b = p.rare_scale, p.theta_rare
        a = math.sqrt(1 - b * b)
        self.theta_c = self._uncovered_until(Bbar, b, p.level)
        if self.theta_c <= -b:
            raise ValueError(
                f"rare_scale: Bbar = {Bbar:g} with theta_rare = {b:g} leaves the rare prompts covered at "
                f"level N = {p.level:g} even at theta_0; raise rare_scale or theta_rare"
            )
        self.step_bound = B = None
        for B in np.arange(Bbar, 1000.0, 0.5):
            off = 1 - math.exp(_log_softmax(np.array([-B * a, 0.0, B * a]))[2])
            # A typical loud step raises theta_1 by u <= eta B H (1 - E y) <= 8 * 2 off' and the projection then
            # shrinks theta_2 by a factor >= 1/(1 + u); off' at theta_1 >= a - 0.01 (the projection keeps it there).
            off_low = 1 - math.exp(_log_softmax(np.array([-B * (a - 0.01), 0.0, B * (a - 0.01)]))[2])
            drift = T * b * 2 * THRESHOLD * off_low
            step = 2 * THRESHOLD * Bbar / (H * B)  # |change of theta_2| per rare sample, eta <= 8/(HB)
            allowed = math.ceil((self.theta_c + b - drift) / step) - 1  # fewer rare samples cannot reach theta_c
            # loud tokens all +1 over T samples w.p. >= 0.99, sigma*^2 small, room for >= 2 rare samples
            if T * H * off <= 0.01 and H * B * B * off <= 0.5 and allowed >= 2:
                break
        else:
            raise ValueError(f"rare_scale: no loud scale B <= 1000 makes the instance at H = {H}; lower rare_scale")
        B = float(B)
        self.scale, self.loud_all_plus = B, math.exp(T * H * math.log1p(-off))
        self.drift, self.step_bound = drift, step
        table = np.zeros((3, 3, 2))
        table[0] = [(-B, 0), (0, 0), (B, 0)]
        table[1] = [(0, -Bbar), (0, 0), (0, Bbar)]
        self.theta_array = np.array([a, b])
        self.rare_allowed = allowed
        pr = min(allowed / T, 0.5)
        while _binom_cdf(allowed, T, pr) * self.loud_all_plus < 0.5:
            pr *= 0.99
        self.rare_weight = pr
        self.class_names, self.class_weights = ("loud", "rare"), np.array([1 - pr, pr])
        self._set_table(table, rare=True)
        self.floor = pr * math.exp(_log_softmax(np.array([-Bbar * b, 0.0, Bbar * b]))[2])

    @staticmethod
    def _uncovered_until(Bbar, b, level) -> float:
        """The largest theta_2 at which log pi_D(+1 | rare) - log pi_theta(+1 | rare) >= log N (bisection;
        the ratio falls as theta_2 rises)."""

        def ratio(t):
            return (
                _log_softmax(np.array([-Bbar * b, 0.0, Bbar * b]))[2]
                - _log_softmax(np.array([-Bbar * t, 0.0, Bbar * t]))[2]
            )

        lo, hi = -1.0, b
        if ratio(lo) < math.log(level):
            return -1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ratio(mid) >= math.log(level) else (lo, mid)
        return lo

    # ---- shared ------------------------------------------------------------------------------

    def _set_table(self, table, rare: bool):
        def context_of(prompt, response):
            is_rare = prompt[:, :1].astype(np.int64) == 1  # (n, 1)
            head = np.arange(response.shape[1])[None, :] == 0  # (1, H)
            return np.where(is_rare, np.where(head, 1, 2), 0).astype(np.int64)

        self.features = TableFeatures(table, context_of)

    def check_horizon(self, horizon: int) -> None:
        if horizon != self.params.horizon:
            raise ValueError(
                f"horizon: this instance is built for H = {self.params.horizon} and cannot serve horizon "
                f"{horizon}; give each horizon its own study"
            )

    def check_step(self, units: float) -> None:
        """Raise ValueError('eta_units: ...') unless k = eta H B is on this lemma's side of the threshold 8."""
        lemma = self.params.lemma
        if (lemma == "I.6" and units < THRESHOLD) or (lemma == "I.7" and units > THRESHOLD):
            side, other = (">=", "I.7") if lemma == "I.6" else ("<=", "I.6")
            raise ValueError(
                f"eta_units: {units:g} is on the other side of the threshold eta = 8/(HB); teacher "
                f"sgd_lower_bound lemma {lemma} is built for eta {side} 8/(HB): use a lemma {other} study"
            )

    @property
    def bound(self) -> float:
        """B = sup ||phi||, the B of the threshold 8/(HB)."""
        return self.features.bound

    def step_size(self, units: float) -> float:
        """eta = units / (H B)."""
        return units / (self.params.horizon * self.bound)

    def token_log_probs_at(self, theta) -> np.ndarray:
        """log pi_theta(. | x) of each table row: float64, (3 rows: loud, rare head, zero; V)."""
        theta = np.asarray(theta, dtype=np.float64)
        return _log_softmax(self.features.table_array @ theta)

    def coverage(self, theta, level: float) -> dict:
        """Exact Cov_N of pi_theta per class and for the mixture ('all'), at the instance's horizon."""
        t, m, H = self.token_log_probs_at(self.theta.numpy()), self.token_log_probs_at(theta), self.params.horizon
        out = {"loud": iid_coverage(t[0], m[0], H, level)}
        if len(self.class_names) > 1:  # rare: only position 1 carries information; the rest is uniform for all theta
            out["rare"] = iid_coverage(t[1], m[1], 1, level)
        out["all"] = float(sum(w * out[c] for c, w in zip(self.class_names, self.class_weights)))
        return out


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) <= k), summed in log space."""
    if p <= 0:
        return 1.0
    i = np.arange(k + 1)
    lg = np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in i])
    return float(np.exp(lg + i * math.log(p) + (n - i) * math.log1p(-p)).sum())
