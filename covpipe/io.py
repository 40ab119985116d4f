"""Files covpipe writes: Parquet tables, torch checkpoints and figures, always atomically
(temporary name in the same directory, then rename), each with a provenance file beside it.
"""

from __future__ import annotations

import hashlib
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


def write_parquet(df: pl.DataFrame, path, spec: dict | None = None, stage: str | None = None) -> None:
    """Write `df` atomically; with `spec`, the table carries what it was made from in its Parquet
    metadata (stage, spec as JSON, its SHA-256), so a reader can check it belongs to its cell."""
    metadata = None
    if spec is not None:
        text = spec_json(spec)
        metadata = {
            "covpipe_version": __version__,
            "covpipe_stage": stage or "",
            "covpipe_spec": text,
            "covpipe_spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True, metadata=metadata)


def spec_json(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=_jsonable)


def made_from(path) -> dict | None:
    """The spec a covpipe file was made from: its Parquet metadata, else its provenance file."""
    try:
        meta = pl.read_parquet_metadata(path)
    except Exception:  # not Parquet, or unreadable: read_parquet says which
        meta = {}
    if meta.get("covpipe_spec"):
        try:
            return json.loads(meta["covpipe_spec"])
        except ValueError:
            raise ValueError(f"{path}: unreadable covpipe metadata; delete it and rerun its stage") from None
    return read_provenance(path)


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; rerun the stage that writes it")
    if not path.is_file():
        raise ValueError(f"{path}: is a directory, not a file; give the file itself")
    return path


def read_parquet(path) -> pl.DataFrame:
    path = _existing_file(path)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # truncated or foreign files
        raise ValueError(
            f"{path}: not a readable Parquet table ({_brief(exc)}); delete it and rerun its stage"
        ) from None


def _brief(exc, limit: int = 160) -> str:
    """One line of an exception's message (torch and polars write paragraphs)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What makes a file belong to one cell: a file made for another is refused, whatever else matches.
IDENTITY = ("study", "model_name", "horizon")


def check_made_for(path, made: dict, expected: dict, what: str = "file") -> None:
    """Raise ValueError naming `path` unless the spec it was made from (`made`) is `expected`:
    first the cell it belongs to (study, model, horizon), then any other setting."""
    for key in IDENTITY:
        if key in expected and made.get(key) != expected[key]:
            label = {"model_name": "model"}.get(key, key)
            raise ValueError(
                f"{path}: this {what} was made for {label} {_brief(made.get(key), 60)}, not "
                f"{_brief(expected[key], 60)}; give the one of this cell, or rerun its stage"
            )
    if made != expected:
        keys = sorted(set(made) | set(expected), key=str)
        diff = next(k for k in keys if made.get(k) != expected.get(k))
        raise ValueError(
            f"{path}: this {what} was made with other settings ({_brief(diff, 60)} differs); "
            "rerun the stage that writes it"
        )


def read_provenance(path) -> dict | None:
    """The spec recorded beside `path` (write_provenance), or None where there is none."""
    target = Path(f"{path}.provenance.json")
    if not target.is_file():
        return None
    try:
        return json.loads(target.read_text()).get("spec")
    except (ValueError, OSError, AttributeError):
        raise ValueError(f"{target}: not a readable provenance file; delete it and rerun its stage") from None


def read_tokens(path, vocab, *, extra=(), made_for: dict | None = None):
    """A token table (batch_to_frame) checked against the cell that reads it: its columns, the
    prompt and response widths of `vocab` (models.Vocab), and every token in range; with
    `made_for`, the study, teacher and horizon its provenance records. Returns (Batch, DataFrame)."""
    df = read_parquet(path)
    need = {"cls": None, "prompt": vocab.prompt_length, "response": vocab.horizon, **{c: None for c in extra}}
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: column {missing[0]} missing (has {_brief(', '.join(df.columns[:12]), 80)}); "
            "not a covpipe token table of this stage"
        )
    for column in ("prompt", "response"):
        dtype = df.schema[column]
        width = getattr(dtype, "size", None)
        if not isinstance(dtype, pl.Array) or width != need[column]:
            raise ValueError(
                f"{path}: column {column} holds {_brief(dtype, 40)}, expected {need[column]} tokens per "
                f"row at horizon {vocab.horizon}; this table was made for another horizon or teacher"
            )
    if made_for is not None:
        made = made_from(path)
        if made is not None:
            for key in made_for:
                if made.get(key) != made_for.get(key):
                    raise ValueError(
                        f"{path}: this table was made for another {key} ({_brief(made.get(key), 60)}, "
                        f"not {_brief(made_for.get(key), 60)}); rerun the data stage"
                    )
    batch = frame_to_batch(df)
    # prompts may hold BOS (= input_vocab_size); responses only the V response tokens
    for name, values, top in (
        ("prompt", batch.prompt, vocab.input_vocab_size),
        ("response", batch.response, vocab.vocab_size - 1),
    ):
        if values.size and (values.min() < 0 or values.max() > top):
            bad = int(values.max() if values.max() > top else values.min())
            raise ValueError(f"{path}: column {name} holds token {bad}, outside the vocabulary 0..{top}")
    return batch, df


def save_torch(obj, path) -> None:
    import torch  # here, not at the top: stages that read and write only tables (aggregate, plot) never load torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path):
    import torch

    path = _existing_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's unpickling refusals are paragraphs: keep their first sentence
        first = str(exc).strip().split("\n")[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: not a readable checkpoint file ({_brief(first)}); delete it and rerun training"
        ) from None
    if not isinstance(obj, dict) or obj.get("covpipe_format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: written by an incompatible covpipe version; delete it and rerun training")
    return obj


CHECKPOINT_FORMAT = 1


def _version(package: str) -> str:
    """An installed package's version without importing it (torch takes a second to import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def write_provenance(path, spec: dict, **extra) -> None:
    """`<path>.provenance.json`: the resolved spec, covpipe version, command and machine."""
    record = {
        "output": str(path),
        "covpipe_version": __version__,
        "spec": spec,
        "python": sys.version.split()[0],
        "torch": _version("torch"),
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


def batch_to_frame(batch, **columns) -> pl.DataFrame:
    """A Batch as a table: cls, prompt (Array[int16, P]), response (Array[int16, H]) plus extra columns."""
    n, p = batch.prompt.shape
    h = batch.response.shape[1]
    return pl.DataFrame(
        {
            **columns,
            "cls": pl.Series(batch.cls, dtype=pl.Int32),
            "prompt": pl.Series(batch.prompt.astype(np.int16), dtype=pl.Array(pl.Int16, p))
            if p
            else pl.Series([[]] * n, dtype=pl.Array(pl.Int16, 0)),
            "response": pl.Series(batch.response.astype(np.int16), dtype=pl.Array(pl.Int16, h)),
        }
    )


def frame_to_batch(df: pl.DataFrame):
    """The inverse of `batch_to_frame`: a Batch of int64 arrays."""
    from .sequences import Batch

    n = df.height
    prompt = df["prompt"].to_numpy().astype(np.int64).reshape(n, -1)
    response = df["response"].to_numpy().astype(np.int64).reshape(n, -1)
    return Batch(prompt, response, df["cls"].to_numpy().astype(np.int64))
