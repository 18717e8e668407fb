"""Sparse autoencoders: an overcomplete dictionary that pulls superposed features apart.

Used in chapter 6. A :class:`SparseAutoencoder` reads an activation vector x (a
residual-stream state, an MLP output, the hidden layer of a toy model), encodes
it as a sparse, non-negative code f = ReLU((x − b_dec) W_enc + b_enc) over many
more features than x has dimensions, and rebuilds x̂ = f W_dec + b_dec, with every
decoder row (a feature's direction in activation space) kept at unit norm so the
L1 penalty on f cannot be dodged by shrinking f and growing W_dec. Features that
stop firing are resampled towards inputs the dictionary reconstructs badly, as in
Bricken et al. (2023), "Towards Monosemanticity"; the recipe follows that paper and
Cunningham et al. (2023), "Sparse Autoencoders Find Highly Interpretable Features in
Language Models". :func:`train_sae` trains one; :func:`sae_metrics` reports
reconstruction error, L0 and the dead fraction; :func:`loss_recovered` splices the
reconstruction into a model's forward pass at a hook and compares the language-model
loss with the clean run and with zero ablation. :func:`collect_activations` gathers
training data from a TransformerLens model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .core import reinitialize_, require_int  # reinitialize_: kept importable from here

__all__ = [
    "SparseAutoencoder",
    "SAETrainingLog",
    "train_sae",
    "sae_metrics",
    "collect_activations",
    "loss_recovered",
    "replacement_loss",
    "pca_fvu",
    "near_duplicate_groups",
    "reinitialize_",
    "token_variance_explained",
    "promoted_share",
    "max_cosine_recovery",
    "world_lexicon",
    "label_tokens",
    "pack_sequences",
    "unit_purity",
    "top_contexts",
    "promoted_tokens",
    "feature_explorer_figure",
    "measure_l1_effect",
    "l1_effect",
    "L0_RATIO_BANDS",
    "check_l1_prediction",
    "solution_l1_prediction",
]


class SparseAutoencoder(torch.nn.Module):
    """x → f = ReLU((x/s − b_dec) W_enc + b_enc) → x̂ = s (f W_dec + b_dec).

    W_enc: [d_in, n_features]; W_dec: [n_features, d_in] with unit-norm rows (row k is feature
    k's direction); s (``input_scale``) is a fixed scalar that brings inputs to mean norm √d_in,
    so one L1 coefficient means the same thing for any activation scale.
    """

    def __init__(self, d_in: int, n_features: int, seed: int = 0, input_scale: float = 1.0):
        super().__init__()
        require_int("d_in", d_in)
        require_int("n_features", n_features)
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale!r}.")
        g = torch.Generator().manual_seed(seed)
        dec = torch.randn(n_features, d_in, generator=g)
        dec = dec / dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(dec)
        self.W_enc = torch.nn.Parameter(dec.T.clone())  # tied at init, free afterwards
        self.b_enc = torch.nn.Parameter(torch.zeros(n_features))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))

    @property
    def d_in(self) -> int:
        return self.W_dec.shape[1]

    @property
    def n_features(self) -> int:
        return self.W_dec.shape[0]

    def _check(self, x):
        if not isinstance(x, torch.Tensor) or x.shape[-1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"SAE input must be a tensor [..., d_in={self.d_in}], got {shape}.")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations f ≥ 0, shape [..., n_features]."""
        self._check(x)
        return torch.relu((x / self.input_scale - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """x̂ = s (f W_dec + b_dec), shape [..., d_in]."""
        return (f @ self.W_dec + self.b_dec) * self.input_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Put every decoder row back on the unit sphere."""
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)


@dataclass
class SAETrainingLog:
    """What happened during training, for plots and checks."""

    steps: list[int] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)  # in units of the scaled input
    l0: list[float] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)  # (step, how many features)


def _project_out_radial_grad(sae: SparseAutoencoder) -> None:
    # A decoder row lives on the unit sphere: keep only the gradient tangent to it.
    W, G = sae.W_dec.data, sae.W_dec.grad
    if G is not None:
        G -= (G * W).sum(dim=1, keepdim=True) * W


@torch.no_grad()
def _resample_dead(sae, opt, x_sample, dead: torch.Tensor, generator) -> int:
    """Point dead features at inputs the SAE reconstructs worst (Bricken et al. 2023)."""
    idx = torch.nonzero(dead).flatten()
    if len(idx) == 0:
        return 0
    xs = x_sample / sae.input_scale
    err = ((sae.decode(sae.encode(x_sample)) / sae.input_scale - xs) ** 2).sum(dim=1)
    picks = torch.multinomial(err + 1e-12, len(idx), replacement=len(idx) > len(err), generator=generator)
    direction = xs[picks] - sae.b_dec
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc.data[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec.data[idx] = direction
    sae.W_enc.data[:, idx] = direction.T * enc_norm * 0.2
    sae.b_enc.data[idx] = 0.0
    for p, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][sl] = 0.0
    return len(idx)


def train_sae(
    activations: torch.Tensor,
    n_features: int,
    l1_coeff: float = 3e-3,
    steps: int = 2000,
    batch: int = 256,
    lr: float = 3e-3,
    resample_every: int | None = 500,
    seed: int = 0,
    log_every: int = 100,
) -> tuple[SparseAutoencoder, SAETrainingLog]:
    """Train an SAE on ``activations`` [n_samples, d_in] by Adam on MSE + l1_coeff · Σ_k f_k.

    Inputs are scaled to mean norm √d_in first (the scale is stored in the SAE). The decoder
    bias starts at the data mean. Every ``resample_every`` steps (until 3/4 of training) the
    features that did not fire since the last check are resampled. Deterministic for a seed.
    """
    if not isinstance(activations, torch.Tensor) or activations.ndim != 2:
        raise ValueError("activations must be a tensor [n_samples, d_in]; flatten batch and position first.")
    n, d = activations.shape
    if n < batch:
        raise ValueError(f"need at least one batch of activations ({batch}), got {n}.")
    require_int("n_features", n_features)
    require_int("steps", steps)
    if l1_coeff < 0:
        raise ValueError(f"l1_coeff must be ≥ 0, got {l1_coeff!r}.")
    x_all = activations.detach().float()
    scale = float(x_all.norm(dim=1).mean() / math.sqrt(d))
    sae = SparseAutoencoder(d, n_features, seed=seed, input_scale=scale)
    with torch.no_grad():
        sae.b_dec.data = x_all.mean(dim=0) / scale
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    log = SAETrainingLog()
    fired = torch.zeros(n_features, dtype=torch.bool)
    for step in range(1, steps + 1):
        xb = x_all[torch.randint(0, n, (batch,), generator=g)]
        f = sae.encode(xb)
        recon = sae.decode(f)
        mse = ((recon - xb) / scale).pow(2).sum(dim=1).mean()
        loss = mse + l1_coeff * f.sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _project_out_radial_grad(sae)
        opt.step()
        sae.normalize_decoder()
        fired |= (f > 0).any(dim=0)
        if resample_every and step % resample_every == 0 and step <= 3 * steps // 4:
            sample = x_all[torch.randint(0, n, (min(n, 4096),), generator=g)]
            log.resampled.append((step, _resample_dead(sae, opt, sample, ~fired, g)))
            fired = torch.zeros(n_features, dtype=torch.bool)
        if step % log_every == 0 or step == steps:
            log.steps.append(step)
            log.mse.append(float(mse.detach()))
            log.l0.append(float((f > 0).float().sum(dim=1).mean()))
    sae.eval()
    return sae, log


@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, activations: torch.Tensor, chunk: int = 8192) -> dict[str, float]:
    """Reconstruction quality and sparsity of ``sae`` on ``activations`` [n, d_in].

    mse: mean squared error per vector (original units); fvu: fraction of variance
    unexplained, Σ‖x − x̂‖² / Σ‖x − mean‖²; l0: mean number of active features per input;
    dead_fraction: share of features that never fire on these inputs.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}.")
    if not isinstance(activations, torch.Tensor) or activations.ndim != 2 or activations.shape[1] != sae.d_in:
        raise ValueError(f"activations must be [n, d_in={sae.d_in}].")
    x = activations.float()
    sq_err, l0, fired = 0.0, 0.0, torch.zeros(sae.n_features, dtype=torch.bool)
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        recon, f = sae(xb)
        sq_err += float(((recon - xb) ** 2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(dim=0)
    var = float(((x - x.mean(dim=0)) ** 2).sum())
    return {"mse": sq_err / len(x), "fvu": sq_err / var, "l0": l0 / len(x),
            "dead_fraction": float((~fired).float().mean())}


def collect_activations(model, tokens: torch.Tensor, hook_name: str, batch_size: int = 32,
                        drop_bos: bool = True) -> torch.Tensor:
    """Activations at ``hook_name`` for every position of ``tokens`` [n_seq, T], flattened to [N, d].

    ``drop_bos`` leaves out position 0, whose state is unlike every other position's (it is
    the same token every time), so an SAE would waste features on it. A hook inside block
    ``l`` stops the forward pass after that block: the later blocks and the unembedding
    (on GPT-2, 50,257 logits per token) cannot change it, so they are not run.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a tensor [n_sequences, seq_len] of token ids.")
    _check_hook(model, hook_name)
    device = next(model.parameters()).device
    parts = hook_name.split(".")
    stop = {"stop_at_layer": int(parts[1]) + 1} if parts[0] == "blocks" and parts[1].isdigit() else {}
    out = []
    with torch.no_grad():
        for i in range(0, len(tokens), batch_size):
            _, cache = model.run_with_cache(tokens[i:i + batch_size].to(device), names_filter=lambda n: n == hook_name,
                                            **stop)
            act = cache[hook_name]
            if drop_bos:
                act = act[:, 1:]
            out.append(act.reshape(-1, act.shape[-1]).cpu())
    return torch.cat(out)


@torch.no_grad()
def _check_hook(model, hook_name):
    names = getattr(model, "hook_dict", None)
    if names is not None and hook_name not in names:
        near = [n for n in names if n.endswith(hook_name.split(".")[-1])][:6]
        raise ValueError(f"unknown hook {hook_name!r}; hooks with that suffix: {near}")


@torch.no_grad()
def loss_recovered(model, tokens: torch.Tensor, hook_name: str, sae: SparseAutoencoder,
                   batch_size: int = 32, mean_activation: torch.Tensor | None = None) -> dict[str, float]:
    """Next-token loss with the SAE's reconstruction spliced in at ``hook_name``.

    Returns the mean cross-entropy of the clean run, of the run whose activation at the hook
    is replaced by x̂ (all positions but BOS), and of the run whose activation is zeroed
    (same positions); ``added_loss`` = spliced − clean (nats per token); and the share of the
    zero-ablation damage the SAE undoes, ``loss_recovered`` = (zero − spliced) / (zero − clean):
    1 is a perfect substitute, 0 is no better than zeros. With ``mean_activation`` [d] (the
    activation's mean over a dataset) it also returns ``mean_ablated`` (every non-BOS
    position set to that mean) and ``loss_recovered_mean`` = (mean − spliced) / (mean − clean).
    A reference whose loss is close to uniform guessing makes either share lenient: read it
    next to ``added_loss``.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}.")
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a tensor [n_sequences, seq_len] of token ids.")
    _check_hook(model, hook_name)

    sae_device = sae.W_dec.device
    model_device = next(model.parameters()).device

    def splice(act, hook):
        out = act.clone()
        x = act[:, 1:].to(sae_device, torch.float32)
        out[:, 1:] = sae.decode(sae.encode(x)).to(act.device, act.dtype)
        return out

    def zero(act, hook):
        out = act.clone()
        out[:, 1:] = 0.0
        return out

    runs = {"spliced": splice, "zero_ablated": zero}
    if mean_activation is not None:
        mean_activation = torch.as_tensor(mean_activation).detach()
        if mean_activation.shape != (sae.d_in,):
            raise ValueError(f"mean_activation must be a vector [d_in={sae.d_in}], got {tuple(mean_activation.shape)}.")

        def mean(act, hook):
            out = act.clone()
            out[:, 1:] = mean_activation.to(act.device, act.dtype)
            return out

        runs["mean_ablated"] = mean
    totals = {"clean": 0.0, **{k: 0.0 for k in runs}}
    for i in range(0, len(tokens), batch_size):
        tb = tokens[i:i + batch_size].to(model_device)
        n = tb.shape[0]
        totals["clean"] += float(model(tb, return_type="loss")) * n
        for key, hook in runs.items():
            totals[key] += float(model.run_with_hooks(tb, return_type="loss", fwd_hooks=[(hook_name, hook)])) * n
    res = {k: v / len(tokens) for k, v in totals.items()}
    res["added_loss"] = res["spliced"] - res["clean"]
    res["loss_recovered"] = (res["zero_ablated"] - res["spliced"]) / (res["zero_ablated"] - res["clean"])
    if "mean_ablated" in res:
        res["loss_recovered_mean"] = (res["mean_ablated"] - res["spliced"]) / (res["mean_ablated"] - res["clean"])
    return res


@torch.no_grad()
def replacement_loss(model, tokens: torch.Tensor, hook_name: str, replace, batch_size: int = 32,
                     per_sequence: bool = False):
    """Mean next-token loss when the activation at ``hook_name`` is replaced, at every non-BOS
    position, by ``replace(x)`` (x: [batch, T − 1, d], returns the same shape).

    For controls a chapter designs itself: a random error of a given size, a projection, a
    different reconstruction. With ``per_sequence=True`` it returns each sequence's mean loss
    (a tensor [n_sequences]; their mean is the float returned otherwise), for a bootstrap
    over sequences.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a tensor [n_sequences, seq_len] of token ids.")
    if not callable(replace):
        raise TypeError(f"replace must be a function x -> x', got {type(replace).__name__}.")
    _check_hook(model, hook_name)
    model_device = next(model.parameters()).device

    def hook(act, hook):
        out = act.clone()
        new = replace(act[:, 1:].float())
        if new.shape != act[:, 1:].shape:
            raise ValueError(f"replace returned shape {tuple(new.shape)}, expected {tuple(act[:, 1:].shape)}.")
        out[:, 1:] = new.to(act.device, act.dtype)
        return out

    total, per_seq = 0.0, []
    for i in range(0, len(tokens), batch_size):
        tb = tokens[i:i + batch_size].to(model_device)
        if per_sequence:
            per_token = model.run_with_hooks(tb, return_type="loss", loss_per_token=True, fwd_hooks=[(hook_name, hook)])
            per_seq.append(per_token.float().mean(dim=-1).cpu())  # [batch]: every sequence has T − 1 predictions
        else:
            total += float(model.run_with_hooks(tb, return_type="loss", fwd_hooks=[(hook_name, hook)])) * tb.shape[0]
    return torch.cat(per_seq) if per_sequence else total / len(tokens)


def pca_fvu(acts: torch.Tensor, k: int) -> float:
    """Fraction of variance unexplained by the best k-dimensional reconstruction of ``acts``
    [N, d] around its mean (PCA: the top k principal components). A dense code with k active
    coefficients per input: the baseline an SAE with L0 ≈ k should beat."""
    if not isinstance(acts, torch.Tensor) or acts.ndim != 2:
        raise ValueError("acts must be a tensor [N, d].")
    k = require_int("k", k, minimum=0)
    if k > acts.shape[1]:
        raise ValueError(f"k must be between 0 and d = {acts.shape[1]}, got {k}.")
    x = acts.double()
    sv = torch.linalg.svdvals(x - x.mean(dim=0))
    return float((sv[k:] ** 2).sum() / (sv ** 2).sum())


def near_duplicate_groups(directions: torch.Tensor, threshold: float = 0.9) -> tuple[int, int]:
    """Group directions (rows of [n, d]) that are near-copies: two rows are linked when their
    |cos| exceeds ``threshold``, and a group is a connected set of links.

    Returns (number of groups, number of rows that have at least one near-copy). n rows with no
    near-copies give (n, 0); n copies of one direction give (1, n).
    """
    if not isinstance(directions, torch.Tensor) or directions.ndim != 2:
        raise ValueError("directions must be a tensor [n, d].")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold is a |cos| in (0, 1), got {threshold!r}.")
    n = directions.shape[0]
    if n == 0:
        return 0, 0
    u = directions.double() / directions.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    linked = (u @ u.T).abs() > threshold
    linked.fill_diagonal_(False)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in linked.nonzero().tolist():
        parent[root(i)] = root(j)
    return len({root(i) for i in range(n)}), int(linked.any(dim=1).sum())


def token_variance_explained(acts: torch.Tensor, token_ids: torch.Tensor) -> float:
    """Share of the variance of ``acts`` [N, d] explained by the token at each position alone.

    Replaces every activation by the mean activation of its token (``token_ids`` [N]) and
    returns 1 − Σ‖x − mean_token(x)‖² / Σ‖x − mean‖² (an R²). 1: the activation is a lookup
    table of the current token; near (number of distinct tokens)/N: no relation.
    """
    if not isinstance(acts, torch.Tensor) or acts.ndim != 2:
        raise ValueError("acts must be a tensor [N, d].")
    token_ids = torch.as_tensor(token_ids).reshape(-1).long()
    if token_ids.shape[0] != acts.shape[0]:
        raise ValueError(f"token_ids has {token_ids.shape[0]} entries for {acts.shape[0]} activations.")
    x = acts.double()
    uniq, inv = torch.unique(token_ids, return_inverse=True)
    sums = torch.zeros(len(uniq), x.shape[1], dtype=x.dtype).index_add_(0, inv, x)
    means = sums / torch.bincount(inv, minlength=len(uniq)).to(x.dtype)[:, None]
    resid = ((x - means[inv]) ** 2).sum()
    total = ((x - x.mean(dim=0)) ** 2).sum()
    return float(1 - resid / total)


def promoted_share(directions: torch.Tensor, W_U: torch.Tensor, target: torch.Tensor, k: int = 6) -> torch.Tensor:
    """For each direction (rows of [n, d]), the share of its top-k directly promoted tokens
    (direction · W_U) that lie in ``target`` (a boolean mask over the vocabulary).

    A random direction scores about ``target.mean()`` on average: that is the chance level.
    """
    require_int("k", k)
    if directions.ndim != 2 or W_U.ndim != 2 or directions.shape[1] != W_U.shape[0]:
        raise ValueError("directions must be [n, d] and W_U [d, d_vocab].")
    target = torch.as_tensor(target, dtype=torch.bool).to(W_U.device)
    if target.shape != (W_U.shape[1],):
        raise ValueError(f"target must be a boolean mask over the {W_U.shape[1]} tokens, got {tuple(target.shape)}.")
    top = (directions.float().to(W_U.device) @ W_U.float()).topk(k, dim=1).indices
    return target[top].float().mean(dim=1).cpu()


def max_cosine_recovery(sae: SparseAutoencoder, true_directions: torch.Tensor) -> torch.Tensor:
    """For every true feature direction (rows of [n_true, d_in]), its largest cosine with a decoder row (features are non-negative, so sign matters).

    A value near 1 means some SAE feature points along that true feature.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}.")
    t = torch.as_tensor(true_directions, dtype=torch.float32)
    if t.ndim != 2 or t.shape[1] != sae.d_in:
        raise ValueError(f"true_directions must be [n_true, d_in={sae.d_in}], got shape {tuple(t.shape)}.")
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dec = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    return (t @ dec.T).max(dim=1).values


# --------------------------------------------------------------------------
# Ground truth from the corpus: which entity class each token belongs to
# --------------------------------------------------------------------------
def world_lexicon() -> dict[str, str]:
    """Word → entity class for every entity of :mod:`helpers.zoo.world` ("country", "city", …).

    Multi-word landmarks and rivers are keyed without a leading "the".
    """
    import re

    from .zoo import world as W

    lex: dict[str, str] = {}
    for country, (capital, language, continent, currency) in W.COUNTRIES.items():
        lex[country] = "country"
        lex[capital] = "city"
        for word, cls in ((language, "language"), (continent, "continent"), (currency, "currency")):
            if word:
                lex.setdefault(word, cls)
    for city in W.OTHER_CITIES:
        lex[city] = "city"
    for name in W.LANDMARKS:
        lex[re.sub(r"^the ", "", name)] = "landmark"
    for name in W.RIVERS:
        lex[re.sub(r"^the ", "", name)] = "river"
    for person, profession in W.PEOPLE.items():
        lex[person] = "famous person"
        lex.setdefault(profession, "profession")
    for name in W.FIRST_NAMES:
        lex.setdefault(name, "first name")
    for name in W.LAST_NAMES:
        lex.setdefault(name, "last name")
    return lex


def label_tokens(tokenizer, docs: list[str], lexicon: dict[str, str]) -> tuple[list[int], list[str]]:
    """Tokenize ``docs`` (joined by the BOS/EOS token) and label every token.

    A token that overlaps an entity of ``lexicon`` gets that entity's class; any other token is
    labelled by its own text (so a unit that fires only on " the" also counts as having one
    meaning). Returns (token ids, labels), equally long.
    """
    import re

    if not docs or not all(isinstance(d, str) for d in docs):
        raise ValueError("docs must be a non-empty list of strings.")
    if not lexicon:
        raise ValueError("lexicon is empty.")
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, lexicon), key=len, reverse=True)) + r")\b")
    sep = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids: list[int] = []
    labels: list[str] = []
    for doc in docs:
        enc = tokenizer(doc, return_offsets_mapping=True, add_special_tokens=False)
        spans = [(m.start(), m.end(), lexicon[m.group(1)]) for m in pattern.finditer(doc)]
        for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
            label = next((c for s, e, c in spans if a < e and b > s and doc[a:b].strip()), None)
            ids.append(tid)
            labels.append(label if label is not None else tokenizer.decode([tid]))
        ids.append(sep)
        labels.append(tokenizer.decode([sep]))
    return ids, labels


