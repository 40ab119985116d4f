"""`covpipe` command line: validate a config, write its JSON schema, or run any stage of one cell by hand.

    covpipe check config/config.yaml
    covpipe schema [--out workflow/schemas/config.schema.json] [--plugins]
    covpipe data         --config C --study S --horizon H --train OUT --eval OUT
    covpipe select-data  --config C --study S --horizon H --select OUT
    covpipe train        --config C --study S --model M --horizon H --data IN --checkpoints OUT --log OUT
    covpipe finetune     --config C --study S --model M --horizon H --pretrained IN --checkpoints OUT --log OUT
    covpipe evaluate     --config C --study S --model M --horizon H --eval IN --checkpoints IN \
                         --metrics OUT --log-ratios OUT
    covpipe select       --config C --study S --model M --horizon H --select IN --checkpoints IN \
                         --metrics IN --selection OUT
    covpipe aggregate    --config C --study S --metrics IN... --train-logs IN... [--finetune-logs IN...] \
                         --metrics-out OUT --train-log-out OUT
    covpipe aggregate-selection --config C --study S --tables IN... --selection OUT
    covpipe plot         --config C --study S --metrics IN [--selection-table IN] --figure OUT

Each stage command is generated from one table (`STAGES`): it builds the spec the Snakemake rule
builds (`covpipe.specs`) and calls the function the rule's script calls. User errors print one
line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from . import specs

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(path=None, level=logging.INFO) -> None:
    """Log to `path` (a rule's log file) or stderr."""
    handler = logging.FileHandler(path, mode="w") if path else logging.StreamHandler()
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=[handler], force=True)
    # An error that ends the job goes into its log too, not only to Snakemake's stderr.
    sys.excepthook = _log_then_raise
    if os.environ.get("SLURM_JOB_ID"):  # where a cluster job ran, for sacct and for the curious
        logging.getLogger("covpipe").info(
            "SLURM job %s on node %s", os.environ["SLURM_JOB_ID"], os.environ.get("SLURMD_NODENAME", "?")
        )


def _log_then_raise(kind, value, tb):
    logging.getLogger("covpipe").error("job failed: %s: %s", kind.__name__, value, exc_info=(kind, value, tb))
    sys.__excepthook__(kind, value, tb)


def execution_settings(config: dict) -> dict:
    """backend, address and device from the raw Snakemake config (execution settings, never params),
    each missing one at the config model's default."""
    from .config import Execution

    ex = (config or {}).get("execution") or {}
    value = {k: ex.get(k, field.default) for k, field in Execution.model_fields.items()}
    return {"backend": value["backend"], "address": value["ray_address"], "device": value["device"]}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other refusal."""

    def error(self, message):
        self.exit(2, f"covpipe: {self.prog.removeprefix('covpipe').strip() or 'usage'}: {message} (see --help)\n")


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def check_paths(stage: Stage, args) -> None:
    """Refuse an output that is an input, a directory, or another output of the same command:
    a stage never overwrites what it reads."""
    from pathlib import Path

    seen = {}
    for name in stage.inputs + stage.optional_inputs:
        for path in _paths(getattr(args, name)):
            seen[os.path.realpath(path)] = f"--{name.replace('_', '-')}"
    for name in stage.outputs:
        path = getattr(args, name)
        flag = f"--{name.replace('_', '-')}"
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(
                f"{path}: {flag} is the same file as {seen[real]}; a stage never overwrites its inputs "
                "or its other outputs"
            )
        if Path(path).is_dir():
            raise ValueError(f"{path}: {flag} is a directory; give a file name")
        seen[real] = flag


def _paths(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Stage:
    """One stage command: the cell it runs for, its files, its spec and what it calls.

    spec(study_name, study, model, horizon) -> the rule's spec; run(args, spec, execution) runs it."""

    help: str
    cell: tuple[str, ...]  # of "model", "horizon" (every stage names its study)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    spec: Callable
    run: Callable
    optional_inputs: tuple[str, ...] = ()
    many: tuple[str, ...] = ()  # inputs that take one or more paths
    threads: bool = False  # takes --threads (the rule's `threads`)
    needs: str | None = None  # a study section without which the stage does not exist


