"""The one document model: Markdown and HTML from the same blocks, escaped, self-contained."""

from __future__ import annotations

import re
from pathlib import Path

from supportlm.render import Code, Document, Link, Strong, Table, fmt, format_value, pct, signed


def _doc(tmp_path: Path) -> Document:
    d = Document()
    d.h(1, "Report <x>")
    d.p("Text with `code`, **bold** and _italic_; see https://example.com.")
    d.table(["name", "value"], [["a|b", 1234.5], ["multi\nline", None], [Link("eval.md", "eval.md"), True]],
            align_right=[1])  # fmt: skip
    d.add(Table(["target", "status"], [["x", "met"], ["y", Strong("missed")]], status_col=1))
    d.table(["empty"], [])
    d.image("plots/a.png", "a plot")
    d.warn(["too few rows"])
    d.bullets([[Code("k"), ": v"]])
    return d


def test_markdown_blocks(tmp_path: Path) -> None:
    md = _doc(tmp_path).to_md(tmp_path)
    assert md.startswith("# Report <x>\n\nText with `code`")
    assert "|---|---:|" in md and "| a\\|b | 1,234.5 |" in md and "| multi<br>line | – |" in md
    assert "| [eval.md](eval.md) | yes |" in md and "| y | **missed** |" in md
    assert "_(none)_" in md and "![a plot](plots/a.png)" in md
    assert "> ⚠️ **1 warning:**" in md and "- `k`: v" in md


def test_html_says_the_same_and_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots/a.png").write_bytes(b"\x89PNG fake")
    page = _doc(tmp_path).to_html("T <t>", tmp_path)
    assert "<title>T &lt;t&gt;</title>" in page and "<h1>Report &lt;x&gt;</h1>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page and "<em>italic</em>" in page
    assert "https://" not in page  # quoted URLs are defanged, never fetched
    assert '<td class="r">1,234.5</td>' in page and "<td>multi<br>line</td>" in page
    assert '<tr class="met">' in page and '<tr class="missed">' in page and 'strong class="missed"' in page
    assert re.search(r'<img alt="a plot" src="data:image/png;base64,[A-Za-z0-9+/=]+">', page)
    assert "td.r{" in page and "tr.missed td" in page and "nav{" not in page  # CSS only for what is used


def test_html_links_images_when_not_embedding_and_drops_missing_ones(tmp_path: Path) -> None:
    d = Document()
    d.image(tmp_path / "plots/missing.png", "gone")
    assert "<img" not in d.to_html("t", tmp_path)
    assert '<img alt="gone" src="plots/missing.png">' in d.to_html("t", tmp_path, embed_images=False)


def test_number_helpers() -> None:
    assert format_value(0.123456) == "0.1235" and format_value(1234567) == "1,234,567" and format_value(2.0) == "2"
    assert fmt(None) == "–" and fmt(3.14159, ".2f") == "3.14" and fmt(False) == "no"
    assert pct(0.615) == "61.5%" and pct(None) == "–" and signed(0.5, 2) == "+0.50" and signed(-1.0, 1) == "-1.0"
