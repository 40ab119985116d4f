"""The figure registry (covpipe.plots) and the plot modules' own arithmetic."""

import inspect
import typing

import numpy as np
import pytest

from covpipe import plots
from covpipe.config_models import Study
from covpipe.plots.finetune import spearman


def test_the_config_offers_exactly_the_registered_figure_sets():
    (item,) = typing.get_args(Study.model_fields["figures"].annotation)
    assert set(typing.get_args(item)) == set(plots.FIGURE_SETS)


@pytest.mark.parametrize("name", sorted(plots.DRAW))
def test_every_figure_file_names_a_draw_function_with_the_one_signature(name):
    params = list(inspect.signature(plots.draw_function(name)).parameters.values())
    assert [p.name for p in params] == ["metrics", "path", "spec", "selection"], name
    assert params[-1].default is None


def test_a_file_in_two_sets_is_listed_once():
    assert plots.outputs(["horizon", "training"]).count("coverage_profile.png") == 1
    assert plots.outputs(["interventions", "rate"]) == [
        "horizon_sweep.png",
        "rate_sweep.png",
        "interventions_table.md",
        "rate_table.md",
    ]


def test_spearman_with_ties_is_the_pearson_correlation_of_average_ranks():
    x, y = [1.0, 2.0, 2.0, 3.0], [10.0, 30.0, 20.0, 40.0]
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4.0])  # ties share the mean of their ranks
    expected = ((rx - rx.mean()) @ (ry - ry.mean())) / np.sqrt(((rx - rx.mean()) ** 2).sum() * 5.0)
    assert spearman(x, y) == pytest.approx(expected, rel=1e-12)
    assert spearman(x, y) == pytest.approx(0.9486832980505138, rel=1e-12)  # 3 / sqrt(10)


def test_spearman_of_a_constant_side_is_nan():
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(spearman([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))


def test_the_jittered_hard_instance_figure_is_the_same_on_every_draw(tmp_path):
    """seaborn's stripplot jitters with numpy's global generator: the figure seeds it for that call
    alone, so two draws from different global states give the same bytes, and the state is kept."""
    import polars as pl

    from covpipe.plots.hard_instance import hard_instance

    rows = [
        dict(model=m, horizon=h, seed=s, metric=metric, level=level, value=value)
        for m in ("a", "b")
        for h in (4, 8, 16)
        for s in range(5)
        for metric, level, value in (("kl", None, 0.01 * h * (s + 1)), ("coverage", 16.0, 0.1 * s))
    ]
    metrics = pl.DataFrame(rows).with_columns(
        study=pl.lit("hard"), step=pl.lit(10), **{"class": pl.lit("all")}, low=pl.col("value"), high=pl.col("value")
    )
    spec = {"n_train": 100, "evaluate": {"levels": [2.0, 16.0]}}
    paths = [tmp_path / "first.png", tmp_path / "second.png"]
    np.random.seed(1)
    hard_instance(metrics, paths[0], spec)
    np.random.seed(2)
    state = np.random.get_state()
    hard_instance(metrics, paths[1], spec)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # the caller's generator is untouched
