"""The lab page in headless Chromium on this machine: time to the first result, time per
forward pass (32 tokens, every panel recomputed and redrawn), and the bytes the page loads.

    .venv/bin/python benchmarks/lab.py [--site _build/html] [--runs 3]

Without --site it builds a small book (the landing page and the lab) in a temporary folder.
Targets (issue 16): first result <= 3 s, a forward pass with all panels <= 100 ms, the lab
page <= 24 MB loaded and <= 8 MB gzip-compressed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import labcheck  # noqa: E402

PROMPT_32 = ("The Eiffel Tower is located in the city of Paris. The capital of France is Paris, "
             "and the capital of Italy is Rome. When Mary and John went to the store")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, help="a built site with lab.html (default: build a small one)")
    ap.add_argument("--runs", type=int, default=3, help="fresh page loads to time")
    ap.add_argument("--passes", type=int, default=30, help="forward passes to time")
    args = ap.parse_args()
    site = args.site or labcheck.build_lab_book(Path(tempfile.mkdtemp(prefix="rs-lab-bench-")))

    first, sizes, marks, cpu = [], None, [], []
    for _ in range(args.runs):
        with labcheck.Lab(site) as lab:  # a fresh browser: nothing cached
            cpu0 = lab.cpu_seconds()
            opened = lab.open()
            cpu.append(lab.cpu_seconds() - cpu0)
            if opened.get("error"):
                raise SystemExit(f"the lab showed an error: {opened['error']}")
            first.append(opened["at"] / 1000)
            marks.append(lab.driver.execute_script("return window.rsLab.marks"))
            sizes = sizes or labcheck.page_bytes(site, lab.requests(), lab.base)
    with labcheck.Lab(site) as lab:
        lab.open()
        ids = lab.call("encode", [PROMPT_32])[0]
        bos = lab.driver.execute_script("return window.rsLab.state.result.ids[0]")
        ids = ([bos] + ids)[:32]
        if len(ids) != 32:
            raise SystemExit(f"the benchmark prompt has {len(ids)} tokens with BOS, 32 needed")
        lab.call("time", ids, 5)  # warm up
        passes = lab.call("time", ids, args.passes)
        lab.open("intro.html")
        intro = labcheck.page_bytes(site, lab.requests(), lab.base)

    per = statistics.median(p["total"] for p in passes)
    onnx_ms = statistics.median(p["forward"] for p in passes)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"lab page, headless Chromium, this machine ({os.cpu_count()} CPUs, load average {load:.1f}; "
          f"{args.runs} fresh loads, {args.passes} passes)")
    print(f"  first result after opening the page   {statistics.median(first):6.2f} s   "
          f"(runs: {', '.join(f'{t:.2f}' for t in first)}; target <= 3 s)")
    totals = [p["total"] for p in passes]
    print(f"  CPU time Chromium spent until then     {statistics.median(cpu):6.2f} s   (all its processes, user + system)")
    print(f"  forward pass + every panel, 32 tokens {per:6.1f} ms  (min {min(totals):.1f}, max {max(totals):.1f}; "
          f"of which onnxruntime {onnx_ms:.1f} ms; target <= 100 ms)")
    print(f"  bytes loaded by the lab page          {sizes['raw'] / 1e6:6.2f} MB as served, "
          f"{sizes['gzip'] / 1e6:.2f} MB gzip-compressed (targets <= 24 MB, <= 8 MB)")
    print(f"  bytes loaded by the landing page      {intro['raw'] / 1e6:6.2f} MB as served, "
          f"{intro['gzip'] / 1e6:.2f} MB gzip-compressed (no lab files: "
          f"{not any('lab/' in f for f in intro['files'])})")
    stages = ", ".join(f"{k} {statistics.median(m[k] for m in marks) / 1000:.2f} s" for k in marks[0])
    print(f"  first load, median time of each stage since navigation: {stages}")
    heavy = sorted(((f, (site / f).stat().st_size) for f in sizes["files"]), key=lambda x: -x[1])[:5]
    print("  largest files: " + ", ".join(f"{f} {b / 1e6:.2f} MB" for f, b in heavy))


if __name__ == "__main__":
    main()
