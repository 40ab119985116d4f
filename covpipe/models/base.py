"""What every model class pi_hat offers: next-token log-probs for every position of a
teacher-forced response, exact sequence log-likelihoods, and sampling.

Models are torch modules. Their whole state lives in the state_dict (parameters or count
buffers), so a checkpoint is a state_dict. They know the teacher's vocabulary layout
(`Vocab`), never its probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .params import Vocab  # noqa: F401  (re-exported: models and tests read it here)


class Model(nn.Module):
    """Base class. Subclasses implement `step_log_probs`; count models also `fit_counts`. A
    registered class also inherits its planning half (`covpipe.models.params`)."""

    trainable = True  # False: fitted in closed form by `fit_counts`, no gradient steps

    def __init__(self, vocab: Vocab):
        super().__init__()
        self.vocab = vocab

    def step_log_probs(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """log pi_hat(. | x, y_<h) at every position h.

        prompt: int64 (n, P); response: int64 (n, H). Returns: float (n, H, V), nats.
        """
        raise NotImplementedError

    def fit_counts(self, prompt: torch.Tensor, response: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} is trained by gradient steps")

    def token_log_probs(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """log pi_hat(y_h | x, y_<h): float (n, H), nats."""
        steps = self.step_log_probs(prompt, response)
        return steps.gather(-1, response.unsqueeze(-1)).squeeze(-1)

    @torch.inference_mode()
    def sample(self, prompt: torch.Tensor, horizon: int, generator: torch.Generator) -> torch.Tensor:
        """Responses y ~ pi_hat(.|x), int64 (n, horizon). O(H) forward passes; fine at these sizes."""
        n = prompt.shape[0]
        response = torch.zeros(n, horizon, dtype=torch.int64, device=prompt.device)
        for h in range(horizon):
            # Drawn on the CPU with the CPU generator: the same draws whatever device the model is on.
            probs = self.step_log_probs(prompt, response)[:, h].exp().cpu()
            response[:, h] = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(prompt.device)
        return response


def as_tensor(a) -> torch.Tensor:
    """int64 tensor from a numpy array or tensor."""
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
