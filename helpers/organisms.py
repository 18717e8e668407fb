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

__all__ = ["card", "training_log", "phase_change_step", "training_curves", "phase_change_figure",
           "SKILLS", "skill_onsets", "skills_figure",
           "top_predictions", "check_is_single_token", "check_relation_recall", "check_second_copy_loss"]


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


IS_SINGLE_TOKEN = Exercise("ch0.is-single-token", "is_single_token", solution_is_single_token,
                  _single_token_cases, mistakes=[
        Mistake(lambda m, w: len(m.to_tokens(" " + w)[0]) == 1, "you counted the BOS token that model.to_tokens "
                "prepends, so no word is ever one token. Use model.tokenizer.encode(' ' + word, add_special_tokens=False)."),
        Mistake(lambda m, w: len(m.tokenizer.encode(w, add_special_tokens=False)) == 1, "you encoded the word "
                "without its leading space; in running text a word follows a space, and ' Paris' and 'Paris' are "
                "different tokens."),
    ],
    hint="Use model.tokenizer.encode(' ' + word, add_special_tokens=False) and count the ids.",
)


def check_is_single_token(fn, model) -> bool:
    """Exercise: does " word" encode to exactly one token?"""
    return IS_SINGLE_TOKEN.check(fn, _single_token_cases(model))


def _relation_prompts(relation: str) -> list[tuple[str, str]]:
    from .zoo import world

    return [(p, a) for p, a in world.train_fact_prompts()
            if any(p == world.render(t, f.subject) and a == f.answer
                   for f in world.facts_by_relation(relation) for t in world.TEMPLATES[relation])]


def solution_relation_recall(model, relation: str) -> float:
    """Reference: top-1 recall over the training prompts of one relation."""
    from .zoo import evals

    return evals.fact_recall(model, _relation_prompts(relation))["accuracy"]


def _count_right(model, relation: str) -> float:
    from .zoo import evals

    return float(sum(evals.fact_recall(model, _relation_prompts(relation))["correct"]))


def _relation_cases(model=None):
    model = model if model is not None else _bundled("rs-gpt2-4l")
    # the attention-only model knows no facts: its recall differs, so a constant answer cannot pass
    return [((model, r), {}) for r in ("country_capital", "landmark_city")] + [
        ((_bundled("rs-attn-2l"), "country_capital"), {})]


RELATION_RECALL = Exercise("ch0.relation-recall", "relation_recall", solution_relation_recall,
                  _relation_cases, mistakes=[
        Mistake(_count_right, "that is the number of prompts answered right; recall is the fraction of the "
                "relation's prompts answered right."),
        Mistake(lambda m, r: 1.0 - solution_relation_recall(m, r), "that is the error rate; recall counts the "
                "prompts whose answer is the top prediction."),
    ],
    atol=1e-6,
    hint="Use world.train_fact_prompts(), keep the prompts of the relation, "
         "and count a prompt right when ' ' + answer is the top prediction.",
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


SECOND_COPY_LOSS = Exercise("ch0.second-copy-loss", "second_copy_loss", solution_second_copy_loss,
                  _second_copy_cases, mistakes=[
        Mistake(lambda m, t: copy_losses(_nll(m, t))[0], "that is the loss on the FIRST copy. The second copy "
                "starts at position length + 1."),
        Mistake(lambda m, t: float(_nll(m, t)[:, (t.shape[1] - 1) // 2:].mean()), "you included the first token "
                "of the second copy, which no model can predict (nothing says the sequence is about to repeat). Skip it."),
    ],
    atol=1e-4,
    hint="nll = per-token loss; the second copy's tokens 2..n are nll[:, n + 1:] for n = (tokens.shape[1] - 1) // 2.",
)


def check_second_copy_loss(fn, model) -> bool:
    """Exercise: mean loss on the second copy of BOS + R + R (skipping its first token)."""
    return SECOND_COPY_LOSS.check(fn, _second_copy_cases(model))
