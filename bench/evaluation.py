"""Item 7: exact log-likelihoods of the graph transformer, sequences per second.

Batched (covpipe.models.scoring.model_step_log_probs: inference mode, EVAL_CHUNK sequences per pass)
against a per-sequence loop (inference mode, one sequence per pass), and for reference one pass
over the whole set and a batched pass with autograd on (what a plain `model(x)` costs). Default
transformer (weights do not change the cost) at H = 24, the default study's layers prompts and
the faithful edge-list prompts.
"""

from __future__ import annotations

import numpy as np
import torch
from common import Figure, graph_batch, graph_teacher, interleaved, one_thread, transformer_spec


def run(quick: bool = False) -> list[Figure]:
    from covpipe.models import Vocab, build_model
    from covpipe.models.scoring import EVAL_CHUNK, model_step_log_probs

    one_thread()
    figures = []
    n = 256 if quick else 512
    for fmt in ("layers", "edges"):
        horizon = 24
        teacher = graph_teacher(fmt)
        torch.manual_seed(0)
        model = build_model(transformer_spec(), Vocab.of(teacher, horizon), teacher=teacher).eval()
        batch = graph_batch(teacher, n, horizon)
        prompt, response = torch.from_numpy(batch.prompt), torch.from_numpy(batch.response)

        def batched():
            model_step_log_probs(model, prompt, response)

        def per_sequence():
            with torch.inference_mode():
                for i in range(n):
                    model.step_log_probs(prompt[i : i + 1], response[i : i + 1])

        def whole_set():
            with torch.inference_mode():
                model.step_log_probs(prompt, response)

        def with_autograd():
            for i in range(0, n, EVAL_CHUNK):
                model.step_log_probs(prompt[i : i + EVAL_CHUNK], response[i : i + EVAL_CHUNK])

        best = interleaved(
            {"batched": batched, "per_sequence": per_sequence, "whole": whole_set, "autograd": with_autograd},
            repeats=2 if quick else 3,
        )
        rate = {k: n / v for k, v in best.items()}
        a = model_step_log_probs(model, prompt[:32], response[:32])
        with torch.inference_mode():
            b = np.concatenate(
                [model.step_log_probs(prompt[i : i + 1], response[i : i + 1]).double().numpy() for i in range(32)]
            )
        print(
            f"  H = 24, {fmt} prompts ({batch.prompt.shape[1]} tokens), {n} sequences: batched ({EVAL_CHUNK} per pass) "
            f"{rate['batched']:.0f} seq/s, per-sequence {rate['per_sequence']:.0f} seq/s, whole set in one pass "
            f"{rate['whole']:.0f} seq/s, batched with autograd {rate['autograd']:.0f} seq/s; "
            f"max |difference| {np.abs(a - b).max():.1e} nats"
        )
        ratio = rate["batched"] / rate["per_sequence"]
        figures.append(
            Figure(
                7,
                f"exact log-likelihoods, graph transformer H=24 ({fmt}): batched vs per-sequence",
                "print both",
                f"{rate['batched']:.0f} vs {rate['per_sequence']:.0f} seq/s",
                ratio,
                None,
            )
        )
    return figures
