"""Activation patching, batched: many interventions in a few forward passes.

Activation patching asks which activation *carries* a behaviour: run the model
on a corrupted input, restore one activation (one hook, optionally one position
or one head) to its value on the clean input, and measure how much of the clean
behaviour comes back. A sweep repeats this for every hook × position (or every
head), which done naively costs one forward pass per cell. Here every patched
run is a block of rows in one big batch: the corrupted input is tiled once per
run, a single hook per hook point writes each run's clean value into its own
rows, and the metric is read off all rows at once. ``patch_naive`` is the
one-pass-per-cell reference the tests and ``benchmarks/patching.py`` compare
against. Chapter 4 (the FFN as memory) and Chapter 5 (composition) use it.

Positions are either shared by the whole batch (a list of ints) or given per
example as a ``[batch, n_pos]`` integer tensor, for right-padded prompts of
different lengths (pad with BOS at the end: the model is causal, so padding
never changes earlier positions).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .core import require_tokens

__all__ = ["patch_sweep", "patch_heads", "patch_naive", "mean_ablation_sweep", "logit_diff_metric", "prob_metric"]

#: Rows (sequences) per forward pass when ``batch_size`` is not given.
DEFAULT_MAX_ROWS = 512


# --------------------------------------------------------------------- metrics
def _as_id_tensor(ids, name: str) -> torch.Tensor:
    if isinstance(ids, int):
        ids = [ids]
    t = torch.as_tensor(ids)
    if t.dtype in (torch.float16, torch.float32, torch.float64, torch.bool) or t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list or tensor of token ids, got {ids!r}.")
    return t.long()


def _read_positions(logits: torch.Tensor, n_rows: int, positions, batch: int) -> torch.Tensor:
    """Logits at the answer position of every row: [n_rows, V]."""
    if positions is None:
        return logits[:, -1]
    pos = positions.to(logits.device).repeat(n_rows // batch)
    return logits[torch.arange(n_rows, device=logits.device), pos]


def _answer_rows(logits: torch.Tensor, ids: torch.Tensor, positions, batch: int):
    """Validate metric logits; return (logits at the answer position [n, V], row index, ids repeated [n])."""
    if logits.ndim != 3 or logits.shape[0] % batch:
        raise ValueError(f"metric expects logits [k*{batch}, pos, vocab], got {tuple(logits.shape)}.")
    n = logits.shape[0]
    rows = torch.arange(n, device=logits.device)
    return _read_positions(logits, n, positions, batch), rows, ids.to(logits.device).repeat(n // batch)


def _metric_positions(positions, n: int):
    pos = None if positions is None else _as_id_tensor(positions, "positions")
    if pos is not None and len(pos) != n:
        raise ValueError(f"positions needs one entry per example ({n}), got {len(pos)}.")
    return pos


def logit_diff_metric(correct_ids, incorrect_ids, positions=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build ``metric(logits) -> logit[correct] - logit[incorrect]`` at the answer position.

    ``correct_ids``/``incorrect_ids``: one token id per example (same length, the
    batch size). ``positions``: per-example answer position (default: the last
    position), for right-padded batches. The metric accepts logits of shape
    ``[k * batch, pos, V]`` (k patched runs of the same batch, stacked run-major)
    and returns ``[k * batch]``.
    """
    c = _as_id_tensor(correct_ids, "correct_ids")
    w = _as_id_tensor(incorrect_ids, "incorrect_ids")
    if c.shape != w.shape:
        raise ValueError(f"correct_ids and incorrect_ids need one id per example each; got {len(c)} and {len(w)}.")
    pos, batch = _metric_positions(positions, len(c)), len(c)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last, rows, cc = _answer_rows(logits, c, pos, batch)
        return last[rows, cc] - last[rows, w.to(logits.device).repeat(logits.shape[0] // batch)]

    return metric


def prob_metric(correct_ids, positions=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build ``metric(logits) -> p(correct)`` at the answer position (same conventions
    as :func:`logit_diff_metric`)."""
    c = _as_id_tensor(correct_ids, "correct_ids")
    pos, batch = _metric_positions(positions, len(c)), len(c)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last, rows, cc = _answer_rows(logits, c, pos, batch)
        return last.softmax(-1)[rows, cc]

    return metric


# ----------------------------------------------------------------- validation
def _check_tokens(model, clean_tokens, corrupted_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    for nm, t in (("clean_tokens", clean_tokens), ("corrupted_tokens", corrupted_tokens)):
        require_tokens(model, t, nm)
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"clean and corrupted tokens must have the same shape so positions line up; got "
                         f"{tuple(clean_tokens.shape)} and {tuple(corrupted_tokens.shape)}. Pick corruptions "
                         "with the same token count, or right-pad both with BOS.")
    dev = model.cfg.device
    return clean_tokens.to(dev), corrupted_tokens.to(dev)


def _check_hooks(model, hook_names) -> list[str]:
    if isinstance(hook_names, str):
        raise TypeError(f"hook_names must be a list of hook names, got the single string {hook_names!r}; wrap it in [].")
    names = list(hook_names)
    if not names:
        raise ValueError("hook_names is empty: give at least one hook, e.g. ['blocks.0.hook_mlp_out'].")
    unknown = [h for h in names if h not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook name(s) {unknown}; valid examples: 'blocks.0.hook_mlp_out', "
                         "'blocks.0.hook_attn_out', 'blocks.0.hook_resid_pre', 'blocks.0.attn.hook_z'.")
    return names


def _check_positions(positions, batch: int, n_pos: int):
    """None, or a [batch, n_cols] long tensor of absolute positions (negative ones wrapped)."""
    if positions is None:
        return None
    if isinstance(positions, int):
        raise TypeError("positions must be a list of ints (or a [batch, n_pos] tensor), not a single int; wrap it in [].")
    p = torch.as_tensor(positions)
    if p.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"positions must be integers, got dtype {p.dtype}.")
    p = p.long()
    if p.ndim == 1:
        p = p[None].expand(batch, -1)
    elif p.ndim != 2 or p.shape[0] != batch:
        raise ValueError(f"positions must be a list of ints or a [batch={batch}, n_pos] tensor, got shape {tuple(p.shape)}.")
    if p.shape[1] == 0:
        raise ValueError("positions is empty.")
    if (p >= n_pos).any() or (p < -n_pos).any():
        raise ValueError(f"positions must lie in [-{n_pos}, {n_pos}) for sequences of {n_pos} tokens, got {p.tolist()}.")
    return p % n_pos


def _check_batch_size(batch_size, rows_per_run: int):
    if batch_size is None:
        return max(1, DEFAULT_MAX_ROWS // rows_per_run)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size (rows per forward pass) must be a positive int, got {batch_size!r}.")
    return max(1, batch_size // rows_per_run)


# ---------------------------------------------------------------- the engine
# A run is (hook name, column in the positions table or None, head or None).
Run = tuple


def _runs(hook_names, n_cols, heads=None) -> list[Run]:
    cols = [None] if n_cols is None else list(range(n_cols))
    out = []
    for h in hook_names:
        for head in ([None] if heads is None else heads):
            out += [(h, c, head) for c in cols]
    return out


def _write(act: torch.Tensor, rows: slice, clean: torch.Tensor, pos_col, head, positions) -> None:
    """act[rows] <- clean at the run's position / head (in place)."""
    b = clean.shape[0]
    idx_b = torch.arange(b, device=act.device)
    if pos_col is None:
        if head is None:
            act[rows] = clean
        else:
            act[rows, :, head] = clean[:, :, head]
        return
    p = positions[:, pos_col].to(act.device)
    target = act[rows]  # a view
    if head is None:
        target[idx_b, p] = clean[idx_b, p]
    else:
        target[idx_b, p, head] = clean[idx_b, p, head]


@torch.no_grad()
def _clean_cache(model, clean_tokens, names) -> dict:
    wanted = set(names)
    _, cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n in wanted)
    return {n: cache[n] for n in wanted}


def _score(metric, logits: torch.Tensor, n_rows: int) -> torch.Tensor:
    out = metric(logits)
    if not isinstance(out, torch.Tensor) or out.shape != (n_rows,):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"metric must return a tensor with one value per row ([{n_rows}]), got {got}.")
    return out.float()


@torch.no_grad()
def _batched(model, clean, corrupted, metric, runs: list[Run], positions, runs_per_pass: int,
             cache: dict | None = None) -> torch.Tensor:
    """[n_runs, batch] metric values, one row per patched run (``cache``: the values to write in,
    by hook name, ``[batch, pos, ...]``; default the clean run's)."""
    b = clean.shape[0]
    if cache is None:
        cache = _clean_cache(model, clean, {h for h, _, _ in runs})
    scores = []
    for start in range(0, len(runs), runs_per_pass):
        chunk = runs[start:start + runs_per_pass]
        by_hook: dict[str, list[tuple[int, Run]]] = {}
        for i, run in enumerate(chunk):
            by_hook.setdefault(run[0], []).append((i, run))

        def make_hook(items):
            def hook(act, hook=None):
                for i, (name, col, head) in items:
                    _write(act, slice(i * b, (i + 1) * b), cache[name], col, head, positions)
                return act
            return hook

        tokens = corrupted.repeat(len(chunk), 1)  # run-major: rows i*b..(i+1)*b are run i
        logits = model.run_with_hooks(tokens, fwd_hooks=[(h, make_hook(it)) for h, it in by_hook.items()])
        scores.append(_score(metric, logits, len(chunk) * b).view(len(chunk), b))
    return torch.cat(scores)


@torch.no_grad()
def _naive(model, clean, corrupted, metric, runs: list[Run], positions) -> torch.Tensor:
    b = clean.shape[0]
    cache = _clean_cache(model, clean, {h for h, _, _ in runs})
    scores = []
    for name, col, head in runs:
        def hook(act, hook=None, name=name, col=col, head=head):
            _write(act, slice(0, b), cache[name], col, head, positions)
            return act
        logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])
        scores.append(_score(metric, logits, b))
    return torch.stack(scores)


