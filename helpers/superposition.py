"""Superposition: how a d-dimensional space holds more than d features.

Tools for chapter 6. Random unit vectors and how close to orthogonal they stay
(:func:`max_abs_cosine`, :func:`jl_interference_bound`); the toy model of
Elhage et al. (2022), "Toy Models of Superposition", trained as a batch of
independent instances so a whole sweep over sparsity or importance costs one
training loop (:class:`ToyModel`, :func:`train_toy_models`); the per-feature
dimensionality of that paper (:func:`feature_dimensionality`); geometry checks
on trained models (:func:`represented_features`, :func:`feature_angles`,
:func:`classify_two_feature_model`); figure builders; and the checkers and
reference solutions of the chapter's exercises. In the toy model a feature's
direction is a *column* ``W[:, i]`` of ``W`` (shape ``[d_hidden, n_features]``),
as in the paper; the hidden state is ``h = W x``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .core import require_int

from .exercises import CheckFailed

__all__ = [
    "random_unit_vectors",
    "max_abs_cosine",
    "jl_interference_bound",
    "jl_max_vectors",
    "jl_min_dimension",
    "ToyModel",
    "ToyModelResult",
    "train_toy_models",
    "sample_sparse_features",
    "feature_dimensionality",
    "dimensions_per_feature",
    "regular_polygon",
    "regular_tetrahedron",
    "represented_features",
    "feature_angles",
    "antipodal_pairs",
    "classify_two_feature_model",
    "PHASES",
    "toy_geometry_slider",
    "dimensionality_figure",
    "phase_diagram_figure",
    "check_feature_dimensionality",
    "check_expected_cos4",
    "check_antipodal_pairs",
    "check_predicted_dimensionality",
    "check_six_feature_prediction",
    "triangle_plus_one",
    "six_feature_geometry",
    "solution_feature_dimensionality",
    "solution_predict_dimensionality",
    "solution_six_features",
    "solution_expected_cos4",
    "solution_antipodal_pairs",
]


# --------------------------------------------------------------------------
# Almost-orthogonal packing
# --------------------------------------------------------------------------
def random_unit_vectors(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``n`` directions drawn uniformly from the unit sphere in ``d`` dimensions, shape [n, d]."""
    n, d = require_int("n", n), require_int("d", d)
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def max_abs_cosine(vectors: torch.Tensor) -> float:
    """Largest |cos| between two different rows of ``vectors`` [n, d] (the worst interference)."""
    if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[0] < 2:
        raise ValueError("max_abs_cosine expects a tensor of shape [n, d] with n ≥ 2 rows.")
    u = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    c = (u @ u.T).abs()
    c.fill_diagonal_(0.0)
    return float(c.max())


def jl_interference_bound(n: int, d: int) -> float:
    """The ε above which, by a union bound, n random unit vectors in d dims rarely interfere.

    For two independent uniform unit vectors, P(|cos| > ε) ≤ 2 exp(-d ε² / 2) (concentration
    of measure on the sphere, the estimate behind Johnson & Lindenstrauss 1984). A union bound
    over the n(n-1)/2 pairs makes the chance that *any* pair exceeds ε at most 1/2 when
    ε = sqrt(2 ln(2 n (n-1)) / d) — this returns that ε (it can exceed 1 when d is small).
    """
    n, d = require_int("n", n, 2), require_int("d", d)
    return math.sqrt(2.0 * math.log(2.0 * n * (n - 1)) / d)


def jl_max_vectors(d: int, eps: float) -> float:
    """How many random unit vectors the same union bound lets d dimensions hold at interference ε:
    the inverse of :func:`jl_interference_bound`, the N with 2N(N-1) = exp(d ε² / 2), that is
    N = (1 + sqrt(1 + 2 exp(d ε² / 2))) / 2 ≈ exp(d ε² / 4) / √2: exponential in d.
    """
    d = require_int("d", d)
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}.")
    return (1.0 + math.sqrt(1.0 + 2.0 * math.exp(d * eps**2 / 2.0))) / 2.0


