"""A miniature study, small enough to run the whole workflow in seconds."""

import copy

MINI = {
    "execution": {"backend": "serial"},
    "studies": {
        "mini": {
            "teacher": {"name": "markov", "vocab_size": 3, "order": 1, "classes": {"a": 0.7, "b": 0.3}},
            "horizons": [2, 4],
            "seeds": 2,
            "data": {"n_train": 32, "n_eval": 64},
            "models": {
                "tpp": {"class": "table_per_position", "order": 1},
                "gru": {"class": "gru", "hidden": 4, "embed": 3, "train": {"steps": 20, "checkpoints": [5, 20]}},
            },
            "train": {"steps": 20, "batch_size": 8, "lr": 0.05, "checkpoints": [20]},
            "evaluate": {"levels": [2, 16], "stopped_kl_levels": [16]},
        }
    },
}


def mini_config(**study_changes):
    cfg = copy.deepcopy(MINI)
    cfg["studies"]["mini"].update(study_changes)
    return cfg