def pack_sequences(ids: list[int], labels: list[str], seq_len: int, bos_id: int) -> tuple[torch.Tensor, list[str]]:
    """Cut a labelled token stream into rows of BOS + (seq_len − 1) tokens.

    Returns tokens [n_seq, seq_len] and the labels of every non-BOS position, flattened in the
    same order as :func:`collect_activations` with ``drop_bos=True``.
    """
    require_int("seq_len", seq_len, 2)
    if len(ids) != len(labels):
        raise ValueError(f"ids ({len(ids)}) and labels ({len(labels)}) differ in length.")
    body = seq_len - 1
    n = len(ids) // body
    if n == 0:
        raise ValueError(f"not enough tokens ({len(ids)}) for one sequence of {seq_len}.")
    rows = torch.tensor(ids[: n * body]).view(n, body)
    tokens = torch.cat([torch.full((n, 1), bos_id, dtype=rows.dtype), rows], dim=1)
    return tokens, list(labels[: n * body])


def unit_purity(acts: torch.Tensor, labels: list[str], k: int = 20) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """How single-minded each unit (neuron or SAE feature) is on its top-k activations.

    ``acts`` [N, n_units], ``labels`` N labels. For every unit whose k-th largest activation is
    positive: purity = the share of its top-k positions that carry its most common label.
    Returns (purity [n_kept], unit indices [n_kept], most common label per kept unit).
    """
    if not isinstance(acts, torch.Tensor) or acts.ndim != 2 or acts.shape[0] != len(labels):
        raise ValueError("acts must be [N, n_units] with one label per row.")
    require_int("k", k)
    from collections import Counter

    vals, idx = acts.topk(k, dim=0)
    purity, units, tops = [], [], []
    for u in range(acts.shape[1]):
        if vals[-1, u] <= 0:
            continue
        label, count = Counter(labels[i] for i in idx[:, u].tolist()).most_common(1)[0]
        purity.append(count / k)
        units.append(u)
        tops.append(label)
    return torch.tensor(purity), torch.tensor(units, dtype=torch.long), tops