def jl_min_dimension(n_points: int, eps: float) -> int:
    """Dimensions the Johnson–Lindenstrauss lemma asks for to keep n points' distances within 1±ε.

    The constant is that of Dasgupta & Gupta's proof: k ≥ 4 ln n / (ε²/2 − ε³/3).
    """
    n_points = require_int("n_points", n_points, 2)
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}.")
    return math.ceil(4.0 * math.log(n_points) / (eps**2 / 2 - eps**3 / 3))


# --------------------------------------------------------------------------
# The toy model of Elhage et al. (2022)
# --------------------------------------------------------------------------
class ToyModel(torch.nn.Module):
    """``n_instances`` independent copies of x' = ReLU(WᵀW x + b), trained together.

    W: [n_instances, d_hidden, n_features] (column i of W[k] is feature i's direction in
    instance k); b: [n_instances, n_features].
    """

    def __init__(self, n_instances: int, n_features: int, d_hidden: int, seed: int = 0):
        super().__init__()
        self.n_instances = require_int("n_instances", n_instances)
        self.n_features = require_int("n_features", n_features)
        self.d_hidden = require_int("d_hidden", d_hidden)
        g = torch.Generator().manual_seed(seed)
        std = math.sqrt(2.0 / (n_features + d_hidden))  # Xavier-normal
        self.W = torch.nn.Parameter(torch.randn(n_instances, d_hidden, n_features, generator=g) * std)
        self.b = torch.nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h = W x for a batch x: [n_instances, batch, n_features] → [n_instances, batch, d_hidden]."""
        return torch.bmm(x, self.W.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[0] != self.n_instances or x.shape[2] != self.n_features:
            raise ValueError(
                f"x must have shape [n_instances={self.n_instances}, batch, n_features={self.n_features}], "
                f"got {tuple(x.shape)}."
            )
        return torch.relu(torch.bmm(self.hidden(x), self.W) + self.b[:, None, :])


def sample_sparse_features(feature_probability: torch.Tensor, batch: int, generator=None) -> torch.Tensor:
    """Synthetic features: each is 0 with probability 1 − p, else uniform on [0, 1].

    ``feature_probability`` [n_instances, n_features] is p = 1 − S (S = sparsity); returns
    [n_instances, batch, n_features].
    """
    p = torch.as_tensor(feature_probability, dtype=torch.float32)
    if p.ndim != 2:
        raise ValueError(f"feature_probability must be [n_instances, n_features], got shape {tuple(p.shape)}.")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("feature_probability must lie in [0, 1] (it is 1 − sparsity).")
    n_inst, n_feat = p.shape
    mag = torch.rand(n_inst, batch, n_feat, generator=generator)
    on = torch.rand(n_inst, batch, n_feat, generator=generator) < p[:, None, :]
    return mag * on


@dataclass
class ToyModelResult:
    """The best of ``restarts`` trained instances for each setting."""

    W: torch.Tensor  # [n_settings, d_hidden, n_features]
    b: torch.Tensor  # [n_settings, n_features]
    loss: torch.Tensor  # [n_settings] importance-weighted MSE per feature on a fresh batch
    feature_probability: torch.Tensor  # [n_settings, n_features]
    importance: torch.Tensor  # [n_settings, n_features]
    all_losses: torch.Tensor  # [n_settings, restarts]


def train_toy_models(
    feature_probability,
    importance,
    d_hidden: int,
    steps: int = 1500,
    batch: int = 512,
    lr: float = 1e-2,
    restarts: int = 1,
    seed: int = 0,
    eval_batch: int = 8192,
) -> ToyModelResult:
    """Train one toy model per setting, all at once, and keep the best of ``restarts`` each.

    ``feature_probability`` and ``importance`` are [n_settings, n_features] (a 1-D importance
    is shared by every setting). Loss: Σ_i I_i (x_i − x'_i)², averaged over the batch
    (Elhage et al. 2022). Adam with a cosine-decayed learning rate. Toy models sometimes
    settle in a worse local minimum; ``restarts`` independent inits per setting, of which the
    one with the lowest loss on a fresh batch is kept, make the geometry repeatable.
    """
    p = torch.as_tensor(feature_probability, dtype=torch.float32)
    if p.ndim != 2:
        raise ValueError(f"feature_probability must be [n_settings, n_features], got shape {tuple(p.shape)}.")
    imp = torch.as_tensor(importance, dtype=torch.float32)
    if imp.ndim == 1:
        imp = imp[None, :].expand(p.shape[0], -1)
    if imp.shape != p.shape:
        raise ValueError(f"importance has shape {tuple(imp.shape)} but feature_probability has {tuple(p.shape)}.")
    if (imp < 0).any():
        raise ValueError("importance must be non-negative.")
    restarts = require_int("restarts", restarts)
    require_int("steps", steps)
    n_set, n_feat = p.shape
    p_all = p.repeat_interleave(restarts, dim=0)
    imp_all = imp.repeat_interleave(restarts, dim=0)[:, None, :]
    model = ToyModel(n_set * restarts, n_feat, d_hidden, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for _ in range(steps):
        x = sample_sparse_features(p_all, batch, g)
        loss = (imp_all * (x - model(x)) ** 2).mean(dim=1).sum()  # sum over instances: independent
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        x = sample_sparse_features(p_all, eval_batch, g)
        per = (imp_all * (x - model(x)) ** 2).mean(dim=1).mean(dim=-1).view(n_set, restarts)
        best = per.argmin(dim=1) + torch.arange(n_set) * restarts
        W = model.W.detach()[best].clone()
        b = model.b.detach()[best].clone()
    return ToyModelResult(W=W, b=b, loss=per.min(dim=1).values, feature_probability=p,
                          importance=imp.clone(), all_losses=per)


# --------------------------------------------------------------------------
# Dimensionality and geometry
# --------------------------------------------------------------------------
def _as_W(W) -> torch.Tensor:
    W = torch.as_tensor(W, dtype=torch.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be [d_hidden, n_features] (feature i is column i), got shape {tuple(W.shape)}.")
    return W


def feature_dimensionality(W, eps: float = 1e-9) -> torch.Tensor:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² for every column W_i of W [d_hidden, n_features].

    Elhage et al. (2022): the share of a dimension feature i gets. An orthogonal feature
    scores 1, an antipodal pair 1/2 each, a regular pentagon in 2-D 2/5 each; an absent
    feature (‖W_i‖ ≈ 0) scores 0.
    """
    W = _as_W(W)
    norms = W.norm(dim=0)
    unit = W / norms.clamp_min(eps)
    overlaps = (unit.T @ W) ** 2  # [i, j] = (Ŵ_i · W_j)²
    D = norms**2 / overlaps.sum(dim=1).clamp_min(eps)
    return torch.where(norms > math.sqrt(eps), D, torch.zeros_like(D))


def dimensions_per_feature(W) -> float:
    """d_hidden / ‖W‖_F²: the average number of hidden dimensions a feature gets."""
    W = _as_W(W)
    return float(W.shape[0] / (W**2).sum())


def regular_polygon(k: int, radius: float = 1.0) -> torch.Tensor:
    """k unit vectors at equal angles in the plane, as columns of a [2, k] matrix."""
    k = require_int("k", k, 2)
    a = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return radius * torch.stack([torch.cos(a), torch.sin(a)])


def regular_tetrahedron() -> torch.Tensor:
    """Four unit vectors in 3-D with pairwise cosine −1/3, as columns of a [3, 4] matrix."""
    v = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64).T
    return v / math.sqrt(3)


