"""Deterministic generator of the synthetic training corpus for the zoo models.

``generate_corpus(seed, n_docs)`` returns a list of short English documents
built only from ``random.Random(seed)``, so the same seed always gives the same
bytes (``corpus_sha256`` fingerprints it).  There are five kinds of document,
mixed in the proportions of ``DOC_MIX``: fact paragraphs (true facts from
:mod:`helpers.zoo.world`, each through one of its training templates, never a
held-out combination), narratives in which full names recur (so copying the
last name after a repeated first name pays), indirect-object (IOI) sentences,
lists and codes that are said twice, and quoted or bracketed spans that must
be closed.  ``ioi_prompts`` and ``copy_prompts`` produce matching evaluation
prompts, and ``random_repeat_tokens`` produces the repeated random-token
sequences that are mixed into training to teach induction on arbitrary tokens.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter

from . import world as W

__all__ = [
    "DOC_MIX", "EOT", "generate_corpus", "corpus_sha256", "corpus_stats",
    "ioi_prompts", "copy_prompts", "random_repeat_tokens",
]

EOT = "<|endoftext|>"
DOC_MIX = {"facts": 0.45, "narrative": 0.15, "ioi": 0.20, "lists": 0.10, "quotes": 0.10}

CAPITALS = [v[0] for v in W.COUNTRIES.values()]
PLACES = ["store", "park", "station", "library", "market", "beach", "museum", "cafe",
          "garden", "school", "office", "hospital", "bakery", "cinema", "restaurant"]
OBJECTS = ["a drink", "a book", "a letter", "an apple", "a ticket", "a pen", "a map",
           "a ring", "a cake", "a key", "a gift", "a bag", "a flower", "a coin", "a hat"]
ITEMS = ["apples", "bread", "milk", "eggs", "cheese", "rice", "butter", "tea", "coffee",
         "sugar", "onions", "carrots", "salt", "honey", "lemons", "beans", "soap", "flour",
         "pears", "grapes", "fish", "pasta", "jam", "yogurt"]
ADJ = ["old", "quiet", "bright", "small", "busy", "cold", "warm", "strange", "happy", "long"]

IOI_TEMPLATES = [  # {A} is the answer (indirect object), {B} the repeated subject
    "When {A} and {B} went to the {place}, {B} gave {obj} to",
    "After {A} and {B} arrived at the {place}, {B} handed {obj} to",
    "While {A} and {B} were at the {place}, {B} passed {obj} to",
    "Then, {A} and {B} had a long talk at the {place}. Afterwards {B} gave {obj} to",
    "{A} and {B} walked to the {place}. There, {B} showed {obj} to",
    "At the {place}, {A} and {B} met a friend. Later {B} sent {obj} to",
    "When {A} and {B} got home from the {place}, {B} brought {obj} to",
    "Yesterday {A} and {B} visited the {place}, and {B} offered {obj} to",
]

NARRATIVE_LINES = [
    "{X} opened the door.", "Everyone looked up at {X}.", "{X} walked into the garden.",
    "{X} smiled at {Y}.", "{X} and {Y} talked for an hour.", "Later that day, {X} wrote a letter to {Y}.",
    "{X} was very tired.", "The next morning, {X} left for {city}.", "{X} laughed at the joke.",
    "Nobody had seen {X} for weeks.", "{X} sat down next to {Y}.", "{Y} waved to {X}.",
    "It was {X} who found the key.", "{X} asked {Y} a question.", "{X} had lived in {city} for years.",
    "The {adj} house belonged to {X}.", "{X} thanked {Y} for the help.", "Then {X} went to sleep.",
]


def _full_names(rng: random.Random, k: int) -> list[str]:
    firsts = rng.sample(W.FIRST_NAMES, k)
    lasts = rng.sample(W.LAST_NAMES, k)
    return [f"{a} {b}" for a, b in zip(firsts, lasts)]


def _fact_doc(rng: random.Random, train: dict[W.Fact, list[str]]) -> str:
    facts = rng.sample(W.FACTS, rng.randint(2, 6))
    sents = []
    for f in facts:
        t = rng.choice(train[f])
        sents.append(f"{W.render(t, f.subject)} {f.answer}.")
    return " ".join(sents)


def _narrative_doc(rng: random.Random) -> str:
    cast = _full_names(rng, rng.randint(2, 3))
    city = rng.choice(CAPITALS)
    lines = [f"This is a story about {' and '.join(cast)}." if rng.random() < 0.5 else
             f"{cast[0]} lived in {city} with {cast[1]}."]
    for _ in range(rng.randint(3, 7)):
        x, y = rng.sample(cast, 2)
        lines.append(rng.choice(NARRATIVE_LINES).format(
            X=x, Y=y, city=rng.choice(CAPITALS), adj=rng.choice(ADJ)))
    return " ".join(lines)


def _ioi_sentence(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(W.FIRST_NAMES, 2)
    t = rng.choice(IOI_TEMPLATES)
    prompt = t.format(A=a, B=b, place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
    if rng.random() < 0.5:  # BABA order: swap who is mentioned first, answer unchanged
        prompt = prompt.replace(f"{a} and {b}", f"{b} and {a}", 1)
    return prompt, a, b


def _ioi_doc(rng: random.Random) -> str:
    return " ".join(f"{p} {a}." for p, a, _ in (_ioi_sentence(rng) for _ in range(rng.randint(1, 3))))


def _code(rng: random.Random) -> str:
    chars = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "-".join("".join(rng.choice(chars) for _ in range(rng.randint(2, 4)))
                    for _ in range(rng.randint(2, 4)))


def _lists_doc(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        items = ", ".join(rng.sample(ITEMS, rng.randint(3, 8)))
        return f"Shopping list: {items}. I read the list again: {items}."
    if kind == 1:
        code = _code(rng)
        name = rng.choice(W.FIRST_NAMES)
        return f"{name} wrote down the code {code}. Please repeat the code: {code}. Thank you, the code {code} is correct."
    seq = " ".join(str(rng.randint(0, 99)) for _ in range(rng.randint(4, 12)))
    return f"The numbers were {seq}. Again, the numbers were {seq}."


def _quotes_doc(rng: random.Random) -> str:
    x, y = rng.sample(W.FIRST_NAMES, 2)
    inner = rng.choice(["I will be there soon", "the train is late", "we should go home",
                        f"meet me in {rng.choice(CAPITALS)}",
                        "this is the best day", f"bring {rng.choice(OBJECTS)}"])
    kind = rng.randrange(4)
    if kind == 0:
        return f'{x} said, "{inner}." Then {y} answered, "{rng.choice(["yes", "no", "maybe", "of course"])}."'
    if kind == 1:
        items = ", ".join(rng.sample(ITEMS, 3))
        return f"The {rng.choice(ADJ)} shop (which sold {items}) was closed. {x} went home (sadly)."
    if kind == 2:
        return f"The note [written by {x} ({rng.choice(ADJ)} and {rng.choice(ADJ)})] said: {inner}."
    return f'{x} read the sign: "{inner}" and told {y} about it (twice).'


def generate_corpus(seed: int = 0, n_docs: int = 10_000) -> list[str]:
    """Return ``n_docs`` documents; identical for identical (seed, n_docs)."""
    if not isinstance(seed, int) or not isinstance(n_docs, int) or n_docs < 1:
        raise ValueError(f"need an int seed and a positive int n_docs, got {seed!r}, {n_docs!r}")
    rng = random.Random(seed)
    held = W.heldout_pairs()
    train = {f: [t for t in W.TRAIN_TEMPLATES[f.relation] if t != held[f]] for f in W.FACTS}
    kinds, weights = list(DOC_MIX), list(DOC_MIX.values())
    make = {"facts": lambda: _fact_doc(rng, train), "narrative": lambda: _narrative_doc(rng),
            "ioi": lambda: _ioi_doc(rng), "lists": lambda: _lists_doc(rng),
            "quotes": lambda: _quotes_doc(rng)}
    return [make[rng.choices(kinds, weights)[0]]() for _ in range(n_docs)]


def corpus_sha256(docs: list[str]) -> str:
    """sha256 of the corpus as one UTF-8 text, documents joined by the EOT token."""
    return hashlib.sha256(EOT.join(docs).encode("utf-8")).hexdigest()


def corpus_stats(docs: list[str] | None = None) -> dict:
    """Counts that describe the world and (optionally) a generated corpus."""
    stats = {
        "relations": len(W.RELATIONS), "facts": len(W.FACTS),
        "facts_per_relation": dict(Counter(f.relation for f in W.FACTS)),
        "templates": sum(len(t) for t in W.TEMPLATES.values()),
        "heldout_templates": len(W.HELDOUT_TEMPLATES),
        "heldout_prompts": len(W.heldout_fact_prompts()),
        "train_fact_prompts": len(W.train_fact_prompts()),
        "doc_mix": DOC_MIX,
    }
    if docs is not None:
        stats.update(n_docs=len(docs), n_chars=sum(map(len, docs)), sha256=corpus_sha256(docs))
    return stats


def ioi_prompts(n: int = 100, seed: int = 1) -> list[tuple[str, str, str]]:
    """``n`` IOI prompts as (prompt, correct name, incorrect name); names are bare words."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    return [_ioi_sentence(rng) for _ in range(n)]


def copy_prompts(n: int = 100, seed: int = 2) -> list[tuple[str, str]]:
    """``n`` narrative prompts ending in a repeated first name; the answer is its last name."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x, y = _full_names(rng, 2)
        line = rng.choice([l for l in NARRATIVE_LINES if l.startswith("{X}")])
        first = line.format(X=x, Y=y, city="Rome", adj="old")
        out.append((f"{first} Everyone looked up at {x.split()[0]}", x.split()[1]))
    return out


def random_repeat_tokens(rng: random.Random, seq_len: int, low: int, high: int,
                         min_span: int = 8, max_span: int = 100) -> list[int]:
    """One training sequence of uniformly random token ids in [low, high), made of
    spans of random length L in [min_span, max_span], each immediately repeated."""
    out: list[int] = []
    while len(out) < seq_len:
        span = [rng.randrange(low, high) for _ in range(rng.randint(min_span, max_span))]
        out += span + span
    return out[:seq_len]
