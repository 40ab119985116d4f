#!/usr/bin/env bash
# Download, on a machine with network, the wheels that covpipe needs beyond a GPU machine's stock
# PyTorch image, for a GPU machine without network: scripts/gpu-run.sh installs whatever lies in
# .whl/ (offline, into a private folder) before it runs. .whl/ is git-ignored: carry it along.
#
#   scripts/gpu-wheels.sh [PYTHON_VERSION]      # default 3.12, the GPU image's Python
#
# The list: pydantic, snakemake and what they need, at this checkout's .venv versions, less what
# the image has (IMAGE below: the package list of the GPU machine's PyTorch image; typing-extensions
# is kept, pydantic needs a recent one) and less PuLP (gpu-run.sh runs Snakemake's greedy
# scheduler, which needs none); and polars $POLARS (default 1.33.1: the last release in one 40 MB
# wheel; 2.x adds a 52 MB runtime wheel, and the folder should stay near 50 MB to travel with a
# checkout). A package with no wheel on PyPI (pure Python) is built into one here.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYVER=${1:-3.12}
POLARS=${POLARS:-1.33.1}
DEST=$REPO/.whl
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || { echo "gpu-wheels: needs the checkout's .venv (make .venv/.run-deps) for the versions" >&2; exit 2; }

IMAGE="absl-py accelerate aiohttp annotated-doc anyio attrs certifi charset-normalizer click cloudpickle
contourpy cycler filelock fonttools fsspec h11 httpx idna iniconfig jinja2 joblib kiwisolver markupsafe
matplotlib msgpack mypy-extensions networkx numpy packaging pandas pathspec pillow pip pluggy protobuf
psutil pyarrow pygments pyparsing python-dateutil pyyaml requests rich scipy seaborn setuptools six
sortedcontainers sympy tabulate torch tqdm urllib3 wheel wrapt pulp"

list=$("$PY" - "$IMAGE" <<'PYEOF'
import importlib.metadata as md, re, sys
from packaging.markers import Marker
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
skip = {norm(n) for n in sys.argv[1].split()}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "platform_machine": "x86_64",
       "os_name": "posix", "extra": ""}
seen, out = set(), []
def walk(name):
    n = norm(name)
    if n in seen or n in skip:
        return
    seen.add(n)
    dist = md.distribution(name)
    out.append(f"{n}=={dist.version}")
    for req in dist.requires or []:
        req, _, marker = req.partition(";")
        if marker and not Marker(marker).evaluate(env):
            continue
        walk(re.split(r"[\s<>=!~\[\(]", req.strip())[0])
for top in ("pydantic", "snakemake"):
    walk(top)
print(" ".join(out))
PYEOF
)

rm -rf "$DEST" && mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
for req in $list "polars==$POLARS"; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        "${platforms[@]}" -d "$DEST" "$req" 2>/dev/null \
    || "$PY" -m pip wheel --quiet --no-deps -w "$DEST" "$req" \
    || { echo "gpu-wheels: no wheel for $req" >&2; exit 1; }
done
echo "gpu-wheels: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
