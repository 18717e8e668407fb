"""The MLP block as a key-value memory: what its neurons detect, what they write, and how to edit it.

Chapter 4 reads each MLP neuron ``i`` of layer ``l`` as one memory: a key
``k_i`` (column ``i`` of ``W_in``) that the normalised stream is matched
against, a coefficient ``f(x·k_i + b_i)`` (the neuron's activation), and a
value ``v_i`` (row ``i`` of ``W_out``) that is added to the stream scaled by
the coefficient (Geva et al., 2021, "Transformer Feed-Forward Layers Are
Key-Value Memories"). This module holds the code the chapter reuses or that
would distract from the lesson: a labelled sample of text from the bundled
model's world, one pass that collects each neuron's top-activating prefixes
and the second moments of keys and writes, the projection of values onto the
vocabulary, clean/corrupted fact pairs for causal tracing (Meng et al., 2022,
"Locating and Editing Factual Associations in GPT"), fact accuracy and text
loss for measuring collateral damage, a rank-one edit of ``W_out``, the
neuron-browser figure and widget, and the exercise checkers with their
reference solutions.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from .exercises import NOT_ATTEMPTED, CheckFailed, attempt, check_function, compare, passed
from .core import require_index, require_mlp
from .zoo import corpus as C
from .zoo.evals import corpus_tokens
from .zoo import world as W

__all__ = [
    "memory_coefficients", "mlp_out_from_memories", "labelled_sample", "FFNStats", "collect_ffn_stats",
    "value_logits", "value_top_tokens", "trigger_prefix", "classify_neuron", "agreement_by_layer",
    "FactPairs", "fact_pairs", "subject_last_position", "fact_prompts", "fact_accuracy", "text_loss", "corpus_tokens",
    "rank_one_update", "apply_rank_one_edit", "optimise_value_shift", "subspace_overlap", "principal_subspace",
    "neuron_browser_data", "neuron_browser_figure", "neuron_browser_widget",
    "check_mlp_out_from_memories", "check_value_top_tokens", "check_rank_one_update", "check_subspace_overlap",
]


# ------------------------------------------------------------------ validation
def _check_model(model) -> None:
    require_mlp(model)


def _check_layer(model, layer) -> int:
    return require_index("layer", layer, model.cfg.n_layers)


def _check_neuron(model, neuron) -> int:
    return require_index("neuron", neuron, model.cfg.d_mlp)


# ------------------------------------------------------------- keys and values
def memory_coefficients(model, cache, layer: int) -> torch.Tensor:
    """Every neuron's coefficient f(x·k_i + b_i) at every position: ``[batch, pos, d_mlp]``.

    ``x`` is the stream after the block's LayerNorm (``blocks.{l}.ln2.hook_normalized``);
    in compatibility mode the LayerNorm's weight is folded into ``W_in``.
    """
    _check_model(model)
    _check_layer(model, layer)
    name = f"blocks.{layer}.ln2.hook_normalized"
    if name not in cache:
        raise ValueError(f"the cache has no {name!r}; run model.run_with_cache(tokens) without a names_filter.")
    from transformer_lens.utilities.activation_functions import gelu_new

    x = cache[name]
    pre = x @ model.W_in[layer] + model.b_in[layer]
    act = model.cfg.act_fn
    if act == "gelu_new":
        return gelu_new(pre)
    if act == "gelu":
        return torch.nn.functional.gelu(pre)
    if act == "relu":
        return torch.relu(pre)
    raise ValueError(f"unsupported activation {act!r}")


def mlp_out_from_memories(coefficients: torch.Tensor, W_out: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
    """Σ_i coefficient_i · v_i + b_out, with v_i the rows of ``W_out``: ``[..., d_model]``."""
    if coefficients.shape[-1] != W_out.shape[0] or W_out.shape[1] != b_out.shape[-1]:
        raise ValueError(f"shapes do not chain: coefficients {tuple(coefficients.shape)}, W_out "
                         f"{tuple(W_out.shape)} (d_mlp, d_model), b_out {tuple(b_out.shape)}.")
    return torch.einsum("...i,id->...d", coefficients, W_out) + b_out


# --------------------------------------------------------------- sample of text
def labelled_sample(model, n_sequences: int = 160, sentences_per_sequence: int = 5, seed: int = 7):
    """Short documents in the style of the training corpus, every token labelled.

    Each sequence is BOS + a few sentences: true facts through a random training
    template (label: the relation), IOI sentences (label "ioi") and name-copy
    narratives (label "narrative"). Returns ``tokens [n, T]`` right-padded with
    BOS, ``lengths [n]``, ``labels`` (a list of per-token label lists, BOS
    labelled "bos") and ``label_names``.
    """
    _check_model(model)
    if not isinstance(n_sequences, int) or n_sequences < 1 or not isinstance(sentences_per_sequence, int) \
            or sentences_per_sequence < 1:
        raise ValueError("n_sequences and sentences_per_sequence must be positive ints.")
    rng = random.Random(seed)
    held = W.heldout_pairs()
    n_sent = n_sequences * sentences_per_sequence
    ioi = iter(C.ioi_prompts(n_sent, seed=seed + 1))
    copy = iter(C.copy_prompts(n_sent, seed=seed + 2))
    tok = model.tokenizer
    bos = tok.bos_token_id
    seqs, labels = [], []
    for _ in range(n_sequences):
        ids, lab = [bos], ["bos"]
        for j in range(sentences_per_sequence):
            r = rng.random()
            if r < 0.6:
                f = rng.choice(W.FACTS)
                t = rng.choice([t for t in W.TRAIN_TEMPLATES[f.relation] if t != held[f]])
                text, label = f"{W.render(t, f.subject)} {f.answer}.", f.relation
            elif r < 0.8:
                p, a, _b = next(ioi)
                text, label = f"{p} {a}.", "ioi"
            else:
                p, a = next(copy)
                text, label = f"{p} {a}.", "narrative"
            piece = tok.encode(text if j == 0 else " " + text, add_special_tokens=False)
            ids += piece
            lab += [label] * len(piece)
        seqs.append(ids[: model.cfg.n_ctx])
        labels.append(lab[: model.cfg.n_ctx])
    width = max(map(len, seqs))
    tokens = torch.tensor([s + [bos] * (width - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    names = sorted({x for lab in labels for x in lab})
    return {"tokens": tokens, "lengths": lengths, "labels": labels, "label_names": names}


# ------------------------------------------------------- one pass, many statistics
@dataclass
class FFNStats:
    """What one pass over a sample tells us about every neuron and every block's writes."""

    top_values: torch.Tensor      # [L, d_mlp, k] largest activations
    top_seq: torch.Tensor         # [L, d_mlp, k] which sequence
    top_pos: torch.Tensor         # [L, d_mlp, k] which position (the trigger token)
    key_moment: torch.Tensor      # [L, d_mlp, d_mlp]  E[a aᵀ] of the coefficient vectors
    write_mean: dict = field(default_factory=dict)   # "attn"/"mlp" -> [L, d]
    write_cov: dict = field(default_factory=dict)    # "attn"/"mlp" -> [L, d, d] (centred)
    n_tokens: int = 0


