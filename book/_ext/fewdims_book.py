"""A small Sphinx extension for the fewdims book (loaded through _config.yml: sphinx.local_extensions).

Adds book/_static/fewdims.css to every page (tables that fit or scroll inside the page, never clipped), and
marks the short cells of pandas tables (`fewdims-short`: kept on one line) so that a squeezed table breaks its long
text cells, never a value such as "SST-2" or "50.0 ± 0.0" at a hyphen or space.

De-duplicates the inline <script> blocks of each page. With Sphinx 7.4, sphinx-thebe 0.3 and
sphinx-togglebutton (all pulled in by jupyter-book 1.0), their configuration snippets are added to every page
twice; sphinx-thebe's `const THEBE_JS_URL = ...` declared twice is a SyntaxError in the browser console of
every page (scripts/browser_check.py fails on console errors).
"""
from __future__ import annotations

import html
import re


def _key(js):
    filename = getattr(js, "filename", js)
    attributes = getattr(js, "attributes", {}) or {}
    return (str(filename) if filename else None,  # an inline script's filename is None or ''
            tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _key(js)
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    context["script_files"] = unique


CSS_FILES = ("fewdims.css",)   # in book/_static (html_static_path)


SHORT_CELL = 32   # characters: pandas cells up to this long stay on one line
_DATAFRAME = re.compile(r'(<table\b[^>]*\bclass="[^"]*\bdataframe\b[^"]*"[^>]*>)(.*?)(</table>)', re.S)
_PLAIN_CELL = re.compile(r"<(td|th)((?:\s[^>]*)?)>([^<]*)</\1>")


def _mark_short_cells(table_html: str) -> str:
    def mark(m):
        tag, attrs, text = m.group(1), m.group(2) or "", m.group(3)
        if not text.strip() or len(html.unescape(text).strip()) > SHORT_CELL or "class=" in attrs:
            return m.group(0)
        return f'<{tag}{attrs} class="fewdims-short">{text}</{tag}>'

    return _PLAIN_CELL.sub(mark, table_html)


def mark_short_cells(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if body and "dataframe" in body:
        context["body"] = _DATAFRAME.sub(lambda m: m.group(1) + _mark_short_cells(m.group(2)) + m.group(3), body)


def setup(app):
    for name in CSS_FILES:
        app.add_css_file(name)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("html-page-context", mark_short_cells, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