def represented_features(W, threshold: float = 0.5) -> list[int]:
    """Indices of features whose direction has norm above ``threshold`` (the rest are dropped)."""
    W = _as_W(W)
    return [int(i) for i in torch.nonzero(W.norm(dim=0) > threshold).flatten()]


def feature_angles(W, features: Sequence[int] | None = None) -> torch.Tensor:
    """Angles (degrees, in [0, 360)) of 2-D feature directions, sorted, and the gaps between them.

    Returns a tensor [k, 2]: column 0 the sorted angles, column 1 the gap to the next one
    (wrapping around), so a regular k-gon has every gap equal to 360/k.
    """
    W = _as_W(W)
    if W.shape[0] != 2:
        raise ValueError(f"feature_angles needs a 2-D hidden space, got d_hidden={W.shape[0]}.")
    idx = list(range(W.shape[1])) if features is None else list(features)
    if len(idx) == 0:
        raise ValueError("feature_angles needs at least one feature.")
    ang = torch.rad2deg(torch.atan2(W[1, idx], W[0, idx])) % 360
    ang = ang.sort().values
    gaps = torch.diff(torch.cat([ang, ang[:1] + 360]))
    return torch.stack([ang, gaps], dim=1)


def antipodal_pairs(W, threshold: float = 0.5, cos_tol: float = -0.95) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of represented features whose directions point opposite ways.

    A pair counts when cos(W_i, W_j) < ``cos_tol`` (default −0.95, i.e. within about 18° of
    exactly opposite).
    """
    W = _as_W(W)
    rep = represented_features(W, threshold)
    unit = W / W.norm(dim=0).clamp_min(1e-12)
    return [(i, j) for a, i in enumerate(rep) for j in rep[a + 1:] if float(unit[:, i] @ unit[:, j]) < cos_tol]


#: Outcomes of the two-features-in-one-dimension model (Elhage et al. 2022, phase diagrams).
PHASES = ("not represented", "dedicated dimension", "superposition")


def classify_two_feature_model(W, threshold: float = 0.5) -> str:
    """What the 1-D hidden space does with feature 1 (the "extra" feature) of a [1, 2] W.

    "not represented": only feature 0 gets the dimension; "dedicated dimension": only the extra
    feature gets it; "superposition": both do, pointing opposite ways (an antipodal pair).
    Both present with the same sign would be a fourth, losing outcome: it raises.
    """
    W = _as_W(W)
    if W.shape != (1, 2):
        raise ValueError(f"classify_two_feature_model expects W of shape [1, 2], got {tuple(W.shape)}.")
    w0, w1 = float(W[0, 0]), float(W[0, 1])
    on0, on1 = abs(w0) > threshold, abs(w1) > threshold
    if on0 and on1:
        if w0 * w1 < 0:
            return "superposition"
        raise ValueError(f"both features share one direction (w = {w0:.2f}, {w1:.2f}); not one of {PHASES}.")
    if on1:
        return "dedicated dimension"
    return "not represented"


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------
def toy_geometry_slider(W, labels: Sequence[str], title: str, importance=None, active: int = 0):
    """Two panels with a slider over settings: WᵀW as a heatmap and the 2-D feature directions.

    ``W`` is [n_settings, 2, n_features]; ``labels`` names each setting (the slider ticks).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .plotting import PALETTE

    W = torch.as_tensor(W, dtype=torch.float64)
    if W.ndim != 3 or W.shape[1] != 2:
        raise ValueError(f"W must be [n_settings, 2, n_features], got shape {tuple(W.shape)}.")
    if len(labels) != W.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries for {W.shape[0]} settings.")
    n = W.shape[2]
    names = [f"feature {i}" for i in range(n)]
    gram = [np.round((w.T @ w).numpy(), 3) for w in W]
    lim = float(W.norm(dim=1).max()) * 1.15
    # Short subplot titles (they sit side by side even on a phone) and a horizontal colour bar
    # under the heatmap, away from the right panel's axis.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("WᵀW", "directions W_i"),
                        column_widths=[0.45, 0.55], horizontal_spacing=0.2)
    short = [str(i) for i in range(n)]
    fig.add_trace(go.Heatmap(z=gram[active], x=short, y=short, zmin=-1.5, zmax=1.5, colorscale="RdBu",
                             reversescale=True,
                             colorbar={"orientation": "h", "x": 0.2, "xanchor": "center", "y": -0.2,
                                       "yanchor": "top", "len": 0.38, "thickness": 10,
                                       "title": {"text": "W_i · W_j", "side": "top"}},
                             hovertemplate="feature %{y} · feature %{x} = %{z:.3f}<extra></extra>"), row=1, col=1)
    imp = None if importance is None else np.asarray(importance, dtype=float)
    for i in range(n):
        x, y = float(W[active, 0, i]), float(W[active, 1, i])
        lab = names[i] if imp is None else f"{names[i]} (importance {imp[i]:.2f})"
        fig.add_trace(go.Scatter(x=[0, x], y=[0, y], mode="lines+markers+text", name=lab, text=["", str(i)],
                                 textposition="top center", showlegend=False,
                                 line={"color": PALETTE[i % len(PALETTE)], "width": 3},
                                 marker={"size": [0, 10]}, hovertemplate=f"{lab}: (%{{x:.2f}}, %{{y:.2f}})<extra></extra>"),
                      row=1, col=2)
    steps = []
    for k, lab in enumerate(labels):
        data = {"z": [gram[k].tolist()] + [None] * n,
                "x": [short] + [[0, round(float(W[k, 0, i]), 4)] for i in range(n)],
                "y": [short] + [[0, round(float(W[k, 1, i]), 4)] for i in range(n)]}
        steps.append({"method": "restyle", "label": str(lab), "args": [data, list(range(n + 1))]})
    fig.update_layout(title=title, height=660, showlegend=False, margin={"r": 20, "b": 40}, meta={"view": str(labels[active])},
                      sliders=[{"active": active, "steps": steps, "pad": {"t": 165},
                                "currentvalue": {"prefix": "feature probability 1 − S = "}}])
    fig.update_xaxes(title_text="feature j", row=1, col=1)
    fig.update_yaxes(autorange="reversed", title_text="feature i", row=1, col=1)
    fig.update_xaxes(range=[-lim, lim], title_text="dim 1", row=1, col=2)
    fig.update_yaxes(range=[-lim, lim], title_text="dim 2", scaleanchor="x2", row=1, col=2)
    return fig


