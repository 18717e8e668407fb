"""Tests for helpers.superposition: packing bounds, the toy model, dimensionality, checkers."""
import math

import pytest
import torch

import helpers.superposition as sp
from helpers.exercises import CheckFailed


# --- dimensionality on hand-built polytopes ----------------------------------------------------
@pytest.mark.parametrize(
    "W, expected",
    [
        (sp.regular_polygon(2), 1 / 2),          # digon: antipodal pair
        (sp.regular_polygon(3), 2 / 3),          # triangle
        (sp.regular_polygon(5), 2 / 5),          # pentagon
        (sp.regular_tetrahedron(), 3 / 4),       # tetrahedron in 3-D
        (torch.eye(4, dtype=torch.float64), 1.0),  # orthogonal features
    ],
)
def test_feature_dimensionality_polytopes(W, expected):
    D = sp.feature_dimensionality(W)
    assert D.shape == (W.shape[1],)
    assert torch.allclose(D, torch.full_like(D, expected), atol=1e-12)


def test_feature_dimensionality_is_scale_invariant_and_zero_for_absent_features():
    W = torch.cat([sp.regular_polygon(3) * 2.5, torch.zeros(2, 1, dtype=torch.float64)], dim=1)
    D = sp.feature_dimensionality(W)
    assert torch.allclose(D[:3], torch.full((3,), 2 / 3, dtype=torch.float64))
    assert D[3] == 0


def test_polytopes_are_what_they_claim():
    tet = sp.regular_tetrahedron()
    gram = tet.T @ tet
    assert torch.allclose(gram.diagonal(), torch.ones(4, dtype=torch.float64))
    off = gram[~torch.eye(4, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / 3))
    gaps = sp.feature_angles(sp.regular_polygon(5))[:, 1]
    assert torch.allclose(gaps, torch.full((5,), 72.0, dtype=torch.float64), atol=1e-9)


def test_dimensions_per_feature():
    assert sp.dimensions_per_feature(torch.eye(3)) == pytest.approx(1.0)
    assert sp.dimensions_per_feature(sp.regular_polygon(5)) == pytest.approx(2 / 5)


def test_dimensionality_rejects_bad_shapes():
    with pytest.raises(ValueError, match="d_hidden, n_features"):
        sp.feature_dimensionality(torch.ones(3))
    with pytest.raises(ValueError, match="2-D hidden"):
        sp.feature_angles(torch.ones(3, 4))


# --- packing --------------------------------------------------------------------------------
def test_random_unit_vectors_and_max_cosine():
    V = sp.random_unit_vectors(50, 10, seed=3)
    assert torch.allclose(V.norm(dim=1), torch.ones(50, dtype=torch.float64))
    assert torch.equal(V, sp.random_unit_vectors(50, 10, seed=3))  # deterministic
    assert sp.max_abs_cosine(torch.eye(5)) == 0.0
    assert sp.max_abs_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        sp.random_unit_vectors(0, 3)
    with pytest.raises(ValueError):
        sp.max_abs_cosine(torch.ones(1, 3))


def test_jl_formulas():
    assert sp.jl_interference_bound(2, 8) == pytest.approx(math.sqrt(2 * math.log(4) / 8))
    n = sp.jl_max_vectors(100, 0.2)
    assert math.sqrt(2 * math.log(2 * n * (n - 1)) / 100) == pytest.approx(0.2)  # inverts jl_interference_bound
    assert sp.jl_max_vectors(400, 0.2) == pytest.approx(math.exp(4.0) / math.sqrt(2), rel=0.02)  # ≈ e^{dε²/4}/√2
    assert sp.jl_min_dimension(10**6, 0.1) == math.ceil(4 * math.log(10**6) / (0.005 - 0.001 / 3))
    with pytest.raises(ValueError):
        sp.jl_max_vectors(10, 1.5)
    # the bound really bounds what we measure
    V = sp.random_unit_vectors(500, 64, seed=0)
    assert sp.max_abs_cosine(V) < sp.jl_interference_bound(500, 64)


# --- the toy model ----------------------------------------------------------------------------
def test_toy_model_forward_and_validation():
    m = sp.ToyModel(3, 5, 2, seed=0)
    x = torch.rand(3, 7, 5)
    out = m(x)
    manual = torch.relu(torch.einsum("ibn,imn,imk->ibk", x, m.W, m.W) + m.b[:, None, :])
    assert torch.allclose(out, manual, atol=1e-6)
    with pytest.raises(ValueError, match="n_instances"):
        m(torch.rand(2, 7, 5))


