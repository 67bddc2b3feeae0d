"""The web view: ``agentsaga ui`` serves the store as pages, ``show --html`` writes one.

Design (docs/design.md, "Web view"):

* ``server.py``: the standard library's ``ThreadingHTTPServer``, a dozen routes. The JSON
  API under ``/api/`` serves the very documents the CLI prints with ``--json`` (built by
  the same functions in ``agentsaga.report``), so the page, the CLI and scripts share one
  vocabulary. Read-only, except the approval decisions of a waiting run.
* ``security.py``: who may read and who may decide. Loopback by default; any other host
  needs the token printed at start. Writes need the token in a header (a page from another
  site can neither read it nor set the header), a Host we serve and a same-origin Origin.
* ``page.py``: one HTML page (a small single-page app, ``static/*.js``) served with its
  assets, or written as one self-contained file with the run's documents inlined.
* ``static/vendor/``: Chart.js (timeline and token chart), diff2html with highlight.js
  (diffs with syntax highlighting), vendored as released: no CDN, no build step.
"""
