"""Reading the residual stream (Chapter 2).

Ways to read a prediction off the stream and to say who wrote it: the direct
path W_E -> LN_f -> W_U computed from the weights alone, path counts under
three stated conventions, block-budget runs (keep the first k
blocks, silence the writes of the rest with hooks), the logit lens after every
sub-layer, a tuned lens (one affine translator per layer, initialised at the
identity and trained by KL divergence to the model's final distribution), and
direct logit attribution of a logit difference to the embeddings, every head,
every attention bias and every MLP, using the final LayerNorm scale of the
actual forward pass. It also holds the chapter's figure builders (static
plotly, no kernel needed), a live ipywidgets explorer, and the exercise
checkers with their reference solutions. Labels count blocks from 1, as the
math does (``"after MLP 2"``, ``"L2H3"`` = head 3 of the second block); hook
names count from 0, as TransformerLens does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import torch

from .core import (decompose_stream, require_cache_key, require_int, require_tokens, stream_states,
                   zero_block_hooks)
from .core import n_layers as _n_layers
from .zoo.evals import corpus_windows
from .exercises import Exercise, Mistake

__all__ = [
    "final_ln",
    "unembed",
    "direct_path_logits",
    "block_budget_hooks",
    "run_with_block_budget",
    "stream_states",
    "logit_lens",
    "token_rank",
    "corpus_windows",
    "tuned_lens_logits",
    "TunedLens",
    "train_tuned_lens",
    "kl_to_final",
    "direct_logit_attribution",
    "fact_set",
    "last_token_cache",
    "fact_cache_names",
    "answer_ranks",
    "fact_dla",
    "kl_by_depth",
    "mean_distribution_kl",
    "init_std",
    "count_paths",
    "PATH_CONVENTIONS",
    "enumerate_paths",
    "random_init_model",
    "top1_agreement",
    "top_tokens",
    "block_budget_figure",
    "block_budget_widget",
    "paths_terms_figure",
    "rank_probability_figure",
    "top_token_heatmap",
    "kl_figure",
    "dla_figure",
    "check_paths_by_convention",
    "check_silenced_rank_prediction",
    "check_lens_depth_prediction",
    "rank_band",
    "first_top1_depth",
    "check_logit_lens_at",
    "check_neurons_for_half",
    "neuron_votes",
    "check_kl_divergence",
]


# ---------------------------------------------------------------- validation

def _token_id(model, token) -> int:
    if isinstance(token, str):
        try:
            return int(model.to_single_token(token))
        except Exception as exc:  # the tokenizer splits it
            raise ValueError(f"{token!r} is not a single token of this model's vocabulary.") from exc
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and 0 <= int(token) < model.cfg.d_vocab:
        return int(token)
    raise ValueError(f"token must be a string that is one token, or an id in 0..{model.cfg.d_vocab - 1}; got {token!r}.")


# ---------------------------------------------------------------- reading the stream

def final_ln(model, x):
    """Apply the model's final LayerNorm to stream vectors ``x`` of shape [..., d_model].

    Each vector is normalised with its own mean and variance. In compatibility
    mode ``ln_final`` only centres and rescales (its weight and bias were folded
    into ``W_U`` and ``b_U``); in raw mode it also applies its weight and bias.
    """
    if x.shape[-1] != model.cfg.d_model:
        raise ValueError(f"the last dimension must be d_model = {model.cfg.d_model}, got {tuple(x.shape)}.")
    shape = x.shape
    return model.ln_final(x.reshape(-1, 1, shape[-1])).reshape(shape)


def unembed(model, x):
    """Logits of stream vectors ``x`` [..., d_model]: LN_f(x) W_U + b_U."""
    return final_ln(model, x) @ model.W_U + model.b_U


def direct_path_logits(model, tokens):
    """Logits of the direct path W_E -> LN_f -> W_U alone, computed from the weights.

    ``LN_f(W_E[t] + W_pos[p]) W_U + b_U`` at every position: what the model
    predicts with every block's write removed, when each position sees only its
    own token and position. Shape [batch, pos, d_vocab].
    """
    tokens = require_tokens(model, tokens)
    with torch.no_grad():
        h0 = model.W_E[tokens] + model.W_pos[: tokens.shape[1]]
        return unembed(model, h0)


def block_budget_hooks(model, keep: int) -> list:
    """Hooks that keep the first ``keep`` blocks and zero the writes of the rest.

    Every later block still reads the stream, but what it adds (attention output
    and MLP output) is replaced by zeros, so the final stream is h_keep.
    """
    n = _n_layers(model)
    keep = require_int("keep", keep, 0, n)  # the number of blocks that still write
    return zero_block_hooks(range(keep, n), n)


def run_with_block_budget(model, tokens, keep: int):
    """Logits [batch, pos, d_vocab] of the model with only its first ``keep`` blocks writing."""
    tokens = require_tokens(model, tokens)
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=block_budget_hooks(model, keep))


def logit_lens(model, cache, sublayers: bool = True):
    """Logit lens: ``LN_f(h) W_U + b_U`` applied to the stream at every depth.

    Returns (logits [depth, batch, pos, d_vocab], depth labels). The last depth
    is the model's own output.
    """
    states, labels = stream_states(cache, _n_layers(model), sublayers)
    with torch.no_grad():
        return unembed(model, states), labels


def token_rank(logits, token: int):
    """Rank of ``token`` along the last axis (0 = the top prediction), ties counted in its favour."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError("logits must be a torch tensor [..., d_vocab].")
    if not 0 <= int(token) < logits.shape[-1]:
        raise ValueError(f"token id {token} is outside the vocabulary of size {logits.shape[-1]}.")
    return (logits > logits[..., int(token), None]).sum(-1)


def top_tokens(model, logits, k: int = 8):
    """The ``k`` most likely next tokens of one logit vector [d_vocab]: (strings, probabilities)."""
    if logits.ndim != 1:
        raise ValueError(f"top_tokens expects one logit vector [d_vocab], got shape {tuple(logits.shape)}.")
    if not isinstance(k, int) or not 1 <= k <= logits.shape[0]:
        raise ValueError(f"k must be an int in 1..{logits.shape[0]}, got {k!r}.")
    probs = logits.float().softmax(-1)
    top = probs.topk(k)
    return [model.tokenizer.decode([int(i)]) for i in top.indices], [float(p) for p in top.values]


# ---------------------------------------------------------------- paths

PATH_CONVENTIONS = {
    "sequential": "per block, skip attention or pass one of the H heads, then skip the MLP or pass it: "
                  "(2(H + 1))^L. The MLP reads the stream after its own block's attention, so a path can "
                  "use one head and the MLP of the same block.",
    "one-per-block": "per block, skip it or pass exactly one of its H heads or its MLP: (H + 2)^L. This "
                     "leaves out the paths that use a head and then the MLP of the same block.",
    "attention-only": "per block, skip it or pass one of its H heads, no MLPs: (H + 1)^L (Elhage et al. 2021, "
                      "attention-only transformers).",
}


