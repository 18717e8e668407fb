"""Evaluations of the zoo models, shared by the training recipe, the tests and the book.

Every function takes a ``TransformerBridge`` (as returned by
``helpers.zoo.load_bundled``) and plain Python prompts, and prepends the BOS
token exactly as ``bridge.to_tokens`` does, so the numbers here are the ones a
chapter gets.  ``fact_recall`` checks top-1 next-token accuracy (teacher forced
over every answer token), ``ioi_accuracy`` the indirect-object task,
``induction_losses`` the loss on the first and second copy of a repeated
sequence of uniformly random tokens, ``prefix_matching_by_head`` the attention
of every head from a token in the second copy to the token that followed its
earlier occurrence, and ``logit_lens_ranks`` the rank of an answer when the
final norm and unembedding are applied to the residual stream after each layer.
The induction measurements are the ones of :mod:`helpers.core` (chapter 5 uses
the same functions). ``corpus_tokens`` and ``corpus_windows`` tokenise fresh
documents from the corpus generator for the chapters that read a model on text.
"""

from __future__ import annotations

import math

import torch

from ..core import (attention_patterns, copy_losses, model_device, per_token_loss, prefix_matching_scores,
                    repeated_random_tokens, require_int, require_model)
from . import corpus as C

__all__ = [
    "encode", "fact_recall", "ioi_accuracy", "copy_accuracy", "induction_losses",
    "prefix_matching_by_head", "logit_lens_ranks", "corpus_tokens", "corpus_windows", "text_windows", "run_all",
    "training_log",
]


def _bos(bridge) -> int:
    bos = bridge.tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the bridge's tokenizer has no bos_token_id")
    return bos


def encode(bridge, text: str) -> list[int]:
    """Token ids of ``text`` without BOS (the tokenizer adds no prefix space)."""
    return bridge.tokenizer.encode(text, add_special_tokens=False)


def _padded(bridge, seqs: list[list[int]]) -> torch.Tensor:
    """Right-pad id lists with BOS into a [batch, max_len] tensor (causal: padding is harmless)."""
    width = max(map(len, seqs))
    bos = _bos(bridge)
    return torch.tensor([s + [bos] * (width - len(s)) for s in seqs], device=model_device(bridge))


@torch.no_grad()
def fact_recall(bridge, items: list[tuple[str, str]], batch_size: int = 128) -> dict:
    """Top-1 accuracy on (prompt, answer) pairs; the target is " " + answer.

    Teacher forced: the prompt plus all but the last answer token is fed in and an
    item counts as correct only if every answer token is the argmax prediction.
    """
    if not items:
        raise ValueError("fact_recall needs at least one (prompt, answer) pair")
    bos = _bos(bridge)
    correct = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        prompts = [[bos] + encode(bridge, p) for p, _ in chunk]
        answers = [encode(bridge, " " + a) for _, a in chunk]
        seqs = [p + a[:-1] for p, a in zip(prompts, answers)]
        pred = bridge(_padded(bridge, seqs)).argmax(-1)  # [batch, pos]
        for b, (p, a) in enumerate(zip(prompts, answers)):
            got = pred[b, len(p) - 1:len(p) - 1 + len(a)].tolist()
            correct.append(got == a)
    return {"accuracy": sum(correct) / len(correct), "n": len(correct), "correct": correct}


