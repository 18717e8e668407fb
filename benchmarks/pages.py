"""What each page of the built book costs a first-time reader: bytes and requests.

Opens every page in headless Chromium (cache off, network off but for the local
server) and sums what it loaded, split into the big pieces: plotly.js, MathJax,
the theme's icon script, the page's own HTML, everything else.

    .venv/bin/python benchmarks/pages.py [_build/html] [page.html ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import labcheck  # noqa: E402  (tests/labcheck.py: the browser's network log)
import pagecheck  # noqa: E402  (tests/pagecheck.py: the local server and the browser)

PARTS = (("plotly", "plotly.min.js"), ("mathjax", "/mathjax/"), ("icons", "fontawesome"))


def weigh(html_root: str | Path, pages: list[str] | None = None, width: int = 1280, height: int = 900) -> list[dict]:
    """One row per page: requests, total bytes, and the bytes of each part in PARTS and of the HTML."""
    root = Path(html_root)
    if not (root / "index.html").exists():
        raise FileNotFoundError(f"No built book at {root}: run `make book` first.")
    pages = pages or sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                            if p.name not in ("genindex.html", "search.html") and "_static" not in p.parts)
    server = pagecheck._serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    driver = pagecheck._driver()
    rows = []
    try:
        driver.set_script_timeout(30)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        pagecheck._set_view(driver, width, height)
        for page in pages:
            driver.get_log("performance")
            driver.get(base + page)
            driver.execute_async_script(pagecheck._WAIT_JS)
            time.sleep(0.5)
            reqs = labcheck.network_requests(driver)
            row = {"page": page, "requests": sum(1 for r in reqs if r["url"].startswith(base)),
                   "bytes": sum(r["bytes"] for r in reqs),
                   "html": sum(r["bytes"] for r in reqs if r["url"].split("?")[0].endswith(page))}
            for name, needle in PARTS:
                row[name] = sum(r["bytes"] for r in reqs if needle in r["url"])
            row["other"] = row["bytes"] - row["html"] - sum(row[n] for n, _ in PARTS)
            rows.append(row)
    finally:
        driver.quit()
        server.shutdown()
    return rows


def format_rows(rows: list[dict]) -> str:
    kib = lambda b: f"{b / 1024:8.0f}"  # noqa: E731
    out = [f"{'page':38s} {'requests':>8s} {'total KiB':>9s} {'HTML':>8s} {'plotly':>8s} {'MathJax':>8s} "
           f"{'icons':>8s} {'other':>8s}"]
    for r in rows:
        out.append(f"{r['page']:38s} {r['requests']:8d} {r['bytes'] / 1024:9.0f} {kib(r['html'])} {kib(r['plotly'])} "
                   f"{kib(r['mathjax'])} {kib(r['icons'])} {kib(r['other'])}")
    return "\n".join(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    root = args.pop(0) if args and not args[0].endswith(".html") else ROOT / "_build" / "html"
    print(format_rows(weigh(root, args or None)))