def top_contexts(unit_acts: torch.Tensor, tokens: torch.Tensor, tokenizer, k: int = 5, window: int = 8) -> list[tuple[str, float]]:
    """The k contexts where a unit fires hardest, as text with the firing token in [brackets].

    ``unit_acts`` [N] is one unit's activation at every non-BOS position of ``tokens``
    [n_seq, T] (flattened row by row, as :func:`collect_activations` returns them).
    """
    n_seq, T = tokens.shape
    if unit_acts.ndim != 1 or unit_acts.shape[0] != n_seq * (T - 1):
        raise ValueError(f"unit_acts must have one value per non-BOS position ({n_seq * (T - 1)}).")
    vals, idx = unit_acts.topk(k)
    out = []
    for v, i in zip(vals.tolist(), idx.tolist()):
        s, p = divmod(i, T - 1)
        p += 1  # skip BOS
        left = tokenizer.decode(tokens[s, max(1, p - window):p].tolist())
        mid = tokenizer.decode([int(tokens[s, p])])
        right = tokenizer.decode(tokens[s, p + 1:p + 3].tolist())
        out.append((f"{left}[{mid}]{right}".replace("\n", " "), float(v)))
    return out


def promoted_tokens(direction: torch.Tensor, W_U: torch.Tensor, tokenizer, k: int = 6) -> list[str]:
    """Tokens whose logits a write along ``direction`` [d] raises most, directly (direction · W_U)."""
    if direction.ndim != 1 or W_U.ndim != 2 or W_U.shape[0] != direction.shape[0]:
        raise ValueError("direction must be [d] and W_U [d, d_vocab].")
    top = (direction.float().to(W_U.device) @ W_U.float()).topk(k).indices
    return [tokenizer.decode([int(t)]) for t in top]


