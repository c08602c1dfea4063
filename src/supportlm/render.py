"""The one document model every report is written in, and its Markdown and self-contained HTML renderings.

Why one model: a report written once as blocks says the same thing in both formats, and every report
(index, data quality, train, eval, quantization, bench, fairness, ...) shares one renderer and one way
of printing numbers instead of hand-writing Markdown. Text (`str`) may use the Markdown inline forms
`code`, **bold** and _italic_; the HTML rendering understands those three. Other cell values (numbers,
bools, None) are printed by `format_value`. The HTML embeds images as base64 (or links them, relative)
and loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- numbers and text


def format_value(v: Any) -> str:
    """A value as a report prints it: None "–", bools yes/no, thousands separators, at most 4 decimals."""
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


def fmt(x: Any, spec: str = ",.4g") -> str:
    """A number with a format spec (None "–", bools yes/no, anything else as text)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage ("–" when missing)."""
    return "–" if x is None else f"{x:.{digits}%}"


def signed(x: Any, digits: int = 3) -> str:
    """A difference with its sign (+0.130), "–" when missing."""
    return "–" if x is None else f"{x:+.{digits}f}"


# ---------------------------------------------------------------- inline pieces and blocks


@dataclass(frozen=True)
class Link:
    label: str
    href: str  # relative to the document's folder, or #anchor


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Link | Code | Strong | list  # a list = inline pieces in a row; other values via format_value


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    content: Inline
    muted: bool = False  # "not run yet" notes


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    align_right: set[int] = field(default_factory=set)  # numeric columns
    note: str | None = None
    status_col: int | None = None  # a column whose "met"/"missed" marks its row


@dataclass
class Image:
    path: Path | str  # relative to the document's folder, or absolute
    alt: str


@dataclass
class Details:
    summary: str
    text: str  # preformatted


@dataclass
class Bullets:
    items: list[Inline]


@dataclass
class CodeBlock:
    text: str
    lang: str = ""


@dataclass
class Warnings:
    items: list[str]  # empty: "No warnings"


@dataclass
class Contents:
    links: list[tuple[str, str]]  # (anchor, title)


Block = Heading | Para | Table | Image | Details | Bullets | CodeBlock | Warnings | Contents


@dataclass
class Section:
    """A titled group of blocks with an anchor, as the index report lists one per stage."""

    key: str
    title: str
    blocks: list[Block]
    ran: bool = True


class Document:
    """Blocks appended in reading order; `to_md` and `to_html` render the same blocks."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def h(self, level: int, text: str, anchor: str | None = None) -> None:
        self.blocks.append(Heading(level, text, anchor))

    def p(self, content: Inline) -> None:
        self.blocks.append(Para(content))

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]], align_right: Iterable[int] = (),
              note: str | None = None) -> None:  # fmt: skip
        """A table; with no rows, the paragraph "_(none)_" instead."""
        rows = [list(r) for r in rows]
        if rows:
            self.blocks.append(Table(list(header), rows, set(align_right), note))
        else:
            self.p("_(none)_")

    def image(self, path: Path | str, alt: str) -> None:
        self.blocks.append(Image(path, alt))

    def bullets(self, items: Iterable[Inline]) -> None:
        self.blocks.append(Bullets(list(items)))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(CodeBlock(text, lang))

    def details(self, summary: str, text: str) -> None:
        self.blocks.append(Details(summary, text))

    def warn(self, items: Sequence[str]) -> None:
        """A warning list; an empty one renders as "No warnings"."""
        self.blocks.append(Warnings(list(items)))

    def sections(self, sections: Sequence[Section]) -> None:
        """A contents line, then each section under its anchored level-2 heading."""
        self.blocks.append(Contents([(s.key, s.title) for s in sections]))
        for s in sections:
            self.h(2, s.title, anchor=s.key)
            self.blocks += [
                Para(b.content, muted=True) if isinstance(b, Para) and not s.ran else b for b in s.blocks
            ]

    def to_md(self, base: Path | None = None) -> str:
        """Markdown; images are linked relative to `base` (the folder the file is written to)."""
        return "\n".join(_md_block(b, base) for b in self.blocks).rstrip() + "\n"

    def to_html(self, title: str, base: Path, embed_images: bool = True) -> str:
        """One HTML page: inline CSS, images read from `base` and embedded (or linked when not embedding)."""
        used: set[str] = set()
        body = [_html_block(b, base, embed_images, used) for b in self.blocks]
        css = _CSS + "".join(_CSS_FOR[k] for k in sorted(used))
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
            + "\n".join(x for x in body if x)
            + "\n</body>\n</html>\n"
        )

    def write(self, md_path: Path, html_title: str | None = None, embed_images: bool = True) -> None:
        """Write `md_path` (and, given a title, the .html beside it)."""
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(self.to_md(md_path.parent), encoding="utf-8")
        if html_title is not None:
            md_path.with_suffix(".html").write_text(
                self.to_html(html_title, md_path.parent, embed_images), encoding="utf-8"
            )