@torch.no_grad()
def collect_ffn_stats(model, tokens: torch.Tensor, lengths: torch.Tensor, k: int = 8, batch_size: int = 64) -> FFNStats:
    """Run the sample once and keep, per neuron, its ``k`` top-activating tokens, plus the
    second moment of coefficient vectors (for rank-one edits) and the covariance of attention
    and MLP writes (for the bandwidth section). Padding positions are ignored, and so is the
    BOS position, which is the same in every sequence and is no one's prefix."""
    _check_model(model)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a [n, T] tensor of token ids.")
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (tokens.shape[0],):
        raise ValueError(f"lengths must be a [n] tensor (one length per sequence), got {getattr(lengths, 'shape', lengths)}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    L, dm, d = model.cfg.n_layers, model.cfg.d_mlp, model.cfg.d_model
    top_v = torch.full((L, dm, k), -math.inf)
    top_s = torch.zeros((L, dm, k), dtype=torch.long)
    top_p = torch.zeros((L, dm, k), dtype=torch.long)
    key_m = torch.zeros(L, dm, dm, dtype=torch.float64)
    sums = {w: torch.zeros(L, d, dtype=torch.float64) for w in ("attn", "mlp")}
    outer = {w: torch.zeros(L, d, d, dtype=torch.float64) for w in ("attn", "mlp")}
    hooks = {f"blocks.{l}.{h}" for l in range(L) for h in ("mlp.hook_post", "hook_attn_out", "hook_mlp_out")}
    n_tok = 0
    T = tokens.shape[1]
    for start in range(0, tokens.shape[0], batch_size):
        tb = tokens[start:start + batch_size].to(model.cfg.device)
        valid = ((torch.arange(T)[None] < lengths[start:start + batch_size, None]) & (torch.arange(T)[None] > 0)).reshape(-1)
        _, cache = model.run_with_cache(tb, names_filter=lambda n: n in hooks)
        b = tb.shape[0]
        seq_ids = (torch.arange(b)[:, None] + start).expand(b, T).reshape(-1)[valid]
        pos_ids = torch.arange(T)[None].expand(b, T).reshape(-1)[valid]
        n_tok += int(valid.sum())
        for l in range(L):
            a = cache[f"blocks.{l}.mlp.hook_post"].reshape(b * T, dm)[valid].cpu()
            key_m[l] += (a.T @ a).double()
            cand_v = torch.cat([top_v[l], a.T], dim=1)                     # [dm, k + n]
            cand_s = torch.cat([top_s[l], seq_ids[None].expand(dm, -1)], 1)
            cand_p = torch.cat([top_p[l], pos_ids[None].expand(dm, -1)], 1)
            v, idx = cand_v.topk(k, dim=1)
            top_v[l], top_s[l], top_p[l] = v, cand_s.gather(1, idx), cand_p.gather(1, idx)
            for w, hk in (("attn", "hook_attn_out"), ("mlp", "hook_mlp_out")):
                x = cache[f"blocks.{l}.{hk}"].reshape(b * T, d)[valid].cpu().double()
                sums[w][l] += x.sum(0)
                outer[w][l] += x.T @ x
    mean = {w: sums[w] / n_tok for w in sums}
    cov = {w: (outer[w] / n_tok - mean[w][:, :, None] * mean[w][:, None, :]).float() for w in sums}
    return FFNStats(top_v, top_s, top_p, (key_m / n_tok).float(), {w: m.float() for w, m in mean.items()}, cov, n_tok)


# ------------------------------------------------------------ what values promote
def value_logits(model, layer: int, neurons=None) -> torch.Tensor:
    """Direct effect of each value vector on the logits, ``v_i W_U``: ``[n, d_vocab]``.

    In compatibility mode ``W_out``'s rows and ``W_U`` are centred, so the final
    LayerNorm only divides by a positive per-position scale: the order of tokens
    in a row is the order in which the value pushes them up.
    """
    _check_model(model)
    _check_layer(model, layer)
    W_out = model.W_out[layer]
    if neurons is not None:
        neurons = [_check_neuron(model, int(n)) for n in torch.as_tensor(neurons).reshape(-1).tolist()]
        W_out = W_out[neurons]
    return W_out @ model.W_U


def value_top_tokens(model, layer: int, neuron: int, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` tokens neuron ``neuron`` of ``layer`` promotes most, with their logit boost."""
    _check_neuron(model, neuron)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    row = value_logits(model, layer, [neuron])[0]
    vals, ids = row.topk(k)
    return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(vals, ids)]


# -------------------------------------------------------------- what keys detect
def trigger_prefix(model, tokens: torch.Tensor, seq: int, pos: int, context: int = 10) -> tuple[str, str, str]:
    """(text before the trigger, the trigger token, the next token) for display."""
    ids = tokens[seq].tolist()
    start = max(1, pos - context)
    before = model.tokenizer.decode(ids[start:pos])
    trig = model.tokenizer.decode([ids[pos]])
    nxt = model.tokenizer.decode([ids[pos + 1]]) if pos + 1 < len(ids) else ""
    return ("…" if start > 1 else "") + before, trig, nxt


def classify_neuron(trigger_tokens: list[int], trigger_labels: list[str], threshold: float = 0.5) -> str:
    """"shallow" if one trigger token accounts for more than ``threshold`` of the top prefixes,
    else "semantic" if one context label (relation or text kind) does, else "mixed"."""
    if len(trigger_tokens) == 0 or len(trigger_tokens) != len(trigger_labels):
        raise ValueError("need one label per trigger token, and at least one trigger.")
    n = len(trigger_tokens)
    top_tok = max(trigger_tokens.count(t) for t in set(trigger_tokens))
    if top_tok / n > threshold:
        return "shallow"
    top_lab = max(trigger_labels.count(x) for x in set(trigger_labels))
    return "semantic" if top_lab / n > threshold else "mixed"


def agreement_by_layer(model, stats: FFNStats, tokens: torch.Tensor, lengths: torch.Tensor,
                       n_shuffles: int = 20, seed: int = 0) -> dict:
    """How often a value's top token is the token that follows its key's top prefixes.

    For each neuron: the fraction of its top-k prefixes whose next token is the
    top token of ``v_i W_U``. ``agreement[l]`` averages that over neurons;
    ``chance[l]`` does the same after shuffling which value goes with which key
    within the layer (mean over ``n_shuffles`` shuffles).
    """
    _check_model(model)
    L, dm, k = stats.top_values.shape
    T = tokens.shape[1]
    nxt_pos = stats.top_pos + 1
    has_next = nxt_pos < lengths[stats.top_seq]
    nxt = tokens[stats.top_seq, nxt_pos.clamp(max=T - 1)]               # [L, dm, k]
    g = torch.Generator().manual_seed(seed)
    agree, chance = [], []
    for l in range(L):
        top_tok = value_logits(model, l).argmax(-1).cpu()                  # [dm]
        hit = ((nxt[l] == top_tok[:, None]) & has_next[l]).float().mean(1)
        agree.append(float(hit.mean()))
        sh = []
        for _ in range(n_shuffles):
            perm = torch.randperm(dm, generator=g)
            sh.append(float(((nxt[l] == top_tok[perm][:, None]) & has_next[l]).float().mean()))
        chance.append(float(np.mean(sh)))
    return {"agreement": agree, "chance": chance}


# ------------------------------------------------------------- facts and pairs
@dataclass
class FactPairs:
    """Clean prompts and subject-swapped corruptions, right-padded with BOS to one width."""

    facts: list            # the clean facts (world.Fact)
    partners: list         # the fact whose subject replaced it
    clean: torch.Tensor    # [n, T]
    corrupted: torch.Tensor
    answer: torch.Tensor   # [n] token id of " answer"
    wrong: torch.Tensor    # [n] token id of the partner's answer
    last: torch.Tensor     # [n] position of the prompt's last token
    subject_last: torch.Tensor  # [n] position of the subject's last token
    prompts: list

    def __len__(self):
        return len(self.facts)


def _template_for(fact, held) -> str:
    temps = [t for t in W.TRAIN_TEMPLATES[fact.relation] if t != held[fact]]
    return temps[0]


def fact_prompts(facts=None, template: str | None = None) -> list[tuple[str, str]]:
    """One (prompt, answer) per fact, through the first training template the fact was trained on
    (or through ``template``, which must contain {S} or {s})."""
    facts = list(W.FACTS) if facts is None else list(facts)
    held = W.heldout_pairs()
    return [(W.render(template or _template_for(f, held), f.subject), f.answer) for f in facts]


def subject_last_position(model, template: str, subject: str) -> int:
    """Index (counting BOS as 0) of the subject's last token in ``render(template, subject)``."""
    if "{S}" not in template and "{s}" not in template:
        raise ValueError(f"template has no subject slot {{S}} or {{s}}: {template!r}")
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"subject must be a non-empty string, got {subject!r}.")
    slot = "{S}" if "{S}" in template else "{s}"
    head = template.split(slot)[0]
    cap = subject[0].upper() + subject[1:] if slot == "{S}" else subject
    return len(model.tokenizer.encode(head + cap, add_special_tokens=False))


def fact_pairs(model, facts=None, seed: int = 0) -> FactPairs:
    """For each fact, a corrupted prompt with the subject swapped for another subject of the
    same relation that has the same number of tokens and a different answer. Facts with no
    such partner are dropped. Clean and corrupted prompts use the fact's first training
    template, so the two line up token by token."""
    _check_model(model)
    facts = list(W.FACTS) if facts is None else list(facts)
    if not facts:
        raise ValueError("facts is empty.")
    held = W.heldout_pairs()
    rng = random.Random(seed)
    tok = model.tokenizer
    bos = tok.bos_token_id
    keep = []
    for f in facts:
        t = _template_for(f, held)
        ids = [bos] + tok.encode(W.render(t, f.subject), add_special_tokens=False)
        send = subject_last_position(model, t, f.subject)
        options = []
        for g in W.facts_by_relation(f.relation):
            if g.answer == f.answer or g.subject == f.subject:
                continue
            gids = [bos] + tok.encode(W.render(t, g.subject), add_special_tokens=False)
            if len(gids) == len(ids) and subject_last_position(model, t, g.subject) == send:
                options.append((g, gids))
        if not options:
            continue
        g, gids = rng.choice(options)
        keep.append((f, g, ids, gids, send, W.render(t, f.subject)))
    if not keep:
        raise ValueError("no fact has a same-length partner to swap in.")
    width = max(len(x[2]) for x in keep)
    pad = lambda s: s + [bos] * (width - len(s))  # noqa: E731
    ans = lambda w: tok.encode(" " + w, add_special_tokens=False)[0]  # noqa: E731
    return FactPairs(
        facts=[x[0] for x in keep], partners=[x[1] for x in keep],
        clean=torch.tensor([pad(x[2]) for x in keep]), corrupted=torch.tensor([pad(x[3]) for x in keep]),
        answer=torch.tensor([ans(x[0].answer) for x in keep]), wrong=torch.tensor([ans(x[1].answer) for x in keep]),
        last=torch.tensor([len(x[2]) - 1 for x in keep]), subject_last=torch.tensor([x[4] for x in keep]),
        prompts=[x[5] for x in keep],
    )


@torch.no_grad()
def fact_accuracy(model, items: list[tuple[str, str]], batch_size: int = 256) -> torch.Tensor:
    """Per (prompt, answer) item: 1.0 if " answer" (a single token) is the top prediction."""
    _check_model(model)
    if not items:
        raise ValueError("items is empty: give (prompt, answer) pairs.")
    tok = model.tokenizer
    bos = tok.bos_token_id
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        seqs = [[bos] + tok.encode(p, add_special_tokens=False) for p, _ in chunk]
        width = max(map(len, seqs))
        toks = torch.tensor([s + [bos] * (width - len(s)) for s in seqs], device=model.cfg.device)
        logits = model(toks)
        last = torch.tensor([len(s) - 1 for s in seqs])
        pred = logits[torch.arange(len(seqs)), last].argmax(-1).cpu()
        want = torch.tensor([tok.encode(" " + a, add_special_tokens=False)[0] for _, a in chunk])
        out.append((pred == want).float())
    return torch.cat(out)


@torch.no_grad()
def text_loss(model, tokens: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats per token) over the real (unpadded) tokens."""
    _check_model(model)
    if tokens.ndim != 2 or lengths.shape != (tokens.shape[0],):
        raise ValueError("tokens must be [n, T] and lengths [n].")
    total, count = 0.0, 0
    T = tokens.shape[1]
    for i in range(0, tokens.shape[0], batch_size):
        tb = tokens[i:i + batch_size].to(model.cfg.device)
        logp = model(tb).log_softmax(-1)[:, :-1]
        nll = -logp.gather(-1, tb[:, 1:, None])[..., 0].cpu()
        mask = torch.arange(1, T)[None] < lengths[i:i + batch_size, None]
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return total / count


# ----------------------------------------------------------------- editing
def rank_one_update(W_: torch.Tensor, key: torch.Tensor, target: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The smallest change to ``W_`` (in the metric of the key second moment ``C``) with
    ``key @ W_new == target``: ``W_ + u (target - key @ W_)ᵀ`` with ``u = C⁻¹k / (kᵀC⁻¹k)``
    (the closed form of Meng et al., 2022, written for row vectors)."""
    if W_.ndim != 2 or key.shape != (W_.shape[0],) or target.shape != (W_.shape[1],) \
            or C.shape != (W_.shape[0], W_.shape[0]):
        raise ValueError(f"shapes: W {tuple(W_.shape)} needs key [{W_.shape[0]}], target [{W_.shape[1]}] and "
                         f"C [{W_.shape[0]}, {W_.shape[0]}]; got {tuple(key.shape)}, {tuple(target.shape)}, "
                         f"{tuple(C.shape)}.")
    dev = W_.device  # the inputs may come from different devices (model on a GPU, statistics on the CPU)
    C, key, target = C.to(dev), key.to(dev), target.to(dev)
    Cinv_k = torch.linalg.solve(C.double(), key.double())
    u = Cinv_k / (key.double() @ Cinv_k)
    resid = target.double() - key.double() @ W_.double()
    return (W_.double() + torch.outer(u, resid)).to(W_.dtype)


@torch.no_grad()
def apply_rank_one_edit(model, layer: int, new_W_out: torch.Tensor) -> torch.Tensor:
    """Overwrite ``W_out`` of ``layer`` in place; returns the old matrix (to undo the edit)."""
    _check_layer(model, layer)
    param = model.blocks[layer].mlp.W_out
    if new_W_out.shape != param.shape:
        raise ValueError(f"new W_out must have shape {tuple(param.shape)}, got {tuple(new_W_out.shape)}.")
    old = param.detach().clone()
    param.copy_(new_W_out.to(param.dtype))
    return old


def optimise_value_shift(model, layer: int, prompts: list[str], positions: list[int], new_answer: str,
                         steps: int = 60, lr: float = 0.1, weight_decay: float = 0.02, seed: int = 0) -> torch.Tensor:
    """A vector δ (``[d_model]``) that, added to ``blocks.{layer}.hook_mlp_out`` at the subject's
    last token of every prompt, makes " new_answer" the prediction: Adam on the mean
    cross-entropy plus ``weight_decay``·|δ|² (ROME's second step, without its KL term)."""
    _check_model(model)
    _check_layer(model, layer)
    if len(prompts) != len(positions) or not prompts:
        raise ValueError("give one subject position per prompt (and at least one prompt).")
    ids = model.tokenizer.encode(" " + new_answer, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{new_answer!r} is not a single token with a leading space.")
    torch.manual_seed(seed)
    tok = model.tokenizer
    bos = tok.bos_token_id
    seqs = [[bos] + tok.encode(p, add_special_tokens=False) for p in prompts]
    width = max(map(len, seqs))
    toks = torch.tensor([s + [bos] * (width - len(s)) for s in seqs], device=model.cfg.device)
    dev = toks.device
    last = torch.tensor([len(s) - 1 for s in seqs], device=dev)
    pos = torch.tensor(positions, device=dev)
    rows = torch.arange(len(seqs), device=dev)
    delta = torch.zeros(model.cfg.d_model, device=dev, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    target = torch.full((len(seqs),), ids[0], device=dev)

    def hook(act, hook=None):
        act = act.clone()
        act[rows, pos] = act[rows, pos] + delta
        return act

    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            logits = model.run_with_hooks(toks, fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", hook)])
            loss = torch.nn.functional.cross_entropy(logits[rows, last], target) + weight_decay * delta.pow(2).sum()
            loss.backward()
            opt.step()
    return delta.detach()


# ---------------------------------------------------------------- bandwidth
def principal_subspace(cov: torch.Tensor, var_fraction: float = 0.9) -> torch.Tensor:
    """Orthonormal columns ``[d, r]`` spanning the top principal directions that explain
    ``var_fraction`` of the variance described by the covariance ``cov``."""
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square matrix, got shape {tuple(cov.shape)}.")
    if not 0 < var_fraction <= 1:
        raise ValueError(f"var_fraction must lie in (0, 1], got {var_fraction}.")
    evals, evecs = torch.linalg.eigh(cov.double())
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)
    r = int((evals.cumsum(0) / evals.sum() < var_fraction).sum()) + 1
    return evecs[:, :r].float()


def subspace_overlap(A: torch.Tensor, B: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between span(A) and span(B)
    (orthonormal columns): ‖AᵀB‖²_F / min(rank A, rank B). 1 = one space contains the
    other, 0 = orthogonal. Two random subspaces of ranks a ≤ b in d dimensions score b/d
    on average."""
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"A and B must be [d, r] with the same d, got {tuple(A.shape)} and {tuple(B.shape)}.")
    return float((A.T @ B).pow(2).sum() / min(A.shape[1], B.shape[1]))


# ---------------------------------------------------------- the neuron browser
def neuron_browser_data(model, stats: FFNStats, tokens: torch.Tensor, neurons: dict, k_tokens: int = 8,
                        context: int = 7) -> dict:
    """Small, rounded data for the browser: for each (layer, neuron) in ``neurons``
    (layer -> list of neurons), its top prefixes and the tokens its value promotes."""
    _check_model(model)
    out = {}
    for layer, ns in neurons.items():
        _check_layer(model, int(layer))
        vl = value_logits(model, int(layer), list(ns)).cpu()
        for j, n in enumerate(ns):
            n = _check_neuron(model, int(n))
            prefixes = []
            for v, s, p in zip(stats.top_values[layer, n], stats.top_seq[layer, n], stats.top_pos[layer, n]):
                if not math.isfinite(float(v)):
                    continue
                before, trig, nxt = trigger_prefix(model, tokens, int(s), int(p), context)
                prefixes.append({"act": round(float(v), 3), "before": before, "trigger": trig, "next": nxt})
            vals, ids = vl[j].topk(k_tokens)
            promoted = [(model.tokenizer.decode([int(i)]), round(float(x), 3)) for x, i in zip(vals, ids)]
            out[(int(layer), n)] = {"prefixes": prefixes, "promoted": promoted}
    return out


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _prefix_line(p: dict) -> str:
    return (f"{p['act']:.2f}  {_esc(p['before'])}<b><span style='color:#D55E00'>[{_esc(p['trigger'])}]</span></b>"
            f" → {_esc(p['next'])}")


def neuron_browser_figure(data: dict, title: str = "What a neuron's key detects and what its value writes"):
    """Static plotly figure: a layer dropdown, one neuron dropdown per layer (only the chosen
    layer's is visible), the top prefixes as text (activation, prefix, [trigger] → next token)
    and a bar chart of the tokens the value promotes. Uses only scatter and bar traces and
    plotly's own menus, so it needs no kernel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not data:
        raise ValueError("data is empty; build it with neuron_browser_data.")
    keys = sorted(data)
    layers = sorted({l for l, _ in keys})
    n_rows = max(len(d["prefixes"]) for d in data.values())
    fig = make_subplots(rows=2, cols=1, row_heights=[0.55, 0.45], vertical_spacing=0.12,
                        subplot_titles=("Top prefixes: activation, text, [trigger] → next token",
                                        "Tokens the value promotes (v·W_U)"))

    def payload(key):
        d = data[key]
        lines = [_prefix_line(p) for p in d["prefixes"]] + [""] * (n_rows - len(d["prefixes"]))
        return lines, [repr(t) for t, _ in d["promoted"]], [v for _, v in d["promoted"]]

    lines, bt, bv = payload(keys[0])
    fig.add_trace(go.Scatter(x=[0] * n_rows, y=list(range(n_rows)), text=lines, mode="text", textposition="middle right",
                             hoverinfo="skip", textfont={"family": "monospace", "size": 11}), row=1, col=1)
    fig.add_trace(go.Bar(x=bt, y=bv, marker_color="#0072B2",
                         hovertemplate="%{x}: +%{y:.3f} logit per unit of activation<extra></extra>"), row=2, col=1)
    fig.update_xaxes(visible=False, range=[0, 1], row=1, col=1)
    fig.update_yaxes(visible=False, range=[n_rows - 0.5, -0.5], row=1, col=1)
    fig.update_yaxes(title_text="logit boost per unit", row=2, col=1)

    def args(key):
        lines, bt, bv = payload(key)
        return {"text": [lines, None], "x": [[0] * n_rows, bt], "y": [list(range(n_rows)), bv]}

    menus = []
    for li, layer in enumerate(layers):
        buttons = [{"method": "restyle", "label": f"neuron {k[1]}", "args": [args(k), [0, 1]]} for k in keys if k[0] == layer]
        menus.append({"buttons": buttons, "direction": "down", "x": 0.2, "y": 1.16, "xanchor": "left",
                      "showactive": True, "visible": li == 0, "active": 0})
    layer_buttons = []
    for li, layer in enumerate(layers):
        first = [k for k in keys if k[0] == layer][0]
        relayout = {f"updatemenus[{j + 1}].visible": j == li for j in range(len(layers))}
        relayout[f"updatemenus[{li + 1}].active"] = 0
        layer_buttons.append({"method": "update", "label": f"block {layer}", "args": [args(first), relayout, [0, 1]]})
    fig.update_layout(
        updatemenus=[{"buttons": layer_buttons, "direction": "down", "x": 0.0, "y": 1.16, "xanchor": "left",
                      "showactive": True, "active": 0}] + menus,
        title={"text": title, "y": 0.98}, height=700, margin={"t": 150, "l": 10, "r": 10}, showlegend=False,
    )
    return fig


def neuron_browser_widget(model, stats: FFNStats, tokens: torch.Tensor):
    """A live browser for ANY neuron: pick a layer and type a neuron index."""
    import ipywidgets as wd

    _check_model(model)
    layer_w = wd.Dropdown(options=list(range(model.cfg.n_layers)), description="layer")
    neuron_w = wd.BoundedIntText(value=0, min=0, max=model.cfg.d_mlp - 1, description="neuron")
    out = wd.HTML()

    def render(*_):
        l, n = int(layer_w.value), int(neuron_w.value)
        d = neuron_browser_data(model, stats, tokens, {l: [n]})[(l, n)]
        rows = "".join(f"<tr><td>{p['act']:.2f}</td><td>{_esc(p['before'])}<b style='color:#D55E00'>"
                       f"[{_esc(p['trigger'])}]</b></td><td>{_esc(p['next'])}</td></tr>" for p in d["prefixes"])
        promo = ", ".join(f"<code>{_esc(repr(t))}</code> (+{v:.2f})" for t, v in d["promoted"])
        out.value = (f"<b>layer {l}, neuron {n}</b><table><tr><th>act</th><th>prefix</th><th>next</th></tr>"
                     f"{rows}</table><p>value promotes: {promo}</p>")

    layer_w.observe(render, "value")
    neuron_w.observe(render, "value")
    render()
    return wd.VBox([wd.HBox([layer_w, neuron_w]), out])


# ------------------------------------------------------------------ exercises
def _ref_mlp_out(coefficients, W_out, b_out):
    return coefficients @ W_out + b_out


def check_mlp_out_from_memories(fn) -> bool:
    """Exercise: the MLP output as a coefficient-weighted sum of value vectors."""
    g = torch.Generator().manual_seed(1)
    cases = [((torch.randn(5, 12, generator=g), torch.randn(12, 4, generator=g), torch.randn(4, generator=g)), {}),
             ((torch.randn(2, 3, 8, generator=g), torch.randn(8, 6, generator=g), torch.randn(6, generator=g)), {})]
    return check_function(fn, _ref_mlp_out, cases, "mlp_out_from_memories",
                          hint="values are the ROWS of W_out (shape [d_mlp, d_model]); weight row i by coefficient i, "
                               "sum over i, and do not forget b_out.")


def _ref_value_top_tokens(W_out, W_U, neuron, k):
    return (W_out[neuron] @ W_U).topk(k).indices


def check_value_top_tokens(fn) -> bool:
    """Exercise: the token ids a neuron's value vector promotes most, best first."""
    g = torch.Generator().manual_seed(2)
    W_out, W_U = torch.randn(16, 6, generator=g), torch.randn(6, 30, generator=g)
    cases = [((W_out, W_U, 3, 5), {}), ((W_out, W_U, 11, 1), {})]
    return check_function(fn, _ref_value_top_tokens, cases, "value_top_tokens",
                          hint="take row `neuron` of W_out (not a column of W_in: that is the key), multiply by W_U, "
                               "and return the ids of the k largest entries in decreasing order.")


def _ref_rank_one(W_, key, target, C):
    return rank_one_update(W_, key, target, C)


def check_rank_one_update(fn) -> bool:
    """Exercise: the rank-one edit with key second moment C."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(10, 10, generator=g, dtype=torch.float64)
    C = A @ A.T / 10 + 0.1 * torch.eye(10, dtype=torch.float64)
    W_ = torch.randn(10, 4, generator=g, dtype=torch.float64)
    key, target = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    got = attempt(fn, "rank_one_update", W_, key, target, C)
    if got is NOT_ATTEMPTED:
        return False
    if not isinstance(got, torch.Tensor) or got.shape != W_.shape:
        raise CheckFailed(f"rank_one_update: expected a tensor of shape {tuple(W_.shape)}, got "
                          f"{getattr(got, 'shape', type(got).__name__)}.")
    compare(key @ got, target, "key @ W_new (the edited memory must return the target)", atol=1e-6)
    delta = got - W_
    if torch.linalg.matrix_rank(delta).item() != 1:
        raise CheckFailed("rank_one_update: W_new - W should have rank 1 (an outer product u ⊗ residual).")
    try:
        compare(got, _ref_rank_one(W_, key, target, C), "W_new", atol=1e-6)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc}\nHint: your edit hits the target but is not the smallest one in the metric of C: "
                          "use u = C⁻¹k / (kᵀ C⁻¹ k), not k / |k|².") from None
    return passed("rank_one_update")


def _ref_overlap(A, B):
    return subspace_overlap(A, B)


def check_subspace_overlap(fn) -> bool:
    """Exercise: overlap of two subspaces given by orthonormal columns."""
    g = torch.Generator().manual_seed(4)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    cases = [((Q[:, :3], Q[:, :5]), {}), ((Q[:, :3], Q[:, 3:7]), {}),
             ((Q[:, :4], torch.linalg.qr(torch.randn(12, 6, generator=g))[0]), {})]
    return check_function(fn, _ref_overlap, cases, "subspace_overlap",
                          hint="square every entry of AᵀB, add them up, divide by the SMALLER of the two ranks.")
