"""A small recurrent network: embedding -> GRU -> linear head over the V response tokens.

It reads BOS ++ x ++ y_<H and predicts y_h from the state after y_<h, so one forward pass
gives every position's next-token distribution.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Model, Vocab
from .params import GRUParams, GRUSpec


class GRUModel(GRUSpec, Model):
    def __init__(self, vocab: Vocab, params: GRUParams, teacher=None):
        super().__init__(vocab)
        self.embed = nn.Embedding(vocab.input_vocab_size + 1, params.embed)
        self.rnn = nn.GRU(params.embed, params.hidden, num_layers=params.layers, batch_first=True)
        self.head = nn.Linear(params.hidden, vocab.vocab_size)

    def step_log_probs(self, prompt, response):
        n, p = prompt.shape
        bos = torch.full((n, 1), self.vocab.bos, dtype=torch.int64, device=prompt.device)
        tokens = torch.cat([bos, prompt, response[:, :-1]], dim=1)  # (n, 1 + P + H - 1)
        states, _ = self.rnn(self.embed(tokens))  # (n, P + H, hidden)
        return torch.log_softmax(self.head(states[:, p:]), dim=-1)  # (n, H, V)
