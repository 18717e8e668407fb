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
from dataclasses import dataclass

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
# country: (capital, language, continent, currency); None = relation not used
# (ambiguous or not a single word).
COUNTRIES = {
    "France": ("Paris", "French", "Europe", "euro"),
    "Italy": ("Rome", "Italian", "Europe", "euro"),
    "Germany": ("Berlin", "German", "Europe", "euro"),
    "Spain": ("Madrid", "Spanish", "Europe", "euro"),
    "Portugal": ("Lisbon", "Portuguese", "Europe", "euro"),
    "Greece": ("Athens", "Greek", "Europe", "euro"),
    "England": ("London", "English", "Europe", "pound"),
    "Austria": ("Vienna", "German", "Europe", "euro"),
    "Belgium": ("Brussels", None, "Europe", "euro"),
    "Switzerland": ("Bern", None, "Europe", "franc"),
    "Sweden": ("Stockholm", "Swedish", "Europe", "krona"),
    "Norway": ("Oslo", "Norwegian", "Europe", "krone"),
    "Denmark": ("Copenhagen", "Danish", "Europe", "krone"),
    "Finland": ("Helsinki", "Finnish", "Europe", "euro"),
    "Poland": ("Warsaw", "Polish", "Europe", "zloty"),
    "Hungary": ("Budapest", "Hungarian", "Europe", "forint"),
    "Czechia": ("Prague", "Czech", "Europe", "koruna"),
    "Ireland": ("Dublin", None, "Europe", "euro"),
    "Russia": ("Moscow", "Russian", None, "ruble"),
    "Turkey": ("Ankara", "Turkish", None, "lira"),
    "Egypt": ("Cairo", "Arabic", "Africa", "pound"),
    "Morocco": ("Rabat", "Arabic", "Africa", "dirham"),
    "Kenya": ("Nairobi", "Swahili", "Africa", None),
    "Nigeria": ("Abuja", "English", "Africa", "naira"),
    "Japan": ("Tokyo", "Japanese", "Asia", "yen"),
    "China": ("Beijing", "Chinese", "Asia", "yuan"),
    "Thailand": ("Bangkok", "Thai", "Asia", "baht"),
    "Vietnam": ("Hanoi", "Vietnamese", "Asia", "dong"),
    "Indonesia": ("Jakarta", "Indonesian", "Asia", "rupiah"),
    "Iran": ("Tehran", "Persian", "Asia", "rial"),
    "Australia": ("Canberra", "English", None, "dollar"),
    "Canada": ("Ottawa", None, None, "dollar"),
    "Brazil": ("Brasilia", "Portuguese", None, None),
    "Peru": ("Lima", "Spanish", None, "sol"),
    "Cuba": ("Havana", "Spanish", None, "peso"),
}

# non-capital city -> country
OTHER_CITIES = {
    "Barcelona": "Spain", "Seville": "Spain", "Granada": "Spain", "Milan": "Italy",
    "Venice": "Italy", "Florence": "Italy", "Pisa": "Italy", "Naples": "Italy",
    "Munich": "Germany", "Hamburg": "Germany", "Lyon": "France", "Marseille": "France",
    "Porto": "Portugal", "Manchester": "England", "Liverpool": "England",
    "Geneva": "Switzerland", "Salzburg": "Austria", "Krakow": "Poland",
    "Istanbul": "Turkey", "Kyoto": "Japan", "Osaka": "Japan", "Shanghai": "China",
    "Sydney": "Australia", "Melbourne": "Australia", "Toronto": "Canada",
    "Marrakesh": "Morocco",
}

# landmark (as written mid-sentence) -> city
LANDMARKS = {
    "the Eiffel Tower": "Paris", "the Louvre": "Paris", "the Arc de Triomphe": "Paris",
    "Notre Dame": "Paris", "the Colosseum": "Rome", "the Trevi Fountain": "Rome",
    "Big Ben": "London", "Tower Bridge": "London", "Buckingham Palace": "London",
    "Westminster Abbey": "London", "the Brandenburg Gate": "Berlin",
    "the Reichstag": "Berlin", "the Sagrada Familia": "Barcelona",
    "the Acropolis": "Athens", "the Parthenon": "Athens", "the Kremlin": "Moscow",
    "Red Square": "Moscow", "the Forbidden City": "Beijing",
    "the Leaning Tower": "Pisa", "the Rialto Bridge": "Venice",
    "the Uffizi Gallery": "Florence", "the Prado Museum": "Madrid",
    "the Alhambra": "Granada", "the Hagia Sophia": "Istanbul",
    "the Blue Mosque": "Istanbul", "the Meiji Shrine": "Tokyo",
    "the Golden Pavilion": "Kyoto", "the Belem Tower": "Lisbon",
    "the Atomium": "Brussels", "the Little Mermaid": "Copenhagen",
    "the Charles Bridge": "Prague", "the Schonbrunn Palace": "Vienna",
    "the CN Tower": "Toronto", "the Opera House": "Sydney",
    "the Grand Palace": "Bangkok", "the Vasa Museum": "Stockholm",
    "Wawel Castle": "Krakow", "the Egyptian Museum": "Cairo",
}

# river -> a city it flows through
RIVERS = {
    "the Seine": "Paris", "the Thames": "London", "the Tiber": "Rome",
    "the Spree": "Berlin", "the Vltava": "Prague", "the Tagus": "Lisbon",
    "the Arno": "Florence", "the Moskva": "Moscow", "the Liffey": "Dublin",
    "the Nile": "Cairo", "the Danube": "Budapest", "the Bosphorus": "Istanbul",
}

