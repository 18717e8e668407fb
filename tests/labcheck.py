"""Drive the lab page (lab.md) in headless Chromium, offline, for tests/test_lab.py and benchmarks/lab.py.

:func:`build_lab_book` builds a small book (the landing page and the lab, no chapters to
execute) with the real configuration and extensions; :func:`open_lab` serves it on
127.0.0.1, opens the lab and waits for its first result; :func:`compare` lists where the
page's numbers differ from Python's reference values.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pagecheck

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-3          # the tolerance for the page against Python


def build_lab_book(out: Path) -> Path:
    """Build intro + lab into ``out`` (warnings are errors); returns the HTML folder."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out / "_build" / "html", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in ["_config.yml", "intro.md", "lab.md", *[p.name for p in ROOT.glob("*.bib")]]:
        shutil.copy(ROOT / name, out / name)
    for name in ["_ext", "_static", "_extra"]:
        shutil.rmtree(out / name, ignore_errors=True)
        shutil.copytree(ROOT / name, out / name)
    if not (out / "lab").exists():
        (out / "lab").symlink_to(ROOT / "lab", target_is_directory=True)
    for page in ("intro.md", "lab.md"):  # links to chapters would dangle in this small book
        text = (out / page).read_text(encoding="utf-8")
        (out / page).write_text(re.sub(r"\{doc\}`([^`]*)`", r"`\1`", text), encoding="utf-8")
    (out / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: lab\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RS_BOOK_BUILD="1")
    result = subprocess.run([str(jb), "build", str(out), "-W", "--keep-going"], capture_output=True, text=True,
                            env=env, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError("the lab book did not build:\n" + result.stdout[-4000:] + result.stderr[-4000:])
    return out / "_build" / "html"


def reference_dir(html: Path) -> Path:
    """Python's reference values, written next to the site by lab/export.py."""
    return Path(html).parent / "lab" / "reference"


class Lab:
    """A served site and a Chromium driver; use as a context manager."""

    def __init__(self, html: Path, width: int = 1280, height: int = 900):
        self.html, self.size = Path(html), (width, height)

    def __enter__(self):
        self.server = pagecheck._serve(self.html)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.driver = pagecheck._driver()
        self.driver.set_script_timeout(120)
        self.driver.set_window_size(*self.size)
        return self

    def __exit__(self, *exc):
        self.driver.quit()
        self.server.shutdown()

    def open(self, page: str = "lab.html") -> dict:
        """Load a page; for the lab, wait for its first result. Returns timing and error text."""
        self.driver.get_log("performance")
        self.driver.get(self.base + page)
        if page != "lab.html":
            time.sleep(0.5)
            return {}
        return self.driver.execute_async_script(
            "const done = arguments[0]; const t0 = Date.now();"
            "(function wait() { if (!window.rsLab) { if (Date.now() - t0 > 30000) done({error: 'window.rsLab never appeared'});"
            " else setTimeout(wait, 20); return; }"
            "window.rsLab.ready.then(() => done({at: window.rsLab.firstResultAt,"
            " error: document.getElementById('lab-error').hidden ? null : document.getElementById('lab-error').textContent}))"
            ".catch(e => done({error: String(e)})); })();")

    def call(self, method: str, *args):
        """Await ``window.rsLab[method](...args)`` in the lab page (opened first if another page is shown)."""
        if not self.driver.current_url.split("?")[0].endswith("/lab.html"):
            self.open()
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"window.rsLab.{method}(...arguments[0]).then(done).catch(e => done({{thrown: String(e)}}));", list(args))

    def requests(self) -> list[dict]:
        """Requests since the last :meth:`open`: url and bytes received (uncompressed: the server sends no gzip)."""
        return network_requests(self.driver)

    def click_and_wait(self, element_id: str, timeout_ms: int = 20000) -> None:
        """Click a control and wait until the lab has redrawn (its ``data-updates`` counter moves)."""
        updates = int(self.driver.execute_script("return document.getElementById('rs-lab').dataset.updates"))
        self.driver.find_element("id", element_id).click()
        self.driver.execute_async_script(
            "const done = arguments[2]; const n = arguments[0]; const t = Date.now();"
            "(function wait() { if (+document.getElementById('rs-lab').dataset.updates > n || Date.now() - t > arguments[1])"
            " done(); else setTimeout(wait, 50); })();", updates, timeout_ms)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the browser's processes: a measure of work that,
        unlike wall time, does not grow when other programs share the CPU."""
        tick = os.sysconf("SC_CLK_TCK")
        children: dict[int, list[int]] = {}
        stats = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                children.setdefault(int(fields[1]), []).append(int(d.name))
                stats[int(d.name)] = sum(int(x) for x in fields[11:15])
        total, todo = 0, [self.driver.service.process.pid]
        while todo:
            pid = todo.pop()
            total += stats.get(pid, 0)
            todo += children.get(pid, [])
        return total / tick

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def screenshot(self, path: Path, width: int, height: int, dark: bool = False, full: bool = False) -> Path:
        """The lab at a window size, light or dark; ``full`` makes the window as tall as the page."""
        self.driver.set_window_size(width, height)
        if full:
            time.sleep(0.3)
            tall = self.driver.execute_script("return Math.min(document.documentElement.scrollHeight, 12000)")
            self.driver.set_window_size(width, int(tall) + 100)
        self.driver.execute_script(f"document.documentElement.dataset.theme = '{'dark' if dark else 'light'}';"
                                   "document.documentElement.dataset.mode = arguments[0];",
                                   "dark" if dark else "light")
        time.sleep(0.6)
        self.driver.execute_script("const el = document.getElementById('rs-lab'); el.scrollIntoView();"
                                   "window.scrollBy(0, -70);")
        time.sleep(0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(*self.size)
        return path


def network_requests(driver) -> list[dict]:
    """Every request in the browser's performance log since it was last read: url, bytes received, failed."""
    sent, sizes, failed = {}, {}, []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        p = msg.get("params", {})
        if msg.get("method") == "Network.requestWillBeSent":
            sent[p["requestId"]] = p.get("request", {}).get("url", "")
        elif msg.get("method") == "Network.loadingFinished":
            sizes[p["requestId"]] = int(p.get("encodedDataLength", 0))
        elif msg.get("method") == "Network.loadingFailed" and not p.get("canceled"):
            failed.append(p["requestId"])
    return [{"url": url, "bytes": sizes.get(rid, 0), "failed": rid in failed} for rid, url in sent.items()]


