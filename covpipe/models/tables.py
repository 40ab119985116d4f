"""Count models fitted in closed form: the add-lambda smoothed MLE of next-token tables.

- `table_per_position`: one table per position h, indexed by the last k tokens
  (no sharing across positions: H times the parameters of one table).
- `ngram`: one order-k table shared by every position.

p(v | context) = (count(context, v) + lambda) / (count(context) + lambda V). With lambda = 1/2
this is the Krichevsky-Trofimov estimator, whose expected KL per table is about (V-1)/(2n).
"""

from __future__ import annotations

import torch

from ..sequences import context_windows, encode_windows
from .base import Model, Vocab
from .params import NgramSpec, TableParams, TablePerPositionSpec


class _CountTable(Model):
    def __init__(self, vocab: Vocab, params: TableParams, teacher=None):
        super().__init__(vocab)
        self.order, self.smoothing = params.order, params.smoothing
        self.base = vocab.input_vocab_size + 1
        n_tables = vocab.horizon if self.per_position else 1
        self.register_buffer(
            "counts", torch.zeros(n_tables, self.base**self.order, vocab.vocab_size, dtype=torch.float64)
        )

    def _index(self, prompt, response):
        """(table index (n, H), context index (n, H))."""
        windows = context_windows(prompt.numpy(), response.numpy(), self.order, self.vocab.bos)
        ctx = torch.from_numpy(encode_windows(windows, self.base))
        n, h = response.shape
        pos = torch.arange(h).expand(n, h) if self.per_position else torch.zeros(n, h, dtype=torch.int64)
        return pos, ctx

    def fit_counts(self, prompt, response):
        pos, ctx = self._index(prompt, response)
        self.counts.index_put_(
            (pos.reshape(-1), ctx.reshape(-1), response.reshape(-1)),
            torch.ones(response.numel(), dtype=torch.float64),
            accumulate=True,
        )

    def step_log_probs(self, prompt, response):
        pos, ctx = self._index(prompt, response)
        c = self.counts[pos, ctx]  # (n, H, V)
        return torch.log(c + self.smoothing) - torch.log(
            c.sum(-1, keepdim=True) + self.smoothing * self.vocab.vocab_size
        )


class TablePerPosition(TablePerPositionSpec, _CountTable):
    pass


class Ngram(NgramSpec, _CountTable):
    pass
