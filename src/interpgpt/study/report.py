"""The study report: one self-contained `report.html` (figures embedded) and `report.md`.

A report is a list of sections (`interpgpt.analysis.protocol.Section`); each holds a
headline sentence saying what the result shows, a small table of the numbers behind
it, and its figures. Each stage builds its own section from the summary it recorded;
this module only renders them.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpgpt.analysis.protocol import Section
from interpgpt.io import write_text

REPORT_HTML = "report.html"
REPORT_MD = "report.md"


@dataclass
class Report:
    title: str
    summary: list[str]
    sections: list[Section]
    config: dict[str, Any]
    versions: dict[str, str]


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1040px;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
.finding { font-size: 1.05em; background: #f6f8fa; border-left: 4px solid #0969da;
           padding: .6em 1em; }
.warn .finding { border-left-color: #bf8700; }
.missing .finding { border-left-color: #cf222e; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
td, th { border: 1px solid #d0d7de; padding: .3em .7em; text-align: left; }
th { background: #f6f8fa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .85em; color: #57606a; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: .8em; }
ul.summary li { margin: .3em 0; }
"""


def embed_png(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _html_table(rows: list[list[str]], header: bool) -> str:
    out = ["<table>"]
    for i, row in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _linked(section: Section, relative_to: Path) -> list[tuple[str, str]]:
    """The section's pages that exist, as (label, path relative to the report)."""
    return [
        (label, Path(os.path.relpath(page, relative_to)).as_posix())
        for label, page in section.pages
        if Path(page).is_file()
    ]


def section_html(section: Section, relative_to: Path = Path()) -> str:
    parts = [
        f'<section class="{section.status}">',
        f"<h2>{html.escape(section.title)}</h2>",
        f'<p class="finding">{html.escape(section.finding)}</p>',
    ]
    links = [
        f'<a href="{html.escape(href)}">{html.escape(label)}</a>'
        for label, href in _linked(section, relative_to)
    ]
    if links:
        parts.append(f'<p class="pages">Open: {" · ".join(links)}</p>')
    if section.rows:
        parts.append(_html_table([[k, v] for k, v in section.rows], header=False))
    if section.table:
        parts.append(_html_table(section.table, header=True))
    for figure in section.figures:
        if Path(figure).is_file():
            parts.append(
                f'<figure><img src="{embed_png(figure)}" alt="{html.escape(Path(figure).name)}">'
                f"<figcaption>{html.escape(Path(figure).name)}</figcaption></figure>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report, relative_to: Path = Path()) -> str:
    """The report page; figures are embedded, linked pages are relative to `relative_to`
    (the report's folder)."""
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in report.summary)
    body = "\n".join(section_html(s, relative_to) for s in report.sections)
    config = html.escape(json.dumps(report.config, indent=2))
    versions = _html_table([["package", "version"], *map(list, report.versions.items())], True)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(report.title)}</h1><h2>Headlines</h2><ul class='summary'>{summary}</ul>"
        f"{body}<h2>Config and versions</h2><pre>{config}</pre>{versions}</body></html>\n"
    )


def _md_table(rows: list[list[str]]) -> list[str]:
    def clean(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(clean(c) for c in rows[0]) + " |"]
    lines.append("|" + "---|" * len(rows[0]))
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows[1:]]
    return lines


def render_markdown(report: Report, relative_to: Path) -> str:
    lines = [f"# {report.title}", "", "## Headlines", ""]
    lines += [f"- {s}" for s in report.summary]
    for section in report.sections:
        lines += ["", f"## {section.title}", "", f"**{section.finding}**", ""]
        links = [f"[{label}]({href})" for label, href in _linked(section, relative_to)]
        if links:
            lines += ["Open: " + " · ".join(links), ""]
        if section.rows:
            lines += _md_table([["", ""], *[[k, v] for k, v in section.rows]])
            lines.append("")
        if section.table:
            lines += [*_md_table(section.table), ""]
        for figure in section.figures:
            if Path(figure).is_file():
                rel = os.path.relpath(figure, relative_to)
                lines.append(f"![{Path(figure).name}]({rel})")
    lines += ["", "## Config and versions", "", "```json", json.dumps(report.config, indent=2)]
    lines += ["```", "", *_md_table([["package", "version"], *map(list, report.versions.items())])]
    return "\n".join(lines) + "\n"


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write report.html (figures embedded) and report.md (figures linked) into out_dir;
    both link the sections' pages (dashboards) by paths relative to out_dir."""
    html_path = write_text(out_dir / REPORT_HTML, render_html(report, out_dir))
    md_path = write_text(out_dir / REPORT_MD, render_markdown(report, out_dir))
    return html_path, md_path
