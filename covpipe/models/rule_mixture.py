"""The ideal pre-trained model of Figure 1: a mixture of the graph classes' own rules.

    pi_hat(y|x) = sum_c w_c pi_c(y|x),      w = softmax(logits), one logit per rule c

pi_c is the rule of class kind c (match, mismatch, uniform4 by default) applied to every
prompt, whatever its class: the class is hidden, so w does not depend on the prompt. Next-token
probabilities follow by Bayes along the prefix (a mixture of autoregressive rules), exact and
computed from the teacher's rule tables (`Graph.rule_step_log_probs`); only the logits are
learned. With the logits at 0 it is the uniform pre-training mixture of Figure 1, which is
also the maximum-likelihood fit of this class to it (the hidden class leaves nothing else to
learn). It chooses its two branches consistently by construction (branch agreement 5/6 at
w = 1/3 each), so it shows Figure 1's effect at the size the paper shows it: fine-tuned on
0.9 G_1 / 0.1 G_2, its weights move from the mixture towards (0.9, 0.1, 0) and Pass@8 from about
0.99 down towards 0.96, while KL falls monotonically.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Model, Vocab
from .params import RuleMixtureParams, RuleMixtureSpec


class RuleMixture(RuleMixtureSpec, Model):
    def __init__(self, vocab: Vocab, params: RuleMixtureParams, teacher=None):
        super().__init__(vocab)
        self.check_fits(params, vocab, teacher)
        self.teacher, self.rules = teacher, list(params.rules)
        self.logits = nn.Parameter(torch.zeros(len(self.rules), dtype=torch.float64))

    def weights(self) -> np.ndarray:
        """w = softmax(logits): float64 (K,), in rule order."""
        return torch.softmax(self.logits.detach(), 0).cpu().numpy()

    def _rule_tables(self, prompt, response):
        """Each rule's next-token log-probs (K, n, L, V) and its log-prob of each prefix (K, n, L)."""
        r = response.cpu().numpy()
        lp = self.teacher.rule_step_log_probs(prompt.cpu().numpy(), r, self.rules)  # (K, n, L, V)
        tok = np.take_along_axis(lp, np.broadcast_to(r[None, ..., None], (*lp.shape[:3], 1)), -1)[..., 0]
        prefix = np.concatenate([np.zeros((*tok.shape[:2], 1)), np.cumsum(tok, -1)[..., :-1]], -1)
        dev = self.logits.device  # the tables are numpy; the logits may live on a GPU
        return torch.from_numpy(lp).to(dev), torch.from_numpy(tok).to(dev), torch.from_numpy(prefix).to(dev)

    def _posterior(self, prefix):
        """log P(rule c | x, y_<h) under the model: (K, n, L); a prefix no rule allows keeps the prior."""
        prior = torch.log_softmax(self.logits, 0)[:, None, None]
        post = prior + prefix
        dead = torch.isneginf(post).all(0, keepdim=True)
        post = torch.where(dead, prior.expand_as(post), post)
        return post - torch.logsumexp(post, 0, keepdim=True)

    def step_log_probs(self, prompt, response):
        lp, _, prefix = self._rule_tables(prompt, response)
        return torch.logsumexp(self._posterior(prefix)[..., None] + lp, 0).float()  # (n, L, V)

    def token_log_probs(self, prompt, response):
        # Only the observed tokens: -inf entries of unobserved ones would turn the gradient to NaN.
        _, tok, prefix = self._rule_tables(prompt, response)
        return torch.logsumexp(self._posterior(prefix) + tok, 0)  # (n, L)
