"""helpers.ffn: the key-value reading of the MLP, fact pairs, edits, and the exercise checkers."""
import os

import pytest
import torch

import helpers
from helpers import ffn
from helpers.exercises import CheckFailed
from helpers.zoo import world as W

MODEL = os.environ.get("RS_TEST_MODEL", "rs-gpt2-4l")


@pytest.fixture(scope="module")
def model():
    torch.set_grad_enabled(False)
    return helpers.load_model(MODEL)


@pytest.fixture(scope="module")
def sample(model):
    s = ffn.labelled_sample(model, n_sequences=12, sentences_per_sequence=3, seed=3)
    return s, ffn.collect_ffn_stats(model, s["tokens"], s["lengths"], k=4)


def test_mlp_is_a_sum_of_weighted_values(model):
    toks = model.to_tokens(["The capital of France is", "Picasso was a famous"])
    _, cache = model.run_with_cache(toks)
    for l in range(model.cfg.n_layers):
        a = ffn.memory_coefficients(model, cache, l)
        torch.testing.assert_close(a, cache[f"blocks.{l}.mlp.hook_post"], atol=1e-5, rtol=1e-4)
        out = ffn.mlp_out_from_memories(a, model.W_out[l], model.b_out[l])
        torch.testing.assert_close(out, cache[f"blocks.{l}.hook_mlp_out"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="layer"):
        ffn.memory_coefficients(model, cache, model.cfg.n_layers)
    with pytest.raises(ValueError, match="chain"):
        ffn.mlp_out_from_memories(a, model.W_out[0].T, model.b_out[0])


def test_sample_labels_and_stats(model, sample):
    s, st = sample
    assert len(s["labels"]) == s["tokens"].shape[0]
    assert all(len(lab) == int(n) for lab, n in zip(s["labels"], s["lengths"]))
    assert "landmark_city" in s["label_names"] and "ioi" in s["label_names"]
    L, dm = model.cfg.n_layers, model.cfg.d_mlp
    assert st.top_values.shape == (L, dm, 4)
    assert (st.top_pos > 0).all(), "BOS must never be a top prefix"
    assert (st.top_pos < s["lengths"][st.top_seq]).all(), "padding must never be a top prefix"
    # the stored top activation is the real activation at that (sequence, position)
    l, n = 1, 5
    seq, pos = int(st.top_seq[l, n, 0]), int(st.top_pos[l, n, 0])
    _, cache = model.run_with_cache(s["tokens"][seq:seq + 1])
    torch.testing.assert_close(cache[f"blocks.{l}.mlp.hook_post"][0, pos, n].cpu(), st.top_values[l, n, 0], atol=1e-4, rtol=1e-4)
    assert torch.allclose(st.key_moment[l], st.key_moment[l].T, atol=1e-5)
    assert st.write_cov["mlp"].shape == (L, model.cfg.d_model, model.cfg.d_model)
    with pytest.raises(ValueError, match="lengths"):
        ffn.collect_ffn_stats(model, s["tokens"], s["lengths"][:-1])


def test_classify_neuron():
    assert ffn.classify_neuron([5, 5, 5, 7], ["a", "b", "c", "d"]) == "shallow"
    assert ffn.classify_neuron([1, 2, 3, 4], ["a", "a", "a", "b"]) == "semantic"
    assert ffn.classify_neuron([1, 2, 3, 4], ["a", "b", "c", "d"]) == "mixed"
    with pytest.raises(ValueError):
        ffn.classify_neuron([1, 2], ["a"])


def test_value_projection(model):
    row = ffn.value_logits(model, 2, [7])[0]
    torch.testing.assert_close(row, model.W_out[2, 7] @ model.W_U)
    top = ffn.value_top_tokens(model, 2, 7, k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    with pytest.raises(ValueError, match="neuron"):
        ffn.value_top_tokens(model, 2, model.cfg.d_mlp)


def test_fact_pairs_line_up(model):
    facts = W.facts_by_relation("landmark_city")
    pairs = ffn.fact_pairs(model, facts)
    assert len(pairs) > len(facts) // 2
    assert pairs.clean.shape == pairs.corrupted.shape
    for i in range(len(pairs)):
        f, g = pairs.facts[i], pairs.partners[i]
        assert f.relation == g.relation and f.answer != g.answer
        last = int(pairs.last[i])
        # the two prompts differ only inside the subject, and end at the same position
        diff = (pairs.clean[i, : last + 1] != pairs.corrupted[i, : last + 1]).nonzero()[:, 0]
        assert len(diff) > 0 and int(diff.max()) <= int(pairs.subject_last[i])
        assert model.tokenizer.decode(pairs.clean[i, 1: last + 1].tolist()) == pairs.prompts[i]
    eiffel = pairs.prompts.index("The Eiffel Tower is located in")
    assert int(pairs.subject_last[eiffel]) == 3  # BOS, The, Eiffel, Tower
    assert ffn.subject_last_position(model, "The capital of {s} is", "France") == 4
    with pytest.raises(ValueError, match="slot"):
        ffn.subject_last_position(model, "no slot here", "France")


def test_fact_accuracy_and_text_loss(model):
    acc = ffn.fact_accuracy(model, [("The capital of France is", "Paris"), ("The capital of France is", "Rome")])
    assert acc.tolist() == [1.0, 0.0]
    toks, lens = ffn.corpus_tokens(model, n_docs=6, seed=5)
    loss = ffn.text_loss(model, toks, lens)
    assert 0 < loss < 5
    with pytest.raises(ValueError, match="seed 0"):
        ffn.corpus_tokens(model, n_docs=2, seed=0)


def test_rank_one_update_hits_target_and_is_minimal():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    C = A @ A.T + 0.5 * torch.eye(6, dtype=torch.float64)
    W_, k, t = (torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64),
                torch.randn(3, generator=g, dtype=torch.float64))
    new = ffn.rank_one_update(W_, k, t, C)
    torch.testing.assert_close(k @ new, t)
    assert torch.linalg.matrix_rank(new - W_) == 1
    # any other rank-one change with the same effect on k costs more in the C metric
    cost = lambda D: float(torch.trace(D.T @ C @ D))  # noqa: E731
    alt = W_ + torch.outer(k / (k @ k), t - k @ W_)
    assert cost(new - W_) < cost(alt - W_)
    with pytest.raises(ValueError, match="shapes"):
        ffn.rank_one_update(W_, k[:-1], t, C)


def test_apply_edit_and_undo(model):
    toks = model.to_tokens("The capital of France is")
    before = model(toks)
    old = ffn.apply_rank_one_edit(model, 1, model.W_out[1] + 0.01 * torch.randn_like(model.W_out[1]))
    assert not torch.allclose(model(toks), before)
    ffn.apply_rank_one_edit(model, 1, old)
    torch.testing.assert_close(model(toks), before)
    with pytest.raises(ValueError, match="shape"):
        ffn.apply_rank_one_edit(model, 1, old.T)


def test_optimised_shift_changes_the_answer(model):
    torch.set_grad_enabled(False)  # the helper must give back the caller's grad mode
    prompt = "The Eiffel Tower is located in"
    last = model.to_tokens(prompt).shape[1] - 1
    delta = ffn.optimise_value_shift(model, 0, [prompt], [last], "Rome", steps=40, lr=0.2)

    def add(act, hook=None):
        act[:, last] += delta
        return act
    logits = model.run_with_hooks(model.to_tokens(prompt), fwd_hooks=[("blocks.0.hook_mlp_out", add)])
    assert int(logits[0, -1].argmax()) == model.to_single_token(" Rome")
    assert not torch.is_grad_enabled()
    with pytest.raises(ValueError, match="single token"):
        ffn.optimise_value_shift(model, 0, [prompt], [last], "Eiffel Tower")


def test_subspaces():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 3, generator=g) @ torch.randn(3, 10, generator=g)   # variance lives in 3 dims
    cov = X.T @ X / 500
    B = ffn.principal_subspace(cov, 0.999)
    assert B.shape == (10, 3)
    torch.testing.assert_close(B.T @ B, torch.eye(3), atol=1e-5, rtol=1e-5)
    assert abs(ffn.subspace_overlap(B, B) - 1) < 1e-5
    Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert ffn.subspace_overlap(Q[:, :3], Q[:, 3:6]) < 1e-6
    with pytest.raises(ValueError):
        ffn.principal_subspace(cov, 1.5)


