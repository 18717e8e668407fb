"""The ground floor: what two or more chapter topics need, defined once.

Every topic module (``helpers.stream``, ``helpers.lens``, ``helpers.composition`` …)
and the zoo's training and evaluation import from here; this module imports
nothing else from ``helpers`` (so the import graph has no cycles).

- input validation: :func:`require_model`, :func:`require_int`, :func:`require_index`,
  :func:`require_cache_key`, :func:`require_tokens`;
- the stream: :func:`stream_states` (the stream at every depth) and
  :func:`decompose_stream` (the writes that add up to it) with :func:`write_labels`;
- ablation hooks: :func:`zero_block_hooks` (whole blocks) and :func:`zero_head_hook`,
  :func:`mean_head_hook` (one head);
- losses: :func:`per_token_loss`, :func:`copy_losses`, :func:`second_copy_loss`;
- induction: :func:`repeated_random_tokens` (BOS + R + R), :func:`attention_patterns`,
  and the pattern scores :func:`previous_token_scores`, :func:`prefix_matching_scores`,
  :func:`duplicate_token_scores` (Olsson et al. 2022, "In-context Learning and
  Induction Heads").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = [
    "require_model", "require_mlp", "n_layers", "require_int", "require_index", "require_cache_key",
    "require_tokens", "model_device",
    "stream_states", "write_labels", "decompose_stream",
    "zero_block_hooks", "zero_head_hook", "mean_head_hook",
    "per_token_loss", "copy_losses", "second_copy_loss",
    "repeated_random_tokens", "repeated_token_batch", "attention_patterns",
    "previous_token_scores", "prefix_matching_scores", "duplicate_token_scores",
    "reinitialize_", "forward_cost", "scaled",
]


# ------------------------------------------------------------------------- validation
def require_model(model):
    """The model's config; TypeError unless ``model`` is a TransformerBridge (has ``cfg.n_layers``)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_layers"):
        raise TypeError(f"expected a TransformerBridge from helpers.load_model, got {type(model).__name__}.")
    return cfg


def require_mlp(model):
    """As :func:`require_model`, and ValueError for an attention-only model."""
    cfg = require_model(model)
    if getattr(cfg, "d_mlp", None) in (None, 0):
        raise ValueError("this model has no MLP blocks (attention-only); use a model such as 'rs-gpt2-4l'.")
    return cfg


def n_layers(model) -> int:
    """Number of blocks of a TransformerBridge."""
    return int(require_model(model).n_layers)


def require_int(name: str, value, minimum: int = 1, maximum: int | None = None, note: str = "") -> int:
    """``value`` as an int, or ValueError naming ``name``, the allowed range and ``note`` (bools are refused)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if ok and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    if maximum is not None:
        kind = f"an int in {minimum}..{maximum}"
    else:
        kind = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int >= {minimum}")
    raise ValueError(f"{name} must be {kind}{f' ({note})' if note else ''}, got {value!r}.")


def require_index(name: str, value, size: int) -> int:
    """An index into something of ``size`` entries: an int in 0..size-1."""
    return require_int(name, value, 0, size - 1)


def require_cache_key(cache, key: str) -> None:
    if key not in cache:
        raise ValueError(f"The cache has no {key!r}; make it with model.run_with_cache(tokens) on the same model.")


def require_tokens(model, tokens, name: str = "tokens") -> torch.Tensor:
    """Token ids [batch, pos] that fit the model's context and vocabulary."""
    cfg = require_model(model)
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        got = f"dtype {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise TypeError(f"{name} must be an integer tensor of shape [batch, pos] (a torch.Tensor of token ids; "
                        f"make it with model.to_tokens(text)), got {got}.")
    if tokens.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, pos], got {tuple(tokens.shape)}.")
    if tokens.shape[1] > cfg.n_ctx:
        raise ValueError(f"{tokens.shape[1]} positions exceed the model's context of {cfg.n_ctx}.")
    if tokens.numel() and (int(tokens.max()) >= cfg.d_vocab or int(tokens.min()) < 0):
        raise ValueError(f"token ids must lie in 0..{cfg.d_vocab - 1}.")
    return tokens


