"""The small world of real facts that the zoo models are trained on.

Everything a chapter needs to know about the training distribution lives here:
the entities (landmarks, cities, countries, rivers, people), the relations
between them (``RELATIONS``), the list of true facts (``FACTS``, each a
:class:`Fact`), and the sentence templates that express each relation
(``TEMPLATES``).  Some templates are held out entirely (``HELDOUT_TEMPLATES``)
and, for every fact, one of its ordinary templates is held out too
(``heldout_pairs``); training text never contains those (fact, template)
combinations, so ``heldout_fact_prompts()`` measures whether a model can
retrieve a fact it knows through a phrasing it never saw with that fact.
Every fact still appears in training under its other templates.  All
answers are single words that the bundled tokenizer encodes as ONE token
with a leading space (" Paris", " French", ...).
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Fact", "RELATIONS", "FACTS", "TEMPLATES", "HELDOUT_TEMPLATES", "TRAIN_TEMPLATES",
    "FIRST_NAMES", "LAST_NAMES", "render", "facts_by_relation", "heldout_pairs",
    "train_fact_prompts", "heldout_fact_prompts", "answer_words", "CANONICAL_PROMPTS",
]

HOLDOUT_SEED = 1234  # picks the held-out (fact, template) pairs; fixed forever


@dataclass(frozen=True)
class Fact:
    """One true statement: ``relation(subject) = answer``, e.g. capital(France) = Paris."""

    subject: str   # as it appears mid-sentence, e.g. "the Eiffel Tower", "France"
    relation: str  # a key of RELATIONS
    answer: str    # a single word, e.g. "Paris" (the token is " Paris")


# --- the world -------------------------------------------------------------
# The entities, relations and templates are data, in world.toml beside this file.
with (Path(__file__).with_name("world.toml")).open("rb") as _f:
    _DATA = tomllib.load(_f)

_ASPECTS = ("capital", "language", "continent", "currency")
#: country -> (capital, language, continent, currency); None = relation not used.
COUNTRIES: dict[str, tuple] = {c: tuple(v.get(a) for a in _ASPECTS) for c, v in _DATA["countries"].items()}
OTHER_CITIES: dict[str, str] = _DATA["other_cities"]   # non-capital city -> country
LANDMARKS: dict[str, str] = _DATA["landmarks"]         # landmark (as written mid-sentence) -> city
RIVERS: dict[str, str] = _DATA["rivers"]               # river -> a city it flows through
PEOPLE: dict[str, str] = _DATA["people"]               # famous person -> profession
RELATIONS: dict[str, str] = _DATA["relations"]         # relation -> what it maps
# {S} = subject with a capital first letter, {s} = subject as written; the last template of
# each relation is held out entirely (world.toml says why each was chosen).
TEMPLATES: dict[str, list[str]] = _DATA["templates"]
HELDOUT_TEMPLATES = {rel: temps[-1] for rel, temps in TEMPLATES.items()}
TRAIN_TEMPLATES = {rel: temps[:-1] for rel, temps in TEMPLATES.items()}


def _build_facts() -> list[Fact]:
    facts = [Fact(lm, "landmark_city", city) for lm, city in LANDMARKS.items()]
    cities = {cap: c for c, (cap, *_rest) in COUNTRIES.items()} | OTHER_CITIES
    facts += [Fact(city, "city_country", country) for city, country in cities.items()]
    for country, (capital, language, continent, currency) in COUNTRIES.items():
        for rel, ans in [("country_capital", capital), ("country_language", language),
                         ("country_continent", continent), ("country_currency", currency)]:
            if ans is not None:
                facts.append(Fact(country, rel, ans))
    facts += [Fact(r, "river_city", city) for r, city in RIVERS.items()]
    facts += [Fact(p, "person_profession", job) for p, job in PEOPLE.items()]
    return facts


FACTS: list[Fact] = _build_facts()

# Names for narratives and IOI sentences (every one is a single token).
FIRST_NAMES: list[str] = _DATA["names"]["first"]
LAST_NAMES: list[str] = _DATA["names"]["last"]

# Prompts the book uses verbatim (they read the same to real GPT-2).
CANONICAL_PROMPTS: list[tuple[str, str]] = [tuple(pa) for pa in _DATA["canonical"]["prompts"]]


def render(template: str, subject: str) -> str:
    """Fill a template's {S}/{s} slot: ``render("The capital of {s} is", "France")``."""
    if "{s}" not in template and "{S}" not in template:
        raise ValueError(f"template has no subject slot: {template!r}")
    cap = subject[0].upper() + subject[1:]
    return template.replace("{S}", cap).replace("{s}", subject)


def facts_by_relation(relation: str) -> list[Fact]:
    """All facts of one relation, e.g. ``facts_by_relation("country_capital")``."""
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; valid: {sorted(RELATIONS)}")
    return [f for f in FACTS if f.relation == relation]


def heldout_pairs() -> dict[Fact, str]:
    """For every fact, the one ordinary (train-set) template it never appears with."""
    rng = random.Random(HOLDOUT_SEED)
    canonical = {p for p, _ in CANONICAL_PROMPTS}
    out = {}
    for f in FACTS:  # never hold out a canonical book prompt
        choices = [t for t in TRAIN_TEMPLATES[f.relation] if render(t, f.subject) not in canonical]
        out[f] = rng.choice(choices)
    return out


def train_fact_prompts() -> list[tuple[str, str]]:
    """All (prompt, answer) pairs that training text contains; answer has no leading space."""
    held = heldout_pairs()
    return [(render(t, f.subject), f.answer) for f in FACTS
            for t in TRAIN_TEMPLATES[f.relation] if t != held[f]]


def heldout_fact_prompts(kind: str = "all") -> list[tuple[str, str]]:
    """(prompt, answer) pairs never seen in training.

    kind="pairs": each fact under its held-out ordinary template;
    kind="templates": each fact under its relation's fully held-out template;
    kind="all": both.  The answer is a bare word; the model should predict " " + answer.
    """
    if kind not in ("all", "pairs", "templates"):
        raise ValueError(f"kind must be 'all', 'pairs' or 'templates', got {kind!r}")
    out = []
    if kind in ("all", "pairs"):
        out += [(render(t, f.subject), f.answer) for f, t in heldout_pairs().items()]
    if kind in ("all", "templates"):
        out += [(render(HELDOUT_TEMPLATES[f.relation], f.subject), f.answer) for f in FACTS]
    return out


def answer_words() -> list[str]:
    """Every word that must be a single token (with a leading space) in the tokenizer."""
    words = {f.answer for f in FACTS} | set(COUNTRIES) | set(FIRST_NAMES) | set(LAST_NAMES)
    words |= {"Eiffel", "Tower"}
    return sorted(words)
