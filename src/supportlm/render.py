"""One document model (paragraphs, tables, images, details) and its Markdown and HTML renderings.

Why one model: a report written once as blocks says the same thing in both formats, and every report
(index, data quality, eval, bench, ...) can share one renderer instead of hand-writing Markdown.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Link:
    label: str
    href: str  # relative to reports/


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Link | Code | Strong | list  # a list = inline pieces in a row


@dataclass
class Para:
    content: Inline


@dataclass
class Table:
    header: list[str]
    rows: list[list[Inline]]
    align_right: set[int] = field(default_factory=set)  # numeric columns
    note: str | None = None


@dataclass
class Image:
    path: Path  # absolute
    alt: str


@dataclass
class Details:
    summary: str
    text: str  # preformatted


Block = Para | Table | Image | Details


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block]
    ran: bool = True


def _md_inline(x: Inline) -> str:
    if isinstance(x, list):
        return "".join(_md_inline(p) for p in x)
    if isinstance(x, Link):
        return f"[{x.label}]({x.href})"
    if isinstance(x, Code):
        return f"`{x.text}`"
    if isinstance(x, Strong):
        return f"**{x.text}**"
    return str(x)


def _md_cell(x: Inline) -> str:
    return _md_inline(x).replace("|", "\\|").replace("\n", " ")


def render_md(title: str, sections: list[Section], reports: Path) -> str:
    out = [f"# {title}", "", "Contents: " + " · ".join(f"[{s.title}](#{s.key})" for s in sections), ""]
    for s in sections:
        out += [f'<a id="{s.key}"></a>', "", f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Para):
                out += [_md_inline(b.content), ""]
            elif isinstance(b, Table):
                if b.note:
                    out += [f"*{b.note}*", ""]
                out.append("| " + " | ".join(b.header) + " |")
                out.append(
                    "|"
                    + "|".join("---:" if i in b.align_right else "---" for i in range(len(b.header)))
                    + "|"
                )
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.alt}]({_rel(b.path, reports)})", ""]
            elif isinstance(b, Details):
                out += [
                    f"<details><summary>{b.summary}</summary>",
                    "",
                    "```yaml",
                    b.text.rstrip(),
                    "```",
                    "",
                    "</details>",
                    "",
                ]
    return "\n".join(out).rstrip() + "\n"


def _rel(path: Path, reports: Path) -> str:
    try:
        return Path(path).resolve().relative_to(reports.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _html_inline(x: Inline) -> str:
    if isinstance(x, list):
        return "".join(_html_inline(p) for p in x)
    if isinstance(x, Link):
        return f'<a href="{html.escape(x.href, quote=True)}">{html.escape(x.label)}</a>'
    if isinstance(x, Code):
        return f"<code>{html.escape(x.text)}</code>"
    if isinstance(x, Strong):
        return (
            f'<strong class="missed">{html.escape(x.text)}</strong>'
            if x.text == "missed"
            else f"<strong>{html.escape(x.text)}</strong>"
        )
    return html.escape(str(x))


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:0 auto;
padding:24px;color:#1d2330;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;border-bottom:2px solid #e4e8f0;padding-bottom:4px;
margin-top:36px}nav{margin:8px 0 16px;color:#556}nav a{margin-right:12px}
table{border-collapse:collapse;margin:10px 0 16px;font-size:13.5px}th,td{border:1px solid #d9dee8;
padding:4px 8px;text-align:left;vertical-align:top}th{background:#f2f5fa}td.r{text-align:right;
font-variant-numeric:tabular-nums}caption{caption-side:top;text-align:left;font-style:italic;color:#556;
padding:2px 0}tr.missed td{background:#fff4f2}tr.met td{background:#f3fbf4}strong.missed{color:#b42318}
img{max-width:100%;border:1px solid #e4e8f0;margin:6px 0 14px;display:block}code{background:#f2f5fa;
padding:0 3px;border-radius:3px;font-size:12.5px}.notrun{color:#8a5a00;background:#fff8e6;
padding:6px 10px;border-left:3px solid #f0b400}pre{background:#f7f8fb;padding:10px;overflow:auto;
font-size:12px}details{margin:8px 0}
"""


def render_html(title: str, sections: list[Section], reports: Path, embed_images: bool) -> str:
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections) + "</nav>",
    ]
    for s in sections:
        out.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Para):
                cls = ' class="notrun"' if not s.ran and s.key != "targets" else ""
                out.append(f"<p{cls}>{_html_inline(b.content)}</p>")
            elif isinstance(b, Table):
                out.append("<table>" + (f"<caption>{html.escape(b.note)}</caption>" if b.note else ""))
                out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.header) + "</tr>")
                for row in b.rows:
                    status = next((c.text for c in row if isinstance(c, Strong) and c.text == "missed"), None)
                    tr = ' class="missed"' if status else (' class="met"' if s.key == "targets" and "met" in row
                                                           else "")  # fmt: skip
                    out.append(f"<tr{tr}>" + "".join(
                        f'<td{" class=r" if i in b.align_right else ""}>{_html_inline(c)}</td>'
                        for i, c in enumerate(row)) + "</tr>")  # fmt: skip
                out.append("</table>")
            elif isinstance(b, Image):
                if embed_images:
                    src = "data:image/png;base64," + base64.b64encode(Path(b.path).read_bytes()).decode()
                else:
                    src = html.escape(_rel(b.path, reports), quote=True)
                out.append(
                    f'<figure><img src="{src}" alt="{html.escape(b.alt, quote=True)}">'
                    f"<figcaption><code>{html.escape(_rel(b.path, reports))}</code></figcaption></figure>"
                )
            elif isinstance(b, Details):
                out.append(
                    f"<details><summary>{html.escape(b.summary)}</summary><pre>{html.escape(b.text)}</pre>"
                    "</details>"
                )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
