"""A small document renderer: one list of blocks written out as Markdown and as self-contained HTML.

Both outputs come from the same blocks, so they always say the same thing. The HTML
embeds images as base64 and loads no external resources.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class Document:
    """Blocks appended in reading order: headings, paragraphs, tables, images and a warning list.

    Paragraphs and table cells may use the inline forms `code`, **bold** and _italic_;
    cells are written with `format_value`. Images are paths relative to the report.
    """

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A table; with no rows, the paragraph "_(none)_" instead."""
        rows = [list(r) for r in rows]
        if rows:
            self.blocks.append(("table", (list(headers), rows)))
        else:
            self.p("_(none)_")

    def img(self, alt: str, rel: str) -> None:
        self.blocks.append(("img", (alt, rel)))

    def warn(self, items: Sequence[str]) -> None:
        """A warning list; an empty one renders as "No warnings"."""
        self.blocks.append(("warn", list(items)))

    # ---- markdown
    def to_md(self) -> str:
        out: list[str] = []
        for kind, data in self.blocks:
            if kind == "h":
                out.append(f"{'#' * data[0]} {data[1]}\n")
            elif kind == "p":
                out.append(f"{data}\n")
            elif kind == "table":
                headers, rows = data
                out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows)
                out.append("")
            elif kind == "img":
                out.append(f"![{data[0]}]({data[1]})\n")
            elif kind == "warn":
                if data:
                    out.append(f"> ⚠️ **{len(data)} warning{'s' if len(data) > 1 else ''}:**")
                    out.append(">")
                    out.extend(f"> - ⚠️ {w}" for w in data)
                    out.append("")
                else:
                    out.append("✅ No warnings.\n")
        return "\n".join(out).rstrip() + "\n"

    # ---- html
    def to_html(self, title: str, base: Path) -> str:
        """One self-contained HTML page; images are read from `base` / their path and embedded, if present."""
        body: list[str] = []
        for kind, data in self.blocks:
            if kind == "h":
                body.append(f"<h{data[0]}>{_esc(data[1])}</h{data[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(data)}</p>")
            elif kind == "table":
                headers, rows = data
                head = "".join(f"<th>{_inline(format_value(h))}</th>" for h in headers)
                trs = "".join(
                    "<tr>" + "".join(f"<td>{_inline(format_value(c))}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                path = base / data[1]
                if path.is_file():
                    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
                    body.append(
                        f'<figure><img alt="{_esc(data[0])}" src="data:image/png;base64,{b64}"></figure>'
                    )
            elif kind == "warn":
                if data:
                    body.append(
                        '<div class="warn"><ul>'
                        + "".join(f"<li><strong>Warning:</strong> {_esc(w)}</li>" for w in data)
                        + "</ul></div>"
                    )
                else:
                    body.append('<p class="ok">No warnings.</p>')
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


_CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "h1{border-bottom:2px solid #4f81bd;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f0f3f8}tr:nth-child(even) td{background:#fafafa}"
    "img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}"
    ".warn{background:#fff4e5;border-left:5px solid #e69500;padding:.4em 1em;margin:1em 0}"
    ".ok{background:#eef8ee;border-left:5px solid #4caf50;padding:.4em 1em}"
    "code{background:#f3f3f3;padding:0 .2em}"
)


def format_value(v: Any) -> str:
    """A value as the report prints it: None "–", bools yes/no, thousands separators, at most 4 decimals."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        text = f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.4f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _md_cell(v: Any) -> str:
    return format_value(v).replace("|", "\\|").replace("\n", " ")


def _esc(s: str) -> str:
    # defang '://' so report text quoting a URL is never mistaken for an external resource
    return html.escape(str(s)).replace("://", ":&#47;&#47;")


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITAL = re.compile(r"(?<![\w*])_([^_]+)_(?![\w*])")


def _inline(s: str) -> str:
    """The few Markdown inline forms the paragraphs use: `code`, **bold**, _italic_."""
    out = _esc(s)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _ITAL.sub(r"<em>\1</em>", out)
