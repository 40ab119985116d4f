#!/usr/bin/env bash
# The GPU reference run in one command: the studies of config/gpu.yaml (the paper's Figures 1 and
# 2 in the paper's format) with Snakemake on this machine's GPU, then their aggregated tables and
# figures to reference/{study}/ with a provenance file (covpipe.reference).
#
#   scripts/gpu-run.sh [options] [-- extra snakemake arguments]
#     --config FILE       study set (default config/gpu.yaml)
#     --device cuda|cpu   replaces the config's execution.device (default: the config's)
#     --out DIR           where the {study}/ folders go (default reference/ in this checkout)
#     --workdir DIR       where results/, logs/, benchmarks/ go (default this checkout)
#     --cores N           snakemake --cores (default: all)
#     --time-limit S      the whole script's budget: Snakemake is stopped 30 s before it ends and
#                         what finished is published (default none)
#
# The same script runs a miniature on a CPU (tests/test_gpu_run.py does):
#   scripts/gpu-run.sh --config config/gpu-mini.yaml --device cpu --workdir /tmp/m --out /tmp/m/reference
#
# Python: $PYTHON, else this checkout's .venv, else python3 (a GPU image's, with its own CUDA
# torch: covpipe is used from this checkout, never pip-installed, so its torch pin does not apply).
# Packages that Python lacks (polars, pydantic, snakemake, ...) come from .whl/ if present
# (scripts/gpu-wheels.sh fills it on a machine with network), else from pip if it reaches an
# index; otherwise the script stops and names them. torch itself is never installed here.
# With device cuda, TF32 matmuls are allowed (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1).
# If $OUT is set (a folder that is brought back from a remote machine), the run's log, the
# provenance files, reference.tar.gz (the published folders) and, when the run failed,
# logs.tar.gz (the job logs) are written there as well.
# Git commit: the checkout's HEAD; a copy without .git records $COVPIPE_COMMIT instead.
set -uo pipefail

# The whole script is one function, read in full before it runs: editing this file during a run
# cannot change the run (bash reads a plain script as it goes).
main() {
SCRIPT_START=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=$REPO/config/gpu.yaml DEVICE="" DEST="" WORKDIR="" CORES=all LIMIT=0 EXTRA=()
ARGS=("$@")
die() { echo "gpu-run: $*" >&2; exit 2; }
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
while [ $# -gt 0 ]; do
    case $1 in
        --config) CONFIG=$(abspath "${2:?--config needs a file}"); shift 2 ;;
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
        --out) DEST=$(abspath "${2:?--out needs a folder}"); shift 2 ;;
        --workdir) WORKDIR=$(abspath "${2:?--workdir needs a folder}"); shift 2 ;;
        --cores) CORES=${2:?--cores needs a number}; shift 2 ;;
        --time-limit) LIMIT=${2:?--time-limit needs seconds}; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1'; see --help" ;;
    esac
done
case $DEVICE in ""|cuda|cpu) ;; *) die "--device: '$DEVICE'; known: cuda, cpu" ;; esac
[ -f "$CONFIG" ] || die "--config: $CONFIG: no such file"
WORKDIR=${WORKDIR:-$REPO} DEST=${DEST:-$REPO/reference}
RUNLOGS=$WORKDIR/logs/gpu-run
mkdir -p "$RUNLOGS" || die "cannot create $RUNLOGS"
LOG=$RUNLOGS/gpu-run.log
exec > >(tee "$LOG") 2>&1
echo "gpu-run: $(date -u +%FT%TZ) $0 ${ARGS[*]}"

# ---- Python and packages ------------------------------------------------------------------------
PY=${PYTHON:-}
[ -n "$PY" ] || { [ -x "$REPO/.venv/bin/python" ] && PY=$REPO/.venv/bin/python; } || PY=$(command -v python3)
[ -n "$PY" ] || die "no python3 on PATH"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
missing() {
    "$PY" - <<'EOF'
import importlib.util
need = {"torch": "torch", "numpy": "numpy", "polars": "polars", "pyarrow": "pyarrow", "pydantic": "pydantic",
        "yaml": "pyyaml", "matplotlib": "matplotlib", "seaborn": "seaborn", "snakemake": "snakemake"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None))