def test_neuron_browser(model, sample):
    s, st = sample
    data = ffn.neuron_browser_data(model, st, s["tokens"], {0: [1, 2], 3: [4]}, k_tokens=5)
    assert set(data) == {(0, 1), (0, 2), (3, 4)}
    assert len(data[(0, 1)]["promoted"]) == 5 and len(data[(0, 1)]["prefixes"]) == 4
    fig = ffn.neuron_browser_figure(data)
    assert {t.type for t in fig.data} == {"scatter", "bar"}        # both in the book's plotly bundle
    assert len(fig.layout.updatemenus) == 3                        # the layer menu + one neuron menu per layer
    assert [m.visible for m in fig.layout.updatemenus[1:]] == [True, False]
    with pytest.raises(ValueError):
        ffn.neuron_browser_figure({})


# ------------------------------------------------------------ exercise checkers
def test_check_mlp_out_from_memories():
    assert ffn.check_mlp_out_from_memories(lambda a, Wo, b: a @ Wo + b)
    with pytest.raises(CheckFailed):
        ffn.check_mlp_out_from_memories(lambda a, Wo, b: a @ Wo)            # forgot b_out
    assert ffn.check_mlp_out_from_memories(lambda a, Wo, b: (_ for _ in ()).throw(NotImplementedError())) is False


