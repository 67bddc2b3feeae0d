"""The one HTML page of the web view, served with its assets or as one self-contained file.

The page is a small single-page app (``static/util.js``, ``charts.js``, ``app.js``).
Served, it reads the JSON API; written by ``show --html``, the same scripts read the run's
documents from a ``<script type="application/json">`` block and the assets are inlined,
so the file opens from disk with no server and no network (a CI artifact a reviewer can
open).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

#: In load order. Vendored releases (see static/vendor/README.md), then our own.
STYLES = ("vendor/diff2html.min.css", "vendor/highlight-github.min.css", "app.css")
SCRIPTS = (
    "vendor/chart.umd.min.js",
    "vendor/diff2html-ui-slim.min.js",
    "util.js",
    "charts.js",
    "app.js",
)

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def static_bytes(name: str) -> bytes | None:
    """A file under static/ by its relative name; None if there is no such file."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    node = resources.files("agentsaga.ui").joinpath("static")
    for part in parts:
        node = node.joinpath(part)
    return node.read_bytes() if node.is_file() else None


def _static_text(name: str) -> str:
    data = static_bytes(name)
    if data is None:  # a packaging error: package-data must list static/
        raise FileNotFoundError(f"agentsaga/ui/static/{name} is missing from the package")
    return data.decode("utf-8")


def _document(head: str, body_end: str, title: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(title)}</title>\n{head}</head>\n<body>\n"
        '<header class="top"><a class="brand" href="#/">agentsaga</a>'
        '<span class="where" id="where"></span></header>\n'
        '<main id="app"><p class="muted">loading…</p></main>\n'
        f"{body_end}</body>\n</html>\n"
    )


def served_page(token: str) -> str:
    """The page ``agentsaga ui`` serves; the token lets its script send decisions."""
    head = f'<meta name="agentsaga-token" content="{html.escape(token)}">\n'
    head += "".join(f'<link rel="stylesheet" href="/static/{n}">\n' for n in STYLES)
    scripts = "".join(f'<script src="/static/{n}"></script>\n' for n in SCRIPTS)
    return _document(head, scripts, "agentsaga")


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: no ``</script>``, no ``<!--``."""
    text = json.dumps(data, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline_script(source: str) -> str:
    # A script element ends at the first "</script": none of our files has one, but a
    # vendored upgrade might; "<\/" means the same to JavaScript in strings and regexes.
    return "<script>\n" + source.replace("</script", "<\\/script") + "\n</script>\n"


def standalone_page(run_id: str, documents: dict[str, Any]) -> str:
    """One self-contained file: the run page with its documents and every asset inlined.

    ``documents``: ``{"run": <show --json>, "report": <report --json>,
    "steps": {step_id: <step detail>}}``.
    """
    head = "".join(f"<style>\n{_static_text(n)}\n</style>\n" for n in STYLES)
    data = f'<script type="application/json" id="agentsaga-data">{embed_json(documents)}</script>\n'
    scripts = "".join(_inline_script(_static_text(n)) for n in SCRIPTS)
    return _document(head, data + scripts, f"agentsaga run {run_id}")
