import re

import pytest

import helpers
from helpers import organisms
from helpers.exercises import CheckFailed


@pytest.fixture(scope="module")
def gpt():
    return helpers.load_model("rs-gpt2-4l", device="cpu")


@pytest.fixture(scope="module")
def attn():
    return helpers.load_model("rs-attn-2l", device="cpu")


def test_cards_and_logs_are_readable():
    for name in ("rs-gpt2-4l", "rs-attn-2l"):
        card = organisms.card(name)
        assert card["name"] == name and card["metrics"] is not None
        log = organisms.training_log(name)
        assert len(log) > 5 and log[-1]["step"] > log[0]["step"]


def test_phase_change_step_definition():
    log = [{"step": s, "best_prefix_matching": v} for s, v in [(0, 0.0), (10, 0.05), (20, 0.4), (30, 0.8)]]
    assert organisms.phase_change_step(log) == 20
    with pytest.raises(ValueError, match="no 'icl'"):
        organisms.phase_change_step(log, key="icl")


def test_skill_onsets_and_figure():
    rows = [(0, 0.0, 0.1, 0.0), (10, 0.2, 0.6, 0.0), (20, 0.7, 0.9, 0.3), (30, 0.9, 0.95, 0.8)]
    log = [{"step": s, "best_prefix_matching": pm, "heldout_fact_recall": f, "ioi_top1": i}
           for s, pm, f, i in rows]
    assert organisms.skill_onsets(log) == {"best_prefix_matching": 20, "heldout_fact_recall": 10, "ioi_top1": 30}
    assert organisms.skill_onsets(log, level=0.95)["ioi_top1"] == -1  # never reached
    fig = organisms.skills_figure(log, switch_step=20)
    assert len(fig.data) == 3 and list(fig.data[2].y) == [0.0, 0.0, 0.3, 0.8]
    assert "facts 10, induction 20, IOI 30" in fig.layout.title.text
    assert "IOI never" in organisms.skills_figure([dict(e, ioi_top1=0.0) for e in log]).layout.title.text
    with pytest.raises(ValueError, match="language model's log"):
        organisms.skill_onsets(organisms.training_log("rs-attn-2l"))
    with pytest.raises(ValueError, match="level"):
        organisms.skill_onsets(log, level=2)


def test_shipped_language_model_log_has_skills():
    card = organisms.card("rs-gpt2-4l")
    onsets = organisms.skill_onsets(organisms.training_log("rs-gpt2-4l"))
    assert all(v >= 0 for v in onsets.values()), onsets
    assert card["random_switch_step"] is not None and card["random_switch_step"] <= onsets["ioi_top1"]


def test_top_predictions_validates(gpt):
    top = organisms.top_predictions(gpt, "The capital of France is", k=3)
    assert top[0][0] == " Paris" and len(top) == 3 and top[0][1] >= top[1][1]
    with pytest.raises(ValueError, match="non-empty"):
        organisms.top_predictions(gpt, "")


def test_checker_single_token(gpt):
    good = lambda m, w: len(m.tokenizer.encode(" " + w, add_special_tokens=False)) == 1
    assert organisms.check_is_single_token(good, gpt)
    with pytest.raises(CheckFailed, match="BOS token"):
        organisms.check_is_single_token(lambda m, w: len(m.to_tokens(" " + w)[0]) == 1, gpt)


def test_checker_relation_recall(gpt):
    assert organisms.check_relation_recall(organisms.solution_relation_recall, gpt)
    with pytest.raises(CheckFailed):
        organisms.check_relation_recall(lambda m, r: 1.0 - organisms.solution_relation_recall(m, r) + 0.5, gpt)


def test_checker_second_copy_loss(attn):
    assert organisms.check_second_copy_loss(organisms.solution_second_copy_loss, attn)

    def first_copy(model, tokens):
        n = (tokens.shape[1] - 1) // 2
        logp = model(tokens).log_softmax(-1)[:, :-1]
        return (-logp.gather(-1, tokens[:, 1:, None])[..., 0])[:, 1:n].mean().item()

    with pytest.raises(CheckFailed, match="FIRST copy"):
        organisms.check_second_copy_loss(first_copy, attn)


def test_relation_recall_rejects_constants(gpt):
    answers = {organisms.solution_relation_recall(*args) for args, _ in organisms._relation_cases(gpt)}
    assert len(answers) >= 2, f"the checker's cases must have different true answers, got {answers}"
    for constant in (1.0, 0.0, 0.95):
        with pytest.raises(CheckFailed):
            organisms.check_relation_recall(lambda m, r, c=constant: c, gpt)
    with pytest.raises(CheckFailed, match="constant"):
        organisms.check_relation_recall(lambda m, r: 1.0, gpt)


def _log(values, every=10):
    return [{"step": i * every, "v": v} for i, v in enumerate(values)]


def test_steepest_rise_finds_the_jump_and_its_null():
    jump = _log([0.0, 0.01, 0.02, 0.02, 0.5, 0.9, 0.91, 0.92, 0.93, 0.93, 0.94])
    r = organisms.steepest_rise(jump, "v", window=20)
    assert (r["start"], r["end"]) == (30, 50) and r["rise"] == pytest.approx(0.88)
    assert r["largest_other"] == pytest.approx(0.02)      # 0.91 -> 0.93 and 0.92 -> 0.94 after, 0.0 -> 0.02 before
    assert r["share"] == pytest.approx(0.88 / 0.94) and r["steady_share"] == pytest.approx(0.2)
    steady = organisms.steepest_rise(_log([0.1 * i for i in range(11)]), "v", window=20)
    assert steady["rise"] / steady["largest_other"] == pytest.approx(1.0)   # a steady rise is not sudden
    with pytest.raises(ValueError, match="multiple"):
        organisms.steepest_rise(jump, "v", window=15)
    with pytest.raises(ValueError, match="too long"):
        organisms.steepest_rise(jump, "v", window=50)
    with pytest.raises(ValueError, match="evenly"):
        organisms.steepest_rise(jump[:3] + jump[4:], "v", window=20)
    with pytest.raises(ValueError, match="no 'w'"):
        organisms.steepest_rise(jump, "w")


