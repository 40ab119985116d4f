"""README.md and docs/*.md: every relative link and image points to a file (or folder) that exists,
and every #anchor to a heading of the page it names (GitHub's heading ids)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at the first space or closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text with code left out: fenced blocks, indented blocks (4 spaces) and code spans."""
    lines = [line for line in _without_fences(text).splitlines() if not line.startswith("    ")]
    return CODE_SPAN.sub("", "\n".join(lines))


def anchors(page: Path) -> set[str]:
    """The heading ids GitHub gives a Markdown page: lowercase, punctuation but `-` and `_` dropped,
    spaces as `-`; a repeated id gets -1, -2, ..."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _without_fences(page.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def broken_links(page: Path) -> list[str]:
    """Each relative link or image of a Markdown page whose file, or whose #anchor, does not exist."""
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked (no network)
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(
                f"{target}: no file {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}"
            )
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page():
    linked = set(LINK.findall((ROOT / "README.md").read_text()))
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md links no page {missing}: add it to 'Where everything else is'"


def test_the_check_finds_a_missing_file_image_and_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# A heading, with `code`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading-with-code) [ok](other.md#twice-1) [ok](#local) [web](https://example.org/x)\n"
        "# Local\n\n`[not a link](nowhere.md)`\n\n    [code block](nowhere.md)\n\n"
        "[gone](missing.md) ![figure](figures/missing.png) [bad anchor](other.md#nope)\n"
    )
    assert broken_links(page) == [
        f"missing.md: no file {tmp_path / 'missing.md'}",
        f"figures/missing.png: no file {tmp_path / 'figures' / 'missing.png'}",
        "other.md#nope: no heading #nope in other.md",
    ]