def test_check_value_top_tokens():
    assert ffn.check_value_top_tokens(lambda Wo, WU, n, k: (Wo[n] @ WU).topk(k).indices)
    with pytest.raises(CheckFailed):
        ffn.check_value_top_tokens(lambda Wo, WU, n, k: (Wo[:, n % Wo.shape[1]].sum() * WU[0]).topk(k).indices)
    with pytest.raises(CheckFailed):
        ffn.check_value_top_tokens(lambda Wo, WU, n, k: (-(Wo[n] @ WU)).topk(k).indices)   # smallest, not largest


def test_check_subspace_overlap():
    assert ffn.check_subspace_overlap(lambda A, B: float((A.T @ B).pow(2).sum() / min(A.shape[1], B.shape[1])))
    with pytest.raises(CheckFailed):
        ffn.check_subspace_overlap(lambda A, B: float((A.T @ B).pow(2).sum() / max(A.shape[1], B.shape[1])))


def test_check_multi_key_update():
    assert ffn.check_multi_key_update(ffn.solution_multi_key_update)
    g = torch.Generator().manual_seed(7)
    A = torch.randn(8, 8, generator=g, dtype=torch.float64)
    C = A @ A.T / 8 + 0.1 * torch.eye(8, dtype=torch.float64)
    W_, K, V = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((8, 3), (3, 8), (3, 3)))
    new = ffn.solution_multi_key_update(W_, K, V, C)
    torch.testing.assert_close(K @ new, V)                                  # every key hits its target
    # for one key it is the rank-one edit of section 5
    torch.testing.assert_close(ffn.solution_multi_key_update(W_, K[:1], V[:1], C), ffn.rank_one_update(W_, K[0], V[0], C))
    # it is the smallest change in the metric of C: the plain least-norm solution costs more
    cost = lambda D: float(torch.trace(D.T @ C @ D))  # noqa: E731
    plain = W_ + K.T @ torch.linalg.solve(K @ K.T, V - K @ W_)
    torch.testing.assert_close(K @ plain, V)
    assert cost(new - W_) < cost(plain - W_)
    with pytest.raises(CheckFailed, match="k_iᵀC⁻¹k_j"):
        ffn.check_multi_key_update(ffn._rank_one_sum)                           # n rank-one edits added up
    with pytest.raises(CheckFailed, match="not the smallest"):
        ffn.check_multi_key_update(lambda W_, K, V, C: W_ + K.T @ torch.linalg.solve(K @ K.T, V - K @ W_))