def test_sample_sparse_features_density():
    g = torch.Generator().manual_seed(0)
    x = sp.sample_sparse_features(torch.tensor([[1.0, 0.1]]), 20000, g)
    assert x.shape == (1, 20000, 2)
    assert (x[0, :, 0] > 0).float().mean() > 0.99
    assert abs((x[0, :, 1] > 0).float().mean() - 0.1) < 0.01
    with pytest.raises(ValueError, match="1 − sparsity"):
        sp.sample_sparse_features(torch.tensor([[1.5]]), 3)


def test_train_toy_models_geometry():
    """Dense: two orthogonal features; sparse: a regular pentagon with negative biases."""
    dens = torch.tensor([1.0, 0.05])
    res = sp.train_toy_models(dens[:, None].expand(-1, 5), 0.9 ** torch.arange(5.0), 2,
                              steps=1000, batch=256, restarts=3, seed=0)
    assert res.W.shape == (2, 2, 5) and res.b.shape == (2, 5) and res.all_losses.shape == (2, 3)
    assert torch.allclose(res.loss, res.all_losses.min(dim=1).values)
    assert sp.represented_features(res.W[0]) == [0, 1]
    Wd = res.W[0] / res.W[0].norm(dim=0)
    assert abs(float(Wd[:, 0] @ Wd[:, 1])) < 0.1
    assert sp.represented_features(res.W[1]) == [0, 1, 2, 3, 4]
    assert ((sp.feature_angles(res.W[1])[:, 1] - 72).abs() < 6).all()
    assert (res.b[1] < 0).all()


def test_train_toy_models_validation():
    with pytest.raises(ValueError, match="importance"):
        sp.train_toy_models(torch.ones(2, 5), torch.ones(2, 4), 2, steps=1)
    with pytest.raises(ValueError, match="feature_probability"):
        sp.train_toy_models(torch.ones(5), torch.ones(5), 2, steps=1)