def dimensionality_figure(density, per_feature, overall, d_hidden: int, title: str,
                          sticky: Sequence[float] = (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 1 / 3)):
    """Scatter of each feature's dimensionality against 1/(1 − S), the overall average as a line.

    ``density`` [n_settings] is 1 − S; ``per_feature`` [n_settings, n_features];
    ``overall`` [n_settings] is d_hidden / ‖W‖_F². Dotted lines mark the sticky fractions.
    """
    import plotly.graph_objects as go

    from .plotting import PALETTE

    density = np.asarray(density, dtype=float)
    per = np.asarray(per_feature, dtype=float)
    overall = np.asarray(overall, dtype=float)
    if per.ndim != 2 or per.shape[0] != density.shape[0] or overall.shape != density.shape:
        raise ValueError("per_feature must be [n_settings, n_features] and overall [n_settings], matching density.")
    inv = 1.0 / density
    xs = np.repeat(inv, per.shape[1])
    jitter = np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, xs.shape))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.round(xs * jitter, 3), y=np.round(per.ravel(), 4), mode="markers", name="one feature",
                             marker={"size": 5, "color": PALETTE[0], "opacity": 0.45},
                             hovertemplate="1/(1−S) = %{x:.1f}<br>D_i = %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=np.round(inv, 3), y=np.round(overall, 4), mode="lines+markers",
                             name=f"dimensions per feature = {d_hidden}/‖W‖²", line={"color": PALETTE[3], "width": 3}))
    # Labels sit right of the plot; close fractions (2/5, 1/3) are pushed apart so they never
    # print over each other (3/8 is left out by default: it would sit between them).
    values = sorted(sticky, reverse=True)
    for s in values:
        fig.add_hline(y=s, line={"dash": "dot", "color": "#999", "width": 1})
    for s, pos in zip(values, _spread(values, gap=0.075)):
        fig.add_annotation(x=1.0, xref="paper", xanchor="left", y=pos, yref="y", text=_fraction_label(s),
                           showarrow=False, font={"size": 11})
    fig.update_layout(title=title, xaxis_title="1 / (1 − S)  (inverse feature probability, log scale)",
                      yaxis_title="dimensionality D_i", xaxis_type="log", height=520,
                      legend={"orientation": "h", "y": -0.2}, margin={"r": 40})
    return fig


