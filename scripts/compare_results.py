"""Two checkouts' results, compared bit for bit: every Parquet table's data under results/ (the
timing columns left out) and every figure table (.md).

    python scripts/compare_results.py OLD_CHECKOUT NEW_CHECKOUT

Used to show that a refactor leaves the default study's tables unchanged (issues 17 and 18)."""

import sys
from pathlib import Path

import polars as pl

old, new = Path(sys.argv[1]), Path(sys.argv[2])
TIMING = {"seconds", "wall_seconds"}
files = sorted(p.relative_to(old) for p in (old / "results").rglob("*.parquet"))
same, differ, missing = 0, [], []
for rel in files:
    if not (new / rel).exists():
        missing.append(str(rel))
        continue
    a, b = pl.read_parquet(old / rel), pl.read_parquet(new / rel)
    cols = [c for c in a.columns if c not in TIMING]
    if set(cols) != {c for c in b.columns if c not in TIMING}:
        differ.append(f"{rel}: columns {sorted(set(a.columns) ^ set(b.columns))}")
        continue
    if a.select(cols).equals(b.select(cols), null_equal=True):
        same += 1
    else:
        # where: first differing column and the largest difference
        detail = []
        for c in cols:
            if not a[c].equals(b[c], null_equal=True):
                try:
                    d = (a[c].cast(pl.Float64) - b[c].cast(pl.Float64)).abs().max()
                except Exception:
                    d = "non-numeric"
                detail.append(f"{c} (max |diff| {d})")
        differ.append(f"{rel}: {', '.join(detail[:3])}")
extra = sorted(
    str(p.relative_to(new)) for p in (new / "results").rglob("*.parquet") if not (old / p.relative_to(new)).exists()
)
print(
    f"{len(files)} tables in old; identical data: {same}; differing: {len(differ)}; missing in new: {len(missing)}; only in new: {len(extra)}"
)
for line in differ[:20] + missing[:5] + extra[:5]:
    print("  ", line)
md_old = sorted(p.relative_to(old) for p in (old / "results").rglob("*.md"))
md_same = sum((old / r).read_text() == (new / r).read_text() for r in md_old if (new / r).exists())
print(f"figure tables (.md): {md_same} of {len(md_old)} identical")
for r in md_old:
    if (new / r).exists() and (old / r).read_text() != (new / r).read_text():
        print("   differs:", r)