def _fit_stage(module: str, help: str, source: str, needs: str | None = None) -> Stage:
    """train or finetune: fit every seed of a cell from `source`, writing checkpoints and a log."""
    return Stage(
        help,
        ("model", "horizon"),
        (source,),
        ("checkpoints", "log"),
        lambda n, s, m, h: getattr(specs, f"{module}_spec")(n, s, m, h),
        lambda a, spec, ex: _call(
            module, "run", getattr(a, source), a.checkpoints, a.log, spec, threads=a.threads, **ex
        ),
        threads=True,
        needs=needs,
    )


STAGES: dict[str, Stage] = {
    "data": Stage(
        "training samples and the evaluation set of one (study, horizon)",
        ("horizon",),
        (),
        ("train", "eval"),
        lambda n, s, m, h: specs.data_spec(n, s, h),
        lambda a, spec, ex: _call("data", "run", a.train, a.eval, spec),
    ),
    "select-data": Stage(
        "the held-out selection sample of one (study, horizon)",
        ("horizon",),
        (),
        ("select",),
        lambda n, s, m, h: specs.select_data_spec(n, s, h),
        lambda a, spec, ex: _call("data", "run_select", a.select, spec),
        needs="selection",
    ),
    "train": _fit_stage("train", "train every seed of one cell", "data"),
    "finetune": _fit_stage(
        "finetune", "fine-tune every seed of one cell from its pre-trained checkpoints", "pretrained", "finetune"
    ),
    "evaluate": Stage(
        "evaluate every checkpoint of one cell (fine-tuned ones where the study fine-tunes)",
        ("model", "horizon"),
        ("eval", "checkpoints"),
        ("metrics", "log_ratios"),
        specs.cell_evaluate_spec,
        lambda a, spec, ex: _call(
            "evaluate", "run", a.eval, a.checkpoints, a.metrics, a.log_ratios, spec, threads=a.threads, **ex
        ),
        threads=True,
    ),
    "select": Stage(
        "checkpoint selection of one cell",
        ("model", "horizon"),
        ("select", "checkpoints", "metrics"),
        ("selection",),
        lambda n, s, m, h: specs.select_spec(specs.cell_evaluate_spec(n, s, m, h), s["selection"]),
        lambda a, spec, ex: _call(
            "selection", "run", a.select, a.checkpoints, a.metrics, a.selection, spec, device=ex["device"]
        ),
        needs="selection",
    ),
    "aggregate": Stage(
        "a study's metrics and training-log tables from its cells' tables",
        (),
        ("metrics", "train_logs"),
        ("metrics_out", "train_log_out"),
        lambda n, s, m, h: specs.aggregate_spec(),
        lambda a, spec, ex: _call(
            "aggregate",
            "run",
            a.metrics,
            a.train_logs,
            a.metrics_out,
            a.train_log_out,
            finetune_log_paths=a.finetune_logs or (),
        ),
        optional_inputs=("finetune_logs",),
        many=("metrics", "train_logs", "finetune_logs"),
    ),
    "aggregate-selection": Stage(
        "a study's selection table from its cells' tables",
        (),
        ("tables",),
        ("selection",),
        lambda n, s, m, h: specs.aggregate_spec(),
        lambda a, spec, ex: _call(
            "aggregate", "concat", a.tables, a.selection, ["model", "horizon", "seed", "n", "rule"]
        ),
        many=("tables",),
        needs="selection",
    ),
    "plot": Stage(
        "one figure or table of a study (its file name says which)",
        (),
        ("metrics",),
        ("figure",),
        lambda n, s, m, h: specs.plot_spec(s),
        lambda a, spec, ex: _call("plots", "run", a.metrics, [a.figure], spec, selection_path=a.selection_table),
        optional_inputs=("selection_table",),
    ),
}