def _spread(values: Sequence[float], gap: float) -> list[float]:
    """Label heights for lines at ``values`` (descending): each label as close to its line as
    possible while neighbouring labels stay at least ``gap`` apart (clusters spread symmetrically)."""
    pos = [float(v) for v in values]
    for _ in range(50):
        moved = False
        for k in range(len(pos) - 1):
            short = gap - (pos[k] - pos[k + 1])
            if short > 1e-9:
                pos[k] += short / 2
                pos[k + 1] -= short / 2
                moved = True
        if not moved:
            break
    return pos


def _fraction_label(x: float) -> str:
    from fractions import Fraction

    f = Fraction(x).limit_denominator(10)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def phase_diagram_figure(phases, relative_importance, density, title: str):
    """Heatmap of PHASES over (relative importance of the extra feature, feature density)."""
    import plotly.graph_objects as go

    from .plotting import PALETTE

    codes = np.vectorize(PHASES.index)(np.asarray(phases, dtype=object))
    if codes.shape != (len(density), len(relative_importance)):
        raise ValueError(f"phases must be [len(density), len(relative_importance)], got {codes.shape}.")
    colours = ["#e8e8e8", PALETTE[0], PALETTE[3]]
    scale = []
    for k, c in enumerate(colours):
        scale += [[k / 3, c], [(k + 1) / 3, c]]
    xl = [f"{r:.2g}" for r in relative_importance]
    yl = [f"{p:.2g}" for p in density]
    fig = go.Figure(go.Heatmap(z=codes, x=xl, y=yl, zmin=-0.5, zmax=2.5, colorscale=scale,
                               text=np.asarray(phases, dtype=object), xgap=1, ygap=1,
                               colorbar={"tickvals": [0, 1, 2], "ticktext": list(PHASES), "title": {"text": "extra feature"}},
                               hovertemplate="relative importance %{x}<br>density %{y}<br>%{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="extra feature's importance ÷ feature 0's",
                      yaxis_title="feature probability 1 − S", height=460)
    fig.update_xaxes(automargin=True, title_standoff=12)
    return fig


# --------------------------------------------------------------------------
# Exercises: reference solutions and checkers
# --------------------------------------------------------------------------
def solution_feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    """Reference solution: D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² (0 for an absent feature)."""
    return feature_dimensionality(W)


def _dimensionality_cases():
    g = torch.Generator().manual_seed(7)
    tri = regular_polygon(3) * 1.3
    mixed = torch.cat([regular_polygon(2), torch.zeros(2, 1)], dim=1)  # a digon plus one absent feature
    return [((regular_polygon(2),), {}), ((tri,), {}), ((regular_tetrahedron(),), {}),
            ((torch.randn(3, 6, generator=g, dtype=torch.float64),), {}), ((mixed,), {})]


def _unnormalised_dimensionality(W):
    W = torch.as_tensor(W, dtype=torch.float64)
    return W.norm(dim=0) ** 2 / ((W.T @ W) ** 2).sum(dim=1).clamp_min(1e-12)


def _exercise(**kwargs):
    from .exercises import Exercise

    return Exercise(**kwargs)


def _mistake(*args, **kwargs):
    from .exercises import Mistake

    return Mistake(*args, **kwargs)


FEATURE_DIMENSIONALITY = _exercise(
    id="ch6.feature-dimensionality", name="feature_dimensionality", solution=solution_feature_dimensionality,
    cases=_dimensionality_cases, mistakes=[
        _mistake(_unnormalised_dimensionality, "normalise W_i in the denominator: it is Σ_j (Ŵ_i · W_j)², the "
                 "projections of every feature onto feature i's unit direction."),
        _mistake(lambda W: torch.as_tensor(W, dtype=torch.float64).norm(dim=0) ** 2,
                 "that is only the numerator ‖W_i‖²: divide by how much every feature projects onto W_i's direction."),
    ],
    atol=1e-6,
)


def check_feature_dimensionality(fn) -> bool:
    """Checker for the exercise "compute every feature's dimensionality"."""
    return FEATURE_DIMENSIONALITY.check(fn)


def solution_expected_cos4(d: int) -> float:
    """Reference solution: E[cos⁴θ] between two independent uniform unit vectors in d dims, 3/(d(d+2))."""
    d = require_int("d", d)
    if d < 1:
        raise ValueError(f"d is a dimension, at least 1; got {d}.")
    return 3.0 / (d * (d + 2))


EXPECTED_COS4 = _exercise(
    id="ch6.expected-cos4",
    name="expected_cos4",
    solution=solution_expected_cos4,
    cases=[((d,), {}) for d in (1, 2, 3, 16, 256)],
    mistakes=[
        _mistake(lambda d: 1 / d**2, "(E[cos²])² = 1/d² is the square of the mean, not the mean of the square: "
                 "cos² varies from pair to pair, and E[X²] = (E[X])² + Var[X] > (E[X])²."),
        _mistake(lambda d: 3 / d**2, "3/d² treats u·v as a Gaussian with variance 1/d (E[g⁴] = 3σ⁴). That is the "
                 "large-d limit; on the sphere the coordinates are tied by Σ u_k² = 1, which gives 3/(d(d+2)) "
                 "(and exactly 1 when d = 1)."),
        _mistake(lambda d: 1 / d, "1/d is E[cos²], the second moment, stated in section 1; the fourth moment is smaller."),
    ],
    atol=1e-12,
)


def check_expected_cos4(fn) -> bool:
    """Checker: the mean fourth power of the cosine of two random directions in d dimensions."""
    return EXPECTED_COS4.check(fn)


# --- predict, then measure: the dimensionality of an uneven triangle plus an orthogonal feature -----
TRIANGLE_NORMS = (1.0, 1.0, 2.0, 0.5)


def triangle_plus_one(norms: Sequence[float] = TRIANGLE_NORMS) -> torch.Tensor:
    """Four features in 3-D, columns of [3, 4]: three at 120° in the (x, y) plane and one along z,
    with lengths ``norms`` (default 1, 1, 2 for the triangle and 0.5 along z)."""
    norms = [float(n) for n in norms]
    if len(norms) != 4 or any(n <= 0 for n in norms):
        raise ValueError(f"norms must be four positive lengths, got {norms!r}.")
    W = torch.cat([torch.cat([regular_polygon(3), torch.zeros(1, 3, dtype=torch.float64)]),
                   torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64)], dim=1)
    return W * torch.tensor(norms, dtype=torch.float64)


