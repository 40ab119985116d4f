"""The class kinds of the layered-graph teacher (teachers/graph.py): how many branching layers
each has at horizon H, and Fig. 1's hidden class bit, the prompt parity."""

from __future__ import annotations

import numpy as np

PARITY_BIT = {"match": 1, "mismatch": 0, "uniform4": None}  # Fig. 1 kinds; None: a fair coin


def branching_layers(kind: str, horizon: int) -> int:
    """How many of the H intermediate layers branch (offer two passable nodes) in a graph of `kind`."""
    return {"single": 0, "xor": horizon // 2, "uniform16": 4}.get(kind, 2)


def prompt_parity(source: np.ndarray, passable: np.ndarray) -> np.ndarray:
    """The hidden-class bit of Fig. 1 graphs: XOR of the label parities of s and of the passable
    nodes of the first H // 2 layers. source: (n,); passable: (n, H, 2), -1 where absent -> (n,)."""
    half = passable[:, : passable.shape[1] // 2]
    return (source % 2 + np.where(half >= 0, half % 2, 0).sum(axis=(1, 2))) % 2