def model_device(model) -> torch.device:
    """Where the model's weights live (its parameters' device, else ``cfg.device``)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device(getattr(getattr(model, "cfg", None), "device", "cpu"))


# ------------------------------------------------------------------------- work that scales with the model
def forward_cost(model) -> float:
    """Multiply-adds per token of one forward pass, from the config (weights only).

    Each block costs 4·d² for attention (Q, K, V, O) plus 2·d·d_mlp for the MLP;
    the unembedding costs d·d_vocab. Attention scores (which grow with the
    context) are left out: the chapters' sequences are short.
    """
    cfg = require_model(model)
    d = int(cfg.d_model)
    d_mlp = int(getattr(cfg, "d_mlp", 0) or 0)
    if getattr(cfg, "attn_only", False):
        d_mlp = 0
    return float(cfg.n_layers * (4 * d * d + 2 * d * d_mlp) + d * cfg.d_vocab)


# The largest bundled organism, rs-gpt2-4l (4 blocks, d = 128, d_mlp = 512, 2048 tokens):
# the chapters' sample sizes were chosen for it.
_REFERENCE_COST = 4 * (4 * 128 * 128 + 2 * 128 * 512) + 128 * 2048


def scaled(n: int, model, minimum: int = 1, allowance: float = 4.0) -> int:
    """``n`` (a sample size chosen for the bundled organisms), shrunk for a bigger model on a CPU.

    On a CPU, a sweep over ``n`` items on ``model`` costs about
    ``n · forward_cost(model)``. This returns the ``n'`` that keeps that cost
    within ``allowance`` times the cost of ``n`` items on the largest bundled
    organism, and never below ``minimum`` (the fewest items the statistic needs)
    or above ``n``. On a GPU, and on models no bigger than the organisms, ``n``
    comes back unchanged. On GPT-2 small (about 117 times the organism's cost
    per token) on a CPU, ``scaled(160, model, 8)`` is 8.

    Chapters print the size they used, so a reader on GPT-2 sees that the
    figure rests on fewer samples.
    """
    n = require_int("n", n)
    minimum = require_int("minimum", minimum, 1, n, note="the fewest items the statistic needs, at most n")
    if not (isinstance(allowance, (int, float)) and allowance > 0):
        raise ValueError(f"allowance must be a positive number, got {allowance!r}.")
    if model_device(model).type != "cpu":
        return n
    factor = min(1.0, allowance * _REFERENCE_COST / forward_cost(model))
    return max(minimum, min(n, int(round(n * factor))))


# ------------------------------------------------------------------------- the stream
def stream_states(cache, n_layers: int, sublayers: bool = True):
    """The stream at every depth, shape [depth, batch, pos, d_model], with labels.

    With ``sublayers`` (default): h0, then after the attention and after the MLP
    of every block (2L + 1 states, in the order the model computes them).
    Without: h0 … hL at block boundaries (L + 1).
    """
    L = require_int("n_layers", n_layers)
    keys, labels = ["blocks.0.hook_resid_pre"], ["h0 (embed)"]
    for layer in range(L):
        if sublayers:
            keys.append(f"blocks.{layer}.hook_resid_mid")
            labels.append(f"after attn {layer + 1}")
        keys.append(f"blocks.{layer}.hook_resid_post")
        labels.append(f"after MLP {layer + 1}" if sublayers else f"h{layer + 1}")
    for key in keys:
        require_cache_key(cache, key)
    return torch.stack([cache[k] for k in keys]), labels


def write_labels(n_layers: int, n_heads: int, pos_embed: bool = True, mlp: bool = True) -> list[str]:
    """Labels of :func:`decompose_stream`'s parts: embed, pos_embed, then per block
    ``L{l}H{h}`` for every head, ``L{l} attn bias`` and ``L{l} MLP`` (blocks counted from 1)."""
    labels = ["embed"] + (["pos_embed"] if pos_embed else [])
    for l in range(require_int("n_layers", n_layers, 0)):
        labels += [f"L{l + 1}H{h}" for h in range(require_int("n_heads", n_heads))]
        labels.append(f"L{l + 1} attn bias")
        if mlp:
            labels.append(f"L{l + 1} MLP")
    return labels


def decompose_stream(model, cache, layer: int | None = None):
    """Split the stream into the writes that made it: ``(parts [n_parts, batch, pos, d], labels)``.

    ``layer=None`` decomposes the final stream (after the last block); ``layer=l``
    the stream entering block ``l`` (``layer=0``: just the two embeddings).
    Parts: token embedding, positional embedding, then per block every head's
    write ``z_h W_O^h``, the attention output bias ``b_O`` and the MLP's write.
    The parts sum to the stream.
    """
    L = n_layers(model)
    layer = L if layer is None else require_int("layer", layer, 0, L, "or None for the final stream")
    require_cache_key(cache, "hook_embed")
    has_pos = "hook_pos_embed" in cache
    has_mlp = layer == 0 or f"blocks.{layer - 1}.hook_mlp_out" in cache
    parts = [cache["hook_embed"]] + ([cache["hook_pos_embed"]] if has_pos else [])
    for l in range(layer):
        require_cache_key(cache, f"blocks.{l}.attn.hook_z")
        z = cache[f"blocks.{l}.attn.hook_z"]                                # [batch, pos, head, d_head]
        parts.extend(torch.einsum("bphd,hde->hbpe", z, model.W_O[l]))       # each [batch, pos, d]
        parts.append(model.b_O[l].expand_as(parts[0]))
        if has_mlp:
            require_cache_key(cache, f"blocks.{l}.hook_mlp_out")
            parts.append(cache[f"blocks.{l}.hook_mlp_out"])
    return torch.stack(parts), write_labels(layer, int(model.cfg.n_heads), has_pos, has_mlp)


# ------------------------------------------------------------------------- ablation hooks
def zero_block_hooks(layers: Sequence[int], n_layers: int) -> list:
    """Forward hooks that replace the writes (attention and MLP output) of the given blocks by zeros.

    Each listed block still reads the stream but adds nothing: h_l = h_{l-1}.
    Pass them to ``model.run_with_hooks(tokens, fwd_hooks=...)``.
    """
    L = require_int("n_layers", n_layers)
    layers = list(layers)
    bad = [l for l in layers if not isinstance(l, (int, np.integer)) or isinstance(l, bool) or not 0 <= l < L]
    if bad:
        raise ValueError(f"Block indices must be ints in 0..{L - 1}; got {bad}.")

    def zero(activation, hook):
        return activation * 0.0

    return [(f"blocks.{l}.hook_{part}_out", zero) for l in layers for part in ("attn", "mlp")]


def zero_head_hook(head: int):
    """A hook for ``blocks.{l}.attn.hook_z`` that zeroes one head's output."""
    def hook(z, hook=None):
        z[:, :, head] = 0.0
        return z
    return hook


