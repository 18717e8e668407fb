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
from .exercises import CheckFailed, Exercise, Mistake
from .plotting import phase_change_figure  # shared with chapter 5
from .zoo.evals import training_log  # shared with chapter 5

__all__ = ["card", "training_log", "phase_change_step", "rise_time", "steepest_rise", "suddenness_by_window",
           "doc_start_windows", "icl_score_on_text", "icl_score", "unigram_losses",
           "training_curves", "phase_change_figure", "suddenness_figure",
           "SKILLS", "skill_onsets", "skills_figure",
           "top_predictions", "check_is_single_token", "check_relation_recall", "check_second_copy_loss",
           "check_no_induction_prediction", "check_icl_on_spans_prediction", "span_repeat_tokens",
           "RECALL_BANDS", "check_attn_recall_prediction", "check_is_recalled"]


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


def rise_time(log: list[dict], key: str = "best_prefix_matching", lo: float = 0.1, hi: float = 0.9) -> dict:
    """How long a rise takes, with no window to choose: the steps at which ``key`` first reaches
    ``lo`` and ``hi`` of its whole rise (first to last entry), linearly interpolated between
    log entries.

    Returns ``t_lo``, ``t_hi``, ``rise_time`` (``t_hi - t_lo``), ``run`` (last minus first
    step), ``plateau`` (``t_lo`` minus the first step) and ``steady`` (``(hi - lo) * run``: the
    rise time of a steady, linear rise over the whole run, the theory null).
    """
    if not log or key not in log[-1] or "step" not in log[-1]:
        raise ValueError(f"the log has no {key!r} entries")
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"need 0 <= lo < hi <= 1, got lo={lo!r}, hi={hi!r}")
    steps = [float(e["step"]) for e in log]
    vals = [float(e[key]) for e in log]
    total = vals[-1] - vals[0]
    if len(log) < 2 or not total > 0:
        raise ValueError(f"{key!r} does not rise over the log (first {vals[0]:.3g}, last {vals[-1]:.3g})")

    def crossing(frac: float) -> float:
        level = vals[0] + frac * total
        for i in range(1, len(vals)):
            if vals[i] >= level:
                a, b = vals[i - 1], vals[i]
                return steps[i - 1] + (steps[i] - steps[i - 1]) * ((level - a) / (b - a) if b > a else 1.0)
        return steps[-1]

    t_lo, t_hi = crossing(lo), crossing(hi)
    run = steps[-1] - steps[0]
    return {"t_lo": t_lo, "t_hi": t_hi, "rise_time": t_hi - t_lo, "run": run, "plateau": t_lo - steps[0],
            "steady": (hi - lo) * run}


