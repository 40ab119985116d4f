"""The autoregressive linear model class (paper Eq. 3): pi_theta(y_h | x, y_<h) proportional to
exp(<theta, phi(x, y_1..h)>), trained by gradient steps on theta in R^d.

Against an `ar_linear` teacher it uses the teacher's own feature map, so the class is
well-specified (Assumption 2.1). Against any other teacher it builds the window feature map
from its own parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..features import WindowFeatures
from ..sequences import context_windows
from .base import Model, Vocab


class ARLinearModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cls: Literal["ar_linear"] = Field("ar_linear", alias="class")
    dim: int = Field(16, ge=1, description="d, used only when the teacher has no feature map")
    window: int = Field(2, ge=1, le=8, description="w, used only when the teacher has no feature map")
    scale: float = Field(3.0, gt=0, description="B, used only when the teacher has no feature map")
    feature_seed: int = Field(0, ge=0)


class ARLinearModel(Model):
    Params = ARLinearModelParams

    def __init__(self, vocab: Vocab, params: ARLinearModelParams, teacher=None):
        super().__init__(vocab)
        features = getattr(teacher, "features", None)
        if features is None:
            features = WindowFeatures(vocab.vocab_size, vocab.input_vocab_size, params.window, params.dim,
                                      params.scale, params.feature_seed)
        self.features = features
        self.theta = nn.Parameter(torch.zeros(features.dim))  # theta = 0 is the uniform model

    def step_log_probs(self, prompt, response):
        windows = torch.from_numpy(context_windows(prompt.numpy(), response.numpy(), self.features.window - 1, self.vocab.bos))
        return torch.log_softmax(self.features.logits(self.theta, windows), dim=-1)  # (n, H, V)
