"""The paper's layered-graph path-finding teacher (App. C.1; paper-notes Sec. 5.1, 5.3).

A graph of horizon H has a source s, H intermediate layers of 4 nodes and a target t, with
labels drawn without replacement from [m]. Each intermediate layer has 1 passable node, or 2
in a branching layer (one even and one odd label, so every parity rule picks exactly one).
A passable node connects to every node of the next layer; the others are dead ends. The
response is the path s v_1 .. v_H t (or, as an option, its edge pairs s v_1 v_1 v_2 .. v_H t).

Class kinds (weights from the config); i is the 1-based layer index, p(.) parity:
    single     no branching layer (paper G_{H,1}); one valid path
    xor        H/2 branching layers; pick parity p(i) XOR (XOR of the parities of every passable
               node of every intermediate layer) (G_{H,2}): a global rule
    uniform16  4 branching layers, uniform over the 16 paths (G_{H,3})
    match      2 branching layers, pick parity p(i) (Fig. 1 G_1); prompt parity bit 1
    mismatch   2 branching layers, pick parity 1 - p(i) (G_2); prompt parity bit 0
    uniform4   2 branching layers, uniform over the 4 paths (G_3); prompt parity bit uniform

Fig. 1's hidden class (paper-notes Sec. 5.2): the prompt parity bit is the XOR of the label
parities of V' = the source s and the passable nodes of the first H // 2 intermediate layers (a
fixed set of positions; both prompt formats show these nodes). The sampler draws the graph as
usual, then, if the bit disagrees with the class (match: 1, mismatch: 0, uniform4: a fair coin),
swaps the label of s with the first unused label or dead-end node of the other parity (redrawing
the graph in the rare case there is none), so no single node's parity tells the class. G_1 and G_2 are identifiable from the prompt in principle, through a parity of about
H / 2 + 2 labels that the paper reports no model learns; pi_D is exact either way: a uniform4
prompt with bit 1 is G_1 or G_3 with posterior w_1 : w_3 / 2.

The class is read off the prompt through its number of branching layers. When two configured
kinds have the same number (xor and uniform16 at H = 8), the prompt does not determine the
class and pi_D(y|x) is the exact posterior mixture of the kinds that fit, with prior
w_c / C(H, k_c) (every branching set equally likely within a kind). Everything is exact. A Fig. 1
kind mixed with another kind of the same number of branching layers (xor at H = 4) is refused:
the Fig. 1 sampler relabels s by the parity bit, which that posterior would not model.

Prompt formats:
    layers  [s, a_1, b_1, ..., a_H, b_H, t, =]: each layer's passable nodes in two fixed slots
            (b_i = PAD when the layer does not branch; a branching layer's pair in random order, or
            with pair_order: rule, the node of parity p(i) first: the parity rules become slot
            rules, learnable without computing parities, while the class stays hidden in the
            prompt parity bit). covpipe's laptop format: a short, fixed-width prompt.
    edges   the paper's shuffled edge list [u v | u v | ... / s t =], left-padded with PAD.

The sampler is in teachers/graph_sampling.py, the kinds' branching counts and parity bit in
teachers/graph_kinds.py; this module holds the parameters, the layout and the exact pi_D.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..softmax import logsumexp
from .base import Teacher, check_class_weights
from .graph_kinds import PARITY_BIT, branching_layers, prompt_parity
from .graph_sampling import GraphSampling

KINDS = ("single", "xor", "uniform16", "match", "mismatch", "uniform4")
ClassKind = Literal["single", "xor", "uniform16", "match", "mismatch", "uniform4"]


class GraphParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["graph"] = "graph"
    num_nodes: int = Field(100, ge=6, le=30000, description="m: labels are drawn from 0..m-1")
    prompt_format: Literal["layers", "edges"] = Field(
        "layers", description="layers: two fixed slots a layer (laptop); edges: the paper's shuffled edge list"
    )
    response_format: Literal["path", "pairs"] = Field("path", description="the path s v_1 .. v_H t, or its edge pairs")
    pair_order: Literal["random", "rule"] = Field(
        "random",
        description="layers format: a branching layer's two nodes in random order, or the node of "
        "parity p(i) (the match rule's) first",
    )
    classes: dict[ClassKind, float] = Field(
        default_factory=lambda: {"single": 0.94, "xor": 0.05, "uniform16": 0.01},
        description="class kind -> weight (sum 1); kinds in the module docstring",
    )

    @field_validator("classes")
    @classmethod
    def _class_weights(cls, v):
        return check_class_weights(v)


class Graph(GraphSampling, Teacher):
    Params = GraphParams

    def __init__(self, params: GraphParams):
        self.params = params
        m = params.num_nodes
        self.vocab_size = m
        self.SEP, self.SLASH, self.EQ, self.PAD = m, m + 1, m + 2, m + 3
        self.input_vocab_size = m + 4
        self.class_names = tuple(params.classes)
        self.class_weights = np.array(list(params.classes.values()), dtype=np.float64)

    # ---- layout ------------------------------------------------------------------------------

    def check_horizon(self, horizon: int) -> None:
        if 4 * horizon + 2 > self.params.num_nodes:
            raise ValueError(
                f"num_nodes: {self.params.num_nodes} labels cannot fill a graph of horizon {horizon} "
                f"(needs 4H + 2 = {4 * horizon + 2})"
            )
        fig1 = [k for k in self.class_names if k in PARITY_BIT]
        alike = [k for k in self.class_names if k not in PARITY_BIT and branching_layers(k, horizon) == 2]
        if fig1 and alike:  # the Fig. 1 kinds relabel s by the parity bit; the posterior over kinds does not model that
            raise ValueError(
                f"classes: '{alike[0]}' has 2 branching layers at horizon {horizon}, like '{fig1[0]}', and "
                "pi_D could not tell them apart exactly; use another horizon or leave one of them out"
            )
        for kind in self.class_names:
            if branching_layers(kind, horizon) > horizon:
                raise ValueError(
                    f"classes: '{kind}' needs {branching_layers(kind, horizon)} branching layers, "
                    f"more than horizon {horizon}"
                )

    def response_length(self, horizon: int) -> int:
        return horizon + 2 if self.params.response_format == "path" else 2 * (horizon + 1)

    def prompt_length_for(self, horizon: int) -> int:
        if self.params.prompt_format == "layers":
            return 2 * horizon + 3
        k = max(branching_layers(kind, horizon) for kind in self.class_names)
        max_edges = 4 + 4 * (horizon - 1 + k) + 2
        return 3 * max_edges + 4

    def sample_prompts(self, cls, rng):
        raise NotImplementedError("graph prompts are sampled together with their paths: use sample()")

    # ---- the oracle --------------------------------------------------------------------------

    def parse(self, prompt: np.ndarray):
        """(s (n,), t (n,), passable (n, H, 2)) from prompts, passable as [even, odd] or [node, -1]."""
        if self.params.prompt_format == "layers":
            n, p = prompt.shape
            horizon = (p - 3) // 2
            slots = prompt[:, 1 : 1 + 2 * horizon].reshape(n, horizon, 2).copy()
            single = slots[..., 1] == self.PAD
            swap = ~single & (slots[..., 0] % 2 == 1)
            slots[swap] = slots[swap][:, ::-1]
            slots[..., 1][single] = -1
            return prompt[:, 0], prompt[:, -2], slots
        return self._parse_edges(prompt)

    def _parse_edges(self, prompt):
        sources, targets, passables = [], [], []
        for row in prompt:
            row = row[row != self.PAD]
            slash = int(np.flatnonzero(row == self.SLASH)[-1])
            s, t = int(row[slash + 1]), int(row[slash + 2])
            out: dict[int, list[int]] = {}
            for u, v in _edge_pairs(row[:slash], self.SEP):
                out.setdefault(int(u), []).append(int(v))
            layer, rows = out[s], []
            while layer != [t]:
                live = sorted((v for v in layer if v in out), key=lambda v: v % 2)
                rows.append(live + [-1] if len(live) == 1 else live)
                layer = out[live[0]]
            sources.append(s), targets.append(t), passables.append(rows)
        return np.array(sources), np.array(targets), np.array(passables, dtype=np.int64)

    def _even_probs(self, kind, passable, hidden_bit=None):
        """P(choose the even option) at each layer: (n, H), for branching layers of one kind."""
        n, horizon, _ = passable.shape
        layer_parity = (np.arange(1, horizon + 1) % 2)[None, :]  # p(i), 1-based i
        if kind in ("uniform16", "uniform4", "single"):
            return np.full((n, horizon), 0.5)
        if kind == "match":
            chosen = np.broadcast_to(layer_parity, (n, horizon))
        elif kind == "mismatch":
            chosen = 1 - np.broadcast_to(layer_parity, (n, horizon))
        else:  # xor: the parity of every passable node of every layer
            bit = (
                (np.where(passable >= 0, passable % 2, 0).sum(axis=(1, 2)) % 2)
                if hidden_bit is None
                else np.full(n, hidden_bit)
            )
            chosen = layer_parity ^ bit[:, None]
        return (chosen == 0).astype(np.float64)

    def hypotheses(self, source, passable, horizon, hide_xor_bit=False):
        """[(log prior (n,), P(even) (n, H))] for every kind the prompts' structure allows."""
        n_branch = (passable[..., 1] >= 0).sum(1)  # (n,)
        bit = prompt_parity(source, passable)
        out = []
        for kind, w in zip(self.class_names, self.class_weights):
            k = branching_layers(kind, horizon)
            fits = n_branch == k
            if kind in PARITY_BIT and PARITY_BIT[kind] is not None:
                fits = fits & (bit == PARITY_BIT[kind])
            elif kind in PARITY_BIT:
                w = w / 2  # uniform4: either bit with probability 1/2
            log_prior = (
                np.where(fits, math.log(w) - math.log(math.comb(horizon, k)), -np.inf)
                if w > 0
                else np.full(len(n_branch), -np.inf)
            )
            if kind == "xor" and hide_xor_bit:
                out += [(log_prior - math.log(2), self._even_probs(kind, passable, bit)) for bit in (0, 1)]
            else:
                out.append((log_prior, self._even_probs(kind, passable)))
        return out

    def step_log_probs(self, prompt, response, hide_xor_bit=False):
        """Exact log pi_D(. | x, y_<h) at every position of `response` (any length up to the full one).

        hide_xor_bit: the `consistent_branch` reference instead of pi_D: the xor kind's hidden bit
        is unknown (prior 1/2 each) and learned from the first branch taken.
        Returns float64 (n, L, V) with -inf off the support.
        """
        s, t, passable = self.parse(prompt)
        hyps = self.hypotheses(s, passable, passable.shape[1], hide_xor_bit)
        stacked = self._dense_log_probs(s, t, passable, [p_even for _, p_even in hyps], response)  # (K, n, L, V)
        prior = np.stack([h[0] for h in hyps])[..., None]  # (K, n, 1)
        return mixture_step_log_probs(stacked, prior, response)

    def rule_step_log_probs(self, prompt: np.ndarray, response: np.ndarray, kinds) -> np.ndarray:
        """Each kind's rule alone, applied to every prompt whatever its class: log pi_c(. | x, y_<h)
        for c in `kinds` (Fig. 1 kinds: match, mismatch, uniform4), float64 (K, n, L, V), -inf off
        the rule's support. The `rule_mixture` model mixes these with weights of its own."""
        s, t, passable = self.parse(prompt)
        return self._dense_log_probs(s, t, passable, [self._even_probs(k, passable) for k in kinds], response)

    def _dense_log_probs(self, s, t, passable, even_probs, response):
        """Next-token log-probs of a path rule per P(even) table (n, H): float64 (K, n, L, V)."""
        n, horizon, _ = passable.shape
        length = response.shape[1]
        v = self.vocab_size
        rows = np.arange(n)
        out = []
        for p_even in even_probs:
            lp = np.full((n, horizon + 2, v), -np.inf)
            lp[rows, 0, s] = 0.0
            lp[rows, horizon + 1, t] = 0.0
            for i in range(horizon):
                a, b = passable[:, i, 0], passable[:, i, 1]
                single = b < 0
                with np.errstate(divide="ignore"):
                    lp[rows, i + 1, a] = np.where(single, 0.0, np.log(p_even[:, i]))
                    lp[rows[~single], i + 1, b[~single]] = np.log1p(-p_even[~single, i])
            if self.params.response_format == "pairs":
                lp = self._pairs_layout(lp, response)
            out.append(lp[:, :length])
        return np.stack(out)

    def _pairs_layout(self, path_lp, response):
        """Path positions -> pair positions: s, v_1, [copy], v_2, [copy], ..., v_H, [copy], t."""
        n, hp2, v = path_lp.shape
        horizon = hp2 - 2
        out = np.full((n, 2 * (horizon + 1), v), -np.inf)
        out[:, 0] = path_lp[:, 0]
        rows = np.arange(n)
        for j in range(1, horizon + 1):
            out[:, 2 * j - 1] = path_lp[:, j]
            if 2 * j < response.shape[1]:
                out[rows, 2 * j, response[:, 2 * j - 1]] = 0.0  # repeat the node just emitted
        out[:, 2 * horizon + 1] = path_lp[:, horizon + 1]
        return out

    def correct_responses(self, prompt: np.ndarray, cls: np.ndarray) -> list[np.ndarray]:
        """For each prompt, the responses its class's rule gives positive probability: (k_i, L) int64.

        The reward of Pass@N: 1 of them for deterministic kinds, all 16 (or 4) for uniform kinds.
        """
        s, t, passable = self.parse(prompt)
        horizon = passable.shape[1]
        out = []
        for j in range(len(prompt)):
            kind = self.class_names[cls[j]]
            p_even = self._even_probs(kind, passable[j : j + 1])[0]
            options = []
            for i, (a, b) in enumerate(passable[j]):
                if b < 0:
                    options.append([a])
                else:
                    options.append([x for x, p in ((a, p_even[i]), (b, 1 - p_even[i])) if p > 0])
            grid = np.array(np.meshgrid(*options, indexing="ij")).reshape(horizon, -1).T  # (k, H)
            paths = np.concatenate([np.full((len(grid), 1), s[j]), grid, np.full((len(grid), 1), t[j])], axis=1)
            out.append(np.array([self._format_response(list(p)) for p in paths], dtype=np.int64))
        return out

    def branch_choice_paths(self, prompt: np.ndarray):
        """For Fig. 1 graphs (every class a 2-branching-layer kind): the 4 valid responses of each
        prompt, ordered by the parity rule taken at the two branching layers: [match-match,
        match-mismatch, mismatch-match, mismatch-mismatch] (match: parity p(i)). int64 (n, 4, L);
        None for other class sets."""
        if not set(self.class_names) <= set(PARITY_BIT):
            return None
        s, t, passable = self.parse(prompt)
        n, horizon, _ = passable.shape
        p_match = self._even_probs("match", passable)  # (n, H): 1 where the match rule picks the even node
        out = np.empty((n, 4, self.response_length(horizon)), dtype=np.int64)
        for j in range(n):
            branch = np.flatnonzero(passable[j, :, 1] >= 0)
            for r, rules in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # 0 = match, 1 = mismatch
                path = passable[j, :, 0].copy()
                for layer, rule in zip(branch, rules):
                    even_wanted = (p_match[j, layer] == 1) != bool(rule)
                    path[layer] = passable[j, layer, 0 if even_wanted else 1]
                out[j, r] = self._format_response([s[j], *path, t[j]])
        return out


