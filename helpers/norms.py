"""Where the LayerNorm sits: a small transformer that can be built pre-LN or post-LN.

Chapter 3 compares the two placements of LayerNorm on one codebase. ``NormGPT``
is a nanoGPT-sized decoder whose blocks either normalise the sum after each
residual addition (post-LN, ``x = LN(x + F(x))``, Vaswani et al. 2017) or
normalise only what a sub-layer reads (pre-LN, ``x = x + F(LN(x))``); every
other line, and the initial weights for a given seed, are shared. Identity
modules named like TransformerLens hooks (``blocks.3.hook_resid_post``) expose
the stream, :func:`stream_norms` and :func:`ffn_grad_norms` measure it going
forward and backward, :func:`train_lm` is the chapter's small training loop on
character-level text from :mod:`helpers.zoo.corpus`, and the ``check_*``
functions are the chapter's exercise checkers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .exercises import CheckFailed, Exercise, Mistake, compare
from .plotting import PALETTE

__all__ = [
    "NormConfig",
    "NormGPT",
    "stream_cache",
    "stream_norms",
    "ffn_grad_norms",
    "write_norms",
    "ln_input_norms",
    "mlp_write",
    "post_ln_identity_theory",
    "stream_jacobian",
    "xiong_bounds",
    "CharData",
    "char_data",
    "train_lm",
    "train_arms",
    "depth_profiles",
    "depth_slider_figure",
    "loss_curves_figure",
    "deepnorm_block_update",
    "check_post_ln_input",
    "check_wide_mlp_std",
    "check_deepnorm_identity",
    "check_xiong_bounds",
    "loglog_slope",
    "last_layer_exponents",
    "check_position_exponent",
]

NORMS = ("pre", "post")


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NormConfig:
    """Shape and placement of a :class:`NormGPT`.

    The defaults follow the setting of Xiong et al. (2020): ReLU MLP whose hidden
    width equals ``d_model``, no biases, every weight matrix Xavier-Gaussian
    (entries N(0, 2/(fan_in + fan_out)), which is N(0, 1/d) for a square map).
    """

    norm: str = "pre"  # "pre" (x + F(LN(x))) or "post" (LN(x + F(x)))
    n_layers: int = 6
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 64
    n_ctx: int = 64
    d_vocab: int = 80
    act: str = "relu"  # "relu" or "gelu"
    init_std: float | None = None  # None: Xavier-Gaussian; a number: N(0, init_std²) for every matrix
    scale_resid: bool = False  # GPT-2: the matrices that write to the stream (W_O, W_out) × 1/√(2·n_layers)

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be 'pre' or 'post', got {self.norm!r}.")
        if self.act not in ("relu", "gelu"):
            raise ValueError(f"act must be 'relu' or 'gelu', got {self.act!r}.")
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if self.init_std is not None and not (isinstance(self.init_std, (int, float)) and self.init_std > 0):
            raise ValueError(f"init_std must be None (Xavier) or a positive number, got {self.init_std!r}.")
        if not isinstance(self.scale_resid, bool):
            raise TypeError(f"scale_resid must be True or False, got {self.scale_resid!r}.")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")


class HookPoint(nn.Identity):
    """Does nothing; exists so that a forward hook can read the stream here."""


class LayerNorm(nn.Module):
    """LayerNorm with gain 1 and bias 0 at initialisation: ‖LN(x)‖² = d (up to eps)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x):  # (B, T, d)
        x = x - x.mean(-1, keepdim=True)
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: NormConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.W_Q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.W_K = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.W_V = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.W_O = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x):  # (B, T, d)
        B, T, d = x.shape
        q, k, v = (W(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
                   for W in (self.W_Q, self.W_K, self.W_V))  # (B, H, T, d_head)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        z = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # (B, H, T, d_head)
        return self.W_O(z.transpose(1, 2).reshape(B, T, d))  # (B, T, d)


class MLP(nn.Module):
    def __init__(self, cfg: NormConfig):
        super().__init__()
        self.W_in = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.W_out = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)  # Xiong's W^{2,l}
        self.act = F.relu if cfg.act == "relu" else F.gelu

    def forward(self, x):  # (B, T, d)
        return self.W_out(self.act(self.W_in(x)))  # (B, T, d_mlp) inside


class Block(nn.Module):
    def __init__(self, cfg: NormConfig):
        super().__init__()
        self.norm = cfg.norm
        self.ln1, self.attn = LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.mlp = LayerNorm(cfg.d_model), MLP(cfg)
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x):  # (B, T, d) -> (B, T, d)
        x = self.hook_resid_pre(x)
        if self.norm == "pre":  # the stream itself is never normalised: identity path
            x = self.hook_resid_mid(x + self.attn(self.ln1(x)))
            x = x + self.mlp(self.ln2(x))
        else:  # post-LN: the sum is normalised, so the stream is reset every sub-layer
            x = self.hook_resid_mid(self.ln1(x + self.attn(x)))
            x = self.ln2(x + self.mlp(x))
        return self.hook_resid_post(x)


