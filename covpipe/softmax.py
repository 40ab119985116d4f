"""Log-softmax and log-sum-exp of float64 numpy arrays, in nats: the one place covpipe's learners
and teachers take them from (torch code uses torch.log_softmax).

`log_softmax` subtracts the maximum first; `fast_log_softmax` skips that where it is safe, which
rounds differently: the context learners use it (their results are pinned bit for bit), the others
the stable form. teachers/sgd_lower_bound.py keeps its own logaddexp form for the same reason.
"""

from __future__ import annotations

import numpy as np

SAFE_LOGIT = 300.0  # exp(+-300) is far from float64's range: no max subtraction needed below it


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(logits) along `axis`, stable for any finite logits: float64, logits' shape."""
    z = logits - logits.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def fast_log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last (short) axis. numpy reduces a short inner axis slowly (a max over
    936 rows of 8 costs as much as 7 exps of the whole array), so where every |logit| < 300 it skips
    the max and sums by a matrix product; otherwise the stable path (`log_softmax`)."""
    if -logits.min() < SAFE_LOGIT and logits.max() < SAFE_LOGIT:
        return logits - np.log(np.exp(logits) @ np.ones(logits.shape[-1]))[..., None]
    return log_softmax(logits)


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log sum exp(a) along `axis`, kept as a length-1 axis; -inf where every entry is -inf."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    with np.errstate(divide="ignore"):
        return m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
