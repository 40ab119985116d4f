"""Compiled token-level walks (numba): token SGD (paper Eq. 21) and the TTT decoder (Eqs. 22-23)
take one projected step per token, H * T sequential steps that no array operation can batch over
time. numpy pays ~10 calls of a few microseconds per step whatever the arrays' size; the compiled
loop pays ~V d flops per row. `covpipe.learners.context.ContextView.token_walk` uses it where numba
is installed and keeps its numpy loop as the reference (tests/test_context_view.py compares them).
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba is a dependency; the numpy path stays for an environment without it
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None


def _walk(table, ctx, y, theta, eta, radius, out, record):
    """In place: theta (M, d) walks along ctx/y (M, H); out (M, H, V) gets log pi before each step.

    table (K, V, d) float64; ctx, y int64 (M, H); eta (M,); radius < 0: no projection.
    """
    M, H = ctx.shape
    V, d = table.shape[1], table.shape[2]
    logits = np.empty(V)
    for m in range(M):
        for h in range(H):
            c = ctx[m, h]
            top = -np.inf
            for v in range(V):
                s = 0.0
                for k in range(d):
                    s += table[c, v, k] * theta[m, k]
                logits[v] = s
                top = max(top, s)
            z = 0.0
            for v in range(V):
                logits[v] = math.exp(logits[v] - top)
                z += logits[v]
            if record:
                for v in range(V):
                    out[m, h, v] = math.log(logits[v] / z)
            yv = y[m, h]
            for k in range(d):
                mean = 0.0
                for v in range(V):
                    mean += logits[v] * table[c, v, k]
                theta[m, k] += eta[m] * (table[c, yv, k] - mean / z)
            if radius >= 0:
                norm = 0.0
                for k in range(d):
                    norm += theta[m, k] * theta[m, k]
                norm = math.sqrt(norm)
                if norm > radius:
                    for k in range(d):
                        theta[m, k] *= radius / norm


compiled_walk = njit(cache=True, nogil=True)(_walk) if njit is not None else None