class NormGPT(nn.Module):
    """A decoder-only transformer with LayerNorm before (pre-LN) or after (post-LN) each sub-layer.

    ``forward(tokens)`` returns logits; ``forward_stream(x)`` runs the blocks on
    given stream vectors (no embedding, no unembedding) and returns h_L.
    Pre-LN ends with a final LayerNorm (``ln_final``) before the unembedding;
    post-LN does not need one, since its last operation is already a LayerNorm.
    """

    def __init__(self, cfg: NormConfig, seed: int = 0):
        super().__init__()
        if not isinstance(cfg, NormConfig):
            raise TypeError(f"NormGPT expects a NormConfig, got {type(cfg).__name__}.")
        self.cfg = cfg
        self.W_E = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.W_pos = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.W_U = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Initialise from ``seed`` only: the pre-LN and post-LN models get identical weights."""
        gen = torch.Generator().manual_seed(int(seed))
        for name, p in self.named_parameters():  # same names, same order in both placements
            if name.endswith(".w"):
                p.fill_(1.0)
            elif name.endswith(".b"):
                p.zero_()
            elif name.startswith(("W_E", "W_pos")):  # token + position: E‖h_0‖² = d
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(2))
            else:  # Xavier-Gaussian (nn.Linear stores (out, in)), or a fixed std as in GPT-2
                std = self.cfg.init_std or math.sqrt(2.0 / (p.shape[0] + p.shape[1]))
                if self.cfg.scale_resid and name.endswith(("attn.W_O.weight", "mlp.W_out.weight")):
                    std /= math.sqrt(2 * self.cfg.n_layers)  # N = 2L residual layers (Radford et al., 2019)
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward_stream(self, x):  # (B, T, d) -> (B, T, d)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, tokens):  # (B, T) int -> (B, T, d_vocab)
        if tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
            raise ValueError(f"tokens must be a 2-D integer tensor (batch, pos), got {tokens.dtype} {tuple(tokens.shape)}.")
        T = tokens.shape[1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx={self.cfg.n_ctx}.")
        h0 = self.hook_embed(self.W_E(tokens) + self.W_pos(torch.arange(T)))  # (B, T, d)
        return self.W_U(self.ln_final(self.forward_stream(h0)))  # (B, T, d_vocab)


def _check_model(model) -> None:
    if not isinstance(model, NormGPT):
        raise TypeError(f"expected a NormGPT, got {type(model).__name__}.")


def _check_input(model, x) -> None:
    d = model.cfg.d_model
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(x).__name__}.")
    if x.is_floating_point():
        if x.dim() != 3 or x.shape[-1] != d:
            raise ValueError(f"stream input must have shape (batch, pos, {d}), got {tuple(x.shape)}.")
    elif x.dim() != 2:
        raise ValueError(f"token input must have shape (batch, pos), got {tuple(x.shape)}.")


def stream_cache(model: NormGPT, x) -> dict[str, torch.Tensor]:
    """Run ``model`` on tokens (B, T) or stream vectors (B, T, d); return every stream hook's value.

    Keys follow TransformerLens: ``blocks.{l}.hook_resid_pre/mid/post`` (and
    ``hook_embed`` for token input).
    """
    _check_model(model)
    _check_input(model, x)
    cache, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, HookPoint):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: cache.__setitem__(name, o.detach())))
    _forward_with(model, x, handles)
    return cache


def _forward_with(model: NormGPT, x, handles) -> None:
    """Run ``x`` (token ids, or a float stream for ``forward_stream``) without gradients, then remove ``handles``."""
    try:
        with torch.no_grad():
            model(x) if not x.is_floating_point() else model.forward_stream(x)
    finally:
        for h in handles:
            h.remove()


def stream_norms(model: NormGPT, x) -> np.ndarray:
    """Mean squared norm E‖h_l‖² of the stream for l = 0..L (h_0 = input, h_l = after block l)."""
    cache = stream_cache(model, x)
    L = model.cfg.n_layers
    states = [cache["blocks.0.hook_resid_pre"]] + [cache[f"blocks.{l}.hook_resid_post"] for l in range(L)]
    return np.array([float(h.pow(2).sum(-1).mean()) for h in states])


def write_norms(model: NormGPT, x) -> np.ndarray:
    """Pre-LN only: mean squared norm of each sub-layer's write, divided by d, shape (L, 2).

    Column 0 is attention's write a_l = h_mid − h_pre, column 1 the MLP's
    m_l = h_post − h_mid (what block l adds to the stream).
    """
    _check_model(model)
    if model.cfg.norm != "pre":
        raise ValueError("write_norms reads the writes off the stream, which only a pre-LN model keeps.")
    cache, d = stream_cache(model, x), model.cfg.d_model
    out = []
    for l in range(model.cfg.n_layers):
        pre, mid, post = (cache[f"blocks.{l}.hook_resid_{k}"] for k in ("pre", "mid", "post"))
        out.append([float((mid - pre).pow(2).sum(-1).mean()) / d, float((post - mid).pow(2).sum(-1).mean()) / d])
    return np.array(out)


def ln_input_norms(model: NormGPT, x) -> np.ndarray:
    """Mean squared norm, divided by d, of what each block's two LayerNorms receive, shape (L, 2).

    Column 0 is ``ln1``'s input, column 1 ``ln2``'s. In post-LN, ``ln2`` reads
    x + MLP(x) with x a LayerNorm output: Xiong et al.'s x^{post,5}. In pre-LN
    the LayerNorms read the stream itself (h_{l-1} and h_mid).
    """
    _check_model(model)
    _check_input(model, x)
    seen, handles = {}, []
    for l, blk in enumerate(model.blocks):
        for j, ln in enumerate((blk.ln1, blk.ln2)):
            handles.append(ln.register_forward_pre_hook(
                lambda m, inp, key=(l, j): seen.__setitem__(key, float(inp[0].detach().pow(2).sum(-1).mean()))))
    _forward_with(model, x, handles)
    d = model.cfg.d_model
    return np.array([[seen[(l, j)] / d for j in range(2)] for l in range(model.cfg.n_layers)])


def mlp_write(d: int, d_mlp: int, act: str = "relu") -> float:
    """E‖MLP(x)‖²/d at initialisation: Xavier-Gaussian weights, no biases, input with ‖x‖² = d.

    Entries of x W_in are N(0, d·v) with v = 2/(d + d_mlp); the activation keeps
    E[φ(z)²] of each (ReLU: half the variance, d·v/2; GELU: by Gauss–Hermite
    quadrature); W_out multiplies the squared norm by d·v. So the write is
    d_mlp·v·E[φ(z)²] (in units of d). ReLU with d_mlp = d gives 1/2: the d/2 of
    Xiong et al.'s Lemma 1.
    """
    for name, v in (("d", d), ("d_mlp", d_mlp)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}.")
    if act not in ("relu", "gelu"):
        raise ValueError(f"act must be 'relu' or 'gelu', got {act!r}.")
    v = 2.0 / (d + d_mlp)
    var = d * v  # variance of each pre-activation
    if act == "relu":
        second = var / 2
    else:  # E[gelu(z)²], z ~ N(0, var); gelu(z) = z·Φ(z) (exact erf form, as torch's default)
        nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # ∫ f(t) e^{-t²/2} dt
        z = nodes * math.sqrt(var)
        phi = 0.5 * (1 + np.array([math.erf(t / math.sqrt(2)) for t in z]))
        second = float(np.sum(weights * (z * phi) ** 2) / math.sqrt(2 * math.pi))
    return float(d_mlp * v * second)


def post_ln_identity_theory(n_layers: int) -> float:
    """Leading-order tr(J)/d of a one-token post-LN stack of Xiong's setting at initialisation.

    One token: attention is linear (x W_V W_O, squared norm preserved in
    expectation), so LN1 reads x + a with E‖·‖² = 2d; the ReLU MLP writes d/2,
    so LN2 reads (3/2)·d. Each sum's Jacobian is I plus a mean-zero term; each
    LayerNorm divides by its σ. Per block: 1/√(2 · 3/2) = 1/√3. Corrections are O(1/d).
    (Exercise 4 asks for the DeepNorm version; its reference is solution_deepnorm_identity.)
    """
    return _identity_theory(n_layers, 1.0)


def _identity_theory(n_layers: int, alpha: float) -> float:
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 0:
        raise ValueError(f"n_layers must be an int >= 0, got {n_layers!r}.")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}.")
    a2 = float(alpha) ** 2
    return float((a2 / math.sqrt((a2 + 1) * (a2 + 0.5))) ** n_layers)


def _check_tokens(tokens) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError("tokens must be an integer tensor (batch, pos) with at least 2 positions.")


def _grad_record(model: NormGPT, tokens) -> dict:
    """One backward pass of next-token loss on ``tokens``: every layer's MLP gradient norms, and for the last layer
    the gradient each position's own loss gives (one rank-one term of the batch's sum) and how alike the positions'
    inputs to W_in are."""
    mlp, seen = model.blocks[-1].mlp, {}

    def keep(name):
        def hook(module, args, out):
            out.retain_grad()
            seen[name] = (args[0].detach(), out)
        return hook

    handles = [mlp.W_in.register_forward_hook(keep("W_in")), mlp.W_out.register_forward_hook(keep("W_out"))]
    try:
        model.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()
    finally:
        for h in handles:
            h.remove()
    batch = np.array([[float(getattr(b.mlp, w).weight.grad.norm()) for b in model.blocks] for w in ("W_in", "W_out")])
    n_pos = tokens[:, 1:].numel()  # the loss is a mean over positions: its own loss gives each position n_pos × its share
    # the last MLP's output at position t reaches only position t's loss, so its gradient there is that loss's alone:
    # ∂loss_t/∂W = x_tᵀ g_t, of norm ‖x_t‖·‖g_t‖ (x_t the matrix's input, g_t the gradient at its output)
    per_pos = np.array([float((x.norm(dim=-1) * out.grad.norm(dim=-1)).mean()) * n_pos for x, out in
                        (seen["W_in"], seen["W_out"])])
    x = seen["W_in"][0].reshape(-1, seen["W_in"][0].shape[-1])
    x = x / x.norm(dim=-1, keepdim=True)
    n = x.shape[0]
    align = float(((x @ x.T).sum() - n) / (n * (n - 1)))  # mean cosine between two positions' inputs to W_in
    model.zero_grad(set_to_none=True)
    return {"batch": batch, "per_position": per_pos, "align": align}


def ffn_grad_norms(model: NormGPT, tokens, which: str = "W_out") -> np.ndarray:
    """Frobenius norm of ∂loss/∂W for each layer's MLP matrix (``W_out`` is Xiong's W^{2,l}).

    The loss is next-token cross-entropy on ``tokens`` (B, T). ``which="both"``
    returns an array (2, L): row 0 ``W_in``, row 1 ``W_out``, from one backward pass.
    """
    _check_model(model)
    if which not in ("W_in", "W_out", "both"):
        raise ValueError(f"which must be 'W_in', 'W_out' or 'both', got {which!r}.")
    _check_tokens(tokens)
    out = _grad_record(model, tokens)["batch"]
    return out if which == "both" else out[0 if which == "W_in" else 1]


def stream_jacobian(model: NormGPT, x0) -> torch.Tensor:
    """∂h_L/∂h_0 for a single stream vector ``x0`` of shape (d,) run as a one-token sequence: (d, d).

    Rows index the input coordinate, columns the output (vectors are rows: h_L ≈ h_0 J).
    """
    _check_model(model)
    d = model.cfg.d_model
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != (d,):
        raise ValueError(f"x0 must be a tensor of shape ({d},), got {getattr(x0, 'shape', type(x0).__name__)}.")
    J = torch.autograd.functional.jacobian(lambda v: model.forward_stream(v.view(1, 1, d)).view(d), x0, vectorize=True)
    return J.T.detach()  # jacobian() gives (out, in)


def xiong_bounds(l, d: int) -> tuple:
    """Xiong et al. (2020), Lemma 2, pre-LN: (1 + l/2)·d ≤ E‖h_l‖² ≤ (1 + 3l/2)·d."""
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}.")
    larr = np.asarray(l, dtype=float)
    if np.any(larr < 0):
        raise ValueError("l (number of blocks) must be >= 0.")
    lo, hi = (1 + larr / 2) * d, (1 + 3 * larr / 2) * d
    return (float(lo), float(hi)) if larr.ndim == 0 else (lo, hi)


# ---------------------------------------------------------------------------
# Data and training
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CharData:
    """Character-level text: ``train``/``val`` token tensors and the alphabet ``chars``."""

    train: torch.Tensor
    val: torch.Tensor
    chars: str

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def char_data(n_docs: int = 600, seed: int = 0, val_fraction: float = 0.1) -> CharData:
    """Character-level tokens of ``n_docs`` documents of the book's generated corpus."""
    from .zoo import corpus

    if not isinstance(n_docs, int) or n_docs < 10:
        raise ValueError(f"n_docs must be an int >= 10, got {n_docs!r}.")
    if not 0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction!r}.")
    text = "\n".join(corpus.generate_corpus(seed=seed, n_docs=n_docs))
    chars = "".join(sorted(set(text)))
    ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    n_val = int(len(ids) * val_fraction)
    return CharData(train=ids[:-n_val], val=ids[-n_val:], chars=chars)


