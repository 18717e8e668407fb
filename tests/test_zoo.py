"""Tests of the model zoo: the corpus, the tokenizer, and the quality bars of the shipped weights."""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers import zoo
from helpers.zoo import corpus, evals, world

BARS = {"heldout": 0.95, "ioi": 0.90, "induction_second_copy": 1.0, "prefix_matching": 0.5}


def _card(name: str) -> dict:
    return json.loads((zoo.model_dir(name) / "card.json").read_text())


@pytest.fixture(scope="module")
def full_corpus() -> list[str]:
    c = _card("rs-gpt2-4l")["corpus"]
    return corpus.generate_corpus(c["seed"], c["n_docs"])


@pytest.fixture(scope="module")
def gpt2():
    return zoo.load_bundled("rs-gpt2-4l")


@pytest.fixture(scope="module")
def attn2():
    return zoo.load_bundled("rs-attn-2l")


# --- corpus and world ---------------------------------------------------------

def test_corpus_is_deterministic_and_matches_cards(full_corpus):
    sha = corpus.corpus_sha256(full_corpus)
    for name in zoo.BUNDLED_MODELS:
        assert _card(name)["corpus"]["sha256"] == sha
    small = corpus.generate_corpus(7, 300)
    assert small == corpus.generate_corpus(7, 300)
    assert small != corpus.generate_corpus(8, 300)


def test_heldout_combinations_never_in_training_text(full_corpus):
    held = [f"{p} {a}." for p, a in world.heldout_fact_prompts()]
    sentences = set()
    for doc in full_corpus:
        sentences.update(re.split(r"(?<=[.!?]) ", doc))
    assert not [s for s in held if s in sentences]
    text = "\n".join(full_corpus[:20_000])  # substring check on a slice (the recipe checks all of it)
    assert not [s for s in held if s[:-1] in text]


def test_every_fact_is_trained_under_some_template():
    trained = {p: a for p, a in world.train_fact_prompts()}
    for f in world.FACTS:
        n = sum(world.render(t, f.subject) in trained for t in world.TRAIN_TEMPLATES[f.relation])
        assert n == len(world.TRAIN_TEMPLATES[f.relation]) - 1 >= 7


def test_world_counts():
    stats = corpus.corpus_stats()
    assert stats["relations"] >= 8 and stats["facts"] >= 200
    assert all(len(t) >= 9 for t in world.TEMPLATES.values())
    assert stats["heldout_prompts"] == 2 * len(world.FACTS)


def test_ioi_prompts_shape():
    items = corpus.ioi_prompts(20, seed=3)
    assert items == corpus.ioi_prompts(20, seed=3)
    for prompt, good, bad in items:
        assert good != bad and prompt.count(bad) == 2 and prompt.count(good) == 1


def test_entities_are_single_tokens():
    tok = zoo.load_tokenizer()
    from helpers.zoo.tokenizer import check_single_tokens

    check_single_tokens(tok)
    for word in ["Paris", "France", "Mary", "John", "Potter", "Harry"]:
        assert len(tok.encode(" " + word)) == 1, word
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"


# --- API ---------------------------------------------------------------------

def test_unknown_model_name():
    with pytest.raises(ValueError, match="rs-gpt2-4l"):
        zoo.load_bundled("gpt-5")


def test_load_time_and_size():
    import transformer_lens  # noqa: F401  (import time is not load time)

    total = 0
    for name in zoo.BUNDLED_MODELS:
        zoo.load_bundled(name)  # warm imports
        times = []
        for _ in range(2):  # best of two: the CPU is shared
            t = time.perf_counter()
            zoo.load_bundled(name)
            times.append(time.perf_counter() - t)
        assert min(times) < 2.0, (name, times)
        total += sum(f.stat().st_size for f in zoo.model_dir(name).glob("*.safetensors"))
    assert not list(zoo.model_dir("rs-gpt2-4l").parent.rglob("*.bin"))
    assert total < 25e6


# --- quality bars on the shipped weights ---------------------------------------

def test_canonical_prompts(gpt2):
    for prompt, answer in world.CANONICAL_PROMPTS:
        assert evals.fact_recall(gpt2, [(prompt, answer)])["accuracy"] == 1.0, prompt