def test_icl_score_on_repeats_and_text(attn):
    from helpers.core import repeated_random_tokens

    reps = repeated_random_tokens(attn, n_seqs=4, length=63, seed=1)
    assert organisms.icl_score(attn, reps)["score"] < -6          # late positions are in the copied half
    text = organisms.icl_score_on_text(attn, n_seqs=8)
    assert -3 < text["score"] < 0.5 and text["se"] > 0 and text["per_window"].shape == (8,)
    with pytest.raises(ValueError, match="positions"):
        organisms.icl_score(attn, reps[:, :50])


def test_predictions_reject_typical_wrong_values():
    with pytest.raises(CheckFailed, match="induction head"):
        organisms.check_no_induction_prediction(0.0)
    assert organisms.check_no_induction_prediction(7.7)
    with pytest.raises(CheckFailed, match="one long repeat"):
        organisms.check_icl_on_spans_prediction(-7.6, -0.1)
    assert organisms.check_icl_on_spans_prediction(0.0, -0.1)
    with pytest.raises(CheckFailed, match="memory"):
        organisms.check_attn_recall_prediction("almost none", 0.91)
    with pytest.raises(CheckFailed, match="compare with the measurement"):
        organisms.check_attn_recall_prediction("all", 0.91)  # the misconception: a perfect lookup
    with pytest.raises(CheckFailed, match="choose one of"):
        organisms.check_attn_recall_prediction(0.9, 0.91)
    assert organisms.check_attn_recall_prediction("most but not all", 0.91)
    assert organisms.solution_attn_recall_band(1.0) == "all" and organisms.solution_attn_recall_band(0.5) == "about half"


def test_rise_time_is_window_free_and_fails_on_a_steady_rise():
    jump = _log([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    r = organisms.rise_time(jump, "v")
    assert r["t_lo"] == pytest.approx(42.0) and r["t_hi"] == pytest.approx(58.0)    # interpolated between entries
    assert r["rise_time"] == pytest.approx(16.0) and r["plateau"] == pytest.approx(42.0) and r["steady"] == pytest.approx(80.0)
    steady = organisms.rise_time(_log([0.1 * i for i in range(11)]), "v")
    assert steady["rise_time"] == pytest.approx(steady["steady"])      # the null: a steady rise is not sudden
    with pytest.raises(ValueError, match="does not rise"):
        organisms.rise_time(_log([1.0, 0.5, 0.0]), "v")
    with pytest.raises(ValueError, match="lo < hi"):
        organisms.rise_time(jump, "v", lo=0.9, hi=0.1)


def test_suddenness_by_window_reports_every_window():
    jump = _log([0.0, 0.01, 0.02, 0.02, 0.5, 0.9, 0.91, 0.92, 0.93, 0.93, 0.94, 0.95, 0.95])
    rows = organisms.suddenness_by_window(jump, "v")
    assert [r["window"] for r in rows] == [10, 20, 30, 40]
    assert rows[1]["ratio"] == pytest.approx(0.88 / 0.02)
    fig = organisms.suddenness_figure(rows, title="t")
    assert len(fig.data) == 2 and fig.layout.title.text == "t"
    with pytest.raises(ValueError, match="no rows"):
        organisms.suddenness_figure([])


def test_doc_start_windows_start_at_documents(attn):
    w = organisms.doc_start_windows(attn, n_seqs=4, seed=11)
    bos = attn.tokenizer.bos_token_id
    assert w.shape == (4, attn.cfg.n_ctx) and (w[:, 0] == bos).all() and (w[:, 1] != bos).all()
    with pytest.raises(ValueError, match="seed 0"):
        organisms.doc_start_windows(attn, n_seqs=4, seed=0)
    with pytest.raises(ValueError, match="cut must be"):
        organisms.icl_score_on_text(attn, n_seqs=4, cut="middle")


def test_unigram_losses(attn):
    u = organisms.unigram_losses(attn, 0.5, n_docs=200)
    assert 0 < u["text"] < u["chance"] and u["text"] < u["mixture"] < u["chance"] + 1e-9
    assert organisms.unigram_losses(attn, 1.0, n_docs=50)["mixture"] == pytest.approx(u["chance"])
    with pytest.raises(ValueError, match="fraction"):
        organisms.unigram_losses(attn, 1.5)


def test_span_repeat_tokens(attn):
    t = organisms.span_repeat_tokens(attn, n_seqs=3, span=8, seed=1)
    assert t.shape == (3, attn.cfg.n_ctx)
    assert (t[:, 1:9] == t[:, 9:17]).all() and not (t[:, 1:9] == t[:, 17:25]).all()


def test_is_recalled_checker_names_each_mistake():
    assert organisms.check_is_recalled(organisms.solution_is_recalled)
    for constant in (True, False):
        with pytest.raises(CheckFailed):
            organisms.check_is_recalled(lambda m, p, f, c=constant: c)
    for m in organisms.IS_RECALLED.mistakes:
        with pytest.raises(CheckFailed, match=re.escape(m.why[:40])):
            organisms.check_is_recalled(m.fn)