def _batch(ids: torch.Tensor, batch_size: int, T: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(ids) - T - 1, (batch_size,), generator=gen)
    return torch.stack([ids[s : s + T + 1] for s in starts.tolist()])  # (B, T+1)


def _check_training(cfg, data, seq_len) -> None:
    if not isinstance(cfg, NormConfig):
        raise TypeError(f"cfg must be a NormConfig, got {type(cfg).__name__}.")
    if not isinstance(data, CharData):
        raise TypeError(f"data must be a CharData (see char_data), got {type(data).__name__}.")
    if cfg.d_vocab < data.vocab_size:
        raise ValueError(f"cfg.d_vocab={cfg.d_vocab} is smaller than the data's alphabet ({data.vocab_size}).")
    if seq_len > cfg.n_ctx:
        raise ValueError(f"seq_len={seq_len} exceeds cfg.n_ctx={cfg.n_ctx}.")


def train_lm(cfg: NormConfig, data: CharData, steps: int = 150, lr: float = 3e-3, warmup: int = 0,
             batch_size: int = 16, seq_len: int = 64, seed: int = 0) -> dict:
    """Train a :class:`NormGPT` with Adam (β = 0.9, 0.98; no clipping, no weight decay).

    The learning rate rises linearly from 0 to ``lr`` over ``warmup`` steps, then
    stays constant. Returns the per-step training losses and the final
    validation loss (mean over 8 fixed batches); a run that produces a NaN stops
    and reports ``diverged=True``.
    """
    _check_training(cfg, data, seq_len)
    if not (isinstance(steps, int) and steps > 0 and isinstance(warmup, int) and 0 <= warmup <= steps):
        raise ValueError(f"need steps > 0 and 0 <= warmup <= steps, got steps={steps!r}, warmup={warmup!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    model = NormGPT(cfg, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(10_000 + seed)
    losses, diverged = [], False
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        xy = _batch(data.train, batch_size, seq_len, gen)
        logits = model(xy[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.d_vocab), xy[:, 1:].reshape(-1))
        if not torch.isfinite(loss):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    val_gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        val = [float(F.cross_entropy(model(b[:, :-1]).reshape(-1, cfg.d_vocab), b[:, 1:].reshape(-1)))
               for b in (_batch(data.val, batch_size, seq_len, val_gen) for _ in range(8))]
    val_loss = float(np.mean(val)) if not diverged and np.all(np.isfinite(val)) else float("nan")
    return {"losses": np.array(losses), "val_loss": val_loss, "diverged": diverged, "model": model}


def train_arms(cfg: NormConfig, data: CharData, arms: dict, seeds=(0, 1, 2), steps: int = 150,
               batch_size: int = 16, seq_len: int = 32) -> dict:
    """Train every ``(arm, seed)`` of a comparison at once; the same runs as :func:`train_lm`, batched.

    ``arms`` maps a name to ``(norm, lr, warmup)``. Each run is
    ``train_lm(replace(cfg, norm=norm), data, steps, lr, warmup, batch_size, seq_len, seed)``:
    the same initial weights, batches, schedule and Adam (β = 0.9, 0.98). The
    models of one placement are stacked and run as one batched model
    (``torch.func.vmap``), which is several times faster than one run after
    another for models this small; Adam acts on each entry separately, so
    stacking changes nothing but float rounding. Returns ``{name: [run per seed]}``
    with ``losses``, ``val_loss`` and ``diverged`` as in :func:`train_lm` (no model).
    """
    from torch.func import functional_call, stack_module_state, vmap

    _check_training(cfg, data, seq_len)
    seeds = [int(s) for s in seeds]
    if not seeds or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"need at least one seed and steps >= 1, got seeds={seeds!r}, steps={steps!r}.")
    if not isinstance(arms, dict) or not arms:
        raise ValueError("arms must map a name to (norm, lr, warmup).")
    for name, arm in arms.items():
        if not (isinstance(arm, tuple) and len(arm) == 3 and arm[0] in NORMS and arm[1] > 0
                and isinstance(arm[2], int) and 0 <= arm[2] <= steps):
            raise ValueError(f"arms[{name!r}] must be (norm in {NORMS}, lr > 0, 0 <= warmup <= steps), got {arm!r}.")
    # the batches: one generator per seed, as in train_lm, shared by every arm of that seed
    gens = [torch.Generator().manual_seed(10_000 + s) for s in seeds]
    batches = torch.stack([torch.stack([_batch(data.train, batch_size, seq_len, g) for g in gens])
                           for _ in range(steps)])  # (steps, seed, B, T+1)
    val_gen = torch.Generator().manual_seed(99)
    val_batches = torch.stack([_batch(data.val, batch_size, seq_len, val_gen) for _ in range(8)])  # (8, B, T+1)
    out = {}
    for norm in NORMS:
        names = [n for n, a in arms.items() if a[0] == norm]
        if not names:
            continue
        runs = [(n, s) for n in names for s in range(len(seeds))]  # one stacked model per (arm, seed)
        c = replace(cfg, norm=norm)
        base = NormGPT(c, seed=seeds[0])
        params, buffers = stack_module_state([NormGPT(c, seed=seeds[i]) for _, i in runs])
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}

        def loss_one(p, b, xy):
            logits = functional_call(base, (p, b), (xy[:, :-1],))
            return F.cross_entropy(logits.reshape(-1, c.d_vocab), xy[:, 1:].reshape(-1))

        batched_loss = vmap(loss_one, in_dims=(0, 0, 0))
        lr_max = torch.tensor([arms[n][1] for n, _ in runs], dtype=torch.float64)
        warm = torch.tensor([arms[n][2] for n, _ in runs], dtype=torch.float64)
        seed_idx = torch.tensor([i for _, i in runs])
        m = {k: torch.zeros_like(v) for k, v in params.items()}
        v2 = {k: torch.zeros_like(v) for k, v in params.items()}
        beta1, beta2, eps = 0.9, 0.98, 1e-8
        losses = torch.full((len(runs), steps), float("nan"))
        alive = torch.ones(len(runs), dtype=torch.bool)
        for step in range(steps):
            lr = torch.where(warm > 0, lr_max * torch.clamp((step + 1) / warm.clamp(min=1), max=1.0), lr_max)
            loss = batched_loss(params, buffers, batches[step, seed_idx])  # (runs,)
            alive &= torch.isfinite(loss.detach())
            losses[alive, step] = loss.detach()[alive]
            grads = torch.autograd.grad(torch.where(alive, loss, torch.zeros_like(loss)).sum(), list(params.values()))
            with torch.no_grad():  # Adam, as torch.optim.Adam computes it, one step size per run
                bc1, bc2 = 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)
                for (k, p), g in zip(params.items(), grads):
                    g = torch.nan_to_num(g) * alive.view(-1, *[1] * (g.dim() - 1))  # a diverged run stops moving
                    m[k].lerp_(g, 1 - beta1)
                    v2[k].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    step_size = (lr / bc1).to(p.dtype).view(-1, *[1] * (p.dim() - 1)) * alive.view(-1, *[1] * (p.dim() - 1))
                    p.sub_(step_size * m[k] / (v2[k].sqrt() / math.sqrt(bc2) + eps))
        with torch.no_grad():
            val = torch.stack([vmap(loss_one, in_dims=(0, 0, None))(params, buffers, vb) for vb in val_batches]).mean(0)
        for r, (n, i) in enumerate(runs):
            diverged = not bool(alive[r])
            vl = float(val[r])
            out.setdefault(n, [None] * len(seeds))[i] = {
                "losses": losses[r, :].numpy() if not diverged else losses[r][torch.isfinite(losses[r])].numpy(),
                "val_loss": vl if not diverged and math.isfinite(vl) else float("nan"), "diverged": diverged}
    return {n: out[n] for n in arms}


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def depth_profiles(depths, d_model: int = 64, n_seeds: int = 3, tokens=None, batch: int = 16, seq_len: int = 32,
                   **cfg_kwargs) -> dict:
    """For each depth L: mean E‖h_l‖²/d (l = 0..L) and ‖∂loss/∂W_out‖ per layer, pre-LN and post-LN.

    Norms use i.i.d. N(0, I_d) stream inputs; gradients use next-token loss on
    ``tokens`` (B, T). Both are averaged over ``n_seeds`` initialisations;
    ``grad_seeds`` keeps each seed's gradients, for the spread, and
    ``grad_in_seeds`` the same for ``W_in`` (from the same backward pass).
    For the last layer, ``grad_pos_seeds`` holds the gradient norm that one
    position's own loss gives, averaged over positions (``[W_in, W_out]`` per
    seed), and ``align_seeds`` the mean cosine between the inputs to its
    ``W_in`` at two different positions.
    """
    depths = [int(L) for L in depths]
    if not depths or min(depths) < 1:
        raise ValueError("depths must be a non-empty list of positive ints.")
    if tokens is None:
        raise ValueError("depth_profiles needs tokens (batch, pos) for the gradient profile.")
    _check_tokens(tokens)
    keys = ("norm", "grad", "grad_seeds", "grad_in_seeds", "grad_pos_seeds", "align_seeds")
    out = {"depths": depths, **{k: {} for k in keys}}
    for norm in NORMS:
        for k in keys:
            out[k][norm] = []
        for L in depths:
            n_acc, rec = [], []
            for s in range(n_seeds):
                cfg = NormConfig(norm=norm, n_layers=L, d_model=d_model, d_mlp=cfg_kwargs.get("d_mlp", d_model),
                                 **{k: v for k, v in cfg_kwargs.items() if k != "d_mlp"})
                model = NormGPT(cfg, seed=s)
                x = torch.randn(batch, seq_len, d_model, generator=torch.Generator().manual_seed(1000 + s))
                n_acc.append(stream_norms(model, x) / d_model)
                rec.append(_grad_record(model, tokens))
            out["norm"][norm].append(np.mean(n_acc, axis=0))
            out["grad_seeds"][norm].append(np.array([r["batch"][1] for r in rec]))  # (n_seeds, L): W_out
            out["grad_in_seeds"][norm].append(np.array([r["batch"][0] for r in rec]))  # (n_seeds, L): W_in
            out["grad"][norm].append(out["grad_seeds"][norm][-1].mean(0))
            out["grad_pos_seeds"][norm].append(np.array([r["per_position"] for r in rec]))  # (n_seeds, [W_in, W_out])
            out["align_seeds"][norm].append(np.array([r["align"] for r in rec]))  # (n_seeds,)
    return out


