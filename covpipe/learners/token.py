"""Token-level SGD (paper Eq. 21, Sec. 6.1): one projected step per token, carried along the sequence,

    theta^{t,h+1} = Proj(theta^{t,h} + eta grad log pi_{theta^{t,h}}(y_h | x, y_<h)),  h = 1..H,
    theta^{t+1} = theta^{t,H+1},

one fresh sequence per t. Its natural decoder is test-time training (`covpipe.learners.ttt`,
Eqs. 22-23), which repeats the same recursion at test time with the same eta.

Default eta ('paper', Thm 6.1): min{1/(2 B^2), (sigma*^2 T)^(-1/2)}, T = sequences.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from .base import Learner, LearnerParams, Rule, budget_field


class TokenSGDParams(LearnerParams):
    name: Literal["token_sgd"] = "token_sgd"
    eta: Rule = budget_field("paper")
    eta_scale: float = Field(1.0, gt=0, description="multiplies the paper's eta (not a number given as eta)")
    ttt: bool = Field(True, description="also evaluate the model with test-time training, as model '<name>+ttt'")


class TokenSGD(Learner):
    Params, name, needs = TokenSGDParams, "token_sgd", ("bound", "sigma2")

    def hyper(self, budget):
        return {"eta": self.step_size(lambda B, s2: min(1 / (2 * B**2), 1 / math.sqrt(s2 * budget)))}

    def update(self, view, theta, state, idx, hyper):
        (i,) = idx
        theta, _ = view.token_walk(theta, np.full(len(theta), i), hyper["eta"], self.radius, record=False)
        return theta