def count_paths(n_layers: int, n_heads: int, convention: str = "sequential") -> int:
    """Paths from the embedding to the unembedding through ``n_layers`` blocks of ``n_heads`` heads.

    A path picks, in every block, how it goes through: see :data:`PATH_CONVENTIONS`.
    ``"sequential"`` (the default) is the count for GPT-2's blocks, where the MLP
    reads the stream after that block's attention: (2(H + 1))^L.
    ``"one-per-block"`` counts at most one component per block, (H + 2)^L;
    ``"attention-only"`` is Elhage et al.'s count for models without MLPs, (H + 1)^L.
    Exact integers (Python ints do not overflow).
    """
    for name, value in (("n_layers", n_layers), ("n_heads", n_heads)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    L, H = int(n_layers), int(n_heads)
    if convention == "sequential":
        return (2 * (H + 1)) ** L
    if convention == "one-per-block":
        return (H + 2) ** L
    if convention == "attention-only":
        return (H + 1) ** L
    raise ValueError(f"convention must be one of {sorted(PATH_CONVENTIONS)}, got {convention!r}.")


def enumerate_paths(n_layers: int, n_heads: int, convention: str = "sequential", limit: int = 10**5):
    """List every path as a tuple of per-block choices, when there are at most ``limit`` of them.

    Each block's choice is a string: ``"skip"``, ``"head h"``, ``"MLP"`` or (sequential
    convention) ``"head h + MLP"``. Raises ValueError above ``limit`` instead of
    exhausting memory: GPT-2 small has about 9.5e16 sequential paths.
    """
    import itertools

    total = count_paths(n_layers, n_heads, convention)
    limit = require_int("limit", limit)
    if total > limit:
        raise ValueError(f"{total:,} paths is more than limit = {limit:,}; count them with count_paths instead.")
    heads = [f"head {h}" for h in range(int(n_heads))]
    if convention == "sequential":
        choices = ["skip", *heads, "MLP", *[f"{h} + MLP" for h in heads]]
    elif convention == "one-per-block":
        choices = ["skip", *heads, "MLP"]
    else:
        choices = ["skip", *heads]
    return list(itertools.product(choices, repeat=int(n_layers)))


# ---------------------------------------------------------------- tuned lens

class TunedLens(torch.nn.Module):
    """A tuned lens for the stream states h0 … h_{L-1} (h_L needs no translator).

    Belrose et al. (2023), "Eliciting Latent Predictions from Transformers with
    the Tuned Lens": translator l maps h_l to x A_l + b_l, read with the model's
    own final LayerNorm and unembedding; it starts as the identity (A_l = I,
    b_l = 0), i.e. as the logit lens.
    """

    def __init__(self, n_translators: int, d_model: int):
        super().__init__()
        n, d = require_int("n_translators", n_translators), require_int("d_model", d_model)
        self.A = torch.nn.Parameter(torch.eye(d).expand(n, d, d).clone())  # [layer, d, d]
        self.b = torch.nn.Parameter(torch.zeros(n, d))                      # [layer, d]

    def forward(self, states):                                             # [layer, ..., d]
        shape = states.shape
        flat = states.reshape(shape[0], -1, shape[-1])
        return (torch.bmm(flat, self.A) + self.b[:, None]).reshape(shape)


def _block_states(model, tokens, chunk: int | None = None):
    """Stream states h0 … hL [L + 1, batch, pos, d] of ``tokens``, computed ``chunk`` windows at a time.

    By default a chunk's output logits stay under ~128 MB (32 windows of 128 tokens
    on a 2k vocabulary, 5 on GPT-2's 50k).
    """
    n = _n_layers(model)
    if chunk is None:
        chunk = max(1, min(32, 2**25 // (tokens.shape[1] * int(model.cfg.d_vocab))))
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(n)]
    out = []
    with torch.no_grad():
        for i in range(0, tokens.shape[0], chunk):
            _, cache = model.run_with_cache(tokens[i:i + chunk], names_filter=lambda name: name in names)
            out.append(stream_states(cache, n, sublayers=False)[0])
            del cache
    return torch.cat(out, dim=1)


def kl_to_final(lens_logits, final_logits, skip_first: bool = True):
    """Mean KL(P_final ‖ P_lens) in nats at every depth: [depth].

    ``lens_logits`` [depth, batch, pos, vocab]; ``final_logits`` [batch, pos, vocab].
    The first position (BOS, the same in every sequence) is skipped by default.
    """
    if lens_logits.ndim != 4 or lens_logits.shape[1:] != final_logits.shape:
        raise ValueError(f"need lens logits [depth, batch, pos, vocab] and final logits [batch, pos, vocab]; "
                         f"got {tuple(lens_logits.shape)} and {tuple(final_logits.shape)}.")
    sl = slice(1, None) if skip_first else slice(None)
    with torch.no_grad():
        logp = final_logits[:, sl].float().log_softmax(-1)
        logq = lens_logits[:, :, sl].float().log_softmax(-1)
        return (logp.exp() * (logp - logq)).sum(-1).mean((1, 2))


def _plain_ln(x, eps: float):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def _ln_affine(model):
    """The final LayerNorm's (weight, bias), detached; (None, None) when it has none."""
    ln = getattr(model.ln_final, "original_component", None)
    w, b = getattr(ln, "weight", None), getattr(ln, "bias", None)
    return (None if w is None else w.detach()), (None if b is None else b.detach())


def _lens_logprobs(lens, states, W_U, b_U, w, b, eps):
    """log P_lens [L, N, vocab] of translated states [L, N, d] (final LN in plain form + its affine, if any)."""
    x = _plain_ln(lens(states), eps)
    if w is not None:
        x = x * w + (0 if b is None else b)
    return (x @ W_U + b_U).log_softmax(-1)


def train_tuned_lens(model, tokens, steps: int = 400, lr: float = 3e-3, batch_tokens: int = 512, seed: int = 0,
                     heldout=None, eval_every: int = 25):
    """Fit a :class:`TunedLens` to ``tokens`` [batch, pos] by KL to the final distribution.

    The stream states are computed once (the model stays frozen and gets no
    gradients; only h0 … hL are kept, the final distribution is recomputed from
    hL per step). Each step draws ``batch_tokens`` positions (never BOS) and
    takes an Adam step on the mean over layers of KL(P_final ‖ P_lens).
    With ``heldout`` tokens [batch, pos], the mean KL per layer on them is
    measured before training and every ``eval_every`` steps.

    Returns (lens, history) with history = {"train": mean KL per step,
    "eval_steps": steps at which held-out KL was measured, "heldout": [n_evals, L]
    held-out KL per layer (nats), "tokens_per_step": batch size, "n_train_tokens":
    distinct training positions}.
    """
    tokens = require_tokens(model, tokens)
    for name, value in (("steps", steps), ("batch_tokens", batch_tokens), ("eval_every", eval_every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    n, d = _n_layers(model), int(model.cfg.d_model)
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    w, b = _ln_affine(model)
    eps = float(model.cfg.eps)

    def flat(toks):                                                      # h0..h_{L-1} [L, N, d], log P_final [N, vocab]
        st = _block_states(model, toks)[:, :, 1:].reshape(n + 1, -1, d)   # no BOS
        return st[:-1], st[-1]

    states, final_h = flat(tokens)
    if heldout is not None:
        ho_states, ho_final = flat(require_tokens(model, heldout, "heldout"))

    def heldout_kl(lens):                                                # chunks bound memory on a 50k vocabulary:
        chunk = min(256, _chunk_rows(model, 1, n + 1))                   # [L, chunk, vocab] under ~128 MB
        total = torch.zeros(n)
        with torch.no_grad():
            for i in range(0, ho_states.shape[1], chunk):
                lp = unembed(model, ho_final[i:i + chunk]).float().log_softmax(-1)
                logq = _lens_logprobs(lens, ho_states[:, i:i + chunk], W_U, b_U, w, b, eps)
                total += (lp.exp() * (lp - logq)).sum(-1).sum(-1).cpu()
        return (total / ho_states.shape[1]).tolist()                    # [L]

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lens = TunedLens(n, d).to(states.device)
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    history = {"train": [], "eval_steps": [], "heldout": [], "tokens_per_step": min(batch_tokens, states.shape[1]),
               "n_train_tokens": int(states.shape[1])}
    if heldout is not None:
        history["eval_steps"].append(0)
        history["heldout"].append(heldout_kl(lens))
    with torch.enable_grad():  # the chapter may have switched gradients off globally
        for step in range(1, steps + 1):
            idx = torch.randint(states.shape[1], (history["tokens_per_step"],), generator=gen)
            with torch.no_grad():
                p = unembed(model, final_h[idx]).float().log_softmax(-1)        # [B, vocab]
            logq = _lens_logprobs(lens, states[:, idx], W_U, b_U, w, b, eps)   # [L, B, vocab]
            loss = (p.exp() * (p - logq)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history["train"].append(loss.item())
            if heldout is not None and (step % eval_every == 0 or step == steps):
                history["eval_steps"].append(step)
                history["heldout"].append(heldout_kl(lens))
    lens.eval()
    for param in lens.parameters():
        param.requires_grad_(False)
    return lens, history


def init_std(name: str) -> float:
    """The standard deviation ``name`` was initialised with: a bundled model's card says
    (``config.init_std``); hub models such as GPT-2 use 0.02."""
    import json

    from . import zoo

    if name in zoo.BUNDLED_MODELS:
        card = json.loads((zoo.model_dir(name) / "card.json").read_text())
        return float(card["config"].get("init_std", 0.02))
    return 0.02


def random_init_model(name: str, seed: int = 0, std: float | None = None):
    """A model of the same shape, tokenizer and hooks as ``name``, with random weights: a null for findings.

    Every matrix is drawn from N(0, std²), every LayerNorm scale is 1 and every
    other vector 0. ``std=None`` (the default) uses the scale ``name`` itself was
    initialised with (:func:`init_std`: the card's ``init_std`` for a bundled
    model, 0.02 for GPT-2), so the null is the trained model before training.
    Compatibility-mode folding is not needed: with LayerNorm scales 1 and biases
    0 it would only centre W_U, which leaves every probability unchanged. Loaded
    raw, so W_U stays tied to W_E as in the trained checkpoint (tied parameters
    are drawn once).
    """
    from .core import reinitialize_
    from .models import load_model

    return reinitialize_(load_model(name, compatibility=False), seed=seed,
                         std=init_std(name) if std is None else std)


def top1_agreement(model, cache, sublayers: bool = False, skip_first: bool = True):
    """Fraction of positions where the logit lens's top token at each depth is the model's final top token: [depth].

    Computed a few sequences at a time, so the lens logits [depth, chunk, pos, vocab] stay under
    ~128 MB on any vocabulary (one chunk on the bundled models).
    """
    states, _ = stream_states(cache, _n_layers(model), sublayers)           # [depth, batch, pos, d]
    sl = slice(1, None) if skip_first else slice(None)
    step, tops = _chunk_rows(model, states.shape[2], states.shape[0]), []
    with torch.no_grad():
        for i in range(0, states.shape[1], step):
            tops.append(unembed(model, states[:, i:i + step])[:, :, sl].argmax(-1))   # [depth, chunk, pos]
    top = torch.cat(tops, dim=1)
    return (top == top[-1:]).float().mean((1, 2))


def _ln_is_plain(model) -> bool:
    """Whether ``ln_final`` only centres and rescales (weight 1, bias 0), as in compatibility mode."""
    ln = getattr(model.ln_final, "original_component", None) or getattr(model.ln_final, "_original_component", None)
    w, b = getattr(ln, "weight", None), getattr(ln, "bias", None)
    return (w is None or bool(torch.all(w == 1))) and (b is None or bool(torch.all(b == 0)))


def tuned_lens_logits(model, lens, cache):
    """Tuned-lens logits [L + 1, batch, pos, vocab] at h0 … hL (hL read as is)."""
    n, d = _n_layers(model), int(model.cfg.d_model)
    A = getattr(lens, "A", None)
    if A is None or tuple(A.shape) != (n, d, d):
        raise ValueError(f"lens must be a TunedLens with {n} translators of size {d} (from train_tuned_lens), "
                         f"got {type(lens).__name__} with A of shape {None if A is None else tuple(A.shape)}.")
    states, _ = stream_states(cache, n, sublayers=False)
    with torch.no_grad():
        translated = torch.cat([lens(states[:-1]), states[-1:]])
        return unembed(model, translated)


# ---------------------------------------------------------------- many prompts at once

def fact_set(model, max_prompts: int | None = None) -> dict:
    """The world's training fact prompts whose answer and a rival answer are single tokens of ``model``.

    Every (fact, training template) pair that training text contains (as in
    ``helpers.zoo.world.train_fact_prompts``), with a rival: the answer of the next
    fact of the same relation that has a different answer. ``max_prompts`` keeps an
    evenly spaced subset (to bound the cost on a large model). Returns a dict with
    ``tokens`` [n, T] (BOS first, right-padded), ``last`` [n] (index of each prompt's
    last token), ``answer`` and ``rival`` [n] token ids, ``prompts`` and ``relations``.
    """
    from .zoo import world as W

    tok, held = model.tokenizer, W.heldout_pairs()

    def one_token(word):
        ids = tok.encode(" " + word, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    rows = []
    for rel in W.RELATIONS:
        facts = W.facts_by_relation(rel)
        for i, f in enumerate(facts):
            rival = next((g.answer for g in facts[i + 1:] + facts[:i] if g.answer != f.answer), None)
            a, r = one_token(f.answer), None if rival is None else one_token(rival)
            if a is None or r is None:
                continue
            rows += [(W.render(t, f.subject), a, r, rel) for t in W.TRAIN_TEMPLATES[rel] if t != held[f]]
    if max_prompts is not None:
        max_prompts = require_int("max_prompts", max_prompts)
        rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, min(max_prompts, len(rows)))]
    if not rows:
        raise ValueError("no fact has a single-token answer and rival in this model's vocabulary.")
    ids = [[tok.bos_token_id] + tok.encode(p, add_special_tokens=False) for p, *_ in rows]
    T = max(map(len, ids))
    if T > model.cfg.n_ctx:
        raise ValueError(f"the longest fact prompt has {T} tokens, more than the context ({model.cfg.n_ctx}).")
    tokens = torch.tensor([x + [tok.bos_token_id] * (T - len(x)) for x in ids])   # right padding: causal
    return {"tokens": tokens, "last": torch.tensor([len(x) - 1 for x in ids]),     # attention never reads it
            "answer": torch.tensor([a for _, a, _, _ in rows]), "rival": torch.tensor([r for _, _, r, _ in rows]),
            "prompts": [p for p, *_ in rows], "relations": [rel for *_, rel in rows]}


def _chunk_rows(model, T: int, depth: int = 1) -> int:
    """Rows per chunk that keep a [depth, chunk, T, d_vocab] float32 tensor under ~128 MB."""
    return max(1, 2**25 // (depth * T * int(model.cfg.d_vocab)))


def last_token_cache(model, tokens, last, names: Sequence[str]) -> dict:
    """Run ``tokens`` [n, T] and keep each hook in ``names`` at each row's position ``last`` [n] only.

    Returns {name: activation [n, 1, ...]} (a position axis of length 1, so
    ``stream_states`` and ``decompose_stream`` read it like a cache), plus
    ``"logits"`` [n, d_vocab] at those positions. Runs in chunks whose logits
    stay under ~128 MB, so GPT-2's 50k vocabulary is safe.
    """
    tokens = require_tokens(model, tokens)
    last = torch.as_tensor(last)
    if last.shape != (tokens.shape[0],) or int(last.min()) < 0 or int(last.max()) >= tokens.shape[1]:
        raise ValueError(f"last must hold one position in 0..{tokens.shape[1] - 1} per row, got shape {tuple(last.shape)}.")
    names, out = list(names), {}
    step = _chunk_rows(model, tokens.shape[1])
    with torch.no_grad():
        for i in range(0, tokens.shape[0], step):
            rows, at = torch.arange(min(step, tokens.shape[0] - i)), last[i:i + step]
            logits, cache = model.run_with_cache(tokens[i:i + step], names_filter=lambda n: n in names)
            out.setdefault("logits", []).append(logits[rows, at])
            for n in names:
                require_cache_key(cache, n)
                out.setdefault(n, []).append(cache[n][rows, at][:, None])
            del cache, logits
    return {n: torch.cat(v) for n, v in out.items()}


def fact_cache_names(n_layers: int) -> list[str]:
    """The hooks :func:`fact_dla` and the logit lens at every sub-layer need."""
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale", "blocks.0.hook_resid_pre"]
    for l in range(require_int("n_layers", n_layers)):
        names += [f"blocks.{l}.attn.hook_z", f"blocks.{l}.hook_mlp_out", f"blocks.{l}.hook_resid_mid",
                  f"blocks.{l}.hook_resid_post"]
    return names


def answer_ranks(model, states, answer):
    """Rank (0 = top) of ``answer`` [n] in the logit lens of ``states`` [depth, n, d]: [depth, n], chunked."""
    answer = torch.as_tensor(answer)
    if states.ndim != 3 or states.shape[1] != answer.shape[0]:
        raise ValueError(f"need states [depth, n, d] and one answer per row; got {tuple(states.shape)} and "
                         f"{tuple(answer.shape)}.")
    step, ranks = _chunk_rows(model, 1, states.shape[0]), []
    with torch.no_grad():
        for i in range(0, states.shape[1], step):
            lg = unembed(model, states[:, i:i + step])                       # [depth, chunk, vocab]
            a = answer[i:i + step]
            ranks.append((lg > lg.gather(-1, a[None, :, None].expand(lg.shape[0], -1, 1))).sum(-1))
    return torch.cat(ranks, dim=1)


# ---------------------------------------------------------------- direct logit attribution

def _dla(model, cache, a, b, pos, batch):
    """Direct attributions [rows, parts + 1] to logit(a) - logit(b) (a, b: ids [rows]) at ``pos`` of the
    cached rows ``batch``, with the forward pass's final scale; the last column is the unembedding bias."""
    parts, labels = decompose_stream(model, cache)                          # [parts, batch, pos, d]
    with torch.no_grad():
        stack = parts[:, batch, pos]                                        # [parts, rows, d]
        stack = (stack - stack.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][batch, pos]
        direction = model.W_U[:, a] - model.W_U[:, b]                       # [d, rows]
        contrib = torch.einsum("prd,dr->rp", stack, direction)
        return torch.cat([contrib, (model.b_U[a] - model.b_U[b])[:, None]], dim=1), labels + ["unembed bias"]


def _require_plain_ln(model, cache, n: int, what: str):
    for key in ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"] + [
            f"blocks.{l}.hook_mlp_out" for l in range(n)]:
        require_cache_key(cache, key)
    if not _ln_is_plain(model):
        raise ValueError(f"{what} needs a model in compatibility mode "
                         "(helpers.load_model(name)), where ln_final is a pure centre-and-rescale.")


def direct_logit_attribution(model, cache, answer, other, pos: int = -1, batch: int = 0):
    """Split logit(answer) - logit(other) at one position into the writes that made it.

    Parts: token embedding, positional embedding, then per block every head's
    write ``z_h W_O^h``, the attention output bias ``b_O`` and the MLP's write,
    and finally the unembedding bias. Each write c is read as the final
    LayerNorm reads it in the real forward pass: (c - mean(c)) / s · (W_U[:, a] - W_U[:, b]),
    where s is ``ln_final.hook_scale`` from the cache. The parts sum to the
    actual logit difference. Returns (labels, contributions [n_parts], actual difference).
    """
    n = _n_layers(model)
    a, b = _token_id(model, answer), _token_id(model, other)
    require_cache_key(cache, f"blocks.{n - 1}.hook_resid_post")
    _require_plain_ln(model, cache, n, "direct_logit_attribution")
    n_batch, T = cache["hook_embed"].shape[:2]
    if not isinstance(batch, int) or not 0 <= batch < n_batch:
        raise ValueError(f"batch must index one of the {n_batch} prompts in the cache, got {batch!r}.")
    if not isinstance(pos, int) or not -T <= pos < T:
        raise ValueError(f"pos must index one of the {T} positions, got {pos}.")
    contrib, labels = _dla(model, cache, torch.tensor([a]), torch.tensor([b]), pos, torch.tensor([batch]))
    with torch.no_grad():
        final = unembed(model, cache[f"blocks.{n - 1}.hook_resid_post"][batch, pos])
    return labels, contrib[0], float(final[a] - final[b])


def fact_dla(model, facts: dict, fcache: dict):
    """Direct logit attribution on every prompt of a :func:`fact_set`, from its :func:`last_token_cache`.

    Returns (labels, contributions [n, n_parts], actual logit(answer) - logit(rival) [n]).
    The contributions of each row sum to its actual difference.
    """
    _require_plain_ln(model, fcache, _n_layers(model), "fact_dla")
    a, b = facts["answer"], facts["rival"]
    rows = torch.arange(a.shape[0])
    contrib, labels = _dla(model, fcache, a, b, 0, rows)
    return labels, contrib, fcache["logits"][rows, a] - fcache["logits"][rows, b]


def kl_by_depth(model, cache, tuned=None):
    """KL(P_final ‖ P_lens) at h0 … hL per window: [L + 1, batch], in nats, BOS skipped.

    The logit lens, or with ``tuned`` (a :class:`TunedLens`) the tuned lens. Each
    window's KL is the mean over its positions; computed a few windows at a time
    so that the lens logits stay under ~128 MB on any vocabulary.
    """
    n = _n_layers(model)
    states, _ = stream_states(cache, n, sublayers=False)                  # [L + 1, batch, pos, d]
    step, out = _chunk_rows(model, states.shape[2], n + 2), []
    with torch.no_grad():
        for i in range(0, states.shape[1], step):
            st = states[:, i:i + step, 1:]
            if tuned is not None:
                st = torch.cat([tuned(st[:-1]), st[-1:]])
            logq = unembed(model, st).float().log_softmax(-1)
            logp = logq[-1:]                                              # h_L read as is: the output
            out.append((logp.exp() * (logp - logq)).sum(-1).mean(-1))
    return torch.cat(out, dim=1)


def mean_distribution_kl(model, cache):
    """KL(P_final ‖ p̄) per window [batch] for the best constant guess p̄ = the mean of P_final over
    every position (BOS skipped) of the cached windows: a baseline that ignores the input."""
    final = stream_states(cache, _n_layers(model), sublayers=False)[0][-1, :, 1:]   # [batch, pos, d]
    step = _chunk_rows(model, final.shape[1], 2)
    with torch.no_grad():
        p_bar = sum(unembed(model, final[i:i + step]).float().softmax(-1).sum((0, 1))
                    for i in range(0, final.shape[0], step)) / (final.shape[0] * final.shape[1])
        out = []
        for i in range(0, final.shape[0], step):
            logp = unembed(model, final[i:i + step]).float().log_softmax(-1)
            out.append((logp.exp() * (logp - p_bar.log())).sum(-1).mean(-1))
    return torch.cat(out)


# ---------------------------------------------------------------- figures

def block_budget_figure(model, tokens, k: int = 8, pos: int = -1, active: int | None = None, budget_logits=None):
    """Slider over the number of blocks kept (0 … L): the top-``k`` next tokens at ``pos``.

    Returns (figure, frames) where frames[i] = (token strings, probabilities) for
    i blocks kept. Static plotly, so it works in the book without a kernel.
    ``budget_logits`` [L + 1, batch, pos, vocab], the :func:`run_with_block_budget`
    logits of ``tokens`` for 0 … L blocks kept, saves running the model again.
    """
    from .plotting import slider_bars

    n = _n_layers(model)
    tokens = require_tokens(model, tokens)
    want = (n + 1, *tokens.shape, int(model.cfg.d_vocab))
    if budget_logits is not None and tuple(budget_logits.shape) != want:
        raise ValueError(f"budget_logits must be run_with_block_budget's logits for 0 … {n} blocks kept, "
                         f"shape {want}; got {tuple(budget_logits.shape)}.")
    frames, titles = [], []
    for keep in range(n + 1):
        logits = (run_with_block_budget(model, tokens, keep) if budget_logits is None else budget_logits[keep])[0, pos]
        labels, probs = top_tokens(model, logits, k)
        frames.append(([repr(s) for s in labels], probs))
        what = "the direct path" if keep == 0 else ("the full model" if keep == n else f"{keep} of {n} blocks")
        titles.append(f"{what}: top guess {labels[0]!r} (p = {probs[0]:.2f})")
    fig = slider_bars(frames, [str(i) for i in range(n + 1)], titles[-1], "next token",
                      "probability", slider_prefix="blocks kept k = ", titles=titles,
                      active=n if active is None else active)
    return fig, frames


def block_budget_widget(model, prompt: str, k: int = 8):
    """Live version (needs a kernel): a prompt box and a slider over the blocks kept.

    Each redraw runs the model once, with the chosen budget.
    """
    import ipywidgets as widgets
    import plotly.graph_objects as go
    from IPython.display import clear_output

    from .plotting import PALETTE, show

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string.")
    n = _n_layers(model)
    text = widgets.Text(value=prompt, description="prompt", layout={"width": "60%"})
    keep = widgets.IntSlider(value=n, min=0, max=n, description="blocks kept")
    out = widgets.Output()

    def redraw(*_):
        with out:
            clear_output(wait=True)
            tokens = model.to_tokens(text.value)
            if tokens.shape[1] > model.cfg.n_ctx:
                print(f"The prompt is longer than the model's context ({model.cfg.n_ctx} tokens).")
                return
            words, probs = top_tokens(model, run_with_block_budget(model, tokens, keep.value)[0, -1], k)
            fig = go.Figure(go.Bar(x=[repr(w) for w in words], y=probs, marker_color=PALETTE[0]))
            fig.update_layout(title=f"{keep.value} of {n} blocks kept: top guess {words[0]!r}",
                              xaxis_title="next token", yaxis_title="probability", yaxis_range=[0, 1], height=380)
            show(fig)

    text.observe(redraw, names="value")
    keep.observe(redraw, names="value")
    redraw()
    return widgets.VBox([text, keep, out])


def paths_terms_figure(heads: Sequence[int], max_layers: int = 24):
    """Paths under the three conventions and terms 2 + L(H + 1) against depth L, log axis; a dropdown picks H."""
    import plotly.graph_objects as go

    from .plotting import PALETTE

    heads = [int(h) for h in heads]
    if not heads or any(h < 1 for h in heads) or not isinstance(max_layers, int) or max_layers < 1:
        raise ValueError(f"need positive head counts and max_layers >= 1, got {heads!r}, {max_layers!r}.")
    depth = list(range(1, max_layers + 1))
    names = {"sequential": "paths, sequential (2(H+1))^L", "one-per-block": "paths, one per block (H+2)^L",
             "attention-only": "paths, attention only (H+1)^L"}

    def series(h):
        return [[float(count_paths(l, h, c)) for l in depth] for c in names] + [[2 + l * (h + 1) for l in depth]]

    def title(h):
        return f"H = {h}: paths ×{2 * (h + 1)} per layer, terms +{h + 1}"

    fig = go.Figure([go.Scatter(x=depth, y=y, mode="lines+markers", name=name, marker_color=PALETTE[i],
                                hovertemplate="L = %{x}: %{y:.3g}<extra>" + name + "</extra>")
                     for i, (name, y) in enumerate(zip([*names.values(), "terms 2 + L(H+1)"], series(heads[0])))])
    buttons = [{"label": f"H = {h}", "method": "update", "args": [{"y": series(h)}, {"title.text": title(h)}]}
               for h in heads]
    fig.update_layout(
        title=title(heads[0]), xaxis_title="number of layers L", yaxis_title="count (log scale)", yaxis_type="log",
        height=460, updatemenus=[{"buttons": buttons, "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom",
                                  "active": 0}],
        legend={"x": 0.02, "y": 0.98, "bgcolor": "rgba(0,0,0,0)"}, margin={"t": 110}, meta={"view": f"H = {heads[0]}"},
    )
    return fig


def rank_probability_figure(depth_labels: Sequence[str], ranks, probs, token_str: str, title: str):
    """Rank (log axis, 1 = top) and probability of one token at every depth, two stacked panels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .plotting import PALETTE

    ranks, probs = np.asarray(ranks), np.asarray(probs, dtype=float)
    if not (len(depth_labels) == len(ranks) == len(probs)):
        raise ValueError(f"need one rank and one probability per depth label; got {len(depth_labels)}, "
                         f"{len(ranks)}, {len(probs)}.")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    fig.add_trace(go.Scatter(x=list(depth_labels), y=(ranks + 1).tolist(), mode="lines+markers",
                             name="rank", marker_color=PALETTE[0],
                             hovertemplate="%{x}<br>rank %{y}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=list(depth_labels), y=np.round(probs, 4).tolist(), mode="lines+markers",
                             name="probability", marker_color=PALETTE[1],
                             hovertemplate="%{x}<br>p = %{y:.3f}<extra></extra>"), row=2, col=1)
    fig.update_yaxes(type="log", autorange="reversed", title_text=f"rank of {token_str!r} (1 = top)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text=f"P({token_str!r})", row=2, col=1)
    fig.update_xaxes(title_text="depth read by the logit lens", row=2, col=1)
    fig.update_layout(title=title, height=520, showlegend=False)
    return fig


def top_token_heatmap(top_strings, top_probs, depth_labels: Sequence[str], position_labels: Sequence[str], title: str):
    """Top token (text) and its probability (colour) at every (depth, position)."""
    from .plotting import heatmap

    top_probs = np.asarray(top_probs, dtype=float)
    if top_probs.shape != (len(depth_labels), len(position_labels)):
        raise ValueError(f"top_probs must be [depth, pos] = ({len(depth_labels)}, {len(position_labels)}), "
                         f"got {top_probs.shape}.")
    fig = heatmap(np.round(top_probs, 3), list(position_labels), list(depth_labels), title,
                  "position: input token", "depth", "P(top token)", text=np.asarray(top_strings))
    fig.data[0].hovertemplate = "%{y} · %{x}<br>top: %{text}<br>p = %{z:.3f}<extra></extra>"
    fig.data[0].zmin, fig.data[0].zmax = 0.0, 1.0
    fig.data[0].textfont = {"size": 11}
    fig.update_layout(height=120 + 40 * len(depth_labels))
    return fig


def kl_figure(depth_labels: Sequence[str], curves: dict, title: str):
    """KL divergence to the final distribution by depth, one line per lens."""
    import plotly.graph_objects as go

    from .plotting import PALETTE

    fig = go.Figure()
    for i, (name, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=float)
        if len(values) != len(depth_labels):
            raise ValueError(f"curve {name!r} has {len(values)} values for {len(depth_labels)} depths.")
        fig.add_trace(go.Scatter(x=list(depth_labels), y=np.round(values, 4).tolist(), mode="lines+markers",
                                 name=name, marker_color=PALETTE[i % len(PALETTE)],
                                 hovertemplate=name + "<br>%{x}: %{y:.3f} nats<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="depth of the stream that is read",
                      yaxis_title="KL(final ‖ lens), nats per token", height=420,
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    return fig


def dla_figure(labels: Sequence[str], values, title: str, n_heads: int):
    """Bar chart of each part's share of a logit difference; a button sorts by size."""
    import plotly.graph_objects as go

    from .plotting import PALETTE

    values = np.asarray(values, dtype=float)
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values.")
    colours = [PALETTE[0] if v >= 0 else PALETTE[3] for v in values]
    order = np.argsort(-np.abs(values))
    fig = go.Figure(go.Bar(x=list(labels), y=np.round(values, 4).tolist(), marker_color=colours,
                           hovertemplate="%{x}: %{y:+.3f}<extra></extra>"))
    as_sorted = [{"x": [[labels[i] for i in order]], "y": [np.round(values[order], 4).tolist()],
                  "marker.color": [[colours[i] for i in order]]}]
    as_model = [{"x": [list(labels)], "y": [np.round(values, 4).tolist()], "marker.color": [colours]}]
    fig.update_layout(
        title={"text": title, "y": 0.97, "yanchor": "top"}, xaxis_title="part of the final stream",
        yaxis_title="contribution to the logit difference", height=520, margin={"b": 120, "t": 120},
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0, "y": 1.03, "xanchor": "left", "yanchor": "bottom",
                      "active": 0, "buttons": [{"label": "model order", "method": "restyle", "args": as_model},
                                               {"label": "largest first", "method": "restyle", "args": as_sorted}]}],
        meta={"view": "model order"},
    )
    fig.update_xaxes(tickangle=-60)
    return fig


# ---------------------------------------------------------------- exercises

def _default_run():
    """The chapter's model, and its cache on one prompt, for the exercises' own cases (built once)."""
    global _DEFAULT_RUN
    if _DEFAULT_RUN is None:
        from .models import load_model

        model = load_model("rs-gpt2-4l")
        tokens = model.to_tokens("The Eiffel Tower is located in the city of")
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        _DEFAULT_RUN = model, cache
    return _DEFAULT_RUN


_DEFAULT_RUN = None


def solution_paths_by_convention(n_layers: int, n_heads: int) -> dict:
    """Reference: three path counts the chapter's table does not show (sequential GPT-2 blocks unless named).

    ``"through-an-MLP"``: sequential paths that pass at least one MLP, all sequential paths minus the
    attention-only ones; ``"exactly-two"``: sequential paths through exactly two components (a head
    then the MLP of one block, or one component in each of two blocks); ``"parallel"``: all paths
    through GPT-J-style parallel blocks, where the MLP reads the stream that attention reads.
    """
    L, H = n_layers, n_heads
    return {"through-an-MLP": count_paths(L, H, "sequential") - count_paths(L, H, "attention-only"),
            "exactly-two": L * H + L * (L - 1) // 2 * (H + 1) ** 2,
            "parallel": count_paths(L, H, "one-per-block")}


def _compare_conventions(got, want, what: str) -> None:
    from .exercises import CheckFailed

    if not isinstance(got, dict):
        raise CheckFailed(f"{what}: return a dict with one count per question, keys {sorted(want)}; "
                          f"got {type(got).__name__}.")
    if set(got) != set(want):
        raise CheckFailed(f"{what}: the keys must be exactly {sorted(want)} (got {sorted(map(str, got))}).")
    for key in want:
        if not isinstance(got[key], (int, np.integer)) or got[key] != want[key]:
            raise CheckFailed(f"{what}[{key!r}]: expected {want[key]:,}, got {got[key]!r}.")


def _with(key: str, count):
    """A wrong answer: the reference with one entry replaced by ``count(L, H)``."""
    return lambda L, H: {**solution_paths_by_convention(L, H), key: count(L, H)}


PATHS_BY_CONVENTION = Exercise(
    "ch2.paths-by-convention", "paths_by_convention", solution_paths_by_convention,
    [((4, 4), {}), ((12, 12), {}), ((24, 16), {}), ((2, 3), {}), ((1, 1), {}), ((3, 5), {})],
    mistakes=[
        Mistake(_with("through-an-MLP", lambda L, H: (2 * (H + 1)) ** L - (H + 2) ** L),
                "the paths that avoid every MLP are the attention-only ones, (H + 1)^L; (H + 2)^L also counts "
                "paths that pass an MLP (one per block)."),
        Mistake(_with("through-an-MLP", lambda L, H: (2 * (H + 1)) ** L),
                "that is every sequential path; subtract the (H + 1)^L that never pass an MLP."),
        Mistake(_with("exactly-two", lambda L, H: L * (L - 1) // 2 * (H + 1) ** 2),
                "two components can sit in ONE block: a head and then that block's MLP (H pairs per block, "
                "L·H in all)."),
        Mistake(_with("exactly-two", lambda L, H: L * (H + 1) * (L * (H + 1) - 1) // 2),
                "not every pair of components is a path: two heads of the same block are alternatives, "
                "not a route (a path passes one head per block at most)."),
        Mistake(_with("parallel", lambda L, H: (2 * (H + 1)) ** L),
                "in a parallel block the MLP reads the same stream as attention, not attention's write, so no "
                "path goes through a head and then the MLP of the same block: H + 2 choices, (H + 2)^L."),
        Mistake(_with("parallel", lambda L, H: (H + 1) ** L),
                "a parallel block still has an MLP on the residual stream: skip, one head, OR the MLP, H + 2 "
                "choices; (H + 1)^L is the attention-only count."),
    ],
    compare=_compare_conventions,
)


def check_paths_by_convention(fn) -> bool:
    """Exercise: a dict of three path counts for L blocks of H heads (see solution_paths_by_convention)."""
    return PATHS_BY_CONVENTION.check(fn)


def rank_band(rank: int) -> str:
    """The band a 0-based rank falls in: "top-1", "top-10", "top-100" or "below top-100"."""
    rank = int(rank)
    if rank < 0:
        raise ValueError(f"a rank is >= 0 (0 = top), got {rank}.")
    return "top-1" if rank == 0 else "top-10" if rank < 10 else "top-100" if rank < 100 else "below top-100"


RANK_BANDS = ("top-1", "top-10", "top-100", "below top-100")


def _silenced_rank_case():
    from .core import zero_block_hooks

    model, _ = _default_run()
    tokens = model.to_tokens("The Eiffel Tower is located in")
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=zero_block_hooks([0, 1], _n_layers(model)))
    measured = int(token_rank(logits[0, -1], model.to_single_token(" Paris")))
    return [((measured,), {}), ((0,), {}), ((5,), {}), ((50,), {})]   # the organism, then other outcomes a model could give


def _compare_band(got, want, what: str) -> None:
    from .exercises import CheckFailed

    if got not in RANK_BANDS:
        raise CheckFailed(f"{what}: the prediction must be one of {RANK_BANDS}, got {got!r}.")
    if got != want:
        raise CheckFailed(f"{what}: you predicted {got!r}; the measurement says {want!r}.")


SILENCED_RANK = Exercise(
    "ch2.predict-silenced-rank", "predicted_band", lambda rank: rank_band(rank), _silenced_rank_case,
    mistakes=[
        Mistake(lambda rank: "top-1", "the last blocks do not recall the fact from scratch: they read what the first "
                "blocks wrote. Remove those writes and the later blocks have nothing to complete (where in the "
                "prompt the fact is written, Chapter 4 measures by patching)."),
        Mistake(lambda rank: "top-10", "the answer does not stay among the runners-up: the later blocks can still "
                "attend to the subject's raw embeddings, but not to what blocks 1 and 2 built from them; "
                "measured, that is not enough."),
        Mistake(lambda rank: "below top-100", "the later blocks still do part of the recall on their own here: "
                "the fact survives the loss of the early writes."),
    ],
    compare=_compare_band,
)


def check_silenced_rank_prediction(predicted_band, measured_rank) -> bool:
    """Exercise: compare a predicted rank band (one of RANK_BANDS) with the rank measured in the chapter."""
    return SILENCED_RANK.check_prediction(predicted_band, int(measured_rank))


def first_top1_depth(ranks) -> int | None:
    """Index of the first depth from which a token's rank is 0 at every later depth; None if it never is at the end."""
    ranks = [int(r) for r in ranks]
    if not ranks:
        raise ValueError("need at least one rank.")
    if ranks[-1] != 0:
        return None
    i = len(ranks) - 1
    while i > 0 and ranks[i - 1] == 0:
        i -= 1
    return i


def _lens_depth_case():
    model, _ = _default_run()
    out = []
    for prompt, answer in (("The Colosseum stands in the city of", " Rome"), ("The Eiffel Tower is located in", " Paris")):
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens(prompt))
            lens_logits, _ = logit_lens(model, cache, sublayers=True)
        out.append(token_rank(lens_logits[:, 0, -1], model.to_single_token(answer)).tolist())
    ranks, eiffel = out[0], first_top1_depth(out[1])
    n = len(ranks)                                  # then other outcomes a model could give: early, never
    return [((ranks, eiffel), {}), (([7, 0] + [0] * (n - 2), 4), {}), (([9] * (n - 1) + [2], 4), {})]


def _compare_depth(got, want, what: str) -> None:
    from .exercises import CheckFailed

    if got is not None and (not isinstance(got, (int, np.integer)) or isinstance(got, bool)):
        raise CheckFailed(f"{what}: give a depth index (0 = h0, 1 = after attention 1, ...) or None, got {got!r}.")
    if got != want:
        raise CheckFailed(f"{what}: you predicted depth {got!r}; the logit lens says {want!r}.")


LENS_DEPTH = Exercise(
    "ch2.predict-lens-depth", "predicted_depth", lambda ranks, copied: first_top1_depth(ranks), _lens_depth_case,
    mistakes=[
        Mistake(lambda ranks, copied: 0, "h0 is the direct path: with tied embeddings it echoes the input token "
                "(here ' of'), so the answer cannot be on top before any block has written."),
        Mistake(lambda ranks, copied: len(ranks) - 1, "the lens reads every intermediate state with the final map; "
                "the answer is written, and readable, before the last sub-layer."),
        Mistake(lambda ranks, copied: None, "the model does complete this prompt with the answer, so the last reading "
                "(the output itself) ranks it first."),
        Mistake(lambda ranks, copied: copied, "that is the Eiffel prompt's depth, copied: the depth at which an answer "
                "settles varies from prompt to prompt (the chapter's fact-set count shows how much)."),
    ],
    compare=_compare_depth,
)


def check_lens_depth_prediction(predicted_depth, ranks, eiffel_depth=None) -> bool:
    """Exercise: compare a predicted first top-1 depth with the logit lens's ranks measured in the chapter
    (``eiffel_depth``: the chapter's measured depth for its own prompt, a tempting answer to copy)."""
    copied = None if eiffel_depth is None else int(eiffel_depth)
    return LENS_DEPTH.check_prediction(predicted_depth, list(map(int, ranks)), copied)


def solution_logit_lens_at(model, cache, layer: int):
    """Reference: logits [pos, vocab] of the stream after block ``layer`` (first prompt), read as LN_f(h) W_U + b_U."""
    with torch.no_grad():
        return unembed(model, cache[f"blocks.{layer}.hook_resid_post"][0])


def _logit_lens_cases(model=None, cache=None):
    model, cache = (model, cache) if model is not None else _default_run()
    return [((model, cache, layer), {}) for layer in range(_n_layers(model))]


LOGIT_LENS_AT = Exercise(
    "ch2.logit-lens-at", "logit_lens_at", solution_logit_lens_at, _logit_lens_cases,
    mistakes=[
        Mistake(lambda m, c, l: c[f"blocks.{l}.hook_resid_post"][0] @ m.W_U + m.b_U,
                "you unembedded the raw stream. The unembedding was trained on LN_f(h), so apply model.ln_final first."),
        Mistake(lambda m, c, l: unembed(m, c[f"blocks.{l}.hook_resid_pre"][0]),
                "you read the stream entering block `layer` (hook_resid_pre); the lens after the block reads hook_resid_post."),
    ],
    atol=1e-4,
)


def check_logit_lens_at(fn, model, cache) -> bool:
    """Exercise: the logit lens after block ``layer`` (0-based hook index), logits [pos, vocab]."""
    return LOGIT_LENS_AT.check(fn, _logit_lens_cases(model, cache))


def neuron_votes(model, cache, layer: int, answer: int, other: int):
    """Direct votes [d_mlp] of block ``layer``'s MLP neurons for logit(answer) - logit(other), last position,
    first prompt: activation × centred output row / final scale · (W_U[:, answer] - W_U[:, other])."""
    layer = require_int("layer", layer, 0, _n_layers(model) - 1)
    with torch.no_grad():
        post = cache[f"blocks.{layer}.mlp.hook_post"][0, -1]                      # [d_mlp]
        rows = model.W_out[layer] - model.W_out[layer].mean(-1, keepdim=True)     # [d_mlp, d]
        return post * (rows @ (model.W_U[:, answer] - model.W_U[:, other])) / cache["ln_final.hook_scale"][0, -1]


def _count_for_half(votes, key):
    """Fewest neurons, taken in descending ``key`` order, whose votes reach half the total (in its sign)."""
    total = votes.sum()
    sign = 1.0 if float(total) >= 0 else -1.0
    order = key(votes * sign).argsort(descending=True)
    reached = (votes * sign)[order].cumsum(0) >= abs(float(total)) / 2
    return int(reached.float().argmax()) + 1


def solution_neurons_for_half(model, cache, layer: int, answer: int, other: int) -> int:
    """Reference: the fewest neurons of block ``layer``'s MLP whose votes, largest first, carry half its vote."""
    return _count_for_half(neuron_votes(model, cache, layer, answer, other), lambda v: v)


def _neurons_cases(model=None, cache=None, answer=None, other=None):
    if model is None:
        model, cache = _default_run()
        answer, other = model.to_single_token(" Paris"), model.to_single_token(" Rome")
    return [((model, cache, l, answer, other), {}) for l in range(_n_layers(model))]


NEURONS_FOR_HALF = Exercise(
    "ch2.neurons-for-half", "neurons_for_half", solution_neurons_for_half, _neurons_cases,
    mistakes=[
        Mistake(lambda m, c, l, a, b: _count_for_half(neuron_votes(m, c, l, a, b), torch.abs),
                "you ranked the neurons by the size of their vote, whatever its sign; a neuron voting against "
                "takes you further from half, so take the largest votes FOR first."),
        Mistake(lambda m, c, l, a, b: int((neuron_votes(m, c, l, a, b) > 0).sum()),
                "that counts every neuron voting for the answer; the question is how few of them, largest "
                "first, already add up to half of the MLP's vote."),
        Mistake(lambda m, c, l, a, b: _count_for_half(neuron_votes(m, c, l, a, b),
                                                      lambda v: c[f"blocks.{l}.mlp.hook_post"][0, -1]),
                "you ranked neurons by how strongly they fire; a strongly firing neuron can write in a direction "
                "the unembedding ignores. Rank by the vote: activation × (output row · logit direction)."),
    ],
)


def check_neurons_for_half(fn, model, cache, answer: int, other: int) -> bool:
    """Exercise: how many of an MLP's neurons carry half of its direct vote (every block of the model)."""
    return NEURONS_FOR_HALF.check(fn, _neurons_cases(model, cache, answer, other))


def solution_kl_divergence(final_logits, lens_logits):
    """Reference: KL(P_final ‖ P_lens) per row, in nats."""
    logp = final_logits.float().log_softmax(-1)
    logq = lens_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def _kl_cases():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 11, generator=g) * 2
    q = torch.randn(5, 11, generator=g) * 2
    return [((p, q), {}), ((p, p), {}), ((p[:1], q[:1] + 3.0), {}), ((q, p * 0.5), {})]


KL_DIVERGENCE = Exercise(
    "ch2.kl-divergence", "kl_divergence", solution_kl_divergence, _kl_cases,
    mistakes=[
        Mistake(lambda p, q: solution_kl_divergence(q, p), "you computed KL(P_lens ‖ P_final). The tuned lens "
                "measures KL(P_final ‖ P_lens) = Σ p_final · (log p_final − log p_lens)."),
        Mistake(lambda p, q: (p.float().softmax(-1) * (p.float() - q.float())).sum(-1),
                "you used raw logits where log-probabilities belong: apply log_softmax to both first."),
    ],
    atol=1e-5,
)


def check_kl_divergence(fn) -> bool:
    """Exercise: KL(P_final ‖ P_lens) per row, from two logit tensors [n, vocab]."""
    return KL_DIVERGENCE.check(fn)