# ---------------------------------------------------------------- Markdown


def _md_inline(x: Any) -> str:
    if isinstance(x, list):
        return "".join(_md_inline(p) for p in x)
    if isinstance(x, Link):
        return f"[{x.label}]({x.href})"
    if isinstance(x, Code):
        return f"`{x.text}`"
    if isinstance(x, Strong):
        return f"**{x.text}**"
    return format_value(x)


def _md_cell(x: Any) -> str:
    """A table cell: `|` escaped, line breaks kept as <br> (both Markdown and HTML tables need one line)."""
    return _md_inline(x).replace("|", "\\|").replace("\n", "<br>")


def _rel(path: Path | str, base: Path | None) -> str:
    p = Path(path)
    if not p.is_absolute() or base is None:
        return p.as_posix()
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _md_block(b: Block, base: Path | None) -> str:
    if isinstance(b, Heading):
        anchor = f'<a id="{b.anchor}"></a>\n\n' if b.anchor else ""
        return f"{anchor}{'#' * b.level} {b.text}\n"
    if isinstance(b, Para):
        return f"{_md_inline(b.content)}\n"
    if isinstance(b, Table):
        out = [f"*{b.note}*\n"] if b.note else []
        out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
        out.append(
            "|" + "|".join("---:" if i in b.align_right else "---" for i in range(len(b.header))) + "|"
        )
        out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
        return "\n".join(out) + "\n"
    if isinstance(b, Image):
        return f"![{b.alt}]({_rel(b.path, base)})\n"
    if isinstance(b, Details):
        return f"<details><summary>{b.summary}</summary>\n\n```yaml\n{b.text.rstrip()}\n```\n\n</details>\n"
    if isinstance(b, Bullets):
        return "\n".join(f"- {_md_inline(i)}" for i in b.items) + "\n"
    if isinstance(b, CodeBlock):
        return f"```{b.lang}\n{b.text.rstrip()}\n```\n"
    if isinstance(b, Warnings):
        if not b.items:
            return "✅ No warnings.\n"
        n = len(b.items)
        return "\n".join([f"> ⚠️ **{n} warning{'s' if n > 1 else ''}:**", ">",
                          *(f"> - ⚠️ {w}" for w in b.items)]) + "\n"  # fmt: skip
    if isinstance(b, Contents):
        return "Contents: " + " · ".join(f"[{t}](#{k})" for k, t in b.links) + "\n"
    raise TypeError(f"not a report block: {b!r}")


# ---------------------------------------------------------------- HTML

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
_CSS_FOR = {  # styles a page carries only when it uses the feature
    "caption": "caption{caption-side:top;text-align:left;font-style:italic;color:#556;padding:2px 0}",
    "nav": "nav{margin:8px 0 16px;color:#556}nav a{margin-right:12px}",
    "notrun": ".notrun{color:#8a5a00;background:#fff8e6;padding:6px 10px;border-left:3px solid #f0b400}",
    "pre": "pre{background:#f7f8fb;padding:10px;overflow:auto;font-size:12px}details{margin:8px 0}",
    "right": "td.r{text-align:right;font-variant-numeric:tabular-nums}",
    "status": "tr.missed td{background:#fff4f2}tr.met td{background:#f3fbf4}strong.missed{color:#b42318}",
}


