"""Files covpipe writes: Parquet tables, torch checkpoints and figures, always atomically
(temporary name in the same directory, then rename), each with a provenance file beside it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import torch

from . import __version__


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds.

    A crash or exception leaves no file under the final name (and removes the temporary one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable_dir(path, what: str = "results directory") -> None:
    """Raise OSError naming `path` unless it is (or can be made) a directory we can write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(f"{path}: {what} is a file, not a directory; move it away")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(f"{path}: {what} is not writable ({exc.strerror})") from None


def write_parquet(df: pl.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)


def read_parquet(path) -> pl.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; rerun the stage that writes it")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # truncated or foreign files
        raise ValueError(f"{path}: not a readable Parquet table ({exc}); delete it and rerun its stage") from None


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; rerun the stage that writes it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable checkpoint file ({exc}); delete it and rerun training") from None
    if not isinstance(obj, dict) or obj.get("covpipe_format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: written by an incompatible covpipe version; delete it and rerun training")
    return obj


CHECKPOINT_FORMAT = 1


def write_provenance(path, spec: dict, **extra) -> None:
    """`<path>.provenance.json`: the resolved spec, covpipe version, command and machine."""
    record = {
        "output": str(path),
        "covpipe_version": __version__,
        "spec": spec,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    target = Path(f"{path}.provenance.json")
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def tokens_frame(batch, **columns) -> pl.DataFrame:
    """A Batch as a table: cls, prompt (Array[int16, P]), response (Array[int16, H]) plus extra columns."""
    n, p = batch.prompt.shape
    h = batch.response.shape[1]
    return pl.DataFrame(
        {
            **columns,
            "cls": pl.Series(batch.cls, dtype=pl.Int32),
            "prompt": pl.Series(batch.prompt.astype(np.int16), dtype=pl.Array(pl.Int16, p)) if p else pl.Series([[]] * n, dtype=pl.Array(pl.Int16, 0)),
            "response": pl.Series(batch.response.astype(np.int16), dtype=pl.Array(pl.Int16, h)),
        }
    )


def frame_tokens(df: pl.DataFrame):
    """The inverse of `tokens_frame`: a Batch of int64 arrays."""
    from .sequences import Batch

    n = df.height
    prompt = df["prompt"].to_numpy().astype(np.int64).reshape(n, -1)
    response = df["response"].to_numpy().astype(np.int64).reshape(n, -1)
    return Batch(prompt, response, df["cls"].to_numpy().astype(np.int64))