def solution_predict_dimensionality() -> list[float]:
    """Reference: D_i of :func:`triangle_plus_one`, measured with :func:`feature_dimensionality`."""
    return [float(v) for v in feature_dimensionality(triangle_plus_one())]


PREDICT_DIMENSIONALITY = _exercise(
    id="ch6.predict-dimensionality",
    name="predicted_D",
    solution=solution_predict_dimensionality,
    atol=0.02,
)


check_predicted_dimensionality = PREDICT_DIMENSIONALITY.check_value


# --- predict, then measure: how many of six features a 2-D toy model keeps -------------------------
@functools.lru_cache(maxsize=4)
def _six_feature_model(density: float, seed: int):
    res = train_toy_models(torch.full((1, 6), density), torch.ones(6), 2, steps=1500, batch=256, restarts=4, seed=seed)
    W = res.W[0]
    return len(represented_features(W)), len(antipodal_pairs(W)), W


def six_feature_geometry(density: float = 0.05, seed: int = 0) -> tuple[int, int, torch.Tensor]:
    """Train the 2-D toy model with six equally important features at feature probability
    ``density`` (1500 steps, best of 4 restarts; cached); return (features represented,
    antipodal pairs, W [2, 6])."""
    if not 0 < density <= 1:
        raise ValueError(f"density is a feature probability 1 − S in (0, 1], got {density!r}.")
    n_rep, n_pairs, W = _six_feature_model(float(density), int(seed))
    return n_rep, n_pairs, W.clone()