def depth_slider_figure(profiles: dict, active: int | None = None):
    """Two panels (stream norm by layer, FFN gradient by layer) with a slider over model depth."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not isinstance(profiles, dict) or not {"depths", "norm", "grad"} <= set(profiles):
        raise ValueError("profiles must be the dict returned by depth_profiles.")
    depths = profiles["depths"]
    active = len(depths) - 1 if active is None else active
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.2)  # the axis titles name the panels

    def traces(i):
        L = depths[i]
        layers = list(range(L + 1))
        lo, hi = xiong_bounds(np.array(layers), 1)
        r = lambda a: [round(float(v), 4) for v in a]  # noqa: E731
        return [
            (layers, r(profiles["norm"]["pre"][i])), (layers, r(profiles["norm"]["post"][i])),
            (layers, r(lo)), (layers, r(hi)),
            (list(range(1, L + 1)), r(profiles["grad"]["pre"][i])),
            (list(range(1, L + 1)), r(profiles["grad"]["post"][i])),
        ]

    styles = [
        dict(name="pre-LN", line=dict(color=PALETTE[0]), mode="lines+markers", col=1),
        dict(name="post-LN", line=dict(color=PALETTE[3]), mode="lines+markers", col=1),
        dict(name="band: lower", line=dict(color="#777", dash="dot"), mode="lines", col=1),
        dict(name="band: upper", line=dict(color="#777", dash="dash"), mode="lines", col=1),
        dict(name="pre-LN", line=dict(color=PALETTE[0]), mode="lines+markers", col=2, showlegend=False),
        dict(name="post-LN", line=dict(color=PALETTE[3]), mode="lines+markers", col=2, showlegend=False),
    ]
    for (x, y), st in zip(traces(active), styles):
        col = st.pop("col")
        fig.add_trace(go.Scatter(x=x, y=y, legendgroup=st["name"], **st), row=1, col=col)
    ymax = max(max(max(a) for a in profiles["norm"][n]) for n in NORMS) * 1.05
    steps = []
    for i, L in enumerate(depths):
        tr = traces(i)
        steps.append({"method": "restyle", "label": str(L),
                      "args": [{"x": [t[0] for t in tr], "y": [t[1] for t in tr]}]})
    fig.update_xaxes(title_text="layer ℓ", row=1, col=1)
    fig.update_xaxes(title_text="layer ℓ", row=1, col=2)
    fig.update_yaxes(title_text="E‖h_ℓ‖²/d", range=[0, ymax], row=1, col=1)
    fig.update_yaxes(title_text="‖∂loss/∂W_out‖", type="log", row=1, col=2)
    fig.update_layout(
        title={"text": "Pre-LN: stream grows, last-layer gradient shrinks with depth", "y": 0.97, "yanchor": "top"},
        sliders=[{"active": active, "currentvalue": {"prefix": "depth L = "}, "steps": steps,
                  "y": -0.24, "yanchor": "top", "pad": {"t": 10}}],
        height=580, margin={"t": 120, "b": 170}, meta={"view": str(depths[active])},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
    )
    return fig


def loss_curves_figure(curves: dict, smooth: int = 5, title: str = ""):
    """One line per variant: mean training loss over seeds, with the min-max band across seeds."""
    import plotly.graph_objects as go

    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must map a variant name to an array (seeds, steps) of losses.")
    fig = go.Figure()
    kernel = np.ones(smooth) / smooth
    for i, (name, arr) in enumerate(curves.items()):
        arr = np.asarray(arr, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"curves[{name!r}] must have shape (seeds, steps), got {arr.shape}.")
        sm = np.array([np.convolve(a, kernel, mode="valid") for a in arr])
        x = list(range(smooth, arr.shape[1] + 1))
        color = PALETTE[i % len(PALETTE)]
        r = lambda a: np.round(a, 4).tolist()  # noqa: E731
        fig.add_trace(go.Scatter(x=x + x[::-1], y=r(sm.max(0)) + r(sm.min(0))[::-1], fill="toself",
                                 fillcolor=color, opacity=0.18, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=x, y=r(sm.mean(0)), name=name, line=dict(color=color), legendgroup=name))
    fig.update_layout(title={"text": title, "y": 0.97, "yanchor": "top"}, xaxis_title="training step",
                      yaxis_title="training loss (nats/char)", height=470, margin={"t": 90},
                      legend={"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top"})
    return fig


# ---------------------------------------------------------------------------
# Exercises: reference solutions and checkers
# ---------------------------------------------------------------------------
def deepnorm_block_update(x, attn, mlp, ln1, ln2, alpha: float):
    """Reference: one DeepNorm block (Wang et al. 2022): post-LN with the stream up-weighted by alpha."""
    x = ln1(alpha * x + attn(x))
    return ln2(alpha * x + mlp(x))


def loglog_slope(depths, values) -> float:
    """Reference: least-squares slope p of log(values) against log(depths), i.e. values ∝ depths^p."""
    return float(np.polyfit(np.log(np.asarray(depths, float)), np.log(np.asarray(values, float)), 1)[0])


# Exercise 1 (warm-up): Xiong's band. ---------------------------------------------------------------
def solution_xiong_bounds(l: int, d: int) -> tuple:
    return (1 + l / 2) * d, (1 + 3 * l / 2) * d


def _pair(got, want, what):
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise CheckFailed(f"{what}: return a pair (lower, upper), got {got!r}.")
    compare([float(v) for v in got], list(want), what, atol=1e-6, rtol=1e-9)


XIONG_BOUNDS = Exercise(
    id="ch3.xiong-bounds",
    name="xiong_bounds",
    solution=solution_xiong_bounds,
    cases=[((l, d), {}) for l, d in ((5, 100), (0, 64), (1, 64), (4, 128), (12, 768), (24, 1024))],
    mistakes=[
        Mistake(lambda l, d: (l / 2 * d, 3 * l / 2 * d),
                "you dropped the 1·d that the input h_0 already carries: E‖h_0‖² = d before any block writes"),
        Mistake(lambda l, d: ((1 + 3 * l / 2) * d, (1 + l / 2) * d),
                "the pair is swapped: the first entry must be the lower bound"),
        Mistake(lambda l, d: ((1 + l / 2) * d, (1 + l) * d),
                "the upper bound lets attention add only d/2 per block; an attention write can be as large as d "
                "(the average of value vectors of norm² d), so each block adds at most d + d/2"),
        Mistake(lambda l, d: (1.5 * d, 1.5 * d),
                "3d/2 is Lemma 2's post-LN statement (the input of post-LN's MLP LayerNorm, flat in depth); "
                "the pre-LN stream accumulates every block's write"),
    ],
    compare=_pair,
)


def check_xiong_bounds(fn) -> bool:
    """Checker for exercise 1: Xiong's band (lower, upper) on E‖h_l‖² for width d."""
    return XIONG_BOUNDS.check(fn)