def _call(module: str, function: str, *args, **kwargs):
    import importlib

    return getattr(importlib.import_module(f"covpipe.{module}"), function)(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="covpipe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("check", help="validate a config file")
    p.add_argument("config")
    p = sub.add_parser("schema", help="write the JSON schema of config files (covpipe's own entries)")
    p.add_argument("--out", help="the file to write (default: standard output)")
    p.add_argument("--plugins", action="store_true", help="include the installed plugins' entries")
    for name, stage in STAGES.items():
        p = sub.add_parser(name, help=stage.help)
        p.add_argument("--config", required=True)
        p.add_argument("--study", required=True)
        if "model" in stage.cell:
            p.add_argument("--model", required=True)
        if "horizon" in stage.cell:
            p.add_argument("--horizon", type=int, required=True)
        for arg in stage.inputs + stage.optional_inputs + stage.outputs:
            nargs = ("+" if arg in stage.inputs else "*") if arg in stage.many else None
            p.add_argument(
                f"--{arg.replace('_', '-')}", dest=arg, required=arg not in stage.optional_inputs, nargs=nargs
            )
        if stage.threads:
            p.add_argument("--threads", type=_threads, default=1)
    return parser


def write_schema(out=None, plugins: bool = False) -> int:
    """Write the config's JSON schema; without `plugins`, of covpipe's own registry entries only
    (the committed workflow/schemas/config.schema.json: whatever is installed, the same file)."""
    from .registry import PLUGINS_ENV

    if not plugins:
        os.environ[PLUGINS_ENV] = "0"  # read when a registry is first read, below
    from .config_models import json_schema_text

    if out is None:
        sys.stdout.write(json_schema_text())
    else:
        with open(out, "w") as f:
            f.write(json_schema_text())
    return 0


def main(argv=None) -> int:
    from .config_errors import ConfigError
    from .registry import PluginError

    args = _parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "schema":
            return write_schema(args.out, args.plugins)
        from .config import load_config  # reads the registries: a plugin that fails to load fails here

        cfg = load_config(args.config)
        if args.command == "check":
            print(f"{args.config}: ok ({len(cfg['studies'])} studies)")
            return 0
        stage = STAGES[args.command]
        study = cfg["studies"].get(args.study)
        if study is None:
            raise ConfigError(
                f"{args.config}: studies.{args.study[:64]}: no such study; known: {', '.join(cfg['studies'])}"
            )
        if stage.needs and not study[stage.needs]:
            raise ConfigError(
                f"{args.config}: studies.{args.study}: no {stage.needs} section, so no {args.command} stage"
            )
        horizon, model = getattr(args, "horizon", None), getattr(args, "model", None)
        if "horizon" in stage.cell and horizon not in study["horizons"]:
            raise ConfigError(f"{args.config}: studies.{args.study}.horizons: {horizon} is not configured")
        if "model" in stage.cell and model not in study["models"]:
            raise ConfigError(
                f"{args.config}: studies.{args.study}.models.{model[:64]}: no such model; "
                f"known: {', '.join(study['models'])}"
            )
        if args.command == "plot":
            from . import plots

            wanted = plots.outputs(study["figures"])
            if os.path.basename(args.figure) not in wanted:  # the file name says what to draw
                raise ConfigError(f"{args.figure}: --figure names none of this study's figures: {', '.join(wanted)}")
        check_paths(stage, args)
        stage.run(args, stage.spec(args.study, study, model, horizon), execution_settings(cfg))
    except (ConfigError, PluginError, ValueError) as exc:
        print(f"covpipe: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path we cannot write or read: name it, no traceback
        print(f"covpipe: {exc.filename}: {exc.strerror}" if exc.filename else f"covpipe: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