def test_classify_neurons_matches_the_single_rule_and_counts_sentences():
    g = torch.Generator().manual_seed(0)
    toks, labs = torch.randint(4, (200, 8), generator=g), torch.randint(3, (200, 8), generator=g)
    codes = ffn.classify_neurons(toks, labs)
    assert [ffn.NEURON_CLASSES[int(c)] for c in codes] == [ffn.classify_neuron(t.tolist(), l.tolist()) for t, l in zip(toks, labs)]
    # one label over 8 prefixes from only 2 sentences: semantic without the sentence rule, mixed with it
    t, lab = torch.arange(8)[None], torch.zeros(1, 8, dtype=torch.long)
    two = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    assert ffn.NEURON_CLASSES[int(ffn.classify_neurons(t, lab)[0])] == "semantic"
    assert ffn.NEURON_CLASSES[int(ffn.classify_neurons(t, lab, two, min_sentences=5)[0])] == "mixed"
    assert ffn.NEURON_CLASSES[int(ffn.classify_neurons(t, lab, torch.arange(8)[None], min_sentences=5)[0])] == "semantic"
    with pytest.raises(ValueError, match="one label per"):
        ffn.classify_neurons(t, lab[:, :4])
    with pytest.raises(ValueError, match="min_sentences"):
        ffn.classify_neurons(t, lab, two, min_sentences=9)


def test_shuffle_within_groups_keeps_each_groups_values():
    g = torch.Generator().manual_seed(0)
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 0])
    values = torch.arange(9)
    out = ffn.shuffle_within_groups(values, groups, g)
    for k in groups.unique():
        assert sorted(out[groups == k].tolist()) == sorted(values[groups == k].tolist())
    assert not torch.equal(out, values) or not torch.equal(ffn.shuffle_within_groups(values, groups, g), values)
    # a token that always carries one label keeps it; a label spread over a token's occurrences is mixed up
    labels = torch.tensor([5, 5, 5, 1, 2, 1, 2, 1, 2, 1, 2])
    toks = torch.tensor([9, 9, 9, 4, 4, 4, 4, 4, 4, 4, 4])
    assert ffn.shuffle_within_groups(labels, toks, g)[:3].tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="same length"):
        ffn.shuffle_within_groups(values, groups[:-1])


def test_random_keys_and_their_top_prefixes(model, sample):
    s, st = sample
    l = model.cfg.n_layers - 1
    keys = ffn.random_keys_like(model.W_in[l], torch.Generator().manual_seed(0))
    torch.testing.assert_close(keys.norm(dim=0), model.W_in[l].norm(dim=0).cpu())
    assert not torch.allclose(keys, model.W_in[l].cpu())
    # with the block's own keys the ranking is collect_ffn_stats'; two sets side by side give both rankings
    seq, pos = ffn.top_prefixes_of_keys(model, s["tokens"], s["lengths"], l, torch.cat([model.W_in[l].cpu(), keys], 1), k=4)
    assert torch.equal(seq[:model.cfg.d_mlp], st.top_seq[l]) and torch.equal(pos[:model.cfg.d_mlp], st.top_pos[l])
    assert not torch.equal(pos[model.cfg.d_mlp:], st.top_pos[l])
    with pytest.raises(ValueError, match="keys must be"):
        ffn.top_prefixes_of_keys(model, s["tokens"], s["lengths"], l, keys[:, :-1])