# Exercise 2 (predict): the input of a post-LN LayerNorm, with a wider MLP. ----------------------------
#: The setting of exercise 2: a post-LN NormGPT with these fields, Xavier-Gaussian, ReLU.
POST_LN_INPUT_SETTING = {"d_model": 64, "d_mlp": 192, "n_layers": 8, "block": 8}


def solution_post_ln_input() -> float:
    """E‖x + MLP(x)‖²/d at block 8's MLP LayerNorm (x a LayerNorm output, so ‖x‖² = d): 1 + the MLP's write."""
    s = POST_LN_INPUT_SETTING
    return 1.0 + mlp_write(s["d_model"], s["d_mlp"])


POST_LN_INPUT = Exercise(
    id="ch3.post-ln-input",
    name="predicted_ln_input",
    solution=solution_post_ln_input,
    atol=0.04,  # the theory is exact in expectation; 0.04 accepts a rounded 1.3 and rejects every listed mistake
)


check_post_ln_input = POST_LN_INPUT.check_value


# Exercise 3 (predict): the init scale that keeps a wide MLP's write at the lemma's size. ------------
#: The setting of exercise 3: a pre-LN NormGPT, ReLU MLP, every matrix N(0, s²).
WIDE_MLP_SETTING = {"d_model": 64, "d_mlp": 256}