def local_file(html: Path, url: str, base: str) -> Path | None:
    if not url.startswith(base):
        return None
    rel = url[len(base):].split("?")[0].split("#")[0] or "index.html"
    p = Path(html) / rel
    return p if p.is_file() else None


def page_bytes(html: Path, requests: list[dict], base: str) -> dict:
    """Bytes a page loaded: as served (uncompressed) and if every file were gzip-compressed (level 6)."""
    raw = gz = 0
    files = []
    for r in requests:
        f = local_file(html, r["url"], base)
        if f is None:
            continue
        data = f.read_bytes()
        raw += len(data)
        gz += len(gzip.compress(data, compresslevel=6, mtime=0))
        files.append(str(f.relative_to(html)))
    return {"raw": raw, "gzip": gz, "files": files}


def compare(page: dict, ref: dict, tol: float = TOL) -> list[str]:
    """Where the page's values differ from Python's: exact for token ids and ranks, ``tol`` for numbers."""
    bad = []

    def close(name, a, b):
        if a is None or b is None:
            if a is not b:
                bad.append(f"{name}: page {a!r}, Python {b!r}")
            return
        if isinstance(b, list):
            if not isinstance(a, list) or len(a) != len(b):
                bad.append(f"{name}: page has {len(a) if isinstance(a, list) else a!r} entries, Python {len(b)}")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                close(f"{name}[{i}]", x, y)
        elif abs(float(a) - float(b)) > tol:
            bad.append(f"{name}: page {a:.6g}, Python {b:.6g}")

    def same(name, a, b):
        if a != b:
            bad.append(f"{name}: page {a!r}, Python {b!r}")

    same("ids", page["ids"], ref["ids"])
    same("top prediction", page["top_ids"][:1], ref["top_ids"][:1])
    close("top probabilities", page["top_probs"][:5], ref["top_probs"])
    same("logit-lens top tokens", page["lens_top_ids"], ref["lens_top_ids"])
    close("logit-lens top probabilities", page["lens_top_probs"], ref["lens_top_probs"])
    same("logit-lens ranks of the target", page["lens_target_rank"], ref["lens_target_rank"])
    close("logit-lens probabilities of the target", page["lens_target_prob"], ref["lens_target_prob"])
    same("DLA labels", page["dla_labels"], ref["dla_labels"])
    close("DLA bars", page["dla"], ref["dla"])
    close("logit difference", page["logit_diff"], ref["logit_diff"])
    close("previous-token scores", page["prev_token_scores"], ref["prev_token_scores"])
    close("per-token loss", page["token_loss"], ref["token_loss"])
    if "prefix_matching_scores" in ref:
        close("prefix-matching scores", page["induction_scores"], ref["prefix_matching_scores"])
        close("copy losses", page["copy_losses"], ref["copy_losses"])
    return bad
