"""Reference models of the graph task: no training, exact scores that frame the trained ones.

- `valid_uniform`: uniform over the valid next nodes (the layer's passable nodes): a model that
  learned path validity and nothing of the branch rules.
- `consistent_branch`: pi_D except that the xor class's hidden parity bit is unknown (1/2 each)
  and inferred from the first branch taken. Under teacher forcing it pays ln 2 once per xor
  graph, so its KL does not grow with H: the best a model can do without computing the XOR.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Model, Vocab
from .params import ConsistentBranchSpec, ValidUniformSpec


class _GraphReference(Model):
    def __init__(self, vocab: Vocab, params, teacher=None):
        super().__init__(vocab)
        if teacher is None or not hasattr(teacher, "parse"):
            raise ValueError(
                f"{params.cls}: a reference model of the graph teacher; this study's teacher is not 'graph'"
            )
        self.teacher = teacher
        self.register_buffer("fitted", torch.zeros(1))  # nothing to fit; keeps the checkpoint format

    def fit_counts(self, prompt, response):
        pass

    def step_log_probs(self, prompt, response):
        return torch.from_numpy(self._log_probs(prompt.cpu().numpy(), response.cpu().numpy()))


class ValidUniform(ValidUniformSpec, _GraphReference):
    def _log_probs(self, prompt, response):
        t = self.teacher
        s, tgt, passable = t.parse(prompt)
        n, horizon, _ = passable.shape
        path = np.full((n, horizon + 2, t.vocab_size), -np.inf)
        rows = np.arange(n)
        path[rows, 0, s] = 0.0
        path[rows, horizon + 1, tgt] = 0.0
        for i in range(horizon):
            a, b = passable[:, i, 0], passable[:, i, 1]
            branch = b >= 0
            path[rows, i + 1, a] = np.where(branch, -np.log(2), 0.0)
            path[rows[branch], i + 1, b[branch]] = -np.log(2)
        if t.params.response_format == "pairs":
            path = t._pairs_layout(path, response)
        return path[:, : response.shape[1]]


class ConsistentBranch(ConsistentBranchSpec, _GraphReference):
    def _log_probs(self, prompt, response):
        return self.teacher.step_log_probs(prompt, response, hide_xor_bit=True)