def solution_wide_mlp_std(d: int = 64, d_mlp: int = 256) -> float:
    """N(0, s²) entries: LN(x) W_in has entries of variance d·s², ReLU keeps half (d_mlp·d·s²/2 in all), W_out
    multiplies squared norms by d·s². The write is d·d_mlp·s⁴/2 in units of d: the lemma's 1/2 when s = (d·d_mlp)^(-1/4)."""
    return float((d * d_mlp) ** -0.25)


WIDE_MLP_STD = Exercise(
    id="ch3.wide-mlp-std",
    name="wide_mlp_std",
    solution=solution_wide_mlp_std,
    atol=0.0, rtol=0.05,  # the write goes as s⁴: within 5 % of s it stays within about 20 % of d/2
)


check_wide_mlp_std = WIDE_MLP_STD.check_value


# Exercise 4 (predict): the identity component of a DeepNorm stack. ------------------------------------
def solution_deepnorm_identity(alpha: float, n_layers: int) -> float:
    """Predicted tr(J)/d of an n_layers-deep one-token DeepNorm stack at initialisation: LN1 reads α·x + a with
    E‖·‖² = (α² + 1)·d, LN2 reads (α² + 1/2)·d, each sum's Jacobian is αI plus a mean-zero term, so per block
    α²/√((α² + 1)(α² + 1/2)) (1/√3 at α = 1, post-LN)."""
    return _identity_theory(int(n_layers), alpha)