def feature_explorer_figure(entries: list[dict], title: str):
    """Bars with a dropdown: one entry per unit, its top contexts (bars = activations) and promoted tokens.

    Each entry: {"name": str, "contexts": [(text, activation), ...], "promoted": [str, ...]}.
    """
    import plotly.graph_objects as go

    from .plotting import PALETTE

    if not entries:
        raise ValueError("feature_explorer_figure needs at least one entry.")

    def bars(e):
        # ranks on the axis, each context written inside its bar: long contexts stay readable on a phone
        ys = [str(i + 1) for i in range(len(e["contexts"]))]
        return ys, [round(a, 3) for _, a in e["contexts"]], [c for c, _ in e["contexts"]]

    def heading(e):
        return f"{title}: {e['name']}<br><sub>promotes directly: {' '.join(repr(t) for t in e['promoted'])}</sub>"

    ys, xs, texts = bars(entries[0])
    fig = go.Figure(go.Bar(x=xs, y=ys, orientation="h", marker_color=PALETTE[0], text=texts, textposition="inside",
                           insidetextanchor="start", textfont={"color": "white", "size": 11}, constraintext="none",
                           hovertemplate="%{text}<br>activation %{x:.2f}<extra></extra>"))
    buttons = []
    for e in entries:
        ys_e, xs_e, texts_e = bars(e)
        buttons.append({"label": e["name"], "method": "update",
                        "args": [{"x": [xs_e], "y": [ys_e], "text": [texts_e]}, {"title.text": heading(e)}]})
    fig.update_layout(title=heading(entries[0]), xaxis_title="feature activation", yaxis_title="rank",
                      yaxis={"autorange": "reversed"}, uniformtext={"minsize": 10, "mode": "show"},
                      updatemenus=[{"buttons": buttons, "x": 0.0, "y": 1.0, "xanchor": "left", "yanchor": "bottom",
                                    "direction": "down", "active": 0}],
                      height=300 + 34 * max(len(e["contexts"]) for e in entries), margin={"t": 150},
                      meta={"view": entries[0]["name"]})
    return fig


