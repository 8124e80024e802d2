"""Documentation that is generated from code stays in step with it."""

from __future__ import annotations

import re
from pathlib import Path

from protocols.reference import REFERENCE_MAP
from protocols.regmap_doc import register_map_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_register_map_page_matches_the_reference_map() -> None:
    page = (ROOT / "docs" / "register-map.md").read_text()
    assert page == register_map_markdown(REFERENCE_MAP), (
        "docs/register-map.md is stale: run `boilertwin sim register-map > docs/register-map.md`"
    )


def test_every_point_is_documented_with_its_address() -> None:
    page = register_map_markdown(REFERENCE_MAP)
    for point in REFERENCE_MAP.points:
        assert f"`{point.name}`" in page
        assert f"| {point.address}" in page


def test_readme_gives_exactly_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_links_in_the_docs_stay_inside_the_repository() -> None:
    """Relative links resolve to files of this repository (never to ../shared or beyond)."""
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *ROOT.glob("deploy/**/*.md"),
    ]
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for page in pages:
        for target in link.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name} links outside: {target}"
            assert resolved.exists(), f"{page.name} links to a missing file: {target}"