def solution_six_features() -> tuple[int, int]:
    """Reference: (represented, antipodal pairs) of :func:`six_feature_geometry` at 1 − S = 0.05."""
    n_rep, n_pairs, _ = six_feature_geometry()
    return n_rep, n_pairs


def _compare_counts(got, want, what: str) -> None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what}: answer with two whole numbers, (represented, antipodal pairs); got {got!r}.")
    try:
        a = tuple(int(g) for g in got)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: answer with two whole numbers, got {got!r}.") from None
    if a != tuple(want):
        raise CheckFailed(f"{what}: the trained model represents {want[0]} features in {want[1]} antipodal pairs; "
                          f"you predicted {a[0]} and {a[1]}.")


SIX_FEATURES = _exercise(
    id="ch6.six-features",
    name="six_feature_prediction",
    solution=solution_six_features,
    compare=_compare_counts,
)


check_six_feature_prediction = SIX_FEATURES.check_value


def solution_antipodal_pairs(W: torch.Tensor, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Reference solution: represented features (norm > threshold) whose cosine is below −0.95."""
    return antipodal_pairs(W, threshold)


def _antipodal_cases():
    a = torch.tensor([[1.0, 0.0, -1.0, 0.0, 0.1], [0.0, 1.0, 0.0, -1.0, 0.0]], dtype=torch.float64)
    b = regular_polygon(5) * 1.1
    c = torch.tensor([[1.0, -0.3, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # -0.3: too short to count
    d = torch.tensor([[0.9, -1.0, 0.6], [0.1, 0.0, 0.8]], dtype=torch.float64)
    return [a, b, c, d]


def _compare_pairs(got, want, what: str) -> None:
    try:
        got_set = sorted(tuple(sorted((int(i), int(j)))) for i, j in got)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: return a list of (i, j) pairs of ints, got {got!r}.") from None
    if got_set != sorted(want):
        hint = ""
        if len(got_set) > len(want):
            hint = (" Did you count a feature that is not represented (norm ≤ 0.5), or compare raw dot "
                    "products instead of cosines?")
        elif len(got_set) < len(want):
            hint = " Did you compare cosines (normalise both columns) against −0.95?"
        raise CheckFailed(f"{what}: expected {sorted(want)}, got {got_set}.{hint}")


def _pairs_ignoring_norm(W):
    unit = W / W.norm(dim=0).clamp_min(1e-12)
    n = W.shape[1]
    return [(i, j) for i in range(n) for j in range(i + 1, n) if float(unit[:, i] @ unit[:, j]) < -0.95]


def _pairs_by_raw_dot(W):
    n = W.shape[1]
    return [(i, j) for i in range(n) for j in range(i + 1, n) if float(W[:, i] @ W[:, j]) < -0.95]


ANTIPODAL_PAIRS = _exercise(
    id="ch6.antipodal-pairs",
    name="antipodal_pairs",
    solution=solution_antipodal_pairs,
    cases=[((W,), {}) for W in _antipodal_cases()],
    mistakes=[
        _mistake(_pairs_ignoring_norm, "a feature whose column has norm ≤ 0.5 is not represented; a short vector "
                 "pointing the other way is not a partner in a pair."),
        _mistake(_pairs_by_raw_dot, "compare cosines, not raw dot products: normalise both columns before testing "
                 "against −0.95."),
    ],
    compare=_compare_pairs,
)


def check_antipodal_pairs(fn) -> bool:
    """Checker for the exercise "find the antipodal pairs in a trained toy model"."""
    return ANTIPODAL_PAIRS.check(fn)
