"""The model organisms, as the book presents them (the "Model organisms" chapter).

Reading the training logs and cards that ship with the bundled models, the
figures built from them (training curves, the induction phase change), the
top-k predictions table for a prompt, and the checkers for the chapter's
exercises. The models, corpus and evaluations themselves live in
:mod:`helpers.zoo`.
"""
from __future__ import annotations

import json

import torch

from .core import copy_losses, per_token_loss, repeated_random_tokens, second_copy_loss
from .exercises import Exercise, Mistake
from .plotting import phase_change_figure  # shared with chapter 5
from .zoo.evals import training_log  # shared with chapter 5

__all__ = ["card", "training_log", "phase_change_step", "steepest_rise", "icl_score_on_text", "icl_score",
           "training_curves", "phase_change_figure",
           "SKILLS", "skill_onsets", "skills_figure",
           "top_predictions", "check_is_single_token", "check_relation_recall", "check_second_copy_loss",
           "check_no_induction_prediction", "check_icl_on_repeats_prediction",
           "check_attn_recall_prediction"]


def card(name: str) -> dict:
    """The machine-readable model card (``card.json``) of a bundled model."""
    from . import zoo

    return json.loads((zoo.model_dir(name) / "card.json").read_text())


def phase_change_step(log: list[dict], key: str = "best_prefix_matching") -> int:
    """The first logged step at which ``key`` reaches half of its final value.

    A simple, stated definition of "the moment the induction head forms": the
    prefix-matching score rises from near zero to its final level over a short
    stretch of training, and this picks the middle of that rise.
    """
    if not log or key not in log[0]:
        raise ValueError(f"the log has no {key!r} entries")
    final = log[-1][key]
    for entry in log:
        if entry[key] >= final / 2:
            return int(entry["step"])
    return int(log[-1]["step"])


def steepest_rise(log: list[dict], key: str = "best_prefix_matching", window: int = 200) -> dict:
    """How sudden a rise is: the largest increase of ``key`` over any stretch of ``window`` steps,
    against the largest change (either sign) over every stretch of the same length that does
    not overlap it.

    Returns ``start`` and ``end`` (steps of the steepest stretch), ``rise`` (its increase),
    ``largest_other`` (the null: the biggest absolute change over any other, non-overlapping
    stretch), ``share`` (``rise`` as a fraction of the whole run's change, first to last
    entry) and ``steady_share`` (``window`` over the run's length: the share a steady rise
    would put in one stretch). The log must be evenly spaced in steps.
    """
    if not log or key not in log[-1] or "step" not in log[-1]:
        raise ValueError(f"the log has no {key!r} entries")
    steps = [int(e["step"]) for e in log]
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    if len(gaps) != 1:
        raise ValueError(f"steepest_rise needs evenly spaced steps; got gaps {sorted(gaps)[:5]}")
    (gap,) = gaps
    if not isinstance(window, int) or window < gap or window % gap:
        raise ValueError(f"window must be a positive multiple of the logging interval {gap}, got {window!r}")
    m = window // gap
    if 3 * m > len(log) - 1:
        raise ValueError(f"window {window} is too long for a log of {steps[-1] - steps[0]} steps: "
                         "there must be room for other stretches of the same length")
    vals = [float(e[key]) for e in log]
    changes = [vals[i + m] - vals[i] for i in range(len(vals) - m)]
    i0 = max(range(len(changes)), key=changes.__getitem__)
    others = [abs(c) for i, c in enumerate(changes) if i + m <= i0 or i >= i0 + m]
    total = vals[-1] - vals[0]
    return {"start": steps[i0], "end": steps[i0 + m], "rise": changes[i0], "largest_other": max(others),
            "share": changes[i0] / total if total else float("nan"),
            "steady_share": window / (steps[-1] - steps[0])}