DEEPNORM_IDENTITY = Exercise(
    id="ch3.deepnorm-identity",
    name="deepnorm_identity",
    solution=solution_deepnorm_identity,
    cases=[((1.0, 1), {}), ((2.0, 3), {}), ((1.5, 6), {}), ((1.0, 4), {}), ((3.0, 12), {})],
    mistakes=[
        Mistake(lambda a, L: 3 ** (-L / 2), "you ignored α: the up-weighted residual α·x is what the Jacobian keeps, "
                                            "and it also enlarges what each LayerNorm divides by"),
        Mistake(lambda a, L: (a * a / math.sqrt(3)) ** L,
                "you kept post-LN's σ = √2 and √1.5: the residual α·x adds α²·d to each LayerNorm's input, so the "
                "LayerNorms divide by √(α² + 1) and √(α² + 1/2)"),
        Mistake(lambda a, L: (a * a / (a * a + 1)) ** L,
                "you treated both sub-layers alike; for one token attention writes d but the ReLU MLP writes d/2"),
        Mistake(lambda a, L: (a / math.sqrt((a * a + 1) * (a * a + 0.5))) ** L,
                "you up-weighted the residual once per block; DeepNorm does it before each of the two LayerNorms"),
    ],
)


def check_deepnorm_identity(fn) -> bool:
    """Checker for exercise 4: deepnorm_identity(alpha, n_layers) → predicted tr(J)/d."""
    return DEEPNORM_IDENTITY.check(fn)