def mean_head_hook(head: int, mean: torch.Tensor):
    """A hook for ``blocks.{l}.attn.hook_z`` that replaces one head's output by ``mean`` [pos, d_head] or [d_head]."""
    def hook(z, hook=None):
        z[:, :, head] = mean.to(z.device, z.dtype)
        return z
    return hook


# ------------------------------------------------------------------------- losses
def per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token loss in nats, [batch, pos - 1]: entry ``i`` is the loss of predicting
    ``tokens[:, i + 1]`` from the logits at position ``i``."""
    if logits.ndim != 3 or tokens.ndim != 2 or logits.shape[:2] != tokens.shape:
        raise ValueError(f"per_token_loss needs logits [batch, pos, vocab] and tokens [batch, pos]; "
                         f"got {tuple(logits.shape)} and {tuple(tokens.shape)}.")
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]


def _copy_length(n_positions: int, length) -> int:
    if length is None:
        if n_positions % 2 != 1:
            raise ValueError(f"{n_positions} positions is not BOS + R + R; pass length.")
        return (n_positions - 1) // 2
    if not isinstance(length, int) or 1 + 2 * length != n_positions:
        raise ValueError(f"{n_positions} positions is not 1 + 2*length for length={length!r}.")
    return length


def copy_losses(nll: torch.Tensor, length: int | None = None) -> tuple[float, float]:
    """Mean loss on the first and on the second copy of BOS + R + R, from :func:`per_token_loss`.

    Each average skips the first token of its copy, which nothing in the
    context predicts: tokens 2 … length of the first copy, tokens length + 2 …
    2·length of the second.
    """
    if nll.ndim != 2:
        raise ValueError(f"expected per-token losses [batch, pos - 1], got shape {tuple(nll.shape)}.")
    length = _copy_length(nll.shape[1] + 1, length)
    return float(nll[:, 1:length].mean()), float(nll[:, length + 1:].mean())


def second_copy_loss(model, tokens: torch.Tensor, length: int | None = None, fwd_hooks=()) -> float:
    """Mean loss (nats) on the second copy of BOS + R + R (its first token skipped), optionally under hooks."""
    length = _copy_length(tokens.shape[1], length)
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)) if fwd_hooks else model(tokens)
    return copy_losses(per_token_loss(logits, tokens), length)[1]


# ------------------------------------------------------------------------- induction
def repeated_random_tokens(model, n_seqs: int = 16, length: int = 50, seed: int = 0) -> torch.Tensor:
    """[n_seqs, 1 + 2·length] token ids: BOS, then ``length`` uniformly random
    non-special tokens, then the same ``length`` tokens again."""
    require_int("n_seqs", n_seqs)
    require_int("length", length)
    cfg = require_model(model)
    n_ctx = getattr(cfg, "n_ctx", None)
    if n_ctx is not None and 1 + 2 * length > n_ctx:
        raise ValueError(f"1 + 2*length = {1 + 2 * length} tokens do not fit the context of {n_ctx}; "
                         f"use length <= {(n_ctx - 1) // 2}.")
    tok = getattr(model, "tokenizer", None)
    if tok is None or tok.bos_token_id is None:
        raise ValueError("the model's tokenizer has no BOS token; repeated_random_tokens needs one.")
    special = set(tok.all_special_ids)
    allowed = torch.tensor([t for t in range(cfg.d_vocab) if t not in special])
    return repeated_token_batch(allowed, tok.bos_token_id, n_seqs, length, seed).to(model_device(model))


def repeated_token_batch(allowed_ids: torch.Tensor, bos_id: int, n_seqs: int, length: int, seed: int = 0) -> torch.Tensor:
    """[n_seqs, 1 + 2·length]: BOS, ``length`` ids drawn uniformly from ``allowed_ids``, the same ids again.

    The draw behind :func:`repeated_random_tokens`, for code that has token ids
    but no model yet (the training recipe).
    """
    require_int("n_seqs", n_seqs)
    require_int("length", length)
    if allowed_ids.ndim != 1 or len(allowed_ids) == 0:
        raise ValueError("allowed_ids must be a non-empty 1-D tensor of token ids.")
    g = torch.Generator().manual_seed(seed)
    rand = allowed_ids[torch.randint(len(allowed_ids), (n_seqs, length), generator=g)]
    bos = torch.full((n_seqs, 1), int(bos_id))
    return torch.cat([bos, rand, rand], dim=1)


def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """Every head's attention pattern on ``tokens``: [n_layers, batch, n_heads, q_pos, k_pos] (on the CPU)."""
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError(f"tokens must be a [batch, pos] tensor, got {getattr(tokens, 'shape', type(tokens))}.")
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers(model))]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[n] for n in names]).cpu()