def test_antipodal_and_phase_classification():
    W = torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -0.98]])
    assert sp.antipodal_pairs(W) == [(0, 2), (1, 3)]
    assert sp.classify_two_feature_model(torch.tensor([[1.0, -0.9]])) == "superposition"
    assert sp.classify_two_feature_model(torch.tensor([[1.0, 0.01]])) == "not represented"
    assert sp.classify_two_feature_model(torch.tensor([[0.0, 1.0]])) == "dedicated dimension"
    with pytest.raises(ValueError, match="share one direction"):
        sp.classify_two_feature_model(torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        sp.classify_two_feature_model(torch.ones(2, 2))


# --- figures ------------------------------------------------------------------------------------
def test_figures_build():
    W = torch.stack([sp.regular_polygon(5).float(), sp.regular_polygon(5).float() * 0.5])
    fig = sp.toy_geometry_slider(W, ["a", "b"], "t")
    assert len(fig.layout.sliders[0].steps) == 2 and len(fig.data) == 6
    fig = sp.dimensionality_figure([1.0, 0.1], [[1, 0.5], [0.5, 0.5]], [1.0, 0.5], 2, "t")
    assert len(fig.data) == 2
    fig = sp.phase_diagram_figure([["superposition", "not represented"]], [0.5, 2.0], [0.1], "t")
    assert fig.data[0].z.shape == (1, 2)
    with pytest.raises(ValueError):
        sp.toy_geometry_slider(W, ["a"], "t")


# --- checkers ---------------------------------------------------------------------------------
def _stub(*args, **kwargs):
    raise NotImplementedError


def test_check_feature_dimensionality():
    assert sp.check_feature_dimensionality(sp.solution_feature_dimensionality)
    assert sp.check_feature_dimensionality(_stub) is False

    def unnormalised(W):  # forgets to normalise W_i in the denominator
        W = torch.as_tensor(W, dtype=torch.float64)
        return W.norm(dim=0) ** 2 / ((W.T @ W) ** 2).sum(dim=1)

    with pytest.raises(CheckFailed, match="normalise W_i in the denominator"):
        sp.check_feature_dimensionality(unnormalised)

    def rows_not_columns(W):
        return sp.feature_dimensionality(torch.as_tensor(W).T)

    with pytest.raises(CheckFailed):
        sp.check_feature_dimensionality(rows_not_columns)


def test_check_expected_cos4_against_sampling_and_its_mistakes():
    assert sp.check_expected_cos4(sp.solution_expected_cos4)
    assert sp.check_expected_cos4(_stub) is False
    # the reference agrees with a Monte Carlo estimate (so the exercise's answer is right, not only consistent)
    U, V = sp.random_unit_vectors(200000, 8, seed=1), sp.random_unit_vectors(200000, 8, seed=2)
    assert float(((U * V).sum(dim=1) ** 4).mean()) == pytest.approx(sp.solution_expected_cos4(8), rel=0.03)
    assert sp.solution_expected_cos4(1) == 1.0  # in one dimension cos = ±1
    with pytest.raises(CheckFailed, match="square of the mean"):
        sp.check_expected_cos4(lambda d: 1 / d**2)
    with pytest.raises(CheckFailed, match="Gaussian"):
        sp.check_expected_cos4(lambda d: 3 / d**2)
    with pytest.raises(CheckFailed, match="chi-squared"):  # an unlisted wrong answer: first wrong entry plus the hint
        sp.check_expected_cos4(lambda d: 2 / d**2)
    with pytest.raises(ValueError):
        sp.solution_expected_cos4(0)


def test_check_antipodal_pairs():
    assert sp.check_antipodal_pairs(sp.solution_antipodal_pairs)
    assert sp.check_antipodal_pairs(_stub) is False

    def ignores_norm(W):  # counts features that are not represented
        unit = W / W.norm(dim=0).clamp_min(1e-12)
        n = W.shape[1]
        return [(i, j) for i in range(n) for j in range(i + 1, n) if float(unit[:, i] @ unit[:, j]) < -0.95]

    with pytest.raises(CheckFailed, match="not represented"):
        sp.check_antipodal_pairs(ignores_norm)

    def raw_dot(W):  # compares dot products, not cosines
        n = W.shape[1]
        return [(i, j) for i in range(n) for j in range(i + 1, n) if float(W[:, i] @ W[:, j]) < -0.95]

    with pytest.raises(CheckFailed):
        sp.check_antipodal_pairs(raw_dot)


def test_triangle_plus_one_and_its_prediction_exercise():
    W = sp.triangle_plus_one()
    assert W.shape == (3, 4)
    assert torch.allclose(W.norm(dim=0), torch.tensor(sp.TRIANGLE_NORMS, dtype=torch.float64))
    # by hand: D = 1/(1 + 1/4 + 4/4) for the short triangle features, 4/(4 + 1/4 + 1/4) for the long one,
    # and 1 for the feature alone along z, whatever its length
    assert sp.solution_predict_dimensionality() == pytest.approx([4 / 9, 4 / 9, 8 / 9, 1.0])
    assert sp.check_predicted_dimensionality([0.44, 0.45, 0.89, 1.0])
    with pytest.raises(CheckFailed, match="lengths matter"):
        sp.check_predicted_dimensionality([2 / 3, 2 / 3, 2 / 3, 1.0])
    with pytest.raises(CheckFailed, match="whatever its length"):
        sp.check_predicted_dimensionality([4 / 9, 4 / 9, 8 / 9, 0.25])
    with pytest.raises(CheckFailed, match="Ŵ_i·W_j"):  # an unlisted wrong answer: first wrong entry plus the hint
        sp.check_predicted_dimensionality([0.5, 0.5, 0.9, 1.0])
    assert sp.check_predicted_dimensionality(...) is False
    with pytest.raises(ValueError, match="four positive"):
        sp.triangle_plus_one((1.0, 1.0, 2.0))


def test_six_feature_exercise_measures_a_hexagon():
    n_rep, n_pairs, W = sp.six_feature_geometry()
    assert (n_rep, n_pairs) == sp.solution_six_features() == (6, 3)
    gaps = sp.feature_angles(W)[:, 1]
    assert float((gaps - 60).abs().max()) < 6  # a regular hexagon, so opposite vertices are antipodal
    assert sp.check_six_feature_prediction((6, 3))
    with pytest.raises(CheckFailed, match="opposite vertices"):
        sp.check_six_feature_prediction((6, 0))
    with pytest.raises(CheckFailed, match="two whole numbers"):
        sp.check_six_feature_prediction("six")
    with pytest.raises(CheckFailed, match="represents 6 features in 3"):
        sp.check_six_feature_prediction((3, 1))


def test_figures_fixes_keep_labels_apart():
    W = torch.stack([sp.regular_polygon(5).float()])
    fig = sp.toy_geometry_slider(W, ["a"], "t")
    cb = fig.data[0].colorbar
    assert cb.orientation == "h" and cb.y < 0  # under the heatmap, off the right panel's axis
    assert all(len(a.text) <= 15 for a in fig.layout.annotations)  # short subplot titles
    fig = sp.dimensionality_figure([1.0, 0.1], [[1, 0.5], [0.5, 0.5]], [1.0, 0.5], 2, "t")
    pos = sorted(a.y for a in fig.layout.annotations if a.yref == "y")
    assert len(pos) == 6 and min(b - a for a, b in zip(pos, pos[1:])) >= 0.075 - 1e-9  # 2/5 and 1/3 apart
    assert sp._spread([0.4, 0.375], gap=0.06) == pytest.approx([0.4175, 0.3575])  # a close pair, pushed apart evenly