def suddenness_by_window(log: list[dict], key: str = "best_prefix_matching", windows=None) -> list[dict]:
    """:func:`steepest_rise` for every window length in ``windows`` (default: every multiple of
    the logging interval that leaves room for other stretches). Each row: ``window``, ``ratio``
    (steepest rise over the largest other change) and ``share`` (of the whole rise).
    Shows how much the window-based test of suddenness depends on the window."""
    if not log or len(log) < 4:
        raise ValueError("the log needs at least four entries")
    gap = int(log[1]["step"]) - int(log[0]["step"])
    if windows is None:
        windows = [gap * m for m in range(1, (len(log) - 1) // 3 + 1)]
    rows = []
    for w in windows:
        r = steepest_rise(log, key, int(w))
        rows.append({"window": int(w), "ratio": r["rise"] / r["largest_other"] if r["largest_other"] > 0 else float("inf"),
                     "share": r["share"], "start": r["start"], "end": r["end"]})
    return rows


def suddenness_figure(rows: list[dict], bar: float = 3.0, title: str | None = None):
    """The rows of :func:`suddenness_by_window`: the ratio (log scale) and the share against
    the window length, with the ratio's ``bar`` dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .plotting import PALETTE

    if not rows:
        raise ValueError("no rows: run suddenness_by_window first")
    w = [r["window"] for r in rows]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=["ratio", "share of rise"])  # short: a phone gives each panel ~150 px
    fig.add_trace(go.Scatter(x=w, y=[r["ratio"] for r in rows], mode="lines+markers", line_color=PALETTE[0],
                             showlegend=False, hovertemplate="%{x} steps: %{y:.2f}×<extra></extra>"), row=1, col=1)
    fig.add_hline(y=bar, line_dash="dash", line_color="#888", row=1, col=1)
    fig.add_trace(go.Scatter(x=w, y=[r["share"] for r in rows], mode="lines+markers", line_color=PALETTE[1],
                             showlegend=False, hovertemplate="%{x} steps: %{y:.0%}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(type="log", title_text="steepest ÷ largest other", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title_text="window (steps)")
    fig.update_layout(height=340, title=title)
    return fig


def doc_start_windows(model, n_seqs: int = 64, seed: int = 11) -> torch.Tensor:
    """[n_seqs, n_ctx] windows of held-out corpus text cut as the training sampler cuts its text rows:
    the documents are joined into one stream with BOS before each, and every window starts at a
    document's BOS (so position 1 is a document's first token). Seed 0 (the training corpus) is refused.
    :func:`helpers.zoo.evals.corpus_windows` instead cuts the stream anywhere."""
    from .core import model_device, require_int, require_model
    from .zoo import corpus as C

    cfg = require_model(model)
    require_int("n_seqs", n_seqs, 2)
    if seed == 0:
        raise ValueError("seed 0 generated the training corpus; pick another seed for held-out text.")
    tok = model.tokenizer
    bos = tok.bos_token_id
    if bos is None:
        raise ValueError("the model's tokenizer has no bos_token_id")
    n_ctx = int(cfg.n_ctx)
    stream: list[int] = []
    starts: list[int] = []
    n_docs = 4 * n_seqs
    docs = C.generate_corpus(seed, n_docs)
    for doc in docs:  # as the trainer builds its stream: BOS, then the document
        starts.append(len(stream))
        stream += [bos] + tok.encode(doc, add_special_tokens=False)
        if len(starts) >= n_seqs and len(stream) >= starts[n_seqs - 1] + n_ctx:
            break
    usable = [s for s in starts if s + n_ctx <= len(stream)][:n_seqs]
    if len(usable) < n_seqs:
        raise ValueError(f"{n_docs} documents give only {len(usable)} windows of {n_ctx} tokens; ask for fewer.")
    return torch.tensor([stream[s:s + n_ctx] for s in usable]).to(model_device(model))


def icl_score_on_text(model, n_seqs: int = 64, seed: int = 11, cut: str = "doc_start") -> dict:
    """The in-context-learning score of the training logs, on held-out corpus text only.

    Same definition as the logs (mean loss of the tokens at positions 200-249 minus
    that at positions 25-49, both ranges scaled by n_ctx/256), but on ``n_seqs``
    windows of fresh corpus text (never the training seed) with no repeated random-token
    sequences. ``cut="doc_start"``: every window starts at a document, as the training
    rows do (:func:`doc_start_windows`); ``cut="anywhere"``: windows cut the joined stream
    anywhere (:func:`helpers.zoo.evals.corpus_windows`, what a log's ``icl_score_text``
    uses), so the early positions often sit in a document whose beginning is cut off.
    Returns what :func:`icl_score` returns.
    """
    if cut == "doc_start":
        tokens = doc_start_windows(model, n_seqs=n_seqs, seed=seed)
    elif cut == "anywhere":
        from .zoo.evals import corpus_windows

        tokens = corpus_windows(model, n_seqs=n_seqs, seq_len=int(model.cfg.n_ctx), seed=seed)
    else:
        raise ValueError(f"cut must be 'doc_start' or 'anywhere', got {cut!r}")
    return icl_score(model, tokens)


def icl_score(model, tokens) -> dict:
    """The logs' in-context-learning score on ``tokens`` [batch, pos] (BOS first, pos <= n_ctx): mean loss of the
    tokens at positions 200-249 minus that at positions 25-49, both scaled by n_ctx/256.
    Returns ``score``, ``se`` (standard error over rows), ``per_window`` and ``loss`` (the mean
    next-token loss over every position of every row)."""
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
            "per_window": per_window, "loss": float(nll.mean())}


def unigram_losses(model, random_frac: float, n_docs: int = 2000, seed: int = 12) -> dict:
    """What a model that ignores its context can reach: the best unigram (token-frequency) model.

    The text frequencies ``q`` are counted on ``n_docs`` held-out documents joined as the
    trainer joins them (BOS before each); the random-token rows of the training mixture are
    uniform ``u`` over the non-special tokens. Returns ``text`` (the entropy of ``q`` in nats:
    the unigram loss on text, measured on the text it was counted on, so if anything too low)
    and ``mixture``: the loss of the unigram model ``p = f u + (1 - f) q`` of a mixture with a
    share ``f = random_frac`` of random rows, ``f E_u[-ln p] + (1 - f) E_q[-ln p]``."""
    import math

    from .zoo import corpus as C

    if not 0 <= random_frac <= 1:
        raise ValueError(f"random_frac is a fraction in [0, 1], got {random_frac!r}")
    if seed == 0:
        raise ValueError("seed 0 generated the training corpus; pick another seed for held-out text.")
    tok = model.tokenizer
    ids: list[int] = []
    for doc in C.generate_corpus(seed, n_docs):
        ids += [tok.bos_token_id] + tok.encode(doc, add_special_tokens=False)
    d_vocab = int(model.cfg.d_vocab)
    q = torch.bincount(torch.tensor(ids), minlength=d_vocab).double()
    q /= q.sum()
    special = set(tok.all_special_ids)
    u = torch.zeros(d_vocab, dtype=torch.float64)
    u[[i for i in range(min(len(tok), d_vocab)) if i not in special]] = 1.0
    u /= u.sum()
    text = float(-(q[q > 0] * q[q > 0].log()).sum())
    p = random_frac * u + (1 - random_frac) * q
    nz = p > 0
    mixture = float(-(random_frac * u[nz] + (1 - random_frac) * q[nz]).mul(p[nz].log()).sum())
    return {"text": text, "mixture": mixture, "chance": math.log(float((u > 0).sum())), "n_tokens": len(ids)}


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


RECALL_BANDS = ("almost none", "about half", "most but not all", "all")


def solution_attn_recall_band(measured: float) -> str:
    """Reference: the band of RECALL_BANDS that a measured recall falls in (below 0.2: almost none;
    0.2 to 0.7: about half; from 0.7 up to but not including 1: most but not all; 1: all)."""
    m = float(measured)
    if not 0 <= m <= 1:
        raise ValueError(f"a recall is a fraction in [0, 1], got {measured!r}")
    return "almost none" if m < 0.2 else "about half" if m < 0.7 else "all" if m == 1 else "most but not all"


ATTN_RECALL = Exercise(
    "ch0.predict-attn-recall", "predicted_attn_recall", solution_attn_recall_band,
    [((0.9,), {}), ((1.0,), {})],  # measurements the checker is tried on; the chapter passes its own
    mistakes=[
        Mistake(lambda measured: "almost none", "a model without MLPs still has memory: a head at the last position "
                "can attend to the subject token and its OV circuit write the answer (a skip-trigram, Elhage et al.), "
                "a lookup table stored in weights. The direct path alone sees only the last token, so it cannot."),
        Mistake(lambda measured: "about half", "there is no two-way choice here: the model ranks all 2,048 tokens, "
                "and a guess would be right about once in two thousand."),
        Mistake(lambda measured: "all" if measured < 1 else "most but not all",
                "compare with the measurement: the heads' lookup is not perfect here, or perfect where you expected "
                "misses."),
    ],
)


def check_attn_recall_prediction(predicted_band, measured) -> bool:
    """Exercise: a predicted band of rs-attn-2l's capital recall, against the chapter's measurement."""
    from .exercises import CheckFailed

    if predicted_band is not Ellipsis and predicted_band not in RECALL_BANDS:
        raise CheckFailed(f"predicted_attn_recall: choose one of {RECALL_BANDS}, got {predicted_band!r}.")
    return ATTN_RECALL.check_prediction(predicted_band, float(measured))


def solution_icl_on_span_repeats(measured: float) -> float:
    """Reference: the chapter's own measurement of the ICL score on windows of 8-token spans,
    each repeated once right after itself (:func:`span_repeat_tokens`)."""
    return float(measured)


def span_repeat_tokens(model, n_seqs: int = 16, span: int = 8, seed: int = 4) -> torch.Tensor:
    """[n_seqs, n_ctx] windows: BOS, then spans of ``span`` uniformly random non-special tokens,
    each followed at once by its copy (A A B B C C ...), cut at the model's context."""
    from .core import model_device, require_int, require_model

    cfg = require_model(model)
    require_int("n_seqs", n_seqs, 2)
    require_int("span", span, 1)
    n_ctx = int(cfg.n_ctx)
    tok = model.tokenizer
    special = set(tok.all_special_ids)
    ordinary = torch.tensor([i for i in range(int(cfg.d_vocab)) if i not in special])
    g = torch.Generator().manual_seed(seed)
    n_spans = -(-(n_ctx - 1) // (2 * span))
    spans = ordinary[torch.randint(len(ordinary), (n_seqs, n_spans, span), generator=g)]
    body = torch.cat([spans, spans], dim=2).reshape(n_seqs, -1)[:, :n_ctx - 1]  # A A B B ...
    return torch.cat([torch.full((n_seqs, 1), tok.bos_token_id), body], dim=1).to(model_device(model))


ICL_ON_SPAN_REPEATS = Exercise(
    "ch0.predict-icl-spans", "predicted_icl_on_spans", solution_icl_on_span_repeats,
    [((0.7,), {}), ((-1.5,), {})],  # measurements the checker is tried on; the chapter passes its own
    mistakes=[
        Mistake(lambda measured: -7.6, "that holds for one long repeat, where the early positions sit in the first "
                "copy and the late ones in the second. Here both ranges hold first and second copies in about the "
                "same proportion, so copying helps early as much as late."),
        Mistake(lambda measured: -2.75, "that is the logged score, on the training mixture. These windows hold only "
                "repeated spans, and the copies are spread evenly over the window."),
    ],
    atol=1.0, rtol=0.0)  # a reasoned "about zero" passes; the long-repeat and logged values (< -2.7) do not


def check_icl_on_spans_prediction(predicted, measured) -> bool:
    """Exercise: a predicted ICL score on windows of repeated 8-token spans, against the chapter's measurement."""
    return ICL_ON_SPAN_REPEATS.check_prediction(predicted, float(measured))


# ------------------------------------------------------------- design: recalled or copied?

def _top1_right(model, items: list[tuple[str, str]]) -> list[bool]:
    from .zoo import evals

    return [bool(c) for c in evals.fact_recall(model, items)["correct"]] if items else []


def _swapped(prompt: str, fact) -> list[tuple[str, str]]:
    """The prompt with the last occurrence of the fact's subject replaced by the subject of every other
    fact of the same relation that has a different answer, each with that fact's answer."""
    from .zoo import world

    i = prompt.rfind(fact.subject)
    if i < 0:
        raise ValueError(f"the subject {fact.subject!r} does not occur in the prompt {prompt!r}")
    return [(prompt[:i] + g.subject + prompt[i + len(fact.subject):], g.answer)
            for g in world.facts_by_relation(fact.relation) if g.answer != fact.answer]


def _answer_in_prompt(model, prompt: str, answer: str) -> bool:
    ids = model.tokenizer.encode(prompt, add_special_tokens=False)
    return any(t in ids for t in model.tokenizer.encode(" " + answer, add_special_tokens=False))


def solution_is_recalled(model, prompt: str, fact) -> bool:
    """Reference: the answer is recalled from the weights, not copied or guessed, when (a) it is the top
    prediction, (b) its token is not in the prompt, and (c) swapping the subject for another of the
    same relation makes that subject's answer the top prediction for at least half of them."""
    if not _top1_right(model, [(prompt, fact.answer)])[0] or _answer_in_prompt(model, prompt, fact.answer):
        return False
    moved = _top1_right(model, _swapped(prompt, fact))
    return sum(moved) >= len(moved) / 2


def _recalled_cases():
    from .zoo import world

    gpt, attn = _bundled("rs-gpt2-4l"), _bundled("rs-attn-2l")
    fact = {(f.subject, f.relation): f for f in world.FACTS}
    france, spain = fact["France", "country_capital"], fact["Spain", "country_capital"]
    return [((gpt, "The capital of France is", france), {}),                              # recalled
            ((gpt, "The capital of France is Paris. The capital of France is", france), {}),  # may be copied
            ((attn, "The capital of Spain is Madrid. The capital of Spain is", spain), {}),
            ((gpt, "I left France. Germany is a country in", fact["France", "country_continent"]), {}),  # not from
            ((attn, "I left France. Germany is a country in", fact["France", "country_continent"]), {}),  # the subject
            ((attn, "The currency of England is the", fact["England", "country_currency"]), {})]


IS_RECALLED = Exercise(
    "ch0.is-recalled", "is_recalled", solution_is_recalled, _recalled_cases,
    mistakes=[
        Mistake(lambda m, p, f: _top1_right(m, [(p, f.answer)])[0], "a right top prediction is not yet recall: "
                "the answer may sit in the prompt (copied), or come from another word than the subject."),
        Mistake(lambda m, p, f: _top1_right(m, [(p, f.answer)])[0] and sum(_top1_right(m, _swapped(p, f)))
                >= len(_swapped(p, f)) / 2, "the answer's token is in the prompt, so an induction head could "
                "have copied it; swapping the subject does not rule that out."),
        Mistake(lambda m, p, f: _top1_right(m, [(p, f.answer)])[0] and not _answer_in_prompt(m, p, f.answer),
                "the answer was right and not in the prompt, but it does not follow the subject: swap the "
                "subject for another of the same relation and see whether the prediction moves with it."),
    ],
)


def check_is_recalled(fn) -> bool:
    """Design exercise: is the model's answer recalled from its weights, or copied from the prompt?"""
    return IS_RECALLED.check(fn)
