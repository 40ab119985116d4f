"""A GPT-2 style causal decoder: learned absolute positions, pre-norm blocks, GeLU MLP.

It reads BOS ++ x ++ y_<L and predicts y_h from the position holding y_{h-1} (or the last
prompt token), so one forward pass gives every response position's next-token distribution.
Training covers response tokens only (the loss in covpipe.train reads these positions).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .base import Model, Vocab


class TransformerParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cls: Literal["transformer"] = Field("transformer", alias="class")
    layers: int = Field(2, ge=1, le=48)
    heads: int = Field(2, ge=1)
    width: int = Field(64, ge=8, description="model dimension; a multiple of heads")
    dropout: float = Field(0.0, ge=0, lt=1)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout))

    def forward(self, x):  # (n, T, width)
        n, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(att.transpose(1, 2).reshape(n, t, w))
        return x + self.mlp(self.ln2(x))


class Transformer(Model):
    Params = TransformerParams

    @classmethod
    def check_fits(cls, params, vocab, teacher=None):
        if params.width % params.heads:
            raise ValueError(f"width: {params.width} is not a multiple of heads={params.heads}")

    def __init__(self, vocab: Vocab, params: TransformerParams, teacher=None):
        super().__init__(vocab)
        self.context = 1 + vocab.prompt_length + vocab.horizon - 1
        self.embed = nn.Embedding(vocab.input_vocab_size + 1, params.width)
        self.position = nn.Embedding(self.context, params.width)
        self.blocks = nn.ModuleList(Block(params.width, params.heads, params.dropout) for _ in range(params.layers))
        self.ln = nn.LayerNorm(params.width)
        self.head = nn.Linear(params.width, vocab.vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def step_log_probs(self, prompt, response):
        n, p = prompt.shape
        bos = torch.full((n, 1), self.vocab.bos, dtype=torch.int64, device=prompt.device)
        tokens = torch.cat([bos, prompt, response[:, :-1]], dim=1)  # (n, T)
        x = self.embed(tokens) + self.position(torch.arange(tokens.shape[1], device=prompt.device))
        for block in self.blocks:
            x = block(x)
        return torch.log_softmax(self.head(self.ln(x[:, p:])), dim=-1)  # (n, L, V)