# Exercise 5 (predict): the depth exponent of one position's gradient. -----------------------------------
_GRAD_KINDS = {"batch": ("grad_seeds", "grad_in_seeds"), "per_position": ("grad_pos_seeds", "grad_pos_seeds")}


def last_layer_exponents(profiles: dict, norm: str = "pre", which: str = "W_out", kind: str = "batch") -> np.ndarray:
    """Per seed, the exponent p of the last layer's gradient norm ∝ L^p over the depths of :func:`depth_profiles`.

    ``kind="batch"``: the gradient of the batch's mean loss; ``kind="per_position"``: the gradient one position's
    own loss gives, averaged over positions (one term of the batch's sum).
    """
    if not isinstance(profiles, dict) or not {"depths", "grad_pos_seeds"} <= set(profiles):
        raise ValueError("profiles must be the dict returned by depth_profiles.")
    if norm not in NORMS or which not in ("W_in", "W_out") or kind not in _GRAD_KINDS:
        raise ValueError(f"need norm in {NORMS}, which in ('W_in', 'W_out') and kind in {tuple(_GRAD_KINDS)}, "
                         f"got {norm!r}, {which!r}, {kind!r}.")
    if len(profiles["depths"]) < 2:
        raise ValueError("an exponent needs at least two depths.")
    grads = profiles[_GRAD_KINDS[kind][which == "W_in"]][norm]
    col = (0 if which == "W_in" else 1) if kind == "per_position" else -1  # per position: [W_in, W_out]; batch: last layer
    last = np.array([g[:, col] for g in grads])  # (depth, seed)
    return np.array([loglog_slope(profiles["depths"], last[:, s]) for s in range(last.shape[1])])


def solution_position_exponent(per_position: float, batch_w_out: float, batch_w_in: float) -> float:
    """The answer is the measurement: the exponent of one position's W_in gradient (pre-LN, last layer)."""
    return float(per_position)


POSITION_EXPONENT = Exercise(
    id="ch3.position-exponent",
    name="predicted_exponent",
    solution=solution_position_exponent,
    # (per-position W_in, batch W_out, batch W_in) exponents: the chapter's kind of measurement, then others
    cases=[((-0.50, -0.42, -0.29), {}), ((-0.46, -0.30, -0.20), {}), ((-0.55, -0.45, -0.40), {})],
    mistakes=[
        Mistake(lambda pos, b_out, b_in: b_out,
                "that is the batch's exponent, section 3's; the batch gradient is a sum of one term per position, "
                "and how those terms add up can change with depth. One position's term carries only what its own "
                "backward pass passes through"),
        Mistake(lambda pos, b_out, b_in: 0.0,
                "W_in is not shielded from LN_f by sitting earlier in the block: the gradient that reaches it has come "
                "back through LN_f and W_out, so it carries LN_f's 1/σ_L"),
        Mistake(lambda pos, b_out, b_in: -1.0,
                "1/σ_L enters once, not twice: going back from W_out to W_in multiplies the gradient by W_out's weights "
                "and ReLU's mask, whose sizes do not depend on the depth"),
        Mistake(lambda pos, b_out, b_in: 0.5,
                "the sign: the deeper the model, the larger the stream that LN_f divides by, so the gradient falls "
                "with depth"),
    ],
    atol=0.05, rtol=0.0,  # see check_position_exponent
)


def check_position_exponent(predicted, profiles: dict) -> bool:
    """Checker for exercise 5: a predicted exponent of one position's last-layer W_in gradient (pre-LN) against
    the mean over seeds measured in ``profiles``, within 0.05: that admits the bound's -1/2 and the exponent of the
    measured 1/σ_L (about -0.51), and rejects the batch exponents of section 3 (-0.42 for W_out, -0.29 for W_in)."""
    measured = [float(last_layer_exponents(profiles, "pre", w, k).mean())
                for w, k in (("W_in", "per_position"), ("W_out", "batch"), ("W_in", "batch"))]
    return POSITION_EXPONENT.check_prediction(predicted, *measured)
