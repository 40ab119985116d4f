"""The autoregressive linear model class (paper Eq. 3): pi_theta(y_h | x, y_<h) proportional to
exp(<theta, phi(x, y_1..h)>), trained by gradient steps on theta in R^d.

Against an `ar_linear` teacher it uses the teacher's own feature map, so the class is
well-specified (Assumption 2.1). Against any other teacher it builds the window feature map
from its own parameters. It starts at theta = 0, or at the teacher's `initial_theta` where it
has one (the lower-bound instances of paper App. I.4 start where SGD fails).
"""

from __future__ import annotations

import torch
from torch import nn

from ..features import WindowFeatures
from .base import Model, Vocab
from .params import ARLinearModelParams, ARLinearSpec


class ARLinearModel(ARLinearSpec, Model):
    def __init__(self, vocab: Vocab, params: ARLinearModelParams, teacher=None):
        super().__init__(vocab)
        features = getattr(teacher, "features", None)
        if features is None:
            features = WindowFeatures(
                vocab.vocab_size, vocab.input_vocab_size, params.window, params.dim, params.scale, params.feature_seed
            )
        self.features = features
        # theta = 0 is the uniform model; a lower-bound instance (teachers/sgd_lower_bound.py) names its own start
        start = getattr(teacher, "initial_theta", None)
        self.theta = nn.Parameter(torch.zeros(features.dim) if start is None else start.to(torch.float32).clone())

    @property
    def feature_bound(self) -> float:
        """B = sup ||phi|| of the feature map (Assumption 2.2); the paper's step-size rules read it."""
        return float(self.features.bound)

    def step_log_probs(self, prompt, response):
        ctx = self.features.position_inputs(prompt.cpu().numpy(), response.cpu().numpy(), self.vocab.bos)
        return torch.log_softmax(self.features.logits(self.theta, ctx), dim=-1)  # (n, H, V)

    def candidate_features(self, prompt, response) -> torch.Tensor:
        """phi(x, y_<h, v) for every position h and candidate v: float64 (n, H, V, d).

        With it, learners use the closed forms of the linear softmax (gradient phi(y_h) - E_p[phi])
        instead of autograd: pi_theta(. | x, y_<h) = softmax(candidates @ theta).
        """
        ctx = self.features.position_inputs(prompt.cpu().numpy(), response.cpu().numpy(), self.vocab.bos)
        return self.features.candidates(ctx)