def _esc(s: Any) -> str:
    # defang '://' so report text quoting a URL is never mistaken for an external resource
    return html.escape(str(s)).replace("://", ":&#47;&#47;")


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITAL = re.compile(r"(?<![\w*])_([^_]+)_(?![\w*])")


def _html_text(s: str) -> str:
    """The Markdown inline forms text may use: `code`, **bold**, _italic_."""
    out = _esc(s)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _ITAL.sub(r"<em>\1</em>", out)


def _html_inline(x: Any) -> str:
    if isinstance(x, list):
        return "".join(_html_inline(p) for p in x)
    if isinstance(x, Link):
        return f'<a href="{html.escape(x.href, quote=True)}">{_esc(x.label)}</a>'
    if isinstance(x, Code):
        return f"<code>{_esc(x.text)}</code>"
    if isinstance(x, Strong):
        cls = ' class="missed"' if x.text == "missed" else ""
        return f"<strong{cls}>{_esc(x.text)}</strong>"
    return _html_text(format_value(x))


def _cell_text(x: Any) -> str:
    return x.text if isinstance(x, (Strong, Code)) else x if isinstance(x, str) else ""


_RIGHT = ' class="r"'


def _html_table(b: Table, used: set[str]) -> str:
    caption = f"<caption>{_esc(b.note)}</caption>" if b.note else ""
    head = "".join(f"<th>{_html_inline(h)}</th>" for h in b.header)
    trs = []
    for r in b.rows:
        status = _cell_text(r[b.status_col]) if b.status_col is not None else ""
        cls = f' class="{status}"' if status in ("met", "missed") else ""
        tds = "".join(
            f"<td{_RIGHT if i in b.align_right else ''}>{_html_inline(c).replace(chr(10), '<br>')}</td>"
            for i, c in enumerate(r)
        )
        trs.append(f"<tr{cls}>{tds}</tr>")
    used.update(k for k, on in (("caption", b.note), ("right", b.align_right), ("status", b.status_col is not None))
                if on)  # fmt: skip
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def _html_image(b: Image, base: Path, embed: bool) -> str:
    rel = _rel(b.path, base)
    if not embed:
        return f'<figure><img alt="{_esc(b.alt)}" src="{html.escape(rel, quote=True)}"></figure>'
    path = Path(b.path) if Path(b.path).is_absolute() else base / b.path
    if not path.is_file():
        return ""
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{_esc(b.alt)}" src="data:image/png;base64,{b64}"></figure>'


def _html_block(b: Block, base: Path, embed: bool, used: set[str]) -> str:
    if isinstance(b, Heading):
        anchor = f' id="{html.escape(b.anchor, quote=True)}"' if b.anchor else ""
        return f"<h{b.level}{anchor}>{_esc(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        if b.muted:
            used.add("notrun")
            return f'<p class="notrun">{_html_inline(b.content)}</p>'
        return f"<p>{_html_inline(b.content)}</p>"
    if isinstance(b, Table):
        return _html_table(b, used)
    if isinstance(b, Image):
        return _html_image(b, base, embed)
    if isinstance(b, Details):
        used.add("pre")
        return f"<details><summary>{_esc(b.summary)}</summary><pre>{_esc(b.text)}</pre></details>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, CodeBlock):
        used.add("pre")
        return f"<pre><code>{_esc(b.text.rstrip())}</code></pre>"
    if isinstance(b, Warnings):
        if not b.items:
            return '<p class="ok">No warnings.</p>'
        return ('<div class="warn"><ul>' + "".join(f"<li><strong>Warning:</strong> {_esc(w)}</li>" for w in b.items)
                + "</ul></div>")  # fmt: skip
    if isinstance(b, Contents):
        used.add("nav")
        return "<nav>" + "".join(f'<a href="#{k}">{_esc(t)}</a>' for k, t in b.links) + "</nav>"
    raise TypeError(f"not a report block: {b!r}")
