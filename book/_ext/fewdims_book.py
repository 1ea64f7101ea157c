"""A small Sphinx extension for the fewdims book (loaded through _config.yml: sphinx.local_extensions).

De-duplicates the inline <script> blocks of each page. With Sphinx 7.4, sphinx-thebe 0.3 and
sphinx-togglebutton (all pulled in by jupyter-book 1.0), their configuration snippets are added to every page
twice; sphinx-thebe's `const THEBE_JS_URL = ...` declared twice is a SyntaxError in the browser console of
every page (scripts/browser_check.py fails on console errors).
"""
from __future__ import annotations


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


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