def test_write_covariance_of_groups(model):
    s = ffn.labelled_sample(model, n_sequences=8, sentences_per_sequence=2, seed=3)
    st = ffn.collect_ffn_stats(model, s["tokens"], s["lengths"], k=2, key_moment=False, n_groups=2)
    torch.testing.assert_close(st.write_cov_of("mlp", [0, 1]), st.write_cov["mlp"], atol=1e-5, rtol=1e-4)
    one = ffn.collect_ffn_stats(model, s["tokens"][0::2], s["lengths"][0::2], k=2, key_moment=False)   # group 0 alone
    torch.testing.assert_close(st.write_cov_of("attn", [0]), one.write_cov["attn"], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(st.write_cov_of("attn", [0]), st.write_cov_of("attn", [1]), atol=1e-3)
    assert (s["sentences"][:, 0] == -1).all() and int(s["sentences"].max()) == 8 * 2 - 1
    with pytest.raises(ValueError, match="groups"):
        st.write_cov_of("mlp", [2])
    with pytest.raises(ValueError, match="n_groups"):
        ffn.collect_ffn_stats(model, s["tokens"], s["lengths"], n_groups=0)


def test_specificity_prediction_and_counts(model):
    assert ffn.specificity_bucket(1.0, 0.2) == "much less" and ffn.specificity_bucket(1.0, 0.8) == "about as much"
    assert ffn.check_specificity_prediction("much less", 0.79, 0.17)
    with pytest.raises(CheckFailed, match="need not"):
        ffn.check_specificity_prediction("about as much", 0.79, 0.17)
    with pytest.raises(CheckFailed, match="choose one of"):
        ffn.check_specificity_prediction("less", 0.79, 0.17)
    with pytest.raises(ValueError, match="finite"):
        ffn.specificity_bucket(float("nan"), 0.1)
    l = model.cfg.n_layers - 1
    counts = ffn.top_k_counts(model, l, 10)
    assert int(counts.sum()) == model.cfg.d_mlp * 10
    full = ffn.value_logits(model, l).topk(10, -1).indices
    assert int(counts[int(full[0, 0])]) == int((full == full[0, 0]).any(-1).sum())
    assert ffn.random_overlap_mean(16, 64, 128) == 0.5
    with pytest.raises(ValueError, match="ranks"):
        ffn.random_overlap_mean(0, 64, 128)


# ------------------------------------------------- sites, necessity and GPT-2 paths
def test_subject_span_comes_from_the_tokenizer(model):
    assert ffn.subject_span(model, "{S} is located in", "the Eiffel Tower") == (1, 3)      # The, Eiffel, Tower
    first, last = ffn.subject_span(model, "The capital of {s} is", "France")
    toks = model.to_str_tokens("The capital of France is")
    assert "".join(toks[first:last + 1]).strip() == "France"
    pairs = ffn.fact_pairs(model, W.facts_by_relation("landmark_city"))
    for i in range(len(pairs)):                     # the template kept with each pair renders its prompt
        assert W.render(pairs.templates[i], pairs.facts[i].subject) == pairs.prompts[i]
        assert ffn.subject_span(model, pairs.templates[i], pairs.facts[i].subject)[1] == int(pairs.subject_last[i])
    with pytest.raises(ValueError, match="slot"):
        ffn.subject_span(model, "no slot", "France")


def test_rows_per_pass_shrinks_with_the_model(model):
    small = ffn.rows_per_pass(model, 8)
    assert ffn.rows_per_pass(model, 80) < small              # longer prompts, fewer rows
    big = type("M", (), {"cfg": type("C", (), {"n_layers": 12, "d_mlp": 3072, "d_model": 768, "d_vocab": 50257})()})()
    assert 1 <= ffn.rows_per_pass(big, 8) < small / 10       # a GPT-2-small-sized model gets far fewer
    with pytest.raises(ValueError, match="seq_len"):
        ffn.rows_per_pass(model, 0)


def _pair(model):
    pairs = ffn.fact_pairs(model, W.facts_by_relation("landmark_city"))
    i = pairs.prompts.index("The Eiffel Tower is located in")
    T = int(pairs.last[i]) + 1
    from helpers import patching
    metric = patching.logit_diff_metric(pairs.answer[i:i + 1], pairs.wrong[i:i + 1])
    return pairs.clean[i:i + 1, :T], pairs.corrupted[i:i + 1, :T], metric


def test_neuron_patch_and_ablation_effects_match_one_run_per_neuron(model):
    torch.set_grad_enabled(False)
    clean, corr, metric = _pair(model)
    patched = ffn.neuron_patch_effects(model, clean, corr, metric, 0, -1, batch_size=7)
    ablated = ffn.neuron_ablation_effects(model, clean, metric, 0, batch_size=5)
    assert patched.shape == ablated.shape == (model.cfg.d_mlp,)
    _, cache = model.run_with_cache(clean)
    for n in (0, int(patched.argmax()), model.cfg.d_mlp - 1):
        def put(act, hook=None, n=n):
            act[:, -1, n] = cache["blocks.0.mlp.hook_post"][0, -1, n]
            return act

        def zero(act, hook=None, n=n):
            act[:, :, n] = 0.0
            return act
        ref_p = float(metric(model.run_with_hooks(corr, fwd_hooks=[("blocks.0.mlp.hook_post", put)]))[0])
        ref_a = float(metric(model.run_with_hooks(clean, fwd_hooks=[("blocks.0.mlp.hook_post", zero)]))[0])
        assert abs(float(patched[n]) - ref_p) < 1e-3 and abs(float(ablated[n]) - ref_a) < 1e-3
    with pytest.raises(ValueError, match="same length"):
        ffn.neuron_patch_effects(model, clean, corr[:, :-1], metric, 0, -1)
    with pytest.raises(ValueError, match="one prompt"):
        ffn.neuron_ablation_effects(model, clean.repeat(2, 1), metric, 0)


def test_mean_ablation_sweep_matches_a_hand_hook(model):
    from helpers import patching
    torch.set_grad_enabled(False)
    pairs = ffn.fact_pairs(model, W.facts_by_relation("country_capital"))
    metric = patching.logit_diff_metric(pairs.answer, pairs.wrong, positions=pairs.last)
    pos = torch.stack([pairs.subject_last, pairs.last], 1)
    hooks = ["blocks.0.hook_mlp_out", "blocks.2.hook_attn_out"]
    got = patching.mean_ablation_sweep(model, pairs.clean, metric, hooks, pos, reduce="none", batch_size=3 * len(pairs))
    assert got.shape == (2, 2, len(pairs))
    _, cache = model.run_with_cache(pairs.clean)
    rows = torch.arange(len(pairs))
    for h_i, h in enumerate(hooks):
        for c in range(2):
            mean = cache[h][rows, pos[:, c]].mean(0)

            def hook(act, hook=None, c=c, mean=mean):
                act[rows, pos[:, c]] = mean
                return act
            want = metric(model.run_with_hooks(pairs.clean, fwd_hooks=[(h, hook)]))
            torch.testing.assert_close(got[h_i, c], want.cpu(), atol=1e-3, rtol=1e-4)
    # the ablation changes something, so the test could fail: the mean differs from the clean value
    assert (got[0, 1] - metric(model(pairs.clean)).cpu()).abs().max() > 1e-2
    with pytest.raises(ValueError, match="positions"):
        patching.mean_ablation_sweep(model, pairs.clean, metric, hooks, None)


def test_key_second_moment_matches_the_stats_pass(model, sample):
    s, st = sample
    C1 = ffn.key_second_moment(model, s["tokens"], s["lengths"], 1)
    torch.testing.assert_close(C1, st.key_moment[1], atol=1e-4, rtol=1e-4)
    assert ffn.collect_ffn_stats(model, s["tokens"], s["lengths"], k=2, key_moment=False).key_moment is None
    with pytest.raises(ValueError, match="lengths"):
        ffn.key_second_moment(model, s["tokens"], s["lengths"][:-1], 1)


def test_agreement_reports_the_spread_of_its_null(model, sample):
    s, st = sample
    agree = ffn.agreement_by_layer(model, st, s["tokens"], s["lengths"], n_shuffles=5)
    assert len(agree["chance_sd"]) == model.cfg.n_layers and all(x >= 0 for x in agree["chance_sd"])
    # the chunked top tokens equal the full projection's
    l = model.cfg.n_layers - 1
    full = ffn.value_logits(model, l).argmax(-1)
    assert ffn.values_promoting(model, l, int(full[0]), 1) == int((full == full[0]).sum())


def test_rank_and_promote_buckets():
    assert [ffn.rank_bucket(r) for r in (0, 5, 50, 500)] == list(ffn.RANK_BUCKETS)
    assert [ffn.promote_bucket(c) for c in (0, 3, 7, 40)] == list(ffn.PROMOTE_BUCKETS)
    with pytest.raises(ValueError):
        ffn.rank_bucket(-1)
    with pytest.raises(CheckFailed, match="choose one of"):
        ffn.check_subject_lens_prediction("somewhere")
    with pytest.raises(CheckFailed, match="choose one of"):
        ffn.check_paris_values_prediction(3)


def test_most_damaging_neuron_checker_takes_the_chapter_model(model):
    assert ffn.check_most_damaging_neuron(ffn.solution_most_damaging_neuron, model)
    with pytest.raises(CheckFailed, match="fires hardest"):
        ffn.check_most_damaging_neuron(ffn._most_activated, model)


def test_neuron_sweeps_can_keep_only_the_largest_writes(model):
    torch.set_grad_enabled(False)
    clean, corr, metric = _pair(model)
    dm, k = model.cfg.d_mlp, 64
    full_p = ffn.neuron_patch_effects(model, clean, corr, metric, 0, -1)
    full_a = ffn.neuron_ablation_effects(model, clean, metric, 0)
    # max_neurons >= d_mlp is the full sweep, value for value
    assert torch.equal(ffn.neuron_patch_effects(model, clean, corr, metric, 0, -1, max_neurons=dm), full_p)
    assert torch.equal(ffn.neuron_ablation_effects(model, clean, metric, 0, max_neurons=dm + 5), full_a)
    _, cc = model.run_with_cache(clean)
    _, cx = model.run_with_cache(corr)
    v = model.W_out[0].norm(dim=-1)
    a_c, a_x = cc["blocks.0.mlp.hook_post"][0], cx["blocks.0.mlp.hook_post"][0]
    for got, full, size, rest in (
            (ffn.neuron_patch_effects(model, clean, corr, metric, 0, -1, max_neurons=k), full_p,
             (a_c[-1] - a_x[-1]).abs() * v, float(metric(model(corr))[0])),
            (ffn.neuron_ablation_effects(model, clean, metric, 0, max_neurons=k), full_a,
             a_c.norm(dim=0) * v, float(metric(model(clean))[0]))):
        kept = size.topk(k).indices
        others = torch.ones(dm, dtype=torch.bool)
        others[kept] = False
        assert torch.allclose(got[kept], full[kept], atol=1e-4)          # the swept neurons: the same runs
        assert torch.allclose(got[others], torch.full((dm - k,), rest), atol=1e-5)   # the rest: the unpatched run
        assert int((got - rest).abs().argmax()) == int((full - rest).abs().argmax())  # the largest effect is kept
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_neurons"):
            ffn.neuron_ablation_effects(model, clean, metric, 0, max_neurons=bad)


def test_agreement_on_a_sample_of_neurons(model, sample):
    s, st = sample
    dm, k = model.cfg.d_mlp, 96
    full = ffn.agreement_by_layer(model, st, s["tokens"], s["lengths"], n_shuffles=3)
    assert full["n_neurons"] == dm
    assert ffn.agreement_by_layer(model, st, s["tokens"], s["lengths"], n_shuffles=3, n_neurons=dm + 1) == full
    part = ffn.agreement_by_layer(model, st, s["tokens"], s["lengths"], n_shuffles=3, n_neurons=k, seed=4)
    assert part["n_neurons"] == k
    # by hand: block 0's agreement over the same random k neurons (drawn with seed + 1)
    rows = torch.randperm(dm, generator=torch.Generator().manual_seed(5))[:k].sort().values
    top = ffn.value_logits(model, 0).argmax(-1)[rows]
    T = s["tokens"].shape[1]
    seq, pos = st.top_seq[0][rows], st.top_pos[0][rows] + 1
    nxt = s["tokens"][seq, pos.clamp(max=T - 1)]
    hit = ((nxt == top[:, None]) & (pos < s["lengths"][seq])).float().mean()
    assert part["agreement"][0] == pytest.approx(float(hit), abs=1e-6)
    assert part["agreement"][0] != pytest.approx(full["agreement"][0], abs=1e-9) or k == dm   # a sample, not the whole block
    for bad in (0, 1.5, False):
        with pytest.raises(ValueError, match="n_neurons"):
            ffn.agreement_by_layer(model, st, s["tokens"], s["lengths"], n_neurons=bad)