EOF
}
LACK=$(missing)
if [ -n "$LACK" ]; then
    case " $LACK " in *" torch "*) die "$PY has no torch; use a Python with a (CUDA) torch, e.g. PYTHON=/path/to/python3" ;; esac
    SITE=${TMPDIR:-/tmp}/covpipe-site
    mkdir -p "$SITE"
    if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
        echo "gpu-run: $PY lacks: $LACK; installing $(ls "$REPO"/.whl/*.whl | wc -l) wheels from .whl/ into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "$REPO"/.whl/*.whl || die "installing .whl/ failed"
    else
        echo "gpu-run: $PY lacks: $LACK; no .whl/ folder, trying pip (needs network)"
        # shellcheck disable=SC2086
        timeout 300 "$PY" -m pip install -q --no-cache-dir --target "$SITE" --timeout 15 --retries 1 $LACK \
            || die "cannot install: $LACK. Without network, run scripts/gpu-wheels.sh on a machine with network and bring .whl/ along"
    fi
    export PYTHONPATH="$REPO:$SITE${PYTHONPATH#"$REPO"}"
    LACK=$(missing)
    [ -z "$LACK" ] || die "still missing after install: $LACK"
fi
"$PY" -c 'import sys, torch, polars, snakemake; print("gpu-run: python", sys.version.split()[0], "torch", torch.__version__, "polars", polars.__version__, "snakemake", snakemake.__version__)'

# ---- the config, with the device replaced -------------------------------------------------------
RESOLVED=$RUNLOGS/config.yaml
"$PY" - "$CONFIG" "$RESOLVED" "$DEVICE" <<'EOF' || exit 2
import sys, yaml
from covpipe.config import ConfigError, validate_config
src, dst, device = sys.argv[1:]
raw = yaml.safe_load(open(src))
if device:
    raw.setdefault("execution", {})["device"] = device
try:
    validate_config(raw, source=src)
except ConfigError as exc:
    sys.exit(f"gpu-run: invalid config: {exc}")
with open(dst, "w") as fh:
    fh.write(f"# {src}, execution.device: {raw.get('execution', {}).get('device', 'cpu')}\n")
    yaml.safe_dump(raw, fh, sort_keys=False)
EOF
DEVICE=$("$PY" -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])).get("execution") or {}).get("device", "cpu"))' "$RESOLVED")
if [ "$DEVICE" = cuda ]; then
    export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
    "$PY" -c 'import torch; print("gpu-run: GPU", torch.cuda.get_device_name(0))' \
        || die "execution.device is cuda but torch sees no GPU; use --device cpu"
fi

# ---- Snakemake ----------------------------------------------------------------------------------
[ "$CORES" = all ] && CORES=$(nproc)
SMK=("$PY" -m snakemake --snakefile "$REPO/Snakefile" --directory "$WORKDIR" --workflow-profile "$REPO/profiles/gpu"
     --configfile "$RESOLVED" --replace-workflow-config --cores "$CORES" "${EXTRA[@]}")
echo "gpu-run: ${SMK[*]}"
START=$(date +%s.%N)
if [ "$LIMIT" != 0 ]; then
    LEFT=$((LIMIT - $(date +%s) + SCRIPT_START - 30))  # 30 s kept for stopping and publishing
    [ "$LEFT" -ge 30 ] || die "--time-limit $LIMIT: only $LEFT s left for Snakemake after the setup"
    echo "gpu-run: Snakemake gets $LEFT s of --time-limit $LIMIT"
    timeout --signal=INT --kill-after=15 "$LEFT" "${SMK[@]}"
else
    "${SMK[@]}"
fi
RC=$?
WALL=$("$PY" -c "print(round($(date +%s.%N) - $START, 1))")
[ $RC = 124 ] && echo "gpu-run: stopped by --time-limit $LIMIT s"
echo "gpu-run: snakemake exit $RC after $WALL s"

# ---- publish ------------------------------------------------------------------------------------
"$PY" -m covpipe.reference --workdir "$WORKDIR" --dest "$DEST" --config "$RESOLVED" --device "$DEVICE" \
    --repo "$REPO" --wall-seconds "$WALL" --exit-code "$RC" --command "scripts/gpu-run.sh ${ARGS[*]} :: ${SMK[*]}"
PUB=$?
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    for study_dir in "$DEST"/*/; do
        [ -f "$study_dir/provenance.json" ] && cp "$study_dir/provenance.json" "$OUT/$(basename "$study_dir").provenance.json"
    done
    [ -d "$DEST" ] && tar -czf "$OUT/reference.tar.gz" -C "$(dirname "$DEST")" "$(basename "$DEST")"
    [ $RC = 0 ] || tar -czf "$OUT/logs.tar.gz" -C "$WORKDIR" logs benchmarks 2>/dev/null
    cp "$LOG" "$OUT/gpu-run.log"
fi
[ $RC = 0 ] && exit $PUB
exit $RC
}

main "$@"