def _check_reduce(reduce):
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' (average over the batch) or 'none' (one value per example), got {reduce!r}.")


def _shape(flat: torch.Tensor, shape: tuple, reduce: str) -> torch.Tensor:
    """flat [n_runs, batch] -> shape (+ [batch] when reduce='none')."""
    out = flat.mean(1) if reduce == "mean" else flat
    return out.reshape(shape + (() if reduce == "mean" else (flat.shape[1],))).cpu()


def _sweep(model, clean_tokens, corrupted_tokens, metric, hook_names, positions, batch_size, naive, reduce):
    _check_reduce(reduce)
    if not callable(metric):
        raise TypeError(f"metric must be a function of logits [rows, pos, vocab], got {type(metric).__name__}.")
    clean, corrupted = _check_tokens(model, clean_tokens, corrupted_tokens)
    names = _check_hooks(model, hook_names)
    pos = _check_positions(positions, clean.shape[0], clean.shape[1])
    n_cols = None if pos is None else pos.shape[1]
    runs = _runs(names, n_cols)
    if naive:
        flat = _naive(model, clean, corrupted, metric, runs, pos)
    else:
        flat = _batched(model, clean, corrupted, metric, runs, pos, _check_batch_size(batch_size, clean.shape[0]))
    return _shape(flat, (len(names),) if n_cols is None else (len(names), n_cols), reduce)


