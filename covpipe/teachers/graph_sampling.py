"""Sampling of the layered-graph teacher (teachers/graph.py): graphs, their prompts and the paths pi_D
takes, drawn together with array operations (`sample`), and the sampler as first written, one graph
at a time (`_sample_loop`), kept as the definition `sample` is tested against.

`GraphSampling` is mixed into `Graph`: it reads the teacher's params, special tokens
(PAD, SEP, SLASH, EQ), `prompt_length_for` and `_even_probs` (the kinds' parity rules).
"""

from __future__ import annotations

import numpy as np

from ..sequences import Batch
from .graph_kinds import PARITY_BIT, branching_layers, prompt_parity


class GraphSampling:
    def sample(self, n: int, horizon: int, rng: np.random.Generator, cls=None) -> Batch:
        """n graphs with their paths, drawn together with array operations: one pass for all the
        classes with the same number of branching layers (their graphs are drawn alike).

        The same distribution as drawing them one at a time (`_sample_loop`, the reference that
        tests/test_graph_sampler.py compares it with), not the same random numbers.
        """
        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        # Fig. 1 kinds: the prompt parity bit each graph must get (-1: none; 2 in `bit`: a fair coin).
        bit = np.array(
            [
                -1 if kind not in PARITY_BIT else 2 if PARITY_BIT[kind] is None else PARITY_BIT[kind]
                for kind in self.class_names
            ]
        )[classes]
        want = np.where(bit == 2, rng.integers(2, size=n), bit)  # (n,)
        n_branch = np.array([branching_layers(kind, horizon) for kind in self.class_names])[classes]  # (n,)
        s, t = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        layers, passable = np.empty((n, horizon, 4), dtype=np.int64), np.empty((n, horizon, 2), dtype=np.int64)
        for k in np.unique(n_branch):
            rows = np.flatnonzero(n_branch == k)
            s[rows], t[rows], layers[rows], passable[rows] = self._sample_graphs(int(k), want[rows], horizon, rng)
        p_even = np.empty((n, horizon))  # (n, H)
        for c in np.unique(classes):
            p_even[classes == c] = self._even_probs(self.class_names[c], passable[classes == c])
        take_even = rng.random(p_even.shape) < p_even
        path = np.where((passable[..., 1] < 0) | take_even, passable[..., 0], passable[..., 1])  # (n, H)
        return Batch(self._format_prompts(s, t, layers, passable, rng), self._format_responses(s, path, t), classes)

    def _sample_graphs(self, k, want, horizon, rng):
        """Graphs with k branching layers and, where want >= 0, Fig. 1's parity swap (`_sample_graph`).
        want: (n,) the prompt parity bit each graph must get, -1 for none. Returns s (n,), t (n,),
        layers (n, H, 4), passable (n, H, 2)."""
        n = len(want)
        s, t, layers, passable, unused = self._draw_graphs(k, n, horizon, rng)
        wrong = np.flatnonzero((want >= 0) & (prompt_parity(s, passable) != want))
        if not len(wrong):
            return s, t, layers, passable
        # The smallest unused label of the other parity becomes s ...
        other = unused[wrong] % 2 != s[wrong, None] % 2  # (w, U)
        label = np.where(other, unused[wrong], self.params.num_nodes).min(axis=1, initial=self.params.num_nodes)
        found = label < self.params.num_nodes
        s[wrong[found]] = label[found]
        # ... else the first dead-end node of the other parity, in layer order, swaps labels with s ...
        rows = wrong[~found]
        flat = layers[rows].reshape(len(rows), 4 * horizon)  # (w, 4H)
        alive = (flat[:, :, None] == np.repeat(passable[rows], 4, axis=1)).any(-1)
        dead_other = ~alive & (flat % 2 != s[rows, None] % 2)
        swappable = dead_other.any(1)
        at = dead_other.argmax(1)
        r, a = rows[swappable], at[swappable]
        s[r], layers[r, a // 4, a % 4] = layers[r, a // 4, a % 4], s[r]
        # ... else (every candidate has the parity of s) the graph is drawn anew, as `_sample_graph` does.
        # Unreachable while m >= 4H + 2: s, the dead ends and the spare labels are m - H - k - 1 labels,
        # more than the ceil(m / 2) - k of one parity left after the pairs.
        again = rows[~swappable]
        if len(again):
            s[again], t[again], layers[again], passable[again] = self._sample_graphs(k, want[again], horizon, rng)
        return s, t, layers, passable

    def _draw_graphs(self, k, n, horizon, rng):
        """`_draw_graph` for n graphs with k branching layers, from a random permutation of the labels
        per graph, popped in the same order (what is left of a permutation once its last k evens and
        odds are taken is not uniformly ordered: no shortcut). Returns s, t, layers (n, H, 4) in random
        order within each layer, passable (n, H, 2) and the unused labels (n, m - 4H - 2)."""
        m = self.params.num_nodes
        perm = np.argsort(rng.random((n, m)), axis=1)  # (n, m): a uniform permutation per graph
        rows = np.arange(n)[:, None]
        rest, pairs = perm, np.empty((n, 0, 2), dtype=np.int64)
        if k:  # the last k evens and the last k odds, in turn, are the branching layers' pairs
            even = perm % 2 == 0
            pairs = np.stack(
                [perm[even].reshape(n, -1)[:, ::-1][:, :k], perm[~even].reshape(n, -1)[:, ::-1][:, :k]], -1
            )
            taken = np.zeros((n, m), dtype=bool)
            taken[rows, pairs.reshape(n, -1)] = True  # by label
            rest = perm[~taken[rows, perm]].reshape(n, m - 2 * k)  # (n, m - 2k), permutation order
        kept = min(2 + 4 * horizon, m - 2 * k)  # rest[:2 + 4H]; its last `need` labels are popped
        need = 2 + 4 * horizon - 2 * k
        popped = rest[:, kept - need : kept][:, ::-1]  # (n, need) in pop order: s, t, then layer by layer
        unused = np.concatenate([rest[:, : kept - need], rest[:, kept:]], axis=1)
        order = np.argsort(rng.random((n, horizon)), axis=1)
        branch = np.zeros((n, horizon), dtype=bool)
        np.put_along_axis(branch, order[:, :k], True, axis=1)  # a uniform k-subset of the layers
        count = np.where(branch, 2, 4)
        start = 2 + np.cumsum(count, axis=1) - count  # (n, H): first popped index of each layer
        slot = np.arange(4)
        index = start[..., None] + np.where(branch[..., None], slot - 2, slot)  # (n, H, 4); pair slots are overwritten
        layers = np.take_along_axis(popped, index.reshape(n, -1), axis=1).reshape(n, horizon, 4)
        passable = np.full((n, horizon, 2), -1, dtype=np.int64)
        passable[..., 0] = layers[rows, np.arange(horizon), rng.integers(4, size=(n, horizon))]
        if k:
            j = np.maximum(np.cumsum(branch, axis=1) - 1, 0)  # (n, H): which pair a branching layer takes
            pair = np.take_along_axis(pairs, np.broadcast_to(j[..., None], (n, horizon, 2)), axis=1)  # (n, H, 2)
            layers[..., :2] = np.where(branch[..., None], pair, layers[..., :2])
            passable = np.where(branch[..., None], pair, passable)
        layers = rng.permuted(layers, axis=2)
        return popped[:, 0].copy(), popped[:, 1].copy(), layers, passable, unused

    def _format_prompts(self, s, t, layers, passable, rng):
        """`_format_prompt` for n graphs: (n, prompt_length_for(H))."""
        n, horizon, _ = passable.shape
        if self.params.prompt_format == "layers":
            branch = passable[..., 1] >= 0
            if self.params.pair_order == "rule":  # the node of parity p(i) first: odd first where i is odd
                flip = np.broadcast_to((np.arange(1, horizon + 1) % 2 == 1), (n, horizon))
            else:
                flip = rng.random((n, horizon)) < 0.5
            flip = branch & flip
            slots = np.where(flip[..., None], passable[..., ::-1], passable)
            slots[..., 1] = np.where(branch, slots[..., 1], self.PAD)
            return np.concatenate([s[:, None], slots.reshape(n, -1), t[:, None], np.full((n, 1), self.EQ)], axis=1)
        # Every edge out of s and out of each passable node, then a random order of the valid ones.
        nxt = np.concatenate([layers[:, 1:], np.broadcast_to(t[:, None, None], (n, 1, 4))], axis=1)  # (n, H, 4)
        src = np.broadcast_to(passable[..., None], (n, horizon, 2, 4)).copy()
        dst = np.broadcast_to(nxt[:, :, None, :], (n, horizon, 2, 4)).copy()
        src[:, -1, :, 1:] = -1  # the last layer's nodes have one edge each, to t
        src = np.concatenate([np.repeat(s[:, None], 4, axis=1), src.reshape(n, -1)], axis=1)  # (n, E_max)
        dst = np.concatenate([layers[:, 0], dst.reshape(n, -1)], axis=1)
        valid = src >= 0
        order = np.argsort(np.where(valid, rng.random(valid.shape), 2.0), axis=1)  # valid edges first, shuffled
        src, dst = np.take_along_axis(src, order, 1), np.take_along_axis(dst, order, 1)
        tokens = np.stack([src, dst, np.full_like(src, self.SEP)], axis=-1).reshape(n, -1)  # (n, 3 E_max)
        length = self.prompt_length_for(horizon)
        body = length - 4
        first = body - (3 * valid.sum(1) - 1)  # (n,): where the edge list starts after the left padding
        q = np.arange(body)[None, :] - first[:, None]
        out = np.full((n, length), self.PAD, dtype=np.int64)
        out[:, :body] = np.where(q >= 0, np.take_along_axis(tokens, np.maximum(q, 0), 1), self.PAD)
        out[:, body:] = np.stack([np.full(n, self.SLASH), s, t, np.full(n, self.EQ)], axis=1)
        return out

    def _format_responses(self, s, path, t):
        """`_format_response` for n paths: s (n,), path (n, H), t (n,) -> (n, response_length)."""
        if self.params.response_format == "pairs":
            path = np.repeat(path, 2, axis=1)
        return np.concatenate([s[:, None], path, t[:, None]], axis=1)

    # ---- the reference sampler: one graph at a time ---------------------------------------------
    # The sampler as first written, kept as the definition `sample` is tested against
    # (tests/test_graph_sampler.py) and the baseline of bench/graph_sampler.py.

    def _sample_loop(self, n: int, horizon: int, rng: np.random.Generator, cls=None) -> Batch:
        classes = self.sample_classes(n, rng) if cls is None else np.full(n, int(cls), np.int64)
        prompts, responses = [], []
        for c in classes:
            kind = self.class_names[c]
            s, t, layers, passable = self._sample_graph(kind, horizon, rng)
            path = self._sample_path(kind, passable, rng)
            prompts.append(self._format_prompt(s, t, layers, passable, horizon, rng))
            responses.append(self._format_response([s, *path, t]))
        return Batch(
            np.array(prompts, dtype=np.int64).reshape(n, -1),
            np.array(responses, dtype=np.int64).reshape(n, -1),
            classes,
        )

    def _sample_graph(self, kind, horizon, rng):
        """Labels, layers (H lists of 4 nodes) and passable (H, 2): [even, odd] or [node, -1]."""
        if kind not in PARITY_BIT:
            return self._draw_graph(kind, horizon, rng)
        want = PARITY_BIT[kind] if PARITY_BIT[kind] is not None else int(rng.integers(2))
        while True:
            s, t, layers, passable = graph = self._draw_graph(kind, horizon, rng)
            if prompt_parity(np.array([s]), passable[None])[0] == want:
                return graph
            used = {s, t, *(v for layer in layers for v in layer)}
            dead = [v for i, layer in enumerate(layers) for v in layer if v not in passable[i]]
            swap = next(
                (v for v in [v for v in range(self.params.num_nodes) if v not in used] + dead if v % 2 != s % 2), None
            )
            if swap is not None:  # else every candidate has the parity of s: draw another graph
                for layer in layers:
                    if swap in layer:
                        layer[layer.index(swap)] = s
                return swap, t, layers, passable

    def _draw_graph(self, kind, horizon, rng):
        m = self.params.num_nodes
        perm = rng.permutation(m).tolist()
        evens, odds = [v for v in perm if v % 2 == 0], [v for v in perm if v % 2 == 1]
        branch = set(rng.choice(horizon, size=branching_layers(kind, horizon), replace=False).tolist())
        # Branching layers take one even and one odd label first; the rest come from what is left.
        pairs = {i: (evens.pop(), odds.pop()) for i in sorted(branch)}
        taken = {x for p in pairs.values() for x in p}
        rest = [v for v in perm if v not in taken]
        rest = rest[: 2 + 4 * horizon]  # rng order, without replacement
        s, t = int(rest.pop()), int(rest.pop())
        layers, passable = [], np.full((horizon, 2), -1, dtype=np.int64)
        for i in range(horizon):
            if i in pairs:
                nodes = [*pairs[i], rest.pop(), rest.pop()]
                passable[i] = pairs[i]
            else:
                nodes = [rest.pop() for _ in range(4)]
                passable[i, 0] = nodes[rng.integers(4)]
            layers.append([int(v) for v in rng.permutation(nodes)])
        return s, t, layers, passable

    def _sample_path(self, kind, passable, rng):
        probs_even = self._even_probs(kind, passable[None])[0]  # (H,)
        path = []
        for i, (a, b) in enumerate(passable):
            path.append(int(a) if b < 0 else int(a if rng.random() < probs_even[i] else b))
        return path

    def _format_prompt(self, s, t, layers, passable, horizon, rng):
        if self.params.prompt_format == "layers":
            slots = []
            for i, (a, b) in enumerate(passable):
                if b < 0:
                    slots += [int(a), self.PAD]
                elif self.params.pair_order == "rule":  # a = even node first where p(i) = 0 (i is 1-based)
                    slots += [int(a), int(b)] if (i + 1) % 2 == 0 else [int(b), int(a)]
                else:
                    slots += [int(x) for x in rng.permutation([a, b])]
            return [s, *slots, t, self.EQ]
        edges = [(s, v) for v in layers[0]]
        for i in range(horizon):
            nxt = layers[i + 1] if i + 1 < horizon else [t]
            edges += [(int(u), v) for u in passable[i] if u >= 0 for v in nxt]
        order = rng.permutation(len(edges))
        tokens = [tok for j in order for tok in (edges[j][0], edges[j][1], self.SEP)][:-1]
        tokens += [self.SLASH, s, t, self.EQ]
        length = self.prompt_length_for(horizon)
        return [self.PAD] * (length - len(tokens)) + tokens

    def _format_response(self, path):
        if self.params.response_format == "path":
            return path
        return [path[0]] + [v for v in path[1:-1] for _ in range(2)] + [path[-1]]