def mixture_step_log_probs(stacked: np.ndarray, log_prior: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Next-token log-probs of a mixture of K path rules, the weights updated by the prefix (Bayes).

    stacked: (K, n, L, V) each rule's log pi_c(. | x, y_<h); log_prior: (K, n, 1) log w_c (per
    prompt, -inf where a rule is excluded); response: int64 (n, L). Returns float64 (n, L, V).
    A prefix that no rule allows falls back to the prior weights.
    """
    k, n, length, _ = stacked.shape
    tok = np.take_along_axis(stacked, np.broadcast_to(response[None, ..., None], (k, n, length, 1)), -1)[..., 0]
    prefix = np.concatenate([np.zeros((k, n, 1)), np.cumsum(tok, axis=-1)[..., :-1]], axis=-1)  # (K, n, L)
    post = log_prior + prefix
    dead = np.isneginf(post).all(axis=0, keepdims=True)  # prefix impossible under every hypothesis
    post = np.where(dead, log_prior, post)
    post = post - logsumexp(post, axis=0)
    return logsumexp(post[..., None] + stacked, axis=0)[0]  # (n, L, V)


def _edge_pairs(tokens, sep):
    """(u, v) pairs of an edge list u v SEP u v SEP ... u v."""
    return np.asarray(tokens[tokens != sep]).reshape(-1, 2)