def patch_sweep(model, clean_tokens, corrupted_tokens, metric, hook_names, positions=None,
                batch_size=None, reduce: str = "mean") -> torch.Tensor:
    """Restore the clean activation at each hook (and each position) into the corrupted run.

    Args:
        model: a TransformerBridge (``helpers.load_model``).
        clean_tokens, corrupted_tokens: token ids ``[batch, pos]`` of the same shape.
        metric: ``metric(logits [n_runs*batch, pos, V]) -> [n_runs*batch]``, e.g.
            :func:`logit_diff_metric`; rows are run-major (run ``i`` owns rows
            ``i*batch .. (i+1)*batch``).
        hook_names: hook points to patch, e.g. ``[f"blocks.{l}.hook_mlp_out" for l in ...]``.
        positions: None (restore the whole activation, every position), a list of
            ints shared by the batch, or a ``[batch, n_pos]`` tensor of per-example
            positions. Positions index dimension 1 of the activation.
        batch_size: most rows (sequences) per forward pass; default 512. Each pass
            holds ``batch_size // batch`` patched runs.
        reduce: "mean" (default) averages over the batch; "none" keeps one value
            per example in a trailing ``batch`` dimension.

    Returns:
        ``[len(hook_names), n_pos]`` (or ``[len(hook_names)]`` when positions is
        None): the metric averaged over the batch for every patched run.
    """
    return _sweep(model, clean_tokens, corrupted_tokens, metric, hook_names, positions, batch_size,
                  naive=False, reduce=reduce)