# --------------------------------------------------------------------------
# Exercise: predict what a stronger L1 penalty does
# --------------------------------------------------------------------------
def measure_l1_effect(activations: torch.Tensor, l1_low: float, l1_high: float, n_features: int,
                      steps: int = 2000, batch: int = 256, seed: int = 0,
                      low_sae: SparseAutoencoder | None = None) -> dict[str, dict[str, float]]:
    """Train two SAEs that differ only in their L1 coefficient and return both sets of
    :func:`sae_metrics` ({"low": {...}, "high": {...}}). Pass ``low_sae`` to reuse an SAE
    already trained with ``l1_low`` and the same settings. Train long enough for resampling
    to have run and stopped (the default 2000 steps): dead features are counted at the end."""
    if not 0 <= l1_low < l1_high:
        raise ValueError(f"need 0 ≤ l1_low < l1_high, got {l1_low!r}, {l1_high!r}.")
    out = {}
    for key, lam in (("low", l1_low), ("high", l1_high)):
        if key == "low" and low_sae is not None:
            if not isinstance(low_sae, SparseAutoencoder) or low_sae.n_features != n_features:
                raise ValueError(f"low_sae must be a SparseAutoencoder with {n_features} features.")
            out[key] = sae_metrics(low_sae, activations)
            continue
        sae, _ = train_sae(activations, n_features=n_features, l1_coeff=lam, steps=steps, batch=batch, seed=seed)
        out[key] = sae_metrics(sae, activations)
    return out


