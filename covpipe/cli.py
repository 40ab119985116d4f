"""`covpipe` command line: validate a config, or run any stage by hand.

    covpipe check config/config.yaml
    covpipe data     --config C --study S --horizon H --train OUT --eval OUT
    covpipe train    --config C --study S --model M --horizon H --data IN --checkpoints OUT --log OUT
    covpipe evaluate --config C --study S --model M --horizon H --eval IN --checkpoints IN --metrics OUT --log-ratios OUT

Each stage subcommand builds the same spec as the Snakemake rule and calls the same function.
User errors print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(path=None, level=logging.INFO) -> None:
    """Log to `path` (a rule's log file) or stderr."""
    handler = logging.FileHandler(path, mode="w") if path else logging.StreamHandler()
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=[handler], force=True)
    # An error that ends the job goes into its log too, not only to Snakemake's stderr.
    sys.excepthook = _log_then_raise
    if os.environ.get("SLURM_JOB_ID"):  # where a cluster job ran, for sacct and for the curious
        logging.getLogger("covpipe").info("SLURM job %s on node %s", os.environ["SLURM_JOB_ID"],
                                          os.environ.get("SLURMD_NODENAME", "?"))


def _log_then_raise(kind, value, tb):
    logging.getLogger("covpipe").error("job failed: %s: %s", kind.__name__, value, exc_info=(kind, value, tb))
    sys.__excepthook__(kind, value, tb)


def execution_settings(config: dict) -> dict:
    """backend and address from the raw Snakemake config (execution settings, never params)."""
    ex = (config or {}).get("execution") or {}
    return {"backend": ex.get("backend", "auto"), "address": ex.get("ray_address", "local"),
            "device": ex.get("device", "cpu")}


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


# (inputs, outputs) of each stage command, by argument name
FILES = {"data": ((), ("train", "eval")),
         "train": (("data",), ("checkpoints", "log")),
         "evaluate": (("eval", "checkpoints"), ("metrics", "log_ratios"))}


def check_paths(command: str, args) -> None:
    """Refuse an output that is an input, a directory, or another output of the same command:
    a stage never overwrites what it reads."""
    from pathlib import Path

    inputs, outputs = FILES[command]
    seen = {}
    for name in inputs:
        seen[os.path.realpath(getattr(args, name))] = f"--{name.replace('_', '-')}"
    for name in outputs:
        path = getattr(args, name)
        flag = f"--{name.replace('_', '-')}"
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{path}: {flag} is the same file as {seen[real]}; a stage never overwrites its inputs "
                             "or its other outputs")
        if Path(path).is_dir():
            raise ValueError(f"{path}: {flag} is a directory; give a file name")
        seen[real] = flag


def main(argv=None) -> int:
    from . import specs
    from .config import ConfigError, load_config

    parser = _Parser(prog="covpipe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("check", help="validate a config file")
    p.add_argument("config")
    for name in ("data", "train", "evaluate"):
        p = sub.add_parser(name, help=f"run the {name} stage of one cell by hand")
        p.add_argument("--config", required=True)
        p.add_argument("--study", required=True)
        p.add_argument("--horizon", type=int, required=True)
        if name != "data":
            p.add_argument("--model", required=True)
            p.add_argument("--checkpoints", required=True)
            p.add_argument("--threads", type=_threads, default=1)
        if name == "data":
            p.add_argument("--train", required=True)
            p.add_argument("--eval", required=True)
        if name == "train":
            p.add_argument("--data", required=True)
            p.add_argument("--log", required=True)
        if name == "evaluate":
            p.add_argument("--eval", required=True)
            p.add_argument("--metrics", required=True)
            p.add_argument("--log-ratios", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config)
        if args.command == "check":
            print(f"{args.config}: ok ({len(cfg['studies'])} studies)")
            return 0
        study = cfg["studies"].get(args.study)
        if study is None:
            raise ConfigError(f"{args.config}: studies.{args.study[:64]}: no such study; known: {', '.join(cfg['studies'])}")
        if args.horizon not in study["horizons"]:
            raise ConfigError(f"{args.config}: studies.{args.study}.horizons: {args.horizon} is not configured")
        if args.command != "data" and args.model not in study["models"]:
            raise ConfigError(f"{args.config}: studies.{args.study}.models.{args.model[:64]}: no such model; "
                              f"known: {', '.join(study['models'])}")
        check_paths(args.command, args)
        ex = execution_settings(cfg)
        if args.command == "data":
            from . import data

            data.run(args.train, args.eval, specs.data_spec(args.study, study, args.horizon))
        elif args.command == "train":
            from . import train

            train.run(args.data, args.checkpoints, args.log, specs.train_spec(args.study, study, args.model, args.horizon),
                      threads=args.threads, **ex)
        else:
            from . import evaluate

            # as the rule does: a fine-tuning study evaluates its fine-tuned checkpoints
            fit = specs.fit_spec(args.study, study, args.model, args.horizon)
            spec = specs.evaluate_spec(fit, study["evaluate"])
            evaluate.run(args.eval, args.checkpoints, args.metrics, args.log_ratios, spec, threads=args.threads, **ex)
    except (ConfigError, ValueError) as exc:
        print(f"covpipe: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path we cannot write or read: name it, no traceback
        print(f"covpipe: {exc.filename}: {exc.strerror}" if exc.filename else f"covpipe: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
