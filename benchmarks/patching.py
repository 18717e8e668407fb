"""Batched activation patching vs one forward pass per patch, on the same inputs.

    .venv/bin/python benchmarks/patching.py [--model rs-gpt2-4l] [--repeats 3] [--threads N]

The task is the causal trace of Chapter 4: every landmark prompt "X is located in"
is corrupted by swapping its landmark for another one of the same token length,
and each layer's attention output and MLP output is restored at every position.
``patch_sweep`` packs all those runs, for all prompts, into a few big forward
passes; the naive loop does what a plain loop over prompts and cells does, one
forward pass per prompt and (hook, position), through ``patch_naive``. The script checks the
two agree, then prints both times and the speed-up (target: at least 5x).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import helpers  # noqa: E402
from helpers import patching as P  # noqa: E402
from helpers.zoo import world as W  # noqa: E402


def landmark_pairs(model, template="{S} is located in"):
    """Clean and corrupted token batches: each landmark swapped for another of equal length."""
    facts = W.facts_by_relation("landmark_city")
    by_len: dict[int, list] = {}
    for f in facts:
        by_len.setdefault(len(model.to_tokens(" " + f.subject, prepend_bos=False)[0]), []).append(f)
    clean, corrupt, good, bad = [], [], [], []
    for group in by_len.values():
        for i, f in enumerate(group):
            other = next((g for g in group[i + 1:] + group[:i] if g.answer != f.answer), None)
            if other is None:
                continue
            clean.append(W.render(template, f.subject))
            corrupt.append(W.render(template, other.subject))
            good.append(model.to_single_token(" " + f.answer))
            bad.append(model.to_single_token(" " + other.answer))
    # group by total token length so every batch has one shape
    return clean, corrupt, good, bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="rs-gpt2-4l")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = helpers.load_model(args.model)
    clean_s, corrupt_s, good, bad = landmark_pairs(model)
    n_tok = [model.to_tokens(s).shape[1] for s in clean_s]
    keep = [i for i, n in enumerate(n_tok) if n == max(set(n_tok), key=n_tok.count)]  # the commonest length
    clean = model.to_tokens([clean_s[i] for i in keep])
    corrupted = model.to_tokens([corrupt_s[i] for i in keep])
    metric = P.logit_diff_metric([good[i] for i in keep], [bad[i] for i in keep])
    hooks = [f"blocks.{l}.{k}" for l in range(model.cfg.n_layers) for k in ("hook_attn_out", "hook_mlp_out")]
    positions = list(range(clean.shape[1]))
    n_runs, n_prompts = len(hooks) * len(positions), clean.shape[0]
    good_b, bad_b = [good[i] for i in keep], [bad[i] for i in keep]

    def naive_loop():  # what a plain loop does: every prompt, every (hook, position), one pass each
        rows = [P.patch_naive(model, clean[i:i + 1], corrupted[i:i + 1],
                              P.logit_diff_metric([good_b[i]], [bad_b[i]]), hooks, positions)
                for i in range(n_prompts)]
        return torch.stack(rows).mean(0)

    def best(fn):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_fast, fast = best(lambda: P.patch_sweep(model, clean, corrupted, metric, hooks, positions))
    t_slow, slow = best(naive_loop)
    t_mid, mid = best(lambda: P.patch_naive(model, clean, corrupted, metric, hooks, positions))
    err = max(float((fast - slow).abs().max()), float((fast - mid).abs().max()))
    print(f"model {args.model}: {n_prompts} prompts x {clean.shape[1]} tokens, {len(hooks)} hooks x "
          f"{len(positions)} positions = {n_runs} cells per prompt; torch threads {torch.get_num_threads()}; "
          f"best of {args.repeats}")
    print(f"batched patch_sweep : {t_fast:8.3f} s  ({-(-n_runs * n_prompts // P.DEFAULT_MAX_ROWS)} forward passes)")
    print(f"naive loop          : {t_slow:8.3f} s  ({n_runs * n_prompts} forward passes, one per prompt and cell)")
    print(f"speed-up            : {t_slow / t_fast:8.1f}x   (target >= 5x); max |difference| {err:.2e}")
    print(f"for reference, one pass per cell with all prompts batched: {t_mid:.3f} s "
          f"({n_runs} passes; batched sweep is {t_mid / t_fast:.1f}x faster)")
    if err > 1e-3:
        print("ERROR: batched and naive results disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
