#!/usr/bin/env python
"""Open every page of the built book in headless Chromium and fail on anything a reader would see broken.

    python scripts/browser_check.py                       # checks _build/html, screenshots in _build/screenshots
    python scripts/browser_check.py --html /tmp/x/_build/html --screenshots /tmp/x/shots

The pages are served by a local http.server on 127.0.0.1 and driven through the Chrome DevTools protocol over
a pipe (--remote-debugging-pipe: no websocket, no extra package). Chromium resolves no host name but
127.0.0.1, so whatever a page would fetch from the internet fails here on every machine alike.

A page fails on:
- a broken image: an <img> whose naturalWidth is 0 once the page has loaded (missing file, bad data);
- a console error, an uncaught exception, a failed request or an HTTP error status (404 ...);
- a request to any host other than the local server (the book must work offline);
- an experiment chapter (--require-figure, default: token, dimension, layer, freezing, cross_finetune, cka)
  with no image in its content;
- a notebook chapter whose executed notebook is not downloadable (_sources/.../<name>.ipynb).
A PNG screenshot of every page is saved in --screenshots (default: <html>/../screenshots).

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
NON_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
NON_PAGE_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--hide-scrollbars", "--remote-debugging-pipe",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# Runs in the page once it has loaded: makes lazy images load, waits for them and for MathJax, then reports.
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
  const main = document.querySelector('main article, article.bd-article, .bd-article, main') || document.body;
  const inMain = new Set(Array.from(main.querySelectorAll('img')));
  const downloads = Array.from(document.querySelectorAll('a[href]'))
      .map(a => a.getAttribute('href')).filter(h => /\.ipynb$/.test(h));
  return {
    title: document.title,
    images: imgs.map(i => ({src: i.currentSrc || i.src, attr: i.getAttribute('src'),
                             width: i.naturalWidth, height: i.naturalHeight, complete: i.complete,
                             inMain: inMain.has(i)})),
    downloads: downloads,
    mathErrors: document.querySelectorAll('mjx-merror, .MathJax_Error').length,
    rawMath: (main.innerText.match(/\\\(|\\\[/g) || []).length,
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


def check_page(dt: DevTools, session: str, url: str, timeout: float) -> tuple[dict, list[str]]:
    dt.events.clear()
    dt.send("Page.navigate", {"url": url}, session)
    if not dt.wait_for("Page.loadEventFired", session, timeout):
        return {}, [f"the page did not finish loading within {timeout:.0f} s"]
    result = dt.send("Runtime.evaluate", {"expression": INSPECT_JS, "awaitPromise": True, "returnByValue": True},
                     session, timeout=timeout)
    if "exceptionDetails" in result:
        return {}, [f"inspection script failed: {result['exceptionDetails'].get('text')}"]
    dt.pump(0.3)  # late console messages
    info = result["result"]["value"]
    problems = problems_from_events([e for e in dt.events if e.get("sessionId") == session], BASE[0])
    for img in info["images"]:
        if not img["width"]:
            problems.append(f"broken image (naturalWidth 0): {img['attr'] or img['src']}")
    if info.get("mathErrors"):
        problems.append(f"{info['mathErrors']} MathJax error(s)")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built site")
    parser.add_argument("--screenshots", type=Path, default=None, help="default: <html>/../screenshots")
    parser.add_argument("--require-figure", default=",".join(EXPERIMENT_CHAPTERS),
                        help="comma-separated chapters (book/executed/<name>) that must show at least one image")
    parser.add_argument("--chromium", default=None, help="path of the Chromium binary (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for one page to load and settle")
    parser.add_argument("--max-screenshot-height", type=int, default=12000)
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

    server, BASE[0] = serve(html)
    profile_dir = tempfile.mkdtemp(prefix="fewdims-chromium-")
    failures: dict[str, list[str]] = {}
    if missing_required:
        failures["(site)"] = [f"chapter page missing: {r}" for r in missing_required]
    t0 = time.perf_counter()
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
            info, problems = check_page(dt, session, BASE[0] + key, args.timeout)
            in_main = [i for i in info.get("images", []) if i.get("inMain") and i.get("width")]
            if key in required and not in_main:
                problems.append("experiment chapter without a figure (no image in the page's content)")
            if key.startswith("book/executed/"):
                nb = html / "_sources" / rel.with_suffix(".ipynb")
                if not nb.exists() or not any(h.endswith(rel.with_suffix(".ipynb").name)
                                              for h in info.get("downloads", [])):
                    problems.append(f"the executed notebook is not downloadable ({nb.relative_to(html)})")
            try:
                screenshot(dt, session, shots / (key.removesuffix(".html").replace("/", "__") + ".png"),
                           args.max_screenshot_height)
            except ChromiumError as err:
                problems.append(f"screenshot failed: {err}")
            status = "FAIL" if problems else "ok"
            print(f"{status:4s} {key:40s} {len(in_main):2d} figure(s)  {info.get('title', '')[:60]}")
            for p in problems:
                print(f"       - {p}")
            if problems:
                failures[key] = problems
    except ChromiumError as err:
        print(f"browser_check: Chromium failed: {err} (log: {shots / 'chromium.log'})", file=sys.stderr)
        return 2
    finally:
        if dt is not None:
            dt.close()
        server.shutdown()
        shutil.rmtree(profile_dir, ignore_errors=True)
    print(f"{len(pages)} pages checked in {time.perf_counter() - t0:.0f} s; screenshots in {shots}")
    if failures:
        print(f"browser_check: {len(failures)} page(s) FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("browser_check: every page passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
