"""Execute each chapter and print its wall-clock time and the kernel's peak memory.

    .venv/bin/python benchmarks/chapters.py            # every chapter
    .venv/bin/python benchmarks/chapters.py chapters/01_residual_stream.ipynb

Each chapter runs in a fresh kernel, in a subprocess, so the peak resident
memory reported is that chapter's alone. Budgets (issue targets) are printed
beside the measurements; the benchmark reports, it does not fail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {"00": 60, "01": 60, "02": 60, "03": 90, "04": 90, "05": 90, "06": 120}

RUNNER = r"""
import json, resource, sys, time
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
start = time.perf_counter()
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
wall = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mib": peak_kib / 1024}))
"""


def run(path: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", RUNNER, str(path), str(path.parent)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    print(f"{'chapter':40s} {'wall (s)':>9s} {'budget':>7s} {'peak RSS (MiB)':>15s}")
    total = 0.0
    for path in paths:
        t0 = time.perf_counter()
        r = run(path)
        budget = BUDGET_S.get(path.name[:2], 60)
        if "error" in r:
            print(f"{path.name:40s} FAILED: {r['error']}")
            continue
        total += r["wall_s"]
        flag = "" if r["wall_s"] <= budget else "  over budget"
        print(f"{path.name:40s} {r['wall_s']:9.1f} {budget:7d} {r['peak_mib']:15.0f}{flag}")
    print(f"{'total':40s} {total:9.1f}")
    print(f"machine: {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
