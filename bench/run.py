"""covpipe's benchmarks: every figure of the speed targets, with its ratio against the target.

    make bench                                  # all of them (about 13 minutes on 2 cores, quiet)
    python bench/run.py pass_at_n graph_sampler   # some, by name
    python bench/run.py --quick                 # shorter runs, rougher numbers
    python bench/run.py end_to_end --fresh      # item 6 measured: each default study run anew (~20 min)
    python bench/run.py --markdown table.md     # also write the table rows of docs/benchmarks.md

Timings are wall-clock minima over interleaved repeats at one torch thread (as a workflow job
runs), except Ray's fan-out (2 CPUs). Nothing here asserts: a missed target is printed as MISSED.
Other processes on the machine slow every figure; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluation  # noqa: E402
import fanout  # noqa: E402
import graph_sampler  # noqa: E402
import learners  # noqa: E402
import orchestration  # noqa: E402
import passn  # noqa: E402
import planning  # noqa: E402
import startup  # noqa: E402
import training  # noqa: E402
from common import ROOT, load_average, machine  # noqa: E402

# name: (issue item, function(quick, **options)), in the order
BENCHMARKS = {
    "pass_at_n": (1, passn.run),
    "overhead": (2, training.overhead),
    "vectorized_seeds": (3, training.vectorized_seeds),
    "ray_fanout": (4, fanout.run),
    "orchestration": (5, orchestration.orchestration),
    "end_to_end": (6, orchestration.end_to_end),
    "eval_throughput": (7, evaluation.run),
    "graph_training": (8, training.graph_training),
    "graph_sampler": (9, graph_sampler.run),  # issue 13, item 2
    "learners": (10, learners.run),  # issue 16, item 5
    "snakemake_start": (11, startup.snakemake_start),  # issue 17, item 1
    "startup_share": (12, startup.startup_share),  # issue 17, item 3
    "sweeps": (13, startup.sweeps),  # issue 17, item 7
    "planning": (14, planning.run),  # issue 17, item 2
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--fresh", action="store_true", help="end_to_end: run each default study anew (~20 min)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT,
        help="orchestration/end_to_end: the checkout whose results/ and benchmarks/ are read",
    )
    parser.add_argument("--markdown", type=Path, help="write the table rows of docs/benchmarks.md here")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    print(f"covpipe benchmarks, {datetime.date.today()}: {machine()}")
    figures, loads = [], [load_average()]
    for name in names:
        item, fn = BENCHMARKS[name]
        print(f"\n== {item}. {name}")
        t0 = time.perf_counter()
        options = {}
        if name in ("orchestration", "end_to_end", "startup_share"):
            options["workdir"] = args.workdir.resolve()
        if name == "end_to_end":
            options["fresh"] = args.fresh
        figures += fn(args.quick, **options)
        loads.append(load_average())
        print(f"  ({time.perf_counter() - t0:.0f} s, load average {loads[-1]:.1f})")
    print(
        f"\n== summary ({(time.perf_counter() - started) / 60:.1f} min; load average {min(loads):.1f} to "
        f"{max(loads):.1f} on {os.cpu_count()} cores{': disturbed by other processes' if max(loads) > 1.5 else ''})"
    )
    for f in sorted(figures, key=lambda f: f.item):
        print(f.line())
    if args.markdown:
        date, host = datetime.date.today().isoformat(), machine().rsplit(", load", 1)[0]
        rows = [
            f"| {date} | {host} | {f.item}. {f.name} | {f.target} | {f.measured} | "
            f"{'' if f.ratio is None else f'{f.ratio:.3g}'} |"
            for f in sorted(figures, key=lambda f: f.item)
        ]
        args.markdown.write_text("\n".join(rows) + "\n")
        print(f"table rows written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