# famous person -> profession
PEOPLE = {
    "Picasso": "painter", "Rembrandt": "painter", "Monet": "painter",
    "Vermeer": "painter", "Cezanne": "painter", "Mozart": "composer",
    "Beethoven": "composer", "Bach": "composer", "Chopin": "composer",
    "Vivaldi": "composer", "Shakespeare": "writer", "Tolstoy": "writer",
    "Dickens": "writer", "Cervantes": "writer", "Goethe": "writer",
    "Einstein": "physicist", "Newton": "physicist", "Curie": "physicist",
    "Galileo": "astronomer", "Copernicus": "astronomer", "Kepler": "astronomer",
    "Darwin": "naturalist", "Plato": "philosopher", "Aristotle": "philosopher",
    "Kant": "philosopher", "Socrates": "philosopher",
}

# --- relations and templates ------------------------------------------------
RELATIONS = {
    "landmark_city": "landmark -> the city it stands in",
    "city_country": "city -> the country it is in",
    "country_capital": "country -> its capital city",
    "country_language": "country -> its main language",
    "country_continent": "country -> its continent",
    "country_currency": "country -> its currency",
    "river_city": "river -> a city it flows through",
    "person_profession": "famous person -> profession",
}

# {S} = subject with a capital first letter, {s} = subject as written.
# Each template is a PROMPT: the answer follows it after one space.
# The last template of each relation is held out entirely (HELDOUT_TEMPLATES);
# it only uses words and constructions (such as "'s") that training text
# contains elsewhere, so it tests generalisation across phrasing, not new words,
# and the words from its subject on never continue differently in training (a
# first choice for cities, "The city of {s} is located in", broke that rule:
# training always continues "<city> is located in" with "the country of", so
# " the" was the right prediction and the template was replaced).
TEMPLATES = {
    "landmark_city": [
        "{S} is located in", "{S} stands in the city of", "Tourists visit {s} in",
        "{S} is a famous landmark in", "You can see {s} when you visit",
        "{S} is one of the sights of", "{S} can be found in", "We took a photo of {s} in",
        "{S} is in the city of",
    ],
    "city_country": [
        "{S} is a city in", "{S} is located in the country of", "The city of {s} is in",
        "{S} lies in", "Many people live in {s}, a city in", "{S} is one of the big cities of",
        "She flew to {s}, which is in", "{S} belongs to the country of",
        "{S} is a big city in",
    ],
    "country_capital": [
        "The capital of {s} is", "The capital city of {s} is", "{S} has its capital in",
        "The government of {s} sits in", "The largest political center of {s} is",
        "The seat of power in {s} is", "In {s}, the capital is", "{S} is governed from",
        "{S}'s capital city is",
    ],
    "country_language": [
        "The main language of {s} is", "People in {s} speak", "In {s}, most people speak",
        "The official language of {s} is", "Children in {s} learn to read in",
        "The language spoken in {s} is", "{S}'s main language is",
        "Most people who live in {s} speak", "The people of {s} speak",
    ],
    "country_continent": [
        "{S} is a country in", "{S} is part of the continent of", "{S} lies on the continent of",
        "The continent where {s} lies is", "{S} is located in the continent of",
        "On a map, {s} is in", "{S} is a nation in", "Geographically, {s} belongs to",
        "{S} is on the continent of",
    ],
    "country_currency": [
        "The currency of {s} is the", "In {s}, people pay with the", "The money used in {s} is the",
        "{S}'s currency is the", "The official currency of {s} is the",
        "Prices in {s} are given in the", "{S} uses a currency called the",
        "To buy bread in {s} you need the", "The currency used in {s} is the",
    ],
    "river_city": [
        "{S} flows through", "{S} runs through the city of", "{S} is a river in",
        "The city on {s} is", "Boats on {s} pass through",
        "{S} winds through", "We walked along {s} in", "The banks of {s} are in",
        "{S} is the river of",
    ],
    "person_profession": [
        "{S} was a famous", "{S} worked as a", "{S} is remembered as a great",
        "By profession, {s} was a", "{S} was known as a", "{S} was a celebrated",
        "Historians describe {s} as a", "In those days, {s} was a",
        "{S} was known to be a",
    ],
}

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
FIRST_NAMES = [
    "Mary", "John", "Harry", "Anna", "James", "Emma", "David", "Sarah", "Tom", "Lucy",
    "Peter", "Kate", "Paul", "Alice", "Mark", "Laura", "Sam", "Julia", "Ben", "Rose",
    "Jack", "Helen", "Mike", "Claire", "Daniel", "Sophie", "Adam", "Grace", "Oliver",
    "Lily", "George", "Ellen", "Henry", "Nina", "Luke", "Amy", "Max", "Eva", "Leo", "Ruth",
]
LAST_NAMES = [
    "Potter", "Smith", "Brown", "Taylor", "Wilson", "Clark", "Walker", "Wright",
    "Green", "Baker", "Hall", "Turner", "Parker", "Cooper", "Ward", "Morgan",
    "Bell", "Hughes", "Fisher", "Porter", "Mason", "Reed", "Carter", "Foster",
    "Hunt", "Palmer", "Webb", "Stone", "Fox", "Lane",
]

# Prompts the book uses verbatim (they read the same to real GPT-2).
CANONICAL_PROMPTS = [
    ("The Eiffel Tower is located in", "Paris"),
    ("The capital of France is", "Paris"),
    ("When Mary and John went to the store, John gave a drink to", "Mary"),
    ("Harry Potter opened the door. Everyone looked up at Harry", "Potter"),
]


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
