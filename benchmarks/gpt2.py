"""Every chapter on the GPT-2-small-shaped stand-in: wall time and peak memory.

    .venv/bin/python benchmarks/gpt2.py                       # every chapter
    .venv/bin/python benchmarks/gpt2.py chapters/05_composition.ipynb --timeout 360

The stand-in (tools/standin.py, size "full") has GPT-2 small's shape — 12 blocks,
12 heads, d_model = 768, context 1024 — and GPT-2's real tokenizer, with random
weights. Each chapter runs in a fresh kernel with ``MODEL_NAME`` pointed at it,
one chapter at a time. The issue's targets on a 2-core CPU are printed beside the
figures: at most 5 minutes and 8 GB per chapter. A chapter is stopped at
``--timeout`` seconds or when its kernel passes ``--memory-cap`` MiB, and the
table says so. The load average is printed with each row, since the figures
mean little on a machine that other work is sharing. This benchmark reports; it
does not fail.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import standin  # noqa: E402

TARGET_S = 300
TARGET_MIB = 8 * 1024


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path)
    parser.add_argument("--size", default="full", choices=sorted(standin.SIZES))
    parser.add_argument("--timeout", type=int, default=360, help="seconds per chapter")
    parser.add_argument("--memory-cap", type=float, default=9 * 1024, help="MiB per chapter")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    chapters = args.chapters or sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    model = standin.build(args.size)
    print(f"stand-in: {model.name} ({standin.SIZES[args.size]}), {os.cpu_count()} CPUs; "
          f"targets {TARGET_S} s and {TARGET_MIB} MiB per chapter", flush=True)
    print(f"{'chapter':34s} {'wall (s)':>9s} {'peak (MiB)':>11s}  {'load before/after':20s} result", flush=True)
    rows = []
    for chapter in chapters:
        before = _load()
        r = standin.run_chapter(chapter, model, timeout_s=args.timeout, memory_cap_mib=args.memory_cap)
        after = _load()
        over = []
        if r.get("wall_s") is not None and r["wall_s"] > TARGET_S:
            over.append("over time target")
        if r.get("peak_mib") is not None and r["peak_mib"] > TARGET_MIB:
            over.append("over memory target")
        if r["ok"]:
            result = "ran to the end"
        elif r["first_error"]:
            e = r["first_error"]
            result = f"stopped at cell {e['cell_index']}: {e['ename']}: {e['evalue'][:120]}"
        else:
            result = f"stopped at cell {r['executed_to']}: {r['error']}"
        if over:
            result += " [" + ", ".join(over) + "]"
        peak = "?" if r.get("peak_mib") is None else f"{r['peak_mib']:.0f}"
        print(f"{r['chapter']:34s} {r.get('wall_s') or 0:9.1f} {peak:>11s}  {before + ' / ' + after:20s} {result}",
              flush=True)
        rows.append(dict(r, load_before=before, load_after=after))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