#: Bands for L0 at the higher coefficient divided by L0 at the lower one.
L0_RATIO_BANDS = ("below 1/10", "1/10 to 1/2", "1/2 to 1", "above 1")


def l1_effect(measured: dict[str, dict[str, float]]) -> tuple[str, str, str]:
    """How (L0, FVU) moved from the low to the high L1 coefficient, each "lower" | "same" | "higher"
    (a change under 5 % of the larger value counts as "same"), and the band of L0_high / L0_low
    (one of :data:`L0_RATIO_BANDS`)."""
    if not isinstance(measured, dict) or set(measured) != {"low", "high"}:
        raise ValueError('measured must be {"low": metrics, "high": metrics}, as measure_l1_effect returns.')
    lo, hi = measured["low"], measured["high"]

    def direction(key):
        a, b = float(lo[key]), float(hi[key])
        return "same" if abs(b - a) < 0.05 * max(abs(a), abs(b)) else ("higher" if b > a else "lower")

    ratio = float(hi["l0"]) / max(float(lo["l0"]), 1e-12)
    band = next(name for name, top in zip(L0_RATIO_BANDS, (0.1, 0.5, 1.0, math.inf)) if ratio < top)
    return direction("l0"), direction("fvu"), band


def solution_l1_prediction(measured: dict[str, dict[str, float]]) -> tuple[str, str, str]:
    """Reference: (L0 direction, FVU direction, band of the L0 ratio) of the chapter's own measurement."""
    return l1_effect(measured)


