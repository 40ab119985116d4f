"""A GPT-2 style causal decoder: learned absolute positions, pre-norm blocks, GeLU MLP.

It reads BOS ++ x ++ y_<L and predicts y_h from the position holding y_{h-1} (or the last
prompt token), so one forward pass gives every response position's next-token distribution.
Training covers response tokens only (the loss in covpipe.train reads these positions).

Left padding (the graph teacher's `edges` prompts are left-padded with PAD to one length) is
invisible: no token attends to a leading PAD, and positions keep their index in the padded
layout. So a row's log-probs do not depend on how much padding it carries, and a batch is run
grouped by leading-pad count, each group cut to its own length: short prompts (the 94% `single`
graphs) are not padded to the longest (`xor`) ones. Prompts without leading PAD (every other
format) take one ungrouped pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Model, Vocab
from .params import TransformerParams, TransformerSpec


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, x, mask=None, cache=None, start: int = 0):
        """x (n, T, width); mask None (causal) or bool (n, 1, T, T_keys), True = attend.

        cache: optional (keys, values) buffers, each (n, heads, T_max, width / heads), for sampling:
        this call's keys and values are written at positions start .. start + T - 1 and the queries
        attend to every key up to there (so `mask` then spans start + T keys)."""
        n, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            cache[0][:, :, start : start + t], cache[1][:, :, start : start + t] = k, v
            k, v = cache[0][:, :, : start + t], cache[1][:, :, : start + t]
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and t > 1, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.proj(att.transpose(1, 2).reshape(n, t, w))
        return x + self.mlp(self.ln2(x))


MAX_GROUPS = 8  # more distinct leading-pad counts in a batch are merged into this many groups


class Transformer(TransformerSpec, Model):
    def __init__(self, vocab: Vocab, params: TransformerParams, teacher=None):
        super().__init__(vocab)
        self.context = 1 + vocab.prompt_length + vocab.horizon - 1
        self.embed = nn.Embedding(vocab.input_vocab_size + 1, params.width)
        self.position = nn.Embedding(self.context, params.width)
        self.blocks = nn.ModuleList(Block(params.width, params.heads, params.dropout) for _ in range(params.layers))
        self.ln = nn.LayerNorm(params.width)
        self.head = nn.Linear(params.width, vocab.vocab_size)
        self.pad = getattr(teacher, "PAD", None)  # the teacher's padding token id, if it has one
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def step_log_probs(self, prompt, response, grouped: bool = True):
        """(n, L, V) log-probs. grouped=False runs one padded batch (leading pads masked): the same
        numbers within float tolerance, slower where prompts carry unequal padding."""
        lead = self.leading_pads(prompt)  # (n,)
        if not bool(lead.any()):
            return self._forward(prompt, response, 0, None)
        if not grouped:
            return self._forward(prompt, response, 0, lead)
        order = torch.argsort(lead, stable=True)
        values, counts = torch.unique_consecutive(lead[order], return_counts=True)
        sizes = counts.tolist()
        if len(sizes) > MAX_GROUPS:  # merge neighbours; each group is cut to its shortest padding
            bounds = torch.linspace(0, len(order), MAX_GROUPS + 1).round().long().tolist()
            sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        parts, start = [], 0
        for size in sizes:
            rows = order[start : start + size]
            cut = int(lead[rows].min())
            rest = lead[rows] - cut
            parts.append(self._forward(prompt[rows, cut:], response[rows], cut, rest if bool(rest.any()) else None))
            start += size
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return torch.cat(parts)[inverse]

    @torch.inference_mode()
    def sample(self, prompt, horizon: int, generator: torch.Generator, cached: bool = True):
        """Responses y ~ pi_hat(.|x), int64 (n, horizon), drawn as `Model.sample` draws them (one
        multinomial per position from the CPU generator), with a key-value cache: one pass over
        BOS ++ x, then one token per step attending to the cached keys, O(H) tokens of work
        instead of O(H^2). The log-probs equal the full pass's within float tolerance
        (tests/test_speedups.py). cached=False: `Model.sample`, a full forward pass per token."""
        if not cached:
            return super().sample(prompt, horizon, generator)
        n, p = prompt.shape
        dev = prompt.device
        lead = self.leading_pads(prompt)  # (n,); masked as keys, as in _forward
        t_max = 1 + p + horizon - 1
        caches = [
            tuple(
                torch.empty(
                    n, b.heads, t_max, self.head.in_features // b.heads, device=dev, dtype=self.head.weight.dtype
                )
                for _ in range(2)
            )
            for b in self.blocks
        ]
        j = torch.arange(t_max, device=dev)
        keys = ((j[None, :] == 0) | (j[None, :] > lead[:, None]))[:, None, None, :]  # (n, 1, 1, T_max)
        padded = bool(lead.any())
        bos = torch.full((n, 1), self.vocab.bos, dtype=torch.int64, device=dev)
        x = self.embed(torch.cat([bos, prompt], 1)) + self.position(torch.arange(1 + p, device=dev))
        mask = (
            torch.ones(1 + p, 1 + p, dtype=torch.bool, device=dev).tril()[None, None] & keys[..., : 1 + p]
            if padded
            else None
        )
        for block, cache in zip(self.blocks, caches):
            x = block(x, mask, cache, 0)
        response = torch.zeros(n, horizon, dtype=torch.int64, device=dev)
        for h in range(horizon):
            if h:  # y_{h-1} enters at position p + h; it attends to every unpadded key before it and itself
                at = p + h
                x = self.embed(response[:, h - 1 : h]) + self.position.weight[at]
                for block, cache in zip(self.blocks, caches):
                    x = block(x, keys[..., : at + 1] if padded else None, cache, at)
            probs = torch.log_softmax(self.head(self.ln(x[:, -1])), dim=-1).exp().cpu()  # (n, V)
            response[:, h] = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(dev)
        return response

    def leading_pads(self, prompt):
        """Number of leading PAD tokens of each prompt: int64 (n,)."""
        if self.pad is None:
            return torch.zeros(prompt.shape[0], dtype=torch.int64, device=prompt.device)
        return (prompt == self.pad).long().cumprod(1).sum(1)

    def _forward(self, prompt, response, cut: int, lead):
        """Log-probs of prompts whose first `cut` (padding) tokens were removed; `lead` (n,) more
        leading pads per row are masked, or None."""
        n, p = prompt.shape
        dev = prompt.device
        bos = torch.full((n, 1), self.vocab.bos, dtype=torch.int64, device=dev)
        tokens = torch.cat([bos, prompt, response[:, :-1]], dim=1)  # (n, T)
        t = tokens.shape[1]
        positions = torch.cat(
            [torch.zeros(1, dtype=torch.int64, device=dev), torch.arange(1 + cut, cut + t, device=dev)]
        )  # indices in the padded layout
        x = self.embed(tokens) + self.position(positions)
        mask = None
        if lead is not None:  # key j is a leading pad of its row when 1 <= j <= lead (0 is BOS)
            j = torch.arange(t, device=dev)
            keys = (j[None, :] == 0) | (j[None, :] > lead[:, None])  # (n, T)
            mask = torch.ones(t, t, dtype=torch.bool, device=dev).tril()[None, None] & keys[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return torch.log_softmax(self.head(self.ln(x[:, p:])), dim=-1)  # (n, L, V)