@torch.no_grad()
def ioi_accuracy(bridge, items: list[tuple[str, str, str]], batch_size: int = 128) -> dict:
    """IOI: fraction of (prompt, correct, incorrect) where " correct" is the argmax,
    plus the mean logit difference logit(correct) - logit(incorrect)."""
    if not items:
        raise ValueError("ioi_accuracy needs at least one item")
    bos = _bos(bridge)
    top1, diffs = [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        prompts = [[bos] + encode(bridge, p) for p, _, _ in chunk]
        logits = bridge(_padded(bridge, prompts))  # [batch, pos, vocab]
        for b, (p, (_, c, w)) in enumerate(zip(prompts, chunk)):
            last = logits[b, len(p) - 1]
            (ci,), (wi,) = encode(bridge, " " + c), encode(bridge, " " + w)
            top1.append(int(last.argmax()) == ci)
            diffs.append(float(last[ci] - last[wi]))
    return {"accuracy": sum(top1) / len(top1), "logit_diff": sum(diffs) / len(diffs), "n": len(top1)}


def copy_accuracy(bridge, items: list[tuple[str, str]]) -> dict:
    """Repeated-name copying, e.g. "... Everyone looked up at Harry" -> " Potter"."""
    return fact_recall(bridge, items)


@torch.no_grad()
def induction_losses(bridge, n: int = 16, length: int = 50, seed: int = 0) -> dict:
    """Mean next-token loss (nats) on the first and the second copy of a random sequence.

    The batch is :func:`helpers.core.repeated_random_tokens`; both averages skip
    the first token of each copy (:func:`helpers.core.copy_losses`).  ``chance``
    is ln(number of non-special tokens).
    """
    toks = repeated_random_tokens(bridge, n, length, seed)        # [n, 1+2L]
    first, second = copy_losses(per_token_loss(bridge(toks), toks), length)
    chance = math.log(bridge.cfg.d_vocab - len(set(bridge.tokenizer.all_special_ids)))
    return {"first_copy": first, "second_copy": second, "chance": chance}


def prefix_matching_by_head(bridge, n: int = 16, length: int = 50, seed: int = 0) -> torch.Tensor:
    """[n_layers, n_heads] prefix-matching score of every head on :func:`helpers.core.repeated_random_tokens`
    (:func:`helpers.core.prefix_matching_scores` of the model's attention patterns)."""
    toks = repeated_random_tokens(bridge, n, length, seed)
    return prefix_matching_scores(attention_patterns(bridge, toks), length)


@torch.no_grad()
def logit_lens_ranks(bridge, prompt: str = "The Eiffel Tower is located in", answer: str = "Paris") -> list[int]:
    """Rank (0 = top) of " answer" at the last position after applying the final norm and
    unembedding to ``blocks.0.hook_resid_pre`` (the embedding) and to every
    ``blocks.{l}.hook_resid_post``; the list has n_layers + 1 entries."""
    (ans,) = encode(bridge, " " + answer)
    toks = torch.tensor([[_bos(bridge)] + encode(bridge, prompt)], device=model_device(bridge))
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(bridge.cfg.n_layers)]
    _, cache = bridge.run_with_cache(toks, names_filter=lambda name: name in names)
    ranks = []
    for nm in names:
        logits = bridge.unembed(bridge.ln_final(cache[nm][:, -1:]))[0, -1]  # [vocab]
        ranks.append(int((logits > logits[ans]).sum()))
    return ranks


def corpus_tokens(model, n_docs: int = 120, seed: int = 99, max_len: int | None = None):
    """Fresh documents from the corpus generator, one per row: ``(tokens [n_docs, T], lengths [n_docs])``.

    Each row is BOS + one document (cut at ``max_len``, default the model's
    context), right-padded with BOS; ``lengths`` counts the real tokens.  Seed 0
    generated the training corpus, so it is refused: this is held-out text.
    """
    cfg = require_model(model)
    require_int("n_docs", n_docs)
    if seed == 0:
        raise ValueError("seed 0 generated the training corpus; pick another seed for held-out text.")
    max_len = cfg.n_ctx if max_len is None else require_int("max_len", max_len, 2, cfg.n_ctx)
    bos = _bos(model)
    seqs = [([bos] + encode(model, d))[:max_len] for d in C.generate_corpus(seed, n_docs)]
    width = max(map(len, seqs))
    return torch.tensor([s + [bos] * (width - len(s)) for s in seqs]), torch.tensor([len(s) for s in seqs])