def _l1_cases():
    # measurements of the shape measure_l1_effect returns: a moderate penalty, a collapsing one, an odd one
    m = lambda l0, fvu: {"l0": l0, "fvu": fvu, "dead_fraction": 0.0, "mse": 0.0}
    return [(({"low": m(2.1, 0.34), "high": m(1.3, 0.5)},), {}),
            (({"low": m(2.1, 0.34), "high": m(0.1, 0.95)},), {}),
            (({"low": m(2.0, 0.30), "high": m(0.7, 0.6)},), {}),
            (({"low": m(2.0, 0.30), "high": m(2.5, 0.29)},), {})]


def _compare_l1(got, want, what: str) -> None:
    from .exercises import CheckFailed

    words = ("lower", "same", "higher")
    if not isinstance(got, (tuple, list)) or len(got) != 3 or not all(isinstance(g, str) for g in got):
        raise CheckFailed(f'{what}: answer with three strings, (L0, FVU, L0 ratio band), e.g. ("higher", "same", '
                          f'"above 1"); got {got!r}.')
    a = tuple(g.strip().lower() for g in got)
    if a[0] not in words or a[1] not in words or a[2] not in L0_RATIO_BANDS:
        raise CheckFailed(f"{what}: L0 and FVU are each one of {words}, the band one of {L0_RATIO_BANDS}; got {got!r}.")
    if a != tuple(want):
        raise CheckFailed(f"{what}: the measurement says L0 {want[0]}, FVU {want[1]}, L0 ratio {want[2]}; "
                          f"you predicted {a[0]}, {a[1]}, {a[2]}.")