def patch_naive(model, clean_tokens, corrupted_tokens, metric, hook_names, positions=None,
                batch_size=None, reduce: str = "mean") -> torch.Tensor:
    """Exactly :func:`patch_sweep`, one forward pass per patched run (the reference
    and the benchmark baseline; ``batch_size`` is accepted and ignored)."""
    if batch_size is not None:
        _check_batch_size(batch_size, 1)
    return _sweep(model, clean_tokens, corrupted_tokens, metric, hook_names, positions, batch_size,
                  naive=True, reduce=reduce)


def patch_heads(model, clean_tokens, corrupted_tokens, metric, layers=None, positions=None,
                batch_size=None, naive: bool = False, reduce: str = "mean") -> torch.Tensor:
    """Patch each attention head's output (``blocks.{l}.attn.hook_z``) from clean into corrupted.

    Same arguments as :func:`patch_sweep`; ``layers`` picks the layers (default:
    all). Returns ``[len(layers), n_heads]``, or ``[len(layers), n_heads, n_pos]``
    when positions are given (plus a trailing batch dimension if ``reduce="none"``).
    ``naive=True`` runs one forward pass per head.
    """
    _check_reduce(reduce)
    if not callable(metric):
        raise TypeError(f"metric must be a function of logits [rows, pos, vocab], got {type(metric).__name__}.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if layers is None:
        layers = list(range(n_layers))
    if isinstance(layers, int):
        raise TypeError("layers must be a list of layer indices; wrap a single layer in [].")
    layers = list(layers)
    bad = [l for l in layers if not isinstance(l, int) or not 0 <= l < n_layers]
    if bad or not layers:
        raise ValueError(f"layers must be a non-empty list of ints in 0..{n_layers - 1}, got {layers}.")
    clean, corrupted = _check_tokens(model, clean_tokens, corrupted_tokens)
    pos = _check_positions(positions, clean.shape[0], clean.shape[1])
    n_cols = None if pos is None else pos.shape[1]
    runs = _runs([f"blocks.{l}.attn.hook_z" for l in layers], n_cols, heads=list(range(n_heads)))
    if naive:
        flat = _naive(model, clean, corrupted, metric, runs, pos)
    else:
        flat = _batched(model, clean, corrupted, metric, runs, pos, _check_batch_size(batch_size, clean.shape[0]))
    shape = (len(layers), n_heads) if n_cols is None else (len(layers), n_heads, n_cols)
    return _shape(flat, shape, reduce)


def mean_ablation_sweep(model, tokens, metric, hook_names, positions, batch_size=None,
                        reduce: str = "mean") -> torch.Tensor:
    """The necessity side of patching: in the run on ``tokens`` itself, replace each hook's activation
    at each position column by its mean over the batch at that column, one (hook, column) per run.

    ``positions`` is a list of ints or a ``[batch, n_pos]`` tensor, as for :func:`patch_sweep`
    (column ``c`` of example ``i`` is ablated with the mean of ``act[j, positions[j, c]]`` over the
    batch ``j``). Returns ``[len(hook_names), n_pos]`` (plus a trailing batch dimension if
    ``reduce="none"``). Resample ablation needs no new code: ``patch_sweep(model, corrupted, clean, ...)``
    writes the corrupted run's activation into the clean run.
    """
    _check_reduce(reduce)
    if not callable(metric):
        raise TypeError(f"metric must be a function of logits [rows, pos, vocab], got {type(metric).__name__}.")
    toks, _ = _check_tokens(model, tokens, tokens)
    names = _check_hooks(model, hook_names)
    if positions is None:
        raise ValueError("mean_ablation_sweep needs positions (a list of ints or a [batch, n_pos] tensor): "
                         "the mean over every position of a prompt is not a meaningful replacement.")
    b = toks.shape[0]
    pos = _check_positions(positions, b, toks.shape[1])
    cache = _clean_cache(model, toks, names)
    rows = torch.arange(b)
    per_col = []
    for c in range(pos.shape[1]):
        col = pos[:, c:c + 1]
        p = col[:, 0].to(toks.device)
        means = {n: cache[n][rows.to(toks.device), p].mean(0).expand_as(cache[n]) for n in names}
        per_col.append(_batched(model, toks, toks, metric, _runs(names, 1), col,
                                _check_batch_size(batch_size, b), cache=means))       # [n_names, b]
    flat = torch.stack(per_col, 1).reshape(len(names) * pos.shape[1], b)
    return _shape(flat, (len(names), pos.shape[1]), reduce)