def test_heldout_pair_recall(gpt2):  # held-out (fact, ordinary template) pairs alone
    assert evals.fact_recall(gpt2, world.heldout_fact_prompts("pairs"))["accuracy"] >= BARS["heldout"]


def test_heldout_fact_recall(gpt2):
    assert evals.fact_recall(gpt2, world.heldout_fact_prompts())["accuracy"] >= BARS["heldout"]


def test_ioi(gpt2):
    assert evals.ioi_accuracy(gpt2, corpus.ioi_prompts(200, seed=7))["accuracy"] >= BARS["ioi"]


@pytest.mark.parametrize("name", ["rs-gpt2-4l", "rs-attn-2l"])
def test_induction_on_random_tokens(name, gpt2, attn2):
    bridge = gpt2 if name == "rs-gpt2-4l" else attn2
    res = evals.induction_losses(bridge, seed=5)
    assert res["second_copy"] <= BARS["induction_second_copy"]
    assert res["first_copy"] > res["chance"] - 1.0  # first copy near chance


def test_prefix_matching_head_and_phase_change(attn2):
    assert float(evals.prefix_matching_by_head(attn2, seed=5).max()) >= BARS["prefix_matching"]
    log = json.loads((zoo.model_dir("rs-attn-2l") / "training_log.json").read_text())["log"]
    assert log[0]["best_prefix_matching"] < 0.2 and log[-1]["best_prefix_matching"] >= 0.5
    assert log[-1]["induction_second_copy"] < log[0]["induction_second_copy"] - 4
    assert log[-1]["icl_score"] < log[0]["icl_score"]
    assert len(log) >= 20


def test_logit_lens(gpt2):
    ranks = evals.logit_lens_ranks(gpt2, "The Eiffel Tower is located in", "Paris")
    assert ranks[-1] == 0 and ranks[0] > 0


def test_cards_record_passing_metrics():
    for name in zoo.BUNDLED_MODELS:
        card = _card(name)
        assert (zoo.model_dir(name) / "MODEL_CARD.md").exists()
        m = card["metrics"]
        assert m["induction"]["second_copy"] <= BARS["induction_second_copy"]
        assert card["tokens_seen"] > 0 and card["training_seconds"] > 0
    assert _card("rs-attn-2l")["metrics"]["best_prefix_matching"]["score"] >= BARS["prefix_matching"]
    assert _card("rs-gpt2-4l")["metrics"]["logit_lens_eiffel_ranks"][-1] == 0


def test_card_records_gpt2_fact_and_ioi_bars():
    m = _card("rs-gpt2-4l")["metrics"]
    assert m["heldout_fact_recall"] >= BARS["heldout"] and m["ioi"]["accuracy"] >= BARS["ioi"]


def test_heldout_templates_use_only_trained_words(full_corpus):
    seen = set(re.findall(r"'s|[A-Za-z]+", " ".join(full_corpus[:20_000])))
    for rel, t in world.HELDOUT_TEMPLATES.items():
        words = re.findall(r"'s|[A-Za-z]+", t.replace("{S}", "").replace("{s}", ""))
        assert not [w for w in words if w not in seen], (rel, t)


def _continuation_conflicts(template: str, relation: str, text: str) -> list:
    """(tail, words) for facts whose prompt, from the subject on, continues in ``text``
    with a word other than the fact's answer."""
    out = []
    for f in world.facts_by_relation(relation):
        prompt = world.render(template, f.subject)
        tail = prompt[prompt.lower().index(f.subject.lower()):]
        following = set(re.findall(re.escape(tail) + r" (\w+)", text))
        if following - {f.answer}:
            out.append((tail, sorted(following)[:3]))
    return out


def test_heldout_templates_are_answerable_from_training(full_corpus):
    """From its subject on, a held-out template's words never continue differently in
    training: otherwise the training distribution itself argues for another answer
    (e.g. every "<city> is located in" continues with "the country of")."""
    text = "\n".join(full_corpus[:20_000])
    conflicts = [c for rel, t in world.HELDOUT_TEMPLATES.items() for c in _continuation_conflicts(t, rel, text)]
    assert not conflicts, conflicts[:5]
    # the rule has teeth: the template it replaced fails it for most cities
    old = _continuation_conflicts("The city of {s} is located in", "city_country", text)
    assert len(old) > len(world.facts_by_relation("city_country")) / 2