def _check_patterns(patterns) -> torch.Tensor:
    if isinstance(patterns, (list, tuple)):
        patterns = torch.stack([torch.as_tensor(p) for p in patterns])
    if not isinstance(patterns, torch.Tensor) or patterns.ndim != 5 or patterns.shape[-1] != patterns.shape[-2]:
        raise ValueError("expected attention patterns [n_layers, batch, n_heads, q_pos, k_pos] "
                         "(see attention_patterns); got "
                         f"{tuple(patterns.shape) if isinstance(patterns, torch.Tensor) else type(patterns).__name__}.")
    return patterns


def _second_copy_attention(patterns, length: int, offset: int) -> torch.Tensor:
    """[n_layers, n_heads]: mean attention from each second-copy query q to key q - length + offset."""
    p = _check_patterns(patterns)
    length = _copy_length(p.shape[-1], length)
    q = torch.arange(length + 1, 2 * length + 1)
    return p[..., q, q - length + offset].mean(dim=(1, 3))


def previous_token_scores(patterns) -> torch.Tensor:
    """[n_layers, n_heads]: mean attention from each position t ≥ 1 to position t − 1."""
    p = _check_patterns(patterns)
    t = torch.arange(1, p.shape[-1])
    return p[..., t, t - 1].mean(dim=(1, 3))


def prefix_matching_scores(patterns, length: int) -> torch.Tensor:
    """[n_layers, n_heads]: on BOS + R + R (R of ``length`` tokens), the mean attention
    from each token of the second copy to the token right after that token's
    earlier occurrence (Olsson et al. 2022)."""
    return _second_copy_attention(patterns, length, 1)


def duplicate_token_scores(patterns, length: int) -> torch.Tensor:
    """[n_layers, n_heads]: on BOS + R + R, the mean attention from each token of the
    second copy to that same token's earlier occurrence (position q − length)."""
    return _second_copy_attention(patterns, length, 0)


# ------------------------------------------------------------------------- the random-init null
@torch.no_grad()
def reinitialize_(model, seed: int = 0, std: float = 0.02):
    """Give ``model`` random weights in place, keeping its shape, tokenizer and hooks: every
    matrix N(0, std²) (GPT-2's initialisation scale), every LayerNorm scale 1, every other
    vector 0. Returns the model. Load a second copy first (``helpers.load_model``) if the
    trained one is still needed: this is the random-init null of the claims API."""
    if not std > 0:
        raise ValueError(f"std must be positive, got {std!r}.")
    params = list(model.named_parameters())
    if not params:
        raise ValueError("model has no parameters to re-initialise.")
    g = torch.Generator().manual_seed(seed)
    for name, p in params:
        if p.ndim >= 2:
            p.copy_((torch.randn(p.shape, generator=g) * std).to(p.device, p.dtype))
        elif ("ln" in name or "norm" in name) and name.endswith(("weight", ".w")):
            p.fill_(1.0)
        else:
            p.zero_()
    return model
