#!/usr/bin/env python
"""Open every page of the built book in headless Chromium and fail on anything a reader would see broken.

    python scripts/browser_check.py                       # checks _build/html, screenshots in _build/screenshots
    python scripts/browser_check.py --html /tmp/x/_build/html --screenshots /tmp/x/shots

The pages are served by a local http.server on 127.0.0.1 and driven through the Chrome DevTools protocol over
a pipe (--remote-debugging-pipe: no websocket, no extra package). Chromium resolves no host name but
127.0.0.1, so whatever a page would fetch from the internet fails here on every machine alike.

A page fails on:
- a broken image: an <img> whose naturalWidth is 0 once the page has loaded (missing file, bad data);
- an empty or blank figure: an image of the content under 8 px, one with fewer than 0.5% of its pixels off its
  background colour (--blank-below), or one without any coloured pixel and little ink: black/grey axes, grid and
  text only, i.e. no data drawn (empty matplotlib panels, bars of height zero);
- a clipped table: it, or a box between it and the article, hides what overflows it (overflow hidden/clip) and
  does overflow; or it is wider than the page column with no scrolling container around it;
- truncated text: an element cut with text-overflow: ellipsis, a table cell that hides its overflow;
- a rendered table cell that is NaN / nan / None / <NA> / NaT / null (or has NaN inside it), or that pandas
  elided ("..." cells, text ending in "..."): a value shown as code (<code>None</code>) is deliberate;
- a visible traceback: an error output, or "Traceback (most recent call last)" / ANSI colour codes in an output;
- a console error, an uncaught exception, a failed request or an HTTP error status (404 ...);
- a request to any host other than the local server (the book must work offline);
- an experiment chapter (--require-figure, default: token, dimension, layer, freezing, cross_finetune, cka)
  with no image in its content;
- a notebook chapter whose executed notebook is not downloadable (_sources/.../<name>.ipynb).
A full-page PNG screenshot of every page, failing or not, is saved in --screenshots (default:
<html>/../screenshots, i.e. _build/screenshots/book__executed__token.png). Scrollbars are kept: a table that
scrolls shows its scrollbar there, as it does to a reader.
tests/test_book.py feeds hand-written pages (a clipped table, a NaN cell, a traceback, a blank figure, a clean
page) to check_site() to test the detection.

Exit status: 0 when every page passes, 1 when one fails, 2 when Chromium is missing or cannot start.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = "apt-get install -y chromium   (Debian/Ubuntu; run apt-get update first)"
EXPERIMENT_CHAPTERS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka")
BLANK_BELOW = 0.005        # a figure with fewer pixels than this share off its background colour is blank
MIN_FIGURE_PIXELS = 8      # a figure narrower or lower than this (in natural pixels) is empty
# A matplotlib figure whose pixels are all black, white or grey shows axes, grid lines and text but no data (its
# data colours are never grey: empty panels, bars of height zero). Below GREY_FIGURE_INK ink: a grey-scale image
# by design (a heat map in greys) has far more.
NO_COLOUR_BELOW = 0.0005
GREY_FIGURE_INK = 0.20
MAX_CELLS_LISTED = 6       # per table, in the report
NON_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
NON_PAGE_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--remote-debugging-pipe",   # scrollbars are kept: a screenshot shows which tables scroll
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# Runs in the page once it has loaded: makes lazy images load, waits for them, for the fonts and for MathJax, then
# reports what the Python side turns into problems (problems_from_report). Only the page's content (the article)
# is inspected for tables, figures and tracebacks: never the theme's navigation.
INSPECT_JS = r"""
(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  const settle = Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
      i.addEventListener('load', r, {once: true}); i.addEventListener('error', r, {once: true}); })));
  await Promise.race([settle, new Promise(r => setTimeout(r, 10000))]);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, 10000))]);
  }
  if (document.fonts && document.fonts.ready) {
    await Promise.race([document.fonts.ready, new Promise(r => setTimeout(r, 5000))]);
  }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));  // layout settled
  const main = document.querySelector('main article, article.bd-article, .bd-article, main') || document.body;
  const inMain = new Set(Array.from(main.querySelectorAll('img')));
  const downloads = Array.from(document.querySelectorAll('a[href]'))
      .map(a => a.getAttribute('href')).filter(h => /\.ipynb$/.test(h));
  const clean = t => (t || '').replace(/\s+/g, ' ').trim();
  const short = (t, n) => { t = clean(t); return t.length > n ? t.slice(0, n - 1) + '\u2026' : t; };

  // -- where is it: "table 2 (pandas; columns: task, cls, ...) under 'The claim'" --------------------------------
  const headings = Array.from(main.querySelectorAll('h1, h2, h3, h4'));
  const headingBefore = el => {
    let found = '';
    for (const h of headings) {
      if (h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING) {
        found = clean(h.textContent).replace(/#$/, '');
      }
    }
    return found;
  };
  const tables = Array.from(main.querySelectorAll('table'));
  // the name of each column: the last non-empty header text above it (pandas puts the index name on a 2nd row)
  const columnNames = t => {
    const header = [];
    const headRows = t.tHead && t.tHead.rows.length ? Array.from(t.tHead.rows) : (t.rows[0] ? [t.rows[0]] : []);
    for (const hr of headRows) {
      let col = 0;
      for (const c of Array.from(hr.cells)) {
        const text = clean(c.textContent);
        for (let k = 0; k < (c.colSpan || 1); k++, col++) if (text) header[col] = text;
      }
    }
    return header;
  };
  const describeTable = t => {
    const kind = t.classList.contains('dataframe') ? 'pandas table' : 'table';
    const caption = t.querySelector('caption');
    const cols = columnNames(t).filter(Boolean);
    let text = `${kind} ${tables.indexOf(t) + 1} of ${tables.length}`;
    if (caption) text += ` "${short(caption.textContent, 60)}"`;
    text += ` (columns: ${short(cols.join(', '), 80)})`;
    const h = headingBefore(t);
    return h ? `${text} under "${short(h, 60)}"` : text;
  };
  const describeElement = el => {
    const t = el.closest('table');
    if (t) return describeTable(t);
    const h = headingBefore(el);
    const cls = (el.className && el.className.toString ? el.className.toString() : '').split(/\s+/).filter(Boolean);
    return `<${el.tagName.toLowerCase()}${cls.length ? '.' + cls.slice(0, 3).join('.') : ''}>` +
           (h ? ` under "${short(h, 60)}"` : '');
  };
  const hidesOverflow = v => v === 'hidden' || v === 'clip';

  // -- clipped tables and truncated text ---------------------------------------------------------------------------
  // A table is clipped when it, or an element between it and the article, hides what overflows it (overflow hidden
  // or clip) and does overflow (scrollWidth > clientWidth): the reader cannot scroll to the cut part. A table that
  // spills out of the article's column (no scrolling container around it) is reported too.
  const clipped = [];
  const articleRect = main.getBoundingClientRect();
  for (const t of tables) {
    if (!t.getClientRects().length) continue;  // not rendered (e.g. inside a closed toggle)
    let problem = null;
    for (let el = t; el && el !== main.parentElement; el = el.parentElement) {
      const cs = getComputedStyle(el);
      if (hidesOverflow(cs.overflowX) && el.scrollWidth > el.clientWidth + 1) {
        problem = `cut off at the right: ${el.scrollWidth - el.clientWidth}px of ${el.scrollWidth}px hidden by ` +
                  `overflow-x: ${cs.overflowX} on ${describeElement(el).split(' under ')[0]}`;
        break;
      }
      if (hidesOverflow(cs.overflowY) && el.scrollHeight > el.clientHeight + 1 && el.clientHeight > 0) {
        problem = `cut off at the bottom: ${el.scrollHeight - el.clientHeight}px hidden by overflow-y: ` +
                  `${cs.overflowY}`;
        break;
      }
      if (cs.overflowX === 'auto' || cs.overflowX === 'scroll') break;  // the reader can scroll to the rest
      if (el === main) {
        const r = t.getBoundingClientRect();
        if (r.right > articleRect.right + 1 || r.left < articleRect.left - 1) {
          problem = `${Math.round(r.width)}px wide, spills out of the ${Math.round(articleRect.width)}px page column ` +
                    `(no scrolling container)`;
        }
      }
    }
    if (problem) clipped.push({where: describeTable(t), problem});
  }
  const truncated = [];
  for (const el of main.querySelectorAll('*')) {
    if (!el.getClientRects().length) continue;
    const cs = getComputedStyle(el);
    const overflows = el.scrollWidth > el.clientWidth + 1;
    const inTable = el.closest('table') !== null;
    if (cs.textOverflow === 'ellipsis' && overflows && hidesOverflow(cs.overflowX)) {
      truncated.push({where: describeElement(el),
                      problem: `text cut with an ellipsis: "${short(el.textContent, 60)}"`});
    } else if (inTable && /^(TD|TH)$/.test(el.tagName) && overflows && hidesOverflow(cs.overflowX)) {
      truncated.push({where: describeElement(el), problem: `cell text cut off: "${short(el.textContent, 60)}"`});
    }
  }

  // -- cells with missing values: NaN, None, <NA>, NaT; elided rows or text ("...") --------------------------------
  // A value shown as code (<code>None</code>: a parameter's value) is deliberate and not reported.
  const badCells = [];
  for (const t of tables) {
    const header = columnNames(t);
    for (const row of Array.from(t.rows)) {
      if (row.parentElement && row.parentElement.tagName === 'THEAD') continue;
      const cells = Array.from(row.cells);
      let rowName = clean((cells.find(c => c.tagName === 'TH') || cells[0] || {}).textContent);
      const firstValue = cells.find(c => c.tagName === 'TD');
      if (/^\d+$/.test(rowName) && firstValue) rowName += ` (${clean(firstValue.textContent)})`;  // a bare 0, 1, ...

      cells.forEach((c, j) => {
        const text = clean(c.textContent);
        const codeOnly = c.querySelector('code, kbd, samp') && !clean(Array.from(c.childNodes)
            .filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent).join(''));
        let what = null;
        if (/^(nan|NaN|NAN|None|<NA>|NaT|null|undefined)$/.test(text)) what = 'missing value';
        else if (/(^|[^A-Za-z0-9_])(nan|NaN|NAN|<NA>)([^A-Za-z0-9_]|$)/.test(text)) what = 'NaN inside the value';
        else if (/^(\.\.\.|\u2026|\u22ee|\u22f1)$/.test(text)) what = 'rows or columns elided (pandas display limits)';
        else if (text.length > 3 && /(\.\.\.|\u2026)$/.test(text)) what = 'text elided';
        if (what && !(codeOnly && what !== 'text elided')) {
          badCells.push({where: describeTable(t), row: short(rowName, 40), column: short(header[j] || `#${j + 1}`, 40),
                         text: short(text, 60), what});
        }
      });
    }
  }

  // -- figures: empty (natural size 0) or nearly blank (almost every pixel the background colour) -----------------
  const figures = [];
  for (const i of imgs) {
    if (!inMain.has(i)) continue;
    const fig = {src: i.getAttribute('src') || i.currentSrc, width: i.naturalWidth, height: i.naturalHeight,
                 where: headingBefore(i), ink: null};
    if (i.naturalWidth > 0 && i.naturalHeight > 0) {
      try {
        const scale = Math.min(1, 1600 / i.naturalWidth, 1600 / i.naturalHeight);
        const w = Math.max(1, Math.round(i.naturalWidth * scale)), h = Math.max(1, Math.round(i.naturalHeight * scale));
        const canvas = document.createElement('canvas');
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(i, 0, 0, w, h);
        const d = ctx.getImageData(0, 0, w, h).data;
        // the background: the most frequent colour among the corners
        const at = k => [d[k], d[k + 1], d[k + 2], d[k + 3]];
        const corners = [0, (w - 1) * 4, (h - 1) * w * 4, (h * w - 1) * 4].map(at);
        const bg = corners.sort((a, b) => corners.filter(c => c.join() === b.join()).length -
                                          corners.filter(c => c.join() === a.join()).length)[0];
        let ink = 0, colour = 0;
        for (let k = 0; k < d.length; k += 4) {
          if (d[k + 3] < 16 && bg[3] < 16) continue;  // transparent on transparent
          if (Math.abs(d[k] - bg[0]) > 24 || Math.abs(d[k + 1] - bg[1]) > 24 || Math.abs(d[k + 2] - bg[2]) > 24 ||
              Math.abs(d[k + 3] - bg[3]) > 24) {
            ink++;
            // coloured: not black, white or grey (axes, ticks and text are; matplotlib's data colours are not)
            if (d[k + 3] > 64 && Math.max(d[k], d[k + 1], d[k + 2]) - Math.min(d[k], d[k + 1], d[k + 2]) > 40) colour++;
          }
        }
        fig.ink = ink / (w * h);
        fig.colour = colour / (w * h);
      } catch (e) {
        fig.inkError = String(e);
      }
    }
    figures.push(fig);
  }

  // -- tracebacks and error output ---------------------------------------------------------------------------------
  const tracebacks = [];
  for (const el of main.querySelectorAll('.output.traceback, .output.error, .output.stderr, .cell_output pre, ' +
                                          '.cell_output .output, div.highlight-ipythontb, div.highlight-pytb')) {
    const text = el.textContent || '';
    const isTb = el.matches('.output.traceback, .output.error, div.highlight-ipythontb, div.highlight-pytb') ||
                 /Traceback \(most recent call last\)/.test(text) || /\x1b\[[0-9;]*m/.test(text) ||
                 /^-{20,}\s*\n\s*\w+(Error|Exception)\b/m.test(text);
    if (!isTb) continue;
    const lines = text.split('\n').map(clean).filter(Boolean);
    const last = lines.reverse().find(l => /^\w+(\.\w+)*(Error|Exception|Interrupt|Exit)\b/.test(l)) || lines[0] || '';
    tracebacks.push({where: headingBefore(el), text: short(last.replace(/\x1b\[[0-9;]*m/g, ''), 160)});
  }
  if (!tracebacks.length && /Traceback \(most recent call last\)/.test(main.innerText)) {
    tracebacks.push({where: '', text: 'Traceback (most recent call last) in the page text'});
  }
  const seen = new Set();
  const uniqueTracebacks = tracebacks.filter(t => {
    const k = t.where + '|' + t.text; if (seen.has(k)) return false; seen.add(k); return true; });

  return {
    title: document.title,
    images: imgs.map(i => ({src: i.currentSrc || i.src, attr: i.getAttribute('src'),
                             width: i.naturalWidth, height: i.naturalHeight, complete: i.complete,
                             inMain: inMain.has(i)})),
    downloads: downloads,
    mathErrors: document.querySelectorAll('mjx-merror, .MathJax_Error').length,
    rawMath: (main.innerText.match(/\\\(|\\\[/g) || []).length,
    clipped: clipped, truncated: truncated, badCells: badCells, figures: figures, tracebacks: uniqueTracebacks,
  };
})()
"""

class ChromiumError(Exception):
    pass


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    for candidate in ("/usr/bin/chromium",) + CHROMIUM_NAMES:
        path = shutil.which(candidate) if not candidate.startswith("/") else (candidate if os.access(
            candidate, os.X_OK) else None)
        if path:
            return path
    return None


# -- a tiny DevTools client over --remote-debugging-pipe (fd 3: commands in, fd 4: replies and events out) ---------

class DevTools:
    def __init__(self, chromium: str, profile_dir: str, log_path: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds():  # runs in the child: its fd 3 reads our commands, its fd 4 writes to us
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2 makes them inheritable; every other descriptor Python made is not
            os.dup2(high_w, 4)
            os.close(high_r)
            os.close(high_w)

        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
            preexec_fn=wire_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001  (already gone)
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # only the Chromium process this script started
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log_file.close()

    def _read_message(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._from_chrome], [], [], min(remaining, 0.5))
            if not ready:
                if self.proc.poll() is not None:
                    raise ChromiumError(f"Chromium exited with status {self.proc.returncode}")
                continue
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise ChromiumError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply is None:
                raise ChromiumError(f"no reply to {method} within {timeout} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect events for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self._read_message(deadline)
            if msg and "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, session: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while time.monotonic() < deadline:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return True
            seen = len(self.events)
            msg = self._read_message(deadline)
            if msg and "method" in msg:
                self.events.append(msg)
        return False


# -- the local server ----------------------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


def serve(directory: Path):
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# -- the checks ----------------------------------------------------------------------------------------------------

def pages_of(html: Path) -> list[Path]:
    pages = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.name in NON_PAGES or rel.parts[0] in NON_PAGE_DIRS:
            continue
        if rel.as_posix() == "index.html" and "http-equiv=\"Refresh\"" in path.read_text(errors="replace")[:500]:
            continue  # jupyter-book's redirect to the root page
        pages.append(rel)
    return pages


def problems_from_events(events: list[dict], base: str) -> list[str]:
    problems = []
    for event in events:
        method, p = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            problems.append(f"console.{p['type']}: {text[:300]}")
        elif method == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            problems.append(f"uncaught exception: {text.splitlines()[0][:300] if text else details}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            problems.append(f"console error ({entry.get('source')}): {entry.get('text', '')[:200]} "
                            f"{entry.get('url', '')}".rstrip())
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not url.startswith((base, "data:", "blob:", "about:", "chrome-error:")):
                problems.append(f"request leaves the machine: {url[:200]}")
        elif method == "Network.responseReceived":
            status = p.get("response", {}).get("status", 0)
            if status >= 400:
                problems.append(f"HTTP {status}: {p['response'].get('url', '')[:200]}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
    return list(dict.fromkeys(problems))  # de-duplicated, in order


def problems_from_report(info: dict, blank_below: float = BLANK_BELOW) -> list[str]:
    """What INSPECT_JS found in a page's content, as one line per problem (the page's name is added by the caller)."""
    problems = []
    for img in info.get("images", []):
        if not img["width"]:
            problems.append(f"broken image (naturalWidth 0): {img['attr'] or img['src']}")
    for fig in info.get("figures", []):
        where = f" under \"{fig['where']}\"" if fig.get("where") else ""
        if fig.get("width") and fig.get("height") and min(fig["width"], fig["height"]) < MIN_FIGURE_PIXELS:
            problems.append(f"empty figure: {fig['src']}{where} is {fig['width']}x{fig['height']} px")
        elif fig.get("ink") is not None and fig["ink"] < blank_below:
            problems.append(f"blank figure: {fig['src']}{where}: only {fig['ink']:.2%} of its pixels differ from "
                            f"the background (threshold {blank_below:.1%})")
        elif fig.get("colour") is not None and fig["colour"] < NO_COLOUR_BELOW and fig["ink"] < GREY_FIGURE_INK:
            problems.append(f"empty figure: {fig['src']}{where}: no coloured pixel ({fig['colour']:.3%}), only "
                            f"black/grey axes, grid lines and text ({fig['ink']:.1%} of the pixels): no data drawn "
                            f"(empty panels, or bars of height 0)")
        elif fig.get("inkError"):
            problems.append(f"figure could not be inspected: {fig['src']}{where}: {fig['inkError']}")
    for item in info.get("clipped", []):
        problems.append(f"clipped table: {item['where']}: {item['problem']}")
    for item in info.get("truncated", []):
        problems.append(f"truncated text: {item['where']}: {item['problem']}")
    by_table: dict[str, list[dict]] = {}
    for cell in info.get("badCells", []):
        by_table.setdefault(cell["where"], []).append(cell)
    for where, cells in by_table.items():
        shown = "; ".join(f"row \"{c['row']}\", column \"{c['column']}\": \"{c['text']}\" ({c['what']})"
                          for c in cells[:MAX_CELLS_LISTED])
        more = f"; and {len(cells) - MAX_CELLS_LISTED} more" if len(cells) > MAX_CELLS_LISTED else ""
        problems.append(f"{len(cells)} NaN/None/elided cell(s) in {where}: {shown}{more}")
    for tb in info.get("tracebacks", []):
        where = f" under \"{tb['where']}\"" if tb.get("where") else ""
        problems.append(f"traceback shown{where}: {tb['text']}")
    if info.get("mathErrors"):
        problems.append(f"{info['mathErrors']} MathJax error(s)")
    return problems


def check_page(dt: DevTools, session: str, url: str, timeout: float,
               blank_below: float = None) -> tuple[dict, list[str]]:
    dt.events.clear()
    dt.send("Page.navigate", {"url": url}, session)
    if not dt.wait_for("Page.loadEventFired", session, timeout):
        return {}, [f"the page did not finish loading within {timeout:.0f} s"]
    result = dt.send("Runtime.evaluate", {"expression": INSPECT_JS, "awaitPromise": True, "returnByValue": True},
                     session, timeout=timeout)
    if "exceptionDetails" in result:
        details = result["exceptionDetails"]
        text = (details.get("exception") or {}).get("description") or details.get("text")
        return {}, [f"inspection script failed: {text}"]
    dt.pump(0.3)  # late console messages
    info = result["result"]["value"]
    problems = problems_from_events([e for e in dt.events if e.get("sessionId") == session], BASE[0])
    problems += problems_from_report(info, BLANK_BELOW if blank_below is None else blank_below)
    return info, list(dict.fromkeys(problems))


BASE = [""]  # the local server's base URL, set in main()


def screenshot(dt: DevTools, session: str, path: Path, max_height: int, width: int = 1280) -> None:
    """The whole page: the viewport is stretched to the page's height, then captured, then restored."""
    metrics = dt.send("Page.getLayoutMetrics", {}, session)
    size = metrics.get("cssContentSize") or metrics.get("contentSize")
    height = max(600, min(int(size["height"]) + 1, max_height))
    dt.send("Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
    dt.pump(0.5)  # let the layout settle at the new size
    shot = dt.send("Page.captureScreenshot", {"format": "png"}, session, timeout=60)
    dt.send("Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def screenshot_name(page: str) -> str:
    """book/executed/token.html -> book__executed__token.png"""
    return page.removesuffix(".html").replace("/", "__") + ".png"


def check_site(html: Path, pages: list[Path], chromium: str, shots: Path, required: set[str] = frozenset(),
               timeout: float = 60, max_screenshot_height: int = 12000, blank_below: float = BLANK_BELOW,
               report=print) -> dict[str, list[str]]:
    """Open each page (paths relative to `html`) in one headless Chromium, screenshot it into `shots`, and
    return {page: problems} for the pages that fail. Raises ChromiumError when Chromium fails."""
    shots.mkdir(parents=True, exist_ok=True)
    server, BASE[0] = serve(html)
    profile_dir = tempfile.mkdtemp(prefix="fewdims-chromium-")
    failures: dict[str, list[str]] = {}
    dt = None
    try:
        dt = DevTools(chromium, profile_dir, shots / "chromium.log")
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.send(f"{domain}.enable", {}, session)
        dt.send("Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        for rel in pages:
            key = rel.as_posix()
            info, problems = check_page(dt, session, BASE[0] + key, timeout, blank_below)
            in_main = [i for i in info.get("images", []) if i.get("inMain") and i.get("width")]
            if key in required and not in_main:
                problems.append("experiment chapter without a figure (no image in the page's content)")
            if key.startswith("book/executed/"):
                nb = html / "_sources" / rel.with_suffix(".ipynb")
                if not nb.exists() or not any(h.endswith(rel.with_suffix(".ipynb").name)
                                              for h in info.get("downloads", [])):
                    problems.append(f"the executed notebook is not downloadable ({nb.relative_to(html)})")
            try:
                screenshot(dt, session, shots / screenshot_name(key), max_screenshot_height)
            except ChromiumError as err:
                problems.append(f"screenshot failed: {err}")
            status = "FAIL" if problems else "ok"
            report(f"{status:4s} {key:40s} {len(in_main):2d} figure(s)  {info.get('title', '')[:60]}")
            for problem in problems:
                report(f"       - {problem}")
            if problems:
                failures[key] = problems
    finally:
        if dt is not None:
            dt.close()
        server.shutdown()
        shutil.rmtree(profile_dir, ignore_errors=True)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built site")
    parser.add_argument("--screenshots", type=Path, default=None, help="default: <html>/../screenshots")
    parser.add_argument("--require-figure", default=",".join(EXPERIMENT_CHAPTERS),
                        help="comma-separated chapters (book/executed/<name>) that must show at least one image")
    parser.add_argument("--chromium", default=None, help="path of the Chromium binary (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for one page to load and settle")
    parser.add_argument("--max-screenshot-height", type=int, default=12000)
    parser.add_argument("--blank-below", type=float, default=BLANK_BELOW,
                        help="a figure with a smaller share of pixels off its background colour is blank "
                             f"(default {BLANK_BELOW})")
    args = parser.parse_args(argv)

    html = args.html.resolve()
    if not (html / "index.html").exists():
        print(f"browser_check: no book at {html} (build it first: make book)", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("browser_check: Chromium is not installed. Install it with:\n\n"
              f"    {INSTALL_HINT}\n", file=sys.stderr)
        return 2
    shots = (args.screenshots or html.parent / "screenshots").resolve()
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    required = {f"book/executed/{n.strip()}.html" for n in args.require_figure.split(",") if n.strip()}
    pages = pages_of(html)
    missing_required = sorted(r for r in required if Path(r) not in pages)
    failures: dict[str, list[str]] = {}
    if missing_required:
        failures["(site)"] = [f"chapter page missing: {r}" for r in missing_required]
    t0 = time.perf_counter()
    try:
        failures.update(check_site(html, pages, chromium, shots, required, args.timeout,
                                   args.max_screenshot_height, args.blank_below))
    except ChromiumError as err:
        print(f"browser_check: Chromium failed: {err} (log: {shots / 'chromium.log'})", file=sys.stderr)
        return 2
    print(f"{len(pages)} pages checked in {time.perf_counter() - t0:.0f} s; screenshots in {shots}")
    if failures:
        print(f"browser_check: {len(failures)} page(s) FAILED: {', '.join(failures)}", file=sys.stderr)
        for page, problems in failures.items():
            for problem in problems:
                print(f"  {page}: {problem}", file=sys.stderr)
        return 1
    print("browser_check: every page passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
