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

from .exercises import CheckFailed, Exercise, Mistake
from .core import require_index, require_int, require_mlp
from .zoo import corpus as C
from .zoo.evals import corpus_tokens
from .zoo import world as W

__all__ = [
    "memory_coefficients", "mlp_out_from_memories", "labelled_sample", "FFNStats", "collect_ffn_stats",
    "value_logits", "value_top_tokens", "trigger_prefix", "classify_neuron", "classify_neurons", "NEURON_CLASSES",
    "shuffle_within_groups", "random_keys_like", "top_prefixes_of_keys", "agreement_by_layer", "random_overlap_mean",
    "top_k_counts", "values_promoting", "check_specificity_prediction", "specificity_bucket", "SPECIFICITY_BUCKETS",
    "FactPairs", "fact_pairs", "subject_last_position", "subject_span", "rows_per_pass", "neuron_patch_effects",
    "neuron_ablation_effects", "key_second_moment", "fact_prompts", "fact_accuracy", "text_loss", "corpus_tokens",
    "rank_one_update", "apply_rank_one_edit", "optimise_value_shift", "subspace_overlap", "principal_subspace",
    "neuron_browser_data", "neuron_browser_figure", "neuron_browser_widget",
    "check_mlp_out_from_memories", "check_value_top_tokens", "check_multi_key_update", "check_subspace_overlap",
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
    return _activation(model, cache[name] @ model.W_in[layer] + model.b_in[layer])


def _activation(model, pre: torch.Tensor) -> torch.Tensor:
    """The model's MLP nonlinearity applied to pre-activations."""
    act = model.cfg.act_fn
    if act == "gelu_new":
        from transformer_lens.utilities.activation_functions import gelu_new

        return gelu_new(pre)
    if act == "gelu":
        return torch.nn.functional.gelu(pre)
    if act == "relu":
        return torch.relu(pre)
    raise ValueError(f"unsupported activation {act!r}")


def random_keys_like(W_in: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random key directions with the lengths of the columns of ``W_in`` (``[d, d_mlp]``, on the CPU):
    the control for "is this a property of the learned keys?"."""
    if not isinstance(W_in, torch.Tensor) or W_in.ndim != 2:
        raise ValueError(f"W_in must be a [d_model, d_mlp] tensor, got {getattr(W_in, 'shape', W_in)}.")
    W = torch.randn(W_in.shape, generator=generator)
    return W / W.norm(dim=0) * W_in.detach().norm(dim=0).cpu()


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
    labelled "bos"), ``label_names`` and ``sentences`` (``[n, T]``: which
    sentence of the sample each token belongs to, numbered across the sample;
    -1 at BOS and padding).
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
    seqs, labels, sents = [], [], []
    for i in range(n_sequences):
        ids, lab, sid = [bos], ["bos"], [-1]
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
            sid += [i * sentences_per_sequence + j] * len(piece)
        seqs.append(ids[: model.cfg.n_ctx])
        labels.append(lab[: model.cfg.n_ctx])
        sents.append(sid[: model.cfg.n_ctx])
    width = max(map(len, seqs))
    tokens = torch.tensor([s + [bos] * (width - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    sentences = torch.tensor([s + [-1] * (width - len(s)) for s in sents])
    names = sorted({x for lab in labels for x in lab})
    return {"tokens": tokens, "lengths": lengths, "labels": labels, "label_names": names, "sentences": sentences}


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
    write_moments: dict = field(default_factory=dict)  # "attn"/"mlp" -> (Σx [G, L, d], Σxxᵀ [G, L, d, d], n [G]) per group

    def write_cov_of(self, writer: str, groups) -> torch.Tensor:
        """Centred covariance ``[L, d, d]`` of ``writer``'s writes ("attn" or "mlp") over the tokens of
        the sequence groups ``groups`` (sequence ``i`` is in group ``i % n_groups``): the same
        statistic as ``write_cov``, measured on part of the sample."""
        if writer not in self.write_moments:
            raise ValueError(f"writer must be one of {sorted(self.write_moments)}, got {writer!r}.")
        sums, outer, counts = self.write_moments[writer]
        groups = sorted(set(int(g) for g in groups))
        if not groups or not all(0 <= g < len(counts) for g in groups):
            raise ValueError(f"groups must be a non-empty subset of 0..{len(counts) - 1}, got {groups}.")
        n = counts[groups].sum()
        mean = sums[groups].sum(0) / n
        return (outer[groups].sum(0) / n - mean[:, :, None] * mean[:, None, :]).float()


@torch.no_grad()
def collect_ffn_stats(model, tokens: torch.Tensor, lengths: torch.Tensor, k: int = 8, batch_size: int = 64,
                      key_moment: bool = True, n_groups: int = 1) -> FFNStats:
    """Run the sample once and keep, per neuron, its ``k`` top-activating tokens, plus the
    second moment of coefficient vectors (for rank-one edits) and the covariance of attention
    and MLP writes (for the bandwidth section). Padding positions are ignored, and so is the
    BOS position, which is the same in every sequence and is no one's prefix. ``key_moment=False``
    skips the ``[L, d_mlp, d_mlp]`` second moment (quadratic in ``d_mlp``: on GPT-2 small most of
    the pass); :func:`key_second_moment` computes it for one block when it is needed. ``n_groups``
    keeps the writes' moments per group of sequences (sequence ``i`` in group ``i % n_groups``), so
    ``FFNStats.write_cov_of`` can measure the covariance on part of the sample (a split-half null)."""
    _check_model(model)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a [n, T] tensor of token ids.")
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (tokens.shape[0],):
        raise ValueError(f"lengths must be a [n] tensor (one length per sequence), got {getattr(lengths, 'shape', lengths)}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    if not isinstance(n_groups, int) or not 1 <= n_groups <= tokens.shape[0]:
        raise ValueError(f"n_groups must be an int in 1..{tokens.shape[0]} (the number of sequences), got {n_groups!r}.")
    L, dm, d = model.cfg.n_layers, model.cfg.d_mlp, model.cfg.d_model
    G = n_groups
    top_v = torch.full((L, dm, k), -math.inf)
    top_s = torch.zeros((L, dm, k), dtype=torch.long)
    top_p = torch.zeros((L, dm, k), dtype=torch.long)
    key_m = torch.zeros(L, dm, dm, dtype=torch.float64) if key_moment else None
    sums = {w: torch.zeros(G, L, d, dtype=torch.float64) for w in ("attn", "mlp")}
    outer = {w: torch.zeros(G, L, d, d, dtype=torch.float64) for w in ("attn", "mlp")}
    counts = torch.zeros(G, dtype=torch.float64)
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
        group = seq_ids % G                                                # [tokens in batch]
        counts += torch.bincount(group, minlength=G).double()
        for l in range(L):
            a = cache[f"blocks.{l}.mlp.hook_post"].reshape(b * T, dm)[valid].cpu()
            if key_m is not None:
                key_m[l] += (a.T @ a).double()
            cand_v = torch.cat([top_v[l], a.T], dim=1)                     # [dm, k + n]
            cand_s = torch.cat([top_s[l], seq_ids[None].expand(dm, -1)], 1)
            cand_p = torch.cat([top_p[l], pos_ids[None].expand(dm, -1)], 1)
            v, idx = cand_v.topk(k, dim=1)
            top_v[l], top_s[l], top_p[l] = v, cand_s.gather(1, idx), cand_p.gather(1, idx)
            for w, hk in (("attn", "hook_attn_out"), ("mlp", "hook_mlp_out")):
                x = cache[f"blocks.{l}.{hk}"].reshape(b * T, d)[valid].cpu().double()
                for gi in range(G):
                    xg = x[group == gi] if G > 1 else x
                    sums[w][gi, l] += xg.sum(0)
                    outer[w][gi, l] += xg.T @ xg
    moments = {w: (sums[w], outer[w], counts) for w in sums}
    mean = {w: sums[w].sum(0) / n_tok for w in sums}
    cov = {w: (outer[w].sum(0) / n_tok - mean[w][:, :, None] * mean[w][:, None, :]).float() for w in sums}
    key = (key_m / n_tok).float() if key_m is not None else None
    return FFNStats(top_v, top_s, top_p, key, {w: m.float() for w, m in mean.items()}, cov, n_tok, moments)


@torch.no_grad()
def top_prefixes_of_keys(model, tokens: torch.Tensor, lengths: torch.Tensor, layer: int, keys: torch.Tensor,
                         k: int = 8, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (sequence, position) of each column of ``keys`` (``[d_model, m · d_mlp]``: one or more
    sets of keys side by side) read from block ``layer``'s normalised stream with that block's bias
    (repeated for each set) and nonlinearity, over the same positions as :func:`collect_ffn_stats`
    (no BOS, no padding): ``top_seq, top_pos``, each ``[m · d_mlp, k]``. With the block's own
    ``W_in`` this is ``collect_ffn_stats``' ranking; with other keys, a control for it."""
    _check_model(model)
    _check_layer(model, layer)
    dm = model.cfg.d_mlp
    if not isinstance(keys, torch.Tensor) or keys.ndim != 2 or keys.shape[0] != model.cfg.d_model \
            or keys.shape[1] == 0 or keys.shape[1] % dm:
        raise ValueError(f"keys must be [d_model, m · d_mlp] = [{model.cfg.d_model}, m · {dm}], "
                         f"got {getattr(keys, 'shape', keys)}.")
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (tokens.shape[0],):
        raise ValueError("lengths must be a [n] tensor (one length per sequence).")
    name, T, n = f"blocks.{layer}.ln2.hook_normalized", tokens.shape[1], keys.shape[1]
    keys, bias = keys.cpu().float(), model.b_in[layer].detach().cpu().float().repeat(n // dm)
    top_v = torch.full((n, k), -math.inf)
    top_s, top_p = torch.zeros((n, k), dtype=torch.long), torch.zeros((n, k), dtype=torch.long)
    for start in range(0, tokens.shape[0], batch_size):
        tb = tokens[start:start + batch_size]
        b = tb.shape[0]
        valid = ((torch.arange(T)[None] < lengths[start:start + b, None]) & (torch.arange(T)[None] > 0)).reshape(-1)
        _, cache = model.run_with_cache(tb.to(model.cfg.device), names_filter=lambda x: x == name)
        x = cache[name].reshape(b * T, -1)[valid.to(cache[name].device)].cpu().float()
        seq_ids = (torch.arange(b)[:, None] + start).expand(b, T).reshape(-1)[valid]
        pos_ids = torch.arange(T)[None].expand(b, T).reshape(-1)[valid]
        a = _activation(model, x @ keys + bias).T                                  # [n, tokens in batch]
        v, idx = torch.cat([top_v, a], 1).topk(k, dim=1)
        top_s = torch.cat([top_s, seq_ids[None].expand(n, -1)], 1).gather(1, idx)
        top_p = torch.cat([top_p, pos_ids[None].expand(n, -1)], 1).gather(1, idx)
        top_v = v
    return top_s, top_p


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


#: The classes :func:`classify_neurons` returns, in the order of its codes.
NEURON_CLASSES = ("shallow", "semantic", "mixed")


def _mode_count(x: torch.Tensor) -> torch.Tensor:
    """How often the commonest entry occurs along the last dimension."""
    return (x[..., :, None] == x[..., None, :]).sum(-1).max(-1).values


def _n_distinct(x: torch.Tensor) -> torch.Tensor:
    """How many different entries there are along the last dimension."""
    srt = x.sort(-1).values
    return (srt[..., 1:] != srt[..., :-1]).sum(-1) + 1


def classify_neurons(trigger_tokens: torch.Tensor, trigger_labels: torch.Tensor, trigger_sentences=None,
                     threshold: float = 0.5, min_sentences: int = 1) -> torch.Tensor:
    """:func:`classify_neuron` for many neurons at once, as codes into :data:`NEURON_CLASSES`.

    ``trigger_tokens``, ``trigger_labels`` (integer label ids) and ``trigger_sentences`` (which
    sentence each prefix sits in) are ``[..., k]``, one row per neuron. A neuron is "semantic" only
    if one label covers more than ``threshold`` of its prefixes AND they come from at least
    ``min_sentences`` different sentences (prefixes from one sentence share its label by construction).
    """
    t, lab = torch.as_tensor(trigger_tokens), torch.as_tensor(trigger_labels)
    if t.shape != lab.shape or t.ndim < 1 or t.shape[-1] == 0:
        raise ValueError(f"need one label per trigger token, [..., k] with k ≥ 1; got {tuple(t.shape)} and {tuple(lab.shape)}.")
    if not isinstance(min_sentences, int) or not 1 <= min_sentences <= t.shape[-1]:
        raise ValueError(f"min_sentences must be an int in 1..{t.shape[-1]}, got {min_sentences!r}.")
    k = t.shape[-1]
    semantic = _mode_count(lab) > threshold * k
    if trigger_sentences is not None:
        sen = torch.as_tensor(trigger_sentences)
        if sen.shape != t.shape:
            raise ValueError(f"trigger_sentences must have the tokens' shape {tuple(t.shape)}, got {tuple(sen.shape)}.")
        semantic &= _n_distinct(sen) >= min_sentences
    shallow = _mode_count(t) > threshold * k
    return torch.where(shallow, 0, torch.where(semantic, 1, 2))


def shuffle_within_groups(values: torch.Tensor, groups: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``values`` permuted at random among the entries that share a group (1-d tensors of equal length).

    Used as a null: labels shuffled among each token's own occurrences keep which tokens carry
    which labels how often, and break only the link between one occurrence and its sentence.
    """
    values, groups = torch.as_tensor(values), torch.as_tensor(groups)
    if values.ndim != 1 or values.shape != groups.shape:
        raise ValueError(f"values and groups must be 1-d of the same length, got {tuple(values.shape)} and {tuple(groups.shape)}.")
    n = len(values)
    noise = torch.rand(n, generator=generator)
    order_rand = np.lexsort((noise.numpy(), groups.numpy()))            # by group, random inside each group
    order_same = np.lexsort((np.arange(n), groups.numpy()))             # by group, original order inside
    out = values.clone()
    out[torch.as_tensor(order_same)] = values[torch.as_tensor(order_rand)]
    return out


def agreement_by_layer(model, stats: FFNStats, tokens: torch.Tensor, lengths: torch.Tensor,
                       n_shuffles: int = 20, seed: int = 0, n_neurons: int | None = None) -> dict:
    """How often a value's top token is the token that follows its key's top prefixes.

    For each neuron: the fraction of its top-k prefixes whose next token is the
    top token of ``v_i W_U``. ``agreement[l]`` averages that over neurons;
    ``chance[l]`` does the same after shuffling which value goes with which key
    within the layer (mean over ``n_shuffles`` shuffles; ``chance_sd[l]`` is their standard
    deviation). The values' top tokens are found in chunks of neurons, so the ``d_mlp × d_vocab``
    projection is never held at once (GPT-2 small: 3072 × 50257). ``n_neurons`` (default: all):
    measure both on that many neurons per block, drawn at random (a different draw per block), and
    shuffle values among them; ``n_neurons`` in the result says how many were used. That
    projection is most of the cost, so a big model on a CPU passes
    ``helpers.core.scaled(d_mlp, model, minimum)``.
    """
    _check_model(model)
    L, dm, k = stats.top_values.shape
    n_used = dm if n_neurons is None else min(dm, require_int("n_neurons", n_neurons, 1, note="neurons per block; None: all"))
    g_pick = torch.Generator().manual_seed(seed + 1)
    T = tokens.shape[1]
    nxt_pos = stats.top_pos + 1
    has_next = nxt_pos < lengths[stats.top_seq]
    nxt = tokens[stats.top_seq, nxt_pos.clamp(max=T - 1)]               # [L, dm, k]
    g = torch.Generator().manual_seed(seed)
    agree, chance, chance_sd = [], [], []
    for l in range(L):
        rows = torch.arange(dm) if n_used == dm else torch.randperm(dm, generator=g_pick)[:n_used].sort().values
        W_rows = model.W_out[l][rows.to(model.W_out.device)]
        chunk = max(1, 2**22 // model.cfg.d_vocab)
        top_tok = torch.cat([(W_rows[i:i + chunk] @ model.W_U).argmax(-1).cpu()
                             for i in range(0, n_used, chunk)])             # [n_used]
        nxt_l, has_l = nxt[l][rows], has_next[l][rows]
        hit = ((nxt_l == top_tok[:, None]) & has_l).float().mean(1)
        agree.append(float(hit.mean()))
        sh = []
        for _ in range(n_shuffles):
            perm = torch.randperm(n_used, generator=g)
            sh.append(float(((nxt_l == top_tok[perm][:, None]) & has_l).float().mean()))
        chance.append(float(np.mean(sh)))
        chance_sd.append(float(np.std(sh)))
    return {"agreement": agree, "chance": chance, "chance_sd": chance_sd, "n_neurons": n_used}


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
    templates: list = field(default_factory=list)  # the template each clean prompt was rendered from

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
        prompts=[x[5] for x in keep], templates=[_template_for(x[0], held) for x in keep],
    )


def subject_span(model, template: str, subject: str) -> tuple[int, int]:
    """(first, last) positions (counting BOS as 0) of the subject's tokens in ``render(template, subject)``.

    Found from the tokenizer's own output, never assumed: GPT-2 splits " Eiffel" into
    several tokens where the bundled tokenizer has one.
    """
    last = subject_last_position(model, template, subject)
    slot = "{S}" if "{S}" in template else "{s}"
    head = template.split(slot)[0].rstrip()
    first = len(model.tokenizer.encode(head, add_special_tokens=False)) + 1 if head else 1
    return first, last


def rows_per_pass(model, seq_len: int, budget_mb: int = 512) -> int:
    """How many sequences of ``seq_len`` tokens one forward pass may hold so that its logits and
    activations stay near ``budget_mb`` megabytes: a sweep's batch bounded by the model's size
    (about 2,600 rows for the bundled model at 8 tokens, about 130 for GPT-2 small)."""
    _check_model(model)
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}.")
    cfg = model.cfg
    per_row = 4 * seq_len * (cfg.d_vocab + cfg.n_layers * (cfg.d_mlp + 4 * cfg.d_model))
    return max(1, min(4096, budget_mb * 2**20 // per_row))


@torch.no_grad()
def neuron_patch_effects(model, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor, metric, layer: int,
                         position: int, batch_size: int | None = None, max_neurons: int | None = None) -> torch.Tensor:
    """Activation patching one neuron at a time: for each neuron of block ``layer``, restore its
    coefficient (``blocks.{layer}.mlp.hook_post``) at ``position`` from the clean run into the
    corrupted run and read ``metric``. One prompt (``[1, T]`` tokens); returns ``[d_mlp]``.
    ``batch_size``: patched runs per forward pass (default :func:`rows_per_pass`).
    ``max_neurons`` (default: all): patch only the neurons whose restored write is largest,
    ``|a_clean − a_corrupted| · ‖v_i‖`` at ``position`` (a neuron whose coefficient is the same in
    both runs cannot change anything); every other neuron gets the unpatched corrupted run's metric.
    For a big model on a CPU (``helpers.core.scaled(d_mlp, model, minimum)``)."""
    _check_model(model)
    _check_layer(model, layer)
    for nm, t in (("clean_tokens", clean_tokens), ("corrupted_tokens", corrupted_tokens)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != 1:
            raise ValueError(f"{nm} must be one prompt of token ids, shape [1, T]; got {getattr(t, 'shape', t)}.")
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"clean and corrupted prompts must have the same length, got {tuple(clean_tokens.shape)} "
                         f"and {tuple(corrupted_tokens.shape)}.")
    T = clean_tokens.shape[1]
    if not isinstance(position, int) or not -T <= position < T:
        raise ValueError(f"position must be an int in [-{T}, {T}), got {position!r}.")
    position %= T
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n == name)
    clean_act = cache[name][0, position]
    dm = model.cfg.d_mlp
    neurons = torch.arange(dm, device=clean_act.device)
    unswept = None                      # the metric every unswept neuron gets (None: all are swept)
    if _sweep_fewer(max_neurons, dm):
        logits, cache = model.run_with_cache(corrupted_tokens, names_filter=lambda n: n == name)
        size = (clean_act - cache[name][0, position]).abs() * model.W_out[layer].norm(dim=-1).to(clean_act.device)
        neurons = size.topk(max_neurons).indices.sort().values
        unswept = metric(logits).float().cpu()
    step = batch_size or rows_per_pass(model, T)
    out = []
    for start in range(0, len(neurons), step):
        ns = neurons[start:start + step]

        def hook(act, hook=None, ns=ns):
            act[torch.arange(len(ns), device=act.device), position, ns] = clean_act[ns]
            return act
        logits = model.run_with_hooks(corrupted_tokens.repeat(len(ns), 1), fwd_hooks=[(name, hook)])
        out.append(metric(logits).float().cpu())
    return _spread(torch.cat(out), neurons, dm, unswept)


def _sweep_fewer(max_neurons, d_mlp: int) -> bool:
    """Whether a neuron sweep keeps only ``max_neurons`` of ``d_mlp`` (validated: a positive int or None)."""
    if max_neurons is None:
        return False
    return require_int("max_neurons", max_neurons, 1, note="how many neurons to sweep; None sweeps all") < d_mlp


def _spread(values: torch.Tensor, neurons: torch.Tensor, d_mlp: int, rest) -> torch.Tensor:
    """A sweep's ``values`` for ``neurons`` placed in a ``[d_mlp]`` vector; the other neurons get ``rest``."""
    if rest is None:
        return values
    full = torch.full((d_mlp,), float(rest[0]))
    full[neurons.cpu()] = values
    return full


@torch.no_grad()
def neuron_ablation_effects(model, tokens: torch.Tensor, metric, layer: int, batch_size: int | None = None,
                            max_neurons: int | None = None) -> torch.Tensor:
    """Zero-ablate one neuron of block ``layer`` at a time (its coefficient at every position) in a
    run on one prompt (``[1, T]``) and read ``metric``: ``[d_mlp]``, one value per neuron.
    ``max_neurons`` (default: all): ablate only the neurons whose write is largest, ``‖a_i‖ · ‖v_i‖``
    over the prompt's positions; every other neuron gets the clean run's metric (as
    :func:`neuron_patch_effects`)."""
    _check_model(model)
    _check_layer(model, layer)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"tokens must be one prompt, shape [1, T]; got {getattr(tokens, 'shape', tokens)}.")
    name = f"blocks.{layer}.mlp.hook_post"
    dm = model.cfg.d_mlp
    neurons = torch.arange(dm)
    unswept = None                      # the metric every unswept neuron gets (None: all are swept)
    if _sweep_fewer(max_neurons, dm):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
        size = cache[name][0].norm(dim=0).cpu() * model.W_out[layer].norm(dim=-1).cpu()
        neurons = size.topk(max_neurons).indices.sort().values
        unswept = metric(logits).float().cpu()
    step = batch_size or rows_per_pass(model, tokens.shape[1])
    out = []
    for start in range(0, len(neurons), step):
        ns = neurons[start:start + step]

        def hook(act, hook=None, ns=ns):
            act[torch.arange(len(ns), device=act.device), :, ns.to(act.device)] = 0.0
            return act
        logits = model.run_with_hooks(tokens.repeat(len(ns), 1), fwd_hooks=[(name, hook)])
        out.append(metric(logits).float().cpu())
    return _spread(torch.cat(out), neurons, dm, unswept)


@torch.no_grad()
def key_second_moment(model, tokens: torch.Tensor, lengths: torch.Tensor, layer: int, batch_size: int = 64) -> torch.Tensor:
    """E[a aᵀ] of block ``layer``'s coefficient vectors over the real tokens of a sample
    (padding and BOS ignored): ``[d_mlp, d_mlp]``, the metric of the rank-one edit."""
    _check_model(model)
    _check_layer(model, layer)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or lengths.shape != (tokens.shape[0],):
        raise ValueError("tokens must be [n, T] and lengths [n].")
    name = f"blocks.{layer}.mlp.hook_post"
    dm, T = model.cfg.d_mlp, tokens.shape[1]
    acc, n = torch.zeros(dm, dm, dtype=torch.float64), 0
    for start in range(0, tokens.shape[0], batch_size):
        tb = tokens[start:start + batch_size]
        valid = ((torch.arange(T)[None] < lengths[start:start + batch_size, None]) & (torch.arange(T)[None] > 0)).reshape(-1)
        _, cache = model.run_with_cache(tb, names_filter=lambda nm: nm == name, stop_at_layer=layer + 1)
        a = cache[name].reshape(-1, dm)[valid.to(cache[name].device)].cpu().double()
        acc += a.T @ a
        n += int(valid.sum())
    return (acc / n).float()


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
                        subplot_titles=("Top prefixes ([trigger] → next)",
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
        menus.append({"buttons": buttons, "direction": "down", "x": 0.45, "y": 1.16, "xanchor": "left",
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
        meta={"view": f"block {layers[0]}"},
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
# References are public ``solution_<name>``; each Exercise lists the wrong answers readers give,
# with the misconception each one shows (helpers.exercises checks every one of them).
_BUNDLED = "rs-gpt2-4l"
_ORGANISM: dict = {}


def _organism():
    """The bundled model, loaded once, for exercises whose cases or answers need a model."""
    if "model" not in _ORGANISM:
        from .models import load_model

        torch.set_grad_enabled(False)
        _ORGANISM["model"] = load_model(_BUNDLED)
    return _ORGANISM["model"]


def solution_mlp_out_from_memories(coefficients, W_out, b_out):
    """Σ_i a_i v_i + b_out (the reference for the memories exercise)."""
    return coefficients @ W_out + b_out


def _memories_cases():
    g = torch.Generator().manual_seed(1)
    return [((torch.randn(5, 12, generator=g), torch.randn(12, 4, generator=g), torch.randn(4, generator=g)), {}),
            ((torch.randn(2, 3, 8, generator=g), torch.randn(8, 6, generator=g), torch.randn(6, generator=g)), {})]


def _gelu(x):
    from transformer_lens.utilities.activation_functions import gelu_new

    return gelu_new(x)


MEMORIES = Exercise(
    id="ch4.memories",
    name="mlp_out_from_memories",
    solution=solution_mlp_out_from_memories,
    cases=_memories_cases,
    mistakes=[
        Mistake(lambda a, W_out, b: a @ W_out, "you left out b_out: the block adds its output bias once, "
                "whatever the coefficients are."),
        Mistake(lambda a, W_out, b: _gelu(a) @ W_out + b, "the coefficients are already the neuron activations, "
                "after the GELU; applying f again bends them twice."),
        Mistake(lambda a, W_out, b: a @ W_out + a.sum(-1, keepdim=True) * b, "b_out is not a value vector: it is "
                "added once, not once per unit of coefficient."),
    ],
)


def check_mlp_out_from_memories(fn) -> bool:
    """Exercise: the MLP output as a coefficient-weighted sum of value vectors."""
    return MEMORIES.check(fn)


def solution_value_top_tokens(W_out, W_U, neuron, k):
    """Ids of the k tokens that value v_neuron pushes up most, largest first."""
    return (W_out[neuron] @ W_U).topk(k).indices


def _value_cases():
    g = torch.Generator().manual_seed(2)
    W_out, W_U = torch.randn(16, 6, generator=g), torch.randn(6, 30, generator=g)
    return [((W_out, W_U, 3, 5), {}), ((W_out, W_U, 11, 4), {}), ((W_out, W_U, 0, 3), {})]


VALUE_TOP_TOKENS = Exercise(
    id="ch4.value-top-tokens",
    name="value_top_tokens",
    solution=solution_value_top_tokens,
    cases=_value_cases,
    mistakes=[
        Mistake(lambda W_out, W_U, n, k: (-(W_out[n] @ W_U)).topk(k).indices, "those are the tokens the value "
                "pushes DOWN most: take the largest entries of v_i W_U, not the smallest."),
        Mistake(lambda W_out, W_U, n, k: (W_out[n] @ W_U).topk(k).indices.flip(0), "right tokens, wrong order: "
                "the largest boost comes first."),
        Mistake(lambda W_out, W_U, n, k: (W_out[n] @ W_U).topk(k).values, "you returned the logit boosts; the "
                "exercise asks for the token ids (topk's .indices)."),
    ],
)


def check_value_top_tokens(fn) -> bool:
    """Exercise: the token ids a neuron's value vector promotes most, best first."""
    return VALUE_TOP_TOKENS.check(fn)


def solution_multi_key_update(W_, K, V, C):
    """The C-metric-minimal change of W_ with K @ W_new == V for n keys at once (rows of K):
    W + C⁻¹Kᵀ (K C⁻¹ Kᵀ)⁻¹ (V − K W)."""
    Cinv_Kt = torch.linalg.solve(C, K.T)                                     # [d_mlp, n]
    return W_ + Cinv_Kt @ torch.linalg.solve(K @ Cinv_Kt, V - K @ W_)


def _rank_one_sum(W_, K, V, C):
    out = W_.clone()
    for k, v in zip(K, V):                                                   # n separate rank-one edits, added
        u = torch.linalg.solve(C, k)
        out = out + torch.outer(u / (k @ u), v - k @ W_)
    return out


def _multi_key_cases():
    out = []
    for seed, n in ((3, 3), (4, 2), (5, 1)):
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(10, 10, generator=g, dtype=torch.float64)
        C = A @ A.T / 10 + 0.1 * torch.eye(10, dtype=torch.float64)
        K = torch.randn(n, 10, generator=g, dtype=torch.float64) + 0.5       # keys that share a direction
        out.append(((torch.randn(10, 4, generator=g, dtype=torch.float64), K,
                     torch.randn(n, 4, generator=g, dtype=torch.float64), C), {}))
    return out


MULTI_KEY = Exercise(
    "ch4.multi-key-update", "multi_key_update", solution_multi_key_update, _multi_key_cases, mistakes=[
        Mistake(_rank_one_sum, "n rank-one edits added together: each one also moves the OTHER keys' outputs by "
                "(k_j · u_i) δ_i, so unless k_iᵀC⁻¹k_j = 0 for every pair of keys they miss their targets. "
                "Solve for all n shifts at once."),
        Mistake(lambda W_, K, V, C: W_ + K.T @ torch.linalg.solve(K @ K.T, V - K @ W_), "your edit hits every "
                "target but is not the smallest in the metric of C: the plain metric ignores which directions "
                "ordinary text uses. Put C⁻¹ in front of Kᵀ and inside the n × n matrix."),
        Mistake(lambda W_, K, V, C: W_ + torch.linalg.solve(C, K.T) @ torch.linalg.solve(K @ torch.linalg.solve(C, K.T), V),
                "the change must carry the residuals V − K·W, not the targets themselves, or the old values are "
                "counted twice."),
    ],
    atol=1e-6,
)


def check_multi_key_update(fn) -> bool:
    """Exercise: the smallest edit of W_out (metric C) that maps n keys to n new values."""
    return MULTI_KEY.check(fn)


def solution_subspace_overlap(A, B):
    """‖AᵀB‖²_F / min(r_A, r_B) for orthonormal columns."""
    return subspace_overlap(A, B)


def _overlap_cases():
    g = torch.Generator().manual_seed(4)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    return [((Q[:, :3], Q[:, :5]), {}), ((Q[:, :3], Q[:, 3:7]), {}),
            ((Q[:, :4], torch.linalg.qr(torch.randn(12, 6, generator=g))[0]), {}),
            ((torch.linalg.qr(torch.randn(12, 5, generator=g))[0], Q[:, :2]), {})]


SUBSPACE_OVERLAP = Exercise(
    id="ch4.subspace-overlap",
    name="subspace_overlap",
    solution=solution_subspace_overlap,
    cases=_overlap_cases,
    mistakes=[
        Mistake(lambda A, B: float((A.T @ B).pow(2).sum() / max(A.shape[1], B.shape[1])), "divide by the SMALLER "
                "rank: only then does a subspace that contains the other score 1."),
        Mistake(lambda A, B: float((A.T @ B).abs().sum() / min(A.shape[1], B.shape[1])), "square the cosines: "
                "‖AᵀB‖²_F adds the squared projections, which is what makes the score a mean cos²."),
        Mistake(lambda A, B: float((A.T @ B).pow(2).sum()), "without dividing by the smaller rank the score grows "
                "with the ranks instead of lying in [0, 1]."),
    ],
)


def check_subspace_overlap(fn) -> bool:
    """Exercise: overlap of two subspaces given by orthonormal columns."""
    return SUBSPACE_OVERLAP.check(fn)


#: The prediction exercise's setting: two random subspaces of these ranks in this many dimensions.
RANDOM_OVERLAP_SETTING = {"r_A": 16, "r_B": 64, "d": 128}


def random_overlap_mean(r_a: int, r_b: int, d: int) -> float:
    """The mean :func:`subspace_overlap` of two random subspaces of ranks ``r_a`` and ``r_b`` in ``d``
    dimensions (the closed form the prediction exercise asks for)."""
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (r_a, r_b, d)) or not (1 <= r_a <= d and 1 <= r_b <= d):
        raise ValueError(f"ranks must be ints in 1..d and d a positive int, got r_a={r_a!r}, r_b={r_b!r}, d={d!r}.")
    return max(r_a, r_b) / d


def solution_random_overlap() -> float:
    """E[overlap] of random subspaces of ranks r_A ≤ r_B in d dimensions."""
    return random_overlap_mean(*RANDOM_OVERLAP_SETTING.values())


def _close_prediction(tol: float):
    def cmp(got, want, what):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise CheckFailed(f"{what}: write your prediction as a number, got {type(got).__name__}.")
        if abs(float(got) - float(want)) > tol:
            raise CheckFailed(f"{what}: the measured value is {float(want):.3g}; your prediction {float(got):.3g} "
                              f"is more than {tol:g} away.")
    return cmp


PREDICT_RANDOM_OVERLAP = Exercise(
    id="ch4.predict-random-overlap",
    name="predicted_overlap",
    solution=solution_random_overlap,
    cases=None,
    compare=_close_prediction(0.03),
)


check_random_overlap_prediction = PREDICT_RANDOM_OVERLAP.check_value


def solution_most_damaging_neuron(model, tokens, answer, rival, layer, max_neurons=None):
    """The neuron of ``layer`` whose zero-ablation (every position) most lowers logit[answer] − logit[rival]
    at the last position of the one-prompt batch ``tokens`` (among the ``max_neurons`` with the largest
    writes, if given: see :func:`neuron_ablation_effects`)."""
    from .patching import logit_diff_metric

    metric = logit_diff_metric([int(answer)], [int(rival)])
    base = float(metric(model(tokens))[0])
    return int((base - neuron_ablation_effects(model, tokens, metric, layer, max_neurons=max_neurons)).argmax())


def _most_activated(model, tokens, answer, rival, layer):
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    return int(cache[name][0, -1].argmax())


def _largest_direct_attribution(model, tokens, answer, rival, layer):
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (name, "ln_final.hook_scale"))
    u = model.W_U[:, int(answer)] - model.W_U[:, int(rival)]
    return int((cache[name][0, -1] * (model.W_out[layer] @ u)).argmax())


def _most_helpful(model, tokens, answer, rival, layer):
    from .patching import logit_diff_metric

    metric = logit_diff_metric([int(answer)], [int(rival)])
    return int(neuron_ablation_effects(model, tokens, metric, layer).argmax())


def damaging_neuron_cases(model=None):
    """(model, tokens, answer id, rival id, layer) for three facts and two depths, from ``model``'s own
    tokenizer (default: the bundled model)."""
    model = model or _organism()
    tok = model.tokenizer
    first = lambda w: tok.encode(" " + w, add_special_tokens=False)[0]  # noqa: E731  (the answer's first token)
    items = [("The Eiffel Tower is located in", "Paris", "Rome", 0),
             ("The Eiffel Tower is located in", "Paris", "Rome", model.cfg.n_layers - 1),
             ("The capital of Japan is", "Tokyo", "Paris", 0)]
    return [((model, model.to_tokens(p), first(a), first(r), layer), {}) for p, a, r, layer in items]


MOST_DAMAGING_NEURON = Exercise(
    "ch4.most-damaging-neuron", "most_damaging_neuron", solution_most_damaging_neuron, damaging_neuron_cases,
    mistakes=[
        Mistake(_most_activated, "the neuron that fires hardest is not the one the answer depends on: its value may "
                "write elsewhere. Remove each neuron and measure what is lost."),
        Mistake(_largest_direct_attribution, "direct attribution counts only a neuron's direct path to the logits; "
                "removing it also changes what every later block computes. Measure the ablation itself."),
        Mistake(_most_helpful, "sign: that is the neuron whose removal RAISES the logit difference most; the "
                "exercise asks for the largest drop."),
    ],
)


def check_most_damaging_neuron(fn, model=None) -> bool:
    """Design exercise: the neuron whose ablation most reduces one fact's answer (cases from ``model``)."""
    return MOST_DAMAGING_NEURON.check(fn, cases=None if model is None else damaging_neuron_cases(model))


#: Answers for the subject-position prediction: the median rank of the answer, as a bucket.
RANK_BUCKETS = ("top-1", "top-10", "top-100", "beyond 100")


def rank_bucket(rank: float) -> str:
    """The bucket of ``RANK_BUCKETS`` that a rank (0 = top prediction) falls in."""
    if not isinstance(rank, (int, float)) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"rank must be a number ≥ 0 (0 = the top prediction), got {rank!r}.")
    return RANK_BUCKETS[0] if rank < 1 else RANK_BUCKETS[1] if rank < 10 else RANK_BUCKETS[2] if rank < 100 \
        else RANK_BUCKETS[3]


@torch.no_grad()
def subject_lens_median_rank(model, pairs: FactPairs, layer: int = 0) -> float:
    """Median over facts of the answer's rank (0 = top) through the logit lens at the subject's last
    token, in the stream after block ``layer`` (``blocks.{layer}.hook_resid_post``)."""
    _check_layer(model, layer)
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(pairs.clean, names_filter=lambda n: n == name)
    rows = torch.arange(len(pairs))
    x = cache[name][rows.to(cache[name].device), pairs.subject_last.to(cache[name].device)]
    logits = (model.ln_final(x[:, None]) [:, 0] @ model.W_U + model.b_U).cpu()
    rank = (logits > logits[rows, pairs.answer][:, None]).sum(-1).float()
    return float(rank.median())


def solution_subject_lens_bucket() -> str:
    """Measured on the bundled model: the bucket of the answer's median rank at the subject's last token after block 0."""
    model = _organism()
    return rank_bucket(subject_lens_median_rank(model, fact_pairs(model), 0))


PREDICT_SUBJECT_LENS = Exercise("ch4.predict-subject-lens", "predicted_bucket", solution_subject_lens_bucket, choices=RANK_BUCKETS)
check_subject_lens_prediction = PREDICT_SUBJECT_LENS.check_value


#: Answers for the value prediction: how many of a block's values put a token in their top 10.
PROMOTE_BUCKETS = ("0", "1-5", "6-20", "more than 20")


@torch.no_grad()
def top_k_counts(model, layer: int, k: int = 10) -> torch.Tensor:
    """For every token, how many of block ``layer``'s values have it among the ``k`` tokens they push up
    most: ``[d_vocab]`` ints (``v_i W_U`` in chunks of neurons, so the ``d_mlp × d_vocab`` matrix is
    never held at once). Chance: ``d_mlp · k / d_vocab`` per token."""
    _check_model(model)
    _check_layer(model, layer)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k must be an int in 1..{model.cfg.d_vocab}, got {k!r}.")
    chunk = max(1, 2**22 // model.cfg.d_vocab)
    W_out, counts = model.W_out[layer], torch.zeros(model.cfg.d_vocab, dtype=torch.long)
    for i in range(0, model.cfg.d_mlp, chunk):
        top = (W_out[i:i + chunk] @ model.W_U).topk(k, dim=-1).indices.cpu()
        counts += torch.bincount(top.flatten(), minlength=model.cfg.d_vocab)
    return counts


def values_promoting(model, layer: int, token: int, k: int = 10) -> int:
    """How many of block ``layer``'s values have ``token`` among the ``k`` tokens they push up most."""
    _check_model(model)
    if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < model.cfg.d_vocab:
        raise ValueError(f"token must be an id in 0..{model.cfg.d_vocab - 1}, got {token!r}.")
    return int(top_k_counts(model, layer, k)[token])


def promote_bucket(count: int) -> str:
    """The bucket of ``PROMOTE_BUCKETS`` that a count falls in."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be an int ≥ 0, got {count!r}.")
    return PROMOTE_BUCKETS[0] if count == 0 else PROMOTE_BUCKETS[1] if count <= 5 else PROMOTE_BUCKETS[2] \
        if count <= 20 else PROMOTE_BUCKETS[3]


def solution_paris_values_bucket() -> str:
    """Measured on the bundled model: how many of the last block's values have " Paris" in their top 10."""
    model = _organism()
    paris = model.tokenizer.encode(" Paris", add_special_tokens=False)[0]
    return promote_bucket(values_promoting(model, model.cfg.n_layers - 1, paris, 10))


PREDICT_PARIS_VALUES = Exercise("ch4.predict-paris-values", "predicted_paris_values", solution_paris_values_bucket, choices=PROMOTE_BUCKETS)
check_paris_values_prediction = PREDICT_PARIS_VALUES.check_value


#: Answers for the specificity prediction: a neuron's cost on the other facts compared with its cost on its own fact.
SPECIFICITY_BUCKETS = ("about as much", "much less")


def specificity_bucket(drop_on_target: float, mean_drop_on_others: float) -> str:
    """ "much less" if the mean drop on the other facts is under half the drop on the target, else "about as much"."""
    for name, x in (("drop_on_target", drop_on_target), ("mean_drop_on_others", mean_drop_on_others)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"{name} must be a finite number (a drop in logit difference), got {x!r}.")
    return SPECIFICITY_BUCKETS[1] if mean_drop_on_others < 0.5 * drop_on_target else SPECIFICITY_BUCKETS[0]


PREDICT_SPECIFICITY = Exercise(
    "ch4.predict-neuron-specificity", "predicted_specificity", specificity_bucket,
    [((1.0, 0.9), {}), ((1.0, 0.1), {}), ((2.0, 1.5), {})],
    mistakes=[
        Mistake(lambda t, o: SPECIFICITY_BUCKETS[0], "a neuron chosen because one fact depends on it need not "
                "serve the others: its key fires on that subject's context, and on other prompts it is weak or "
                "its value points elsewhere, so removing it costs them less."),
        Mistake(lambda t, o: SPECIFICITY_BUCKETS[1], "the neuron chosen for one fact can be a shared one: at the "
                "retrieval site many facts read the same neurons, so removing it costs the other facts about "
                "as much."),
    ],
)


def check_specificity_prediction(predicted, drop_on_target: float, mean_drop_on_others: float) -> bool:
    """Exercise: compare a predicted specificity (one of SPECIFICITY_BUCKETS) with the chapter's measurement."""
    if predicted is not Ellipsis and predicted not in SPECIFICITY_BUCKETS:
        raise CheckFailed(f"predicted_specificity: choose one of {SPECIFICITY_BUCKETS}, got {predicted!r}.")
    return PREDICT_SPECIFICITY.check_prediction(predicted, float(drop_on_target), float(mean_drop_on_others))
