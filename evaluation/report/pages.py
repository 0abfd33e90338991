"""The comparison report's pages: `report.md` and the self-contained `report.html`.

Both show the same sections (`evaluation.report.sections`), figures, methods, input
rules, problems, the scorers left out on purpose and the provenance; the HTML page
embeds its figures as data URIs and flags a synthetic data set at top and bottom.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from evaluation.formatting import plain
from evaluation.report.sections import sections
from evaluation.report.subgroups import with_subgroups
from evaluation.report.text import FIGURE_TITLES, INPUT_RULES, METHODS, SYNTHETIC_NOTE

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1150px;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.table{overflow-x:auto;max-width:100%;margin:.5rem 0}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{white-space:nowrap}td{white-space:normal;max-width:24rem}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
.synthetic{background:#fde7ea;border:2px solid #b00020;color:#7a0016;padding:.6rem 1rem;
font-weight:600;border-radius:4px}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}pre{background:#f6f8fa;padding:1rem;overflow:auto;
font-size:.75rem}.muted{color:#666;font-size:.9rem}
"""


def markdown(results: dict[str, Any], figures: dict[str, Path]) -> str:
    """`report.md`: the sections as Markdown tables, figures linked from `figures/`."""
    lines = [f"# dermsim comparison report: {results['name']}", ""]
    if results["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    lines += [f"Rated items: {results['rated']['source']}; {results['rated']['n_items']} items, "
              f"raters {', '.join(results['rated']['raters'])}; per-case rule: "
              f"{results['rated']['rule']}.", ""]  # fmt: skip
    for title, text, header, rows in with_subgroups(sections(results), results):
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Figures", ""]
    for name, path in figures.items():
        lines += [f"![{FIGURE_TITLES.get(name, name)}](figures/{path.name})", ""]
    lines += ["## Methods", ""] + [f"* **{k}**: {v}" for k, v in METHODS.items()] + [""]
    lines += ["## Rules for imperfect input", ""]
    lines += [f"* {r}" for r in INPUT_RULES] + [""]
    lines += ["## Problems found", ""]
    lines += [f"* {p}" for p in results["problems"]] or ["None."]
    if results.get("notes"):
        lines += ["", "## Left out on purpose", ""] + [f"* {n}" for n in results["notes"]]
    lines += ["", "## Provenance", "", "```json", json.dumps(plain(results["provenance"]),
                                                            indent=2), "```", ""]  # fmt: skip
    if results["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    return "\n".join(lines)


def html_page(results: dict[str, Any], figures: dict[str, Path]) -> str:
    """`report.html`: the sections as HTML tables, figures embedded; no outside resources."""
    e = html.escape
    banner = f'<p class="synthetic">{e(SYNTHETIC_NOTE)}</p>' if results["synthetic"] else ""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dermsim report: {e(results['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>dermsim comparison report: {e(results['name'])}</h1>", banner,
        f"<p class='muted'>Rated items: {e(results['rated']['source'])}; "
        f"{results['rated']['n_items']} items; raters {e(', '.join(results['rated']['raters']))};"
        f" per-case rule: {e(results['rated']['rule'])}.</p>",
    ]  # fmt: skip
    order = ["srcc_overall", "srcc_color", "srcc_texture", "scatter", "severity"]
    for k, (title, text, header, rows) in enumerate(with_subgroups(sections(results), results)):
        parts.append(f"<h2>{e(title)}</h2>")
        if text:
            parts.append(f"<p class='muted'>{e(text)}</p>")
        parts.append(
            "<div class='table'><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table></div>")
        if k == 0:  # the key figures right after the headline
            parts += [_figure(figures[n], FIGURE_TITLES[n]) for n in order if n in figures]
    parts.append("<h2>More figures</h2>")
    parts += [
        _figure(path, FIGURE_TITLES.get(name, name))
        for name, path in figures.items()
        if name not in order
    ]
    parts.append("<h2>Methods</h2><ul>")
    parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in METHODS.items()]
    parts.append("</ul><h2>Rules for imperfect input</h2><ul>")
    parts += [f"<li>{e(r)}</li>" for r in INPUT_RULES]
    parts.append("</ul><h2>Problems found</h2><ul>")
    parts += [f"<li>{e(p)}</li>" for p in results["problems"]] or ["<li>None.</li>"]
    if results.get("notes"):
        parts.append("</ul><h2>Left out on purpose</h2><ul>")
        parts += [f"<li>{e(n)}</li>" for n in results["notes"]]
    parts.append("</ul><h2>Provenance</h2>")
    parts.append(f"<pre>{e(json.dumps(plain(results['provenance']), indent=2))}</pre>")
    parts.append(banner + "</body></html>")
    return "\n".join(parts)


def _cell(text: str) -> str:
    """A table cell, escaped; an estimate and its interval wrap as one piece."""
    return html.escape(_UNBROKEN.sub("\u00a0", text))


_UNBROKEN = re.compile(r" (?=\[)| (?=[^\[\]]*\])")  # before "[" and inside "[...]"


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
