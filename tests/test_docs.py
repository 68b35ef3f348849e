"""The mdBook builds, and every internal link and anchor in it resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SRC = DOCS / "src"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """mdBook's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+\s+(.+)$", text, flags=re.MULTILINE)}


def internal_links() -> list[tuple[Path, str]]:
    links = []
    for page in sorted(SRC.rglob("*.md")):
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if not re.match(r"^[a-z]+:", target):
                links.append((page, target))
    return links


def test_the_book_builds(tmp_path):
    result = subprocess.run(["mdbook", "build", str(DOCS), "--dest-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "index.html").exists()
    assert "ERROR" not in result.stderr


@pytest.mark.parametrize(("page", "target"), internal_links(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_internal_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.name} links to missing {path}"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{page.name} links to missing #{anchor} in {path}"


def test_every_page_is_in_the_summary():
    summary = (SRC / "SUMMARY.md").read_text()
    listed = {target for target in LINK.findall(summary)}
    pages = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.md")} - {"SUMMARY.md"}
    assert pages <= listed, f"pages missing from SUMMARY.md: {sorted(pages - listed)}"


def test_placeholders_in_angle_brackets_are_code_so_mdbook_shows_them():
    """mdBook and GitHub read a bare `<data dir>` as an HTML tag and show nothing."""
    pages = [DOCS.parent / "README.md", *sorted(SRC.glob("*.md"))]
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        text = re.sub(r"`[^`]*`", "", text)  # a code span may cross a line
        bare = re.findall(r"<[a-z][a-z _]*>", text)
        assert not bare, f"{page.name}: {bare}"
