"""Open built book pages in headless Chromium, offline, and report what broke.

For each page: did every plotly figure draw, did the math typeset, did the
console log an error, did any request try to leave the machine, how heavy is
the page? A screenshot of each page is saved for a person to look at.

    .venv/bin/python tests/pagecheck.py _build/html [screenshot_dir]

The test suite calls :func:`check_site` (tests/test_book.py).
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@dataclass
class PageReport:
    page: str
    figures: int = 0
    figures_drawn: int = 0
    math: int = 0
    math_typeset: int = 0
    console_errors: list = field(default_factory=list)
    external_requests: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    html_bytes: int = 0
    transferred_bytes: int = 0
    screenshot: str = ""
    probe: object = None

    @property
    def problems(self) -> list[str]:
        found = []
        if self.figures_drawn < self.figures:
            found.append(f"{self.figures - self.figures_drawn} of {self.figures} plotly figures did not draw")
        if self.math_typeset < self.math:
            found.append(f"{self.math - self.math_typeset} of {self.math} math elements were not typeset")
        found += [f"console error: {e}" for e in self.console_errors]
        found += [f"request left the machine: {u}" for u in self.external_requests]
        found += [f"request failed: {u}" for u in self.failed_requests]
        return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass


def _serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
        "--disable-sync", "--disable-extensions", "--no-first-run", "--metrics-recording-only",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        # The network is off: every host but this machine fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


_WAIT_JS = """
const done = arguments[arguments.length - 1];
const start = Date.now();
function ready() {
  const figs = document.querySelectorAll('.rs-figure').length;
  const drawn = document.querySelectorAll('.rs-figure .js-plotly-plot .main-svg').length;
  const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
  return {figs: figs, drawn: drawn, mj: mj};
}
(async function loop() {
  while (Date.now() - start < 20000) {
    const r = ready();
    if (r.drawn >= r.figs && document.readyState === 'complete') {
      if (r.mj) { try { await r.mj; } catch (e) {} }
      break;
    }
    await new Promise(res => setTimeout(res, 200));
  }
  done(true);
})();
"""

_COUNT_JS = """
const figs = document.querySelectorAll('.rs-figure');
let drawn = 0;
figs.forEach(f => { if (f.querySelector('.js-plotly-plot .main-svg')) drawn += 1; });
const math = document.querySelectorAll('.math');
let typeset = 0;
math.forEach(m => { if (m.querySelector('mjx-container') || m.tagName === 'MJX-CONTAINER') typeset += 1; });
return {figures: figs.length, drawn: drawn, math: math.length, typeset: typeset,
        height: Math.min(document.documentElement.scrollHeight, 30000)};
"""


def check_site(html_root: str | Path, pages: list[str] | None = None, screenshot_dir: str | Path | None = None,
               probes: dict | None = None):
    """Check every page (relative paths under ``html_root``); returns PageReports.

    ``probes`` maps a page to JavaScript run after it loaded (after the checks);
    its return value is kept in the report's ``probe``.
    """
    root = Path(html_root)
    if not (root / "index.html").exists():
        raise FileNotFoundError(f"No built book at {root}: run `make book` first.")
    pages = pages or sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                            if p.name not in ("genindex.html", "search.html") and "_static" not in p.parts)
    shots = Path(screenshot_dir) if screenshot_dir else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    server = _serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    driver = _driver()
    reports = []
    try:
        driver.set_script_timeout(30)
        for page in pages:
            driver.get_log("performance")  # drop earlier entries
            driver.get_log("browser")
            driver.set_window_size(1280, 900)
            driver.get(base + page)
            driver.execute_async_script(_WAIT_JS)
            time.sleep(0.3)
            counts = driver.execute_script(_COUNT_JS)
            rep = PageReport(page=page, figures=counts["figures"], figures_drawn=counts["drawn"],
                             math=counts["math"], math_typeset=counts["typeset"],
                             html_bytes=(root / page).stat().st_size)
            for entry in driver.get_log("browser"):
                if entry.get("level") == "SEVERE":
                    rep.console_errors.append(entry.get("message", "")[:300])
            for entry in driver.get_log("performance"):
                msg = json.loads(entry["message"])["message"]
                params = msg.get("params", {})
                if msg.get("method") == "Network.requestWillBeSent":
                    url = params.get("request", {}).get("url", "")
                    if not url.startswith((base, "data:", "blob:", "about:")):
                        rep.external_requests.append(url)
                elif msg.get("method") == "Network.loadingFinished":
                    rep.transferred_bytes += int(params.get("encodedDataLength", 0))
                elif msg.get("method") == "Network.loadingFailed":
                    if not params.get("canceled"):
                        rep.failed_requests.append(params.get("errorText", "") + " " + params.get("requestId", ""))
            if probes and page in probes:
                rep.probe = driver.execute_script(probes[page])
            if shots:
                driver.set_window_size(1280, int(counts["height"]) + 100)
                time.sleep(0.3)
                out = shots / (page.replace("/", "__").replace(".html", ".png"))
                driver.save_screenshot(str(out))
                rep.screenshot = str(out)
            reports.append(rep)
    finally:
        driver.quit()
        server.shutdown()
    return reports


def format_reports(reports) -> str:
    lines = [f"{'page':42s} {'figures':>8s} {'math':>9s} {'HTML KiB':>9s} {'loaded KiB':>11s}  problems"]
    for r in reports:
        lines.append(f"{r.page:42s} {r.figures_drawn:>3d}/{r.figures:<4d} {r.math_typeset:>4d}/{r.math:<4d} "
                     f"{r.html_bytes / 1024:9.0f} {r.transferred_bytes / 1024:11.0f}  {len(r.problems)}")
    return "\n".join(lines)


if __name__ == "__main__":
    reps = check_site(sys.argv[1], screenshot_dir=sys.argv[2] if len(sys.argv) > 2 else None)
    print(format_reports(reps))
    for r in reps:
        for p in r.problems:
            print(f"{r.page}: {p}")