def corpus_windows(model, n_seqs: int = 48, seq_len: int = 64, seed: int = 1) -> torch.Tensor:
    """[n_seqs, seq_len] windows of held-out text with no padding, each starting with BOS.

    The documents of :func:`corpus_tokens` (same generator, same refusal of the
    training seed) are joined into one stream, BOS between documents, and cut
    into windows, so every position is real text.
    """
    cfg = require_model(model)
    require_int("n_seqs", n_seqs, 2)
    require_int("seq_len", seq_len, 2, cfg.n_ctx)
    return text_windows(model.tokenizer, n_seqs, seq_len, seed).to(model_device(model))


def text_windows(tokenizer, n_seqs: int, seq_len: int, seed: int) -> torch.Tensor:
    """The windows of :func:`corpus_windows` from a bare tokenizer (the training loop logs on them
    before any bridge exists): [n_seqs, seq_len] on the CPU, BOS first, held-out text only."""
    if seed == 0:
        raise ValueError("seed 0 generated the training corpus; pick another seed for held-out text.")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no bos_token_id")
    need = n_seqs * (seq_len - 1)
    stream: list[int] = []
    for doc in C.generate_corpus(seed, max(32, need // 20)):
        stream += tokenizer.encode(doc, add_special_tokens=False) + [bos]  # documents end with EOT (= BOS)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise ValueError(f"the corpus sample gave {len(stream)} tokens, fewer than the {need} needed.")
    body = torch.tensor(stream[:need]).reshape(n_seqs, seq_len - 1)
    return torch.cat([torch.full((n_seqs, 1), bos), body], dim=1)


def run_all(bridge, quick: bool = False) -> dict:
    """All quality-bar metrics for one model (``quick``: small subsamples, for smoke tests only)."""
    from . import world

    n, every = (20, 16) if quick else (1000, 1)  # quick: a subsample, for smoke tests
    pairs = fact_recall(bridge, world.heldout_fact_prompts("pairs")[::every])
    temps = fact_recall(bridge, world.heldout_fact_prompts("templates")[::every])
    train = world.train_fact_prompts()[::every]
    pm = prefix_matching_by_head(bridge)
    best = int(pm.argmax())
    return {
        "heldout_fact_recall": (sum(pairs["correct"]) + sum(temps["correct"])) / (pairs["n"] + temps["n"]),
        "heldout_pairs_recall": pairs["accuracy"],
        "heldout_templates_recall": temps["accuracy"],
        "train_fact_recall": fact_recall(bridge, train)["accuracy"],
        "ioi": ioi_accuracy(bridge, C.ioi_prompts(n, seed=101)),
        "name_copy_accuracy": copy_accuracy(bridge, C.copy_prompts(n, seed=102))["accuracy"],
        "induction": induction_losses(bridge),
        "best_prefix_matching": {"score": float(pm.max()), "layer": best // pm.shape[1], "head": best % pm.shape[1]},
        "logit_lens_eiffel_ranks": logit_lens_ranks(bridge),
        "canonical": {p: fact_recall(bridge, [(p, a)])["accuracy"] == 1.0 for p, a in world.CANONICAL_PROMPTS},
    }


def training_log(name: str, full: bool = False):
    """A bundled model's training log: the list of logged steps (``{step, tokens,
    train_loss, corpus_loss, icl_score, best_prefix_matching, ...}``), or with
    ``full=True`` the whole file (``{"log": [...], "icl_definition": ...,
    "prefix_matching_definition": ...}``). Shared by the model-organisms chapter and chapter 5."""
    import json

    from . import model_dir

    path = model_dir(name) / "training_log.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the bundled model {name!r} ships without its training log. "
                                f"Rebuild it with `python -m helpers.zoo.train {name}`.")
    data = json.loads(path.read_text())
    if not data.get("log"):
        raise ValueError(f"{path} holds no log entries.")
    return data if full else data["log"]