def icl_score_on_text(model, n_seqs: int = 64, seed: int = 11) -> dict:
    """The in-context-learning score of the training logs, on held-out corpus text only.

    Same definition as the logs (mean loss of the tokens at positions 200-249 minus
    that at positions 25-49, both ranges scaled by n_ctx/256), but on ``n_seqs``
    windows of fresh corpus text (:func:`helpers.zoo.evals.corpus_windows`, never the
    training seed) with no repeated random-token sequences. Returns ``score`` (mean over
    windows), ``se`` (its standard error) and ``per_window``.
    """
    from .zoo.evals import corpus_windows

    return icl_score(model, corpus_windows(model, n_seqs=n_seqs, seq_len=int(model.cfg.n_ctx), seed=seed))


def icl_score(model, tokens) -> dict:
    """The logs' in-context-learning score on ``tokens`` [batch, pos] (BOS first, pos <= n_ctx): mean loss of the
    tokens at positions 200-249 minus that at positions 25-49, both scaled by n_ctx/256.
    Returns ``score``, ``se`` (standard error over rows) and ``per_window``."""
    n_ctx = int(model.cfg.n_ctx)
    if n_ctx < 64:
        raise ValueError(f"the ICL score needs a context of at least 64 tokens, the model has {n_ctx}")
    scale = n_ctx / 256
    early = slice(int(25 * scale), int(50 * scale))  # token positions (0 = BOS), cut as the training logs cut them
    late = slice(int(200 * scale), int(250 * scale))
    if tokens.ndim != 2 or not late.stop <= tokens.shape[1] <= n_ctx or tokens.shape[0] < 2:
        raise ValueError(f"tokens must be [batch >= 2, {late.stop} to {n_ctx} positions], got {tuple(tokens.shape)}")
    n_seqs = tokens.shape[0]
    # in chunks of at most ~1 GB of logits: GPT-2's for 64 x 1024 tokens would take 13 GB
    chunk = max(1, int(2.5e8 // (tokens.shape[1] * int(model.cfg.d_vocab))))
    with torch.no_grad():
        nll = torch.cat([per_token_loss(model(t), t) for t in tokens.split(chunk)])  # [n_seqs, pos - 1]
    shift = lambda s: slice(s.start - 1, s.stop - 1)  # noqa: E731  (the loss of token p sits at index p - 1)
    per_window = nll[:, shift(late)].mean(1) - nll[:, shift(early)].mean(1)
    return {"score": float(per_window.mean()), "se": float(per_window.std() / n_seqs ** 0.5),
            "per_window": per_window}


def training_curves(logs: dict[str, list[dict]], key: str = "corpus_loss"):
    """Loss (or another logged quantity) against tokens seen, one line per model."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, log in logs.items():
        pts = [e for e in log if e.get(key) is not None]
        fig.add_trace(go.Scatter(x=[e["tokens"] for e in pts], y=[e[key] for e in pts], mode="lines+markers",
                                 name=name, hovertemplate="%{x:,} tokens: %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(xaxis_title="tokens seen in training", yaxis_title=key.replace("_", " ") + " (nats/token)",
                      height=400)
    return fig


SKILLS = {  # logged key -> label; the language model's log has all three
    "best_prefix_matching": "best prefix-matching score (induction head)",
    "heldout_fact_recall": "held-out fact recall (top-1)",
    "ioi_top1": "IOI sentences (top-1)",
}


def skill_onsets(log: list[dict], level: float = 0.5) -> dict[str, int]:
    """For each skill in ``SKILLS``, the first logged step at which it reaches ``level``
    (``-1`` if it never does)."""
    if not log or any(k not in log[-1] for k in SKILLS):
        raise ValueError(f"the log lacks some of {sorted(SKILLS)}: it must be the language model's log")
    if not 0 < level <= 1:
        raise ValueError(f"level is a fraction in (0, 1], got {level!r}")
    return {k: next((int(e["step"]) for e in log if e[k] >= level), -1) for k in SKILLS}


def skills_figure(log: list[dict], switch_step: int | None = None):
    """The language model's skills over training on one axis (all are fractions in [0, 1]),
    with the step at which the training mix switched from random tokens to text, if any."""
    import plotly.graph_objects as go

    from .plotting import PALETTE

    onsets = skill_onsets(log)
    fig = go.Figure()
    for (key, label), color in zip(SKILLS.items(), PALETTE):
        fig.add_trace(go.Scatter(x=[e["step"] for e in log], y=[e[key] for e in log], mode="lines+markers",
                                 marker_size=4, line_color=color, name=label,
                                 hovertemplate="step %{x}: %{y:.3f}<extra>" + label + "</extra>"))
    if switch_step is not None:
        fig.add_vline(x=switch_step, line_dash="dash", line_color="#888",
                      annotation_text="less random data", annotation_position="bottom right")
    fig.update_layout(xaxis_title="training step", yaxis_title="score", yaxis_range=[0, 1.02], height=420,
                      legend=dict(orientation="h", y=-0.25),
                      title="First logged step at which each score reaches 0.5:<br>" + ", ".join(
                          f"{short} {onsets[k]:,}" if onsets[k] >= 0 else f"{short} never" for k, short in
                          (("heldout_fact_recall", "facts"), ("best_prefix_matching", "induction"),
                           ("ioi_top1", "IOI"))))
    return fig


def top_predictions(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt`` with their probabilities."""
    import torch

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    with torch.no_grad():
        probs = model(model.to_tokens(prompt))[0, -1].softmax(-1)
    top = probs.topk(k)
    return [(model.to_string(int(i)), float(p)) for p, i in zip(top.values, top.indices)]


# ---------------------------------------------------------------- exercises

def _bundled(name: str):
    """A bundled model, loaded once, for the exercises' own cases."""
    if name not in _BUNDLED:
        from .models import load_model

        _BUNDLED[name] = load_model(name)
    return _BUNDLED[name]


_BUNDLED: dict = {}


def solution_is_single_token(model, word: str) -> bool:
    """Reference: does " word" (with its leading space) encode to exactly one token?"""
    return len(model.tokenizer.encode(" " + word, add_special_tokens=False)) == 1


def _single_token_cases(model=None):
    model = model if model is not None else _bundled("rs-gpt2-4l")
    words = ["Paris", "France", "Mary", "Potter", "antidisestablishmentarianism", "Eiffel", "qzxv"]
    return [((model, w), {}) for w in words]


IS_SINGLE_TOKEN = Exercise(
    "ch0.is-single-token", "is_single_token", solution_is_single_token, _single_token_cases,
    mistakes=[
        Mistake(lambda m, w: len(m.to_tokens(" " + w)[0]) == 1, "you counted the BOS token that model.to_tokens "
                "prepends, so no word is ever one token. Use model.tokenizer.encode(' ' + word, add_special_tokens=False)."),
        Mistake(lambda m, w: len(m.tokenizer.encode(w, add_special_tokens=False)) == 1, "you encoded the word "
                "without its leading space; in running text a word follows a space, and ' Paris' and 'Paris' are "
                "different tokens."),
    ],
)


def check_is_single_token(fn, model) -> bool:
    """Exercise: does " word" encode to exactly one token?"""
    return IS_SINGLE_TOKEN.check(fn, _single_token_cases(model))


def _relation_prompts(relation: str) -> list[tuple[str, str]]:
    from .zoo import world

    wanted = {(world.render(t, f.subject), f.answer)
              for f in world.facts_by_relation(relation) for t in world.TEMPLATES[relation]}
    return [pa for pa in world.train_fact_prompts() if pa in wanted]


def solution_relation_recall(model, relation: str) -> float:
    """Reference: top-1 recall over the training prompts of one relation."""
    from .zoo import evals

    return evals.fact_recall(model, _relation_prompts(relation))["accuracy"]


def _count_right(model, relation: str) -> float:
    from .zoo import evals

    return float(sum(evals.fact_recall(model, _relation_prompts(relation))["correct"]))


def _relation_cases(model=None):
    model = model if model is not None else _bundled("rs-gpt2-4l")
    # rs-attn-2l recalls fewer capitals than rs-gpt2-4l (0.91 against 1.0), so the true answers differ
    # and a constant cannot pass (tests/test_organisms.py checks that they differ)
    return [((model, r), {}) for r in ("country_capital", "landmark_city")] + [
        ((_bundled("rs-attn-2l"), "country_capital"), {})]


RELATION_RECALL = Exercise(
    "ch0.relation-recall", "relation_recall", solution_relation_recall, _relation_cases,
    mistakes=[
        Mistake(_count_right, "that is the number of prompts answered right; recall is the fraction of the "
                "relation's prompts answered right."),
        Mistake(lambda m, r: 1.0 - solution_relation_recall(m, r), "that is the error rate; recall counts the "
                "prompts whose answer is the top prediction."),
        Mistake(lambda m, r: 1.0, "a constant is not a measurement: the recall differs between models and "
                "relations (the attention-only model misses some capitals). Run the model on the prompts."),
    ],
    atol=1e-6,
)


def check_relation_recall(fn, model) -> bool:
    """Exercise: top-1 recall over the training prompts of one relation."""
    return RELATION_RECALL.check(fn, _relation_cases(model))


def solution_second_copy_loss(model, tokens) -> float:
    """Reference: mean loss on the second copy of BOS + R + R, skipping its first token."""
    return second_copy_loss(model, tokens)


def _nll(model, tokens):
    with torch.no_grad():
        return per_token_loss(model(tokens), tokens)


def _second_copy_cases(model=None):
    model = model if model is not None else _bundled("rs-attn-2l")
    return [((model, repeated_random_tokens(model, n_seqs=4, length=n, seed=s)), {}) for n, s in ((20, 5), (10, 6))]


SECOND_COPY_LOSS = Exercise(
    "ch0.second-copy-loss", "second_copy_loss", solution_second_copy_loss, _second_copy_cases,
    mistakes=[
        Mistake(lambda m, t: copy_losses(_nll(m, t))[0], "that is the loss on the FIRST copy. The second copy "
                "starts at position length + 1."),
        Mistake(lambda m, t: float(_nll(m, t)[:, (t.shape[1] - 1) // 2:].mean()), "you included the first token "
                "of the second copy, which no model can predict (nothing says the sequence is about to repeat). Skip it."),
    ],
    atol=1e-4,
)


def check_second_copy_loss(fn, model) -> bool:
    """Exercise: mean loss on the second copy of BOS + R + R (skipping its first token)."""
    return SECOND_COPY_LOSS.check(fn, _second_copy_cases(model))


# ------------------------------------------------------- predict-then-measure

def solution_no_induction_second_copy() -> float:
    """Reference: the second-copy loss of a model with no induction head is chance, ln(number of
    non-special tokens): the tokens are uniform, and nothing carries the first copy forward."""
    import math

    from .zoo import load_tokenizer

    tok = load_tokenizer()
    return math.log(len(tok) - len(set(tok.all_special_ids)))


NO_INDUCTION_SECOND_COPY = Exercise("ch0.predict-no-induction", "predicted_second_copy", solution_no_induction_second_copy,
                                     atol=0.3, rtol=0.0)
check_no_induction_prediction = NO_INDUCTION_SECOND_COPY.check_value


def solution_icl_on_repeats() -> float:
    """Reference: rs-attn-2l's ICL score (the logs' definition) on repeated random tokens only."""
    model = _bundled("rs-attn-2l")
    n_ctx = int(model.cfg.n_ctx)
    tokens = repeated_random_tokens(model, n_seqs=16, length=(n_ctx - 1) // 2, seed=4)
    return icl_score(model, tokens)["score"]


ICL_ON_REPEATS = Exercise("ch0.predict-icl-repeats", "predicted_icl_on_repeats", solution_icl_on_repeats,
                           atol=0.5, rtol=0.0)
check_icl_on_repeats_prediction = ICL_ON_REPEATS.check_value


def solution_attn_capital_recall() -> float:
    """Reference: rs-attn-2l's top-1 recall over the training prompts of ``country_capital``."""
    return solution_relation_recall(_bundled("rs-attn-2l"), "country_capital")


ATTN_RECALL = Exercise("ch0.predict-attn-recall", "predicted_attn_recall", solution_attn_capital_recall,
                        atol=0.15, rtol=0.0)
check_attn_recall_prediction = ATTN_RECALL.check_value