def _exercise_l1():
    from .exercises import Exercise, Mistake

    def keep(measured, l0=None, fvu=None, band=None):
        right = l1_effect(measured)
        return (l0 or right[0], fvu or right[1], band or right[2])

    return Exercise(
        id="ch6.l1-prediction",
        name="l1_prediction",
        solution=solution_l1_prediction,
        cases=_l1_cases,
        mistakes=[
            Mistake(lambda m: keep(m, l0="higher"), "the L1 term is a cost on every active feature, not a reward: a "
                    "larger coefficient makes the code sparser (lower L0), not denser."),
            Mistake(lambda m: keep(m, band="below 1/10"), "a moderately stronger penalty does not switch the code "
                    "off: a feature stays on wherever the reconstruction error it removes is worth more than λ times "
                    "its activation, and the truly active features are worth more than that; the marginal ones go."),
            Mistake(lambda m: keep(m, fvu="lower"), "a stronger penalty does not buy a better fit: it shrinks every "
                    "code towards zero and switches marginal features off, so the reconstruction misses more (FVU "
                    "rises)."),
            Mistake(lambda m: keep(m, fvu="same"), "the reconstruction pays for the sparsity: with codes shrunk and "
                    "fewer features on, FVU rises; the unit-norm decoder stops the SAE from undoing the shrinkage "
                    "by growing its directions."),
        ],
        compare=_compare_l1,
    )


L1_PREDICTION = _exercise_l1()


def check_l1_prediction(prediction, measured: dict[str, dict[str, float]]) -> bool:
    """Exercise: compare a predicted (L0, FVU, L0 ratio band) with the chapter's measurement ``measured``."""
    return L1_PREDICTION.check_prediction(prediction, measured)
