"""HTML pieces of the report: sections, tables, embedded plots. Everything is escaped; plots are
``<img>`` elements with SVG data URLs, so the page needs no script and no network."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 14px; margin: 14px 0 6px; }
p.note { color: #666; margin: 4px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid #eee; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 8px 0 16px; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #666; font-size: 12px; }
.pair { display: flex; gap: 24px; flex-wrap: wrap; } .pair > div { flex: 1 1 420px; }
.headline { display: flex; gap: 20px; flex-wrap: wrap; margin: 10px 0; }
.headline div { min-width: 100px; } .headline b { display: block; font-size: 20px; }
"""


def document(title: str, body: Iterable[str]) -> str:
    """The whole page."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n'
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def section(title: str, *parts: str, anchor: str | None = None) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}>\n<h2>{esc(title)}</h2>\n" + "\n".join(p for p in parts if p) + "\n</section>"


def plot(svg_text: str, caption: str, name: str) -> str:
    """An embedded plot (class ``plot``, ``data-plot`` = ``name``) with its caption."""
    data = base64.b64encode(svg_text.encode("utf-8")).decode("ascii")
    return (f'<figure><img class="plot" data-plot="{esc(name)}" alt="{esc(caption)}" '
            f'src="data:image/svg+xml;base64,{data}">\n<figcaption>{esc(caption)}</figcaption></figure>')


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def headline(items: Iterable[tuple[str, Any]]) -> str:
    """Big figures in a row: (label, value)."""
    cells = "".join(f"<div><b>{esc(fmt(v))}</b>{esc(label)}</div>" for label, v in items)
    return f'<div class="headline">{cells}</div>'


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits (integers whole); None and NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{esc(fmt(value))}</td>' if numeric else f"<td>{esc(fmt(value))}</td>"
