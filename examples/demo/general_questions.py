"""Short general questions with gold answers: the pool for the general probe and for general replay data.

The pool is split once, by seed, into probe candidates and replay candidates, so no probe item can ever be
used for training. Answers list accepted aliases; scoring is a whole-word "contains" match.
"""

from __future__ import annotations

import random

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "the United Kingdom": "London",
    "Russia": "Moscow",
    "China": "Beijing",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Hungary": "Budapest",
    "Thailand": "Bangkok",
    "South Korea": "Seoul",
    "India": "New Delhi",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Belgium": "Brussels",
    "Cuba": "Havana",
    "Turkey": "Ankara",
    "the Netherlands": "Amsterdam",
    "Chile": "Santiago",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Vietnam": "Hanoi",
    "Indonesia": "Jakarta",
    "the Philippines": "Manila",
    "Australia": "Canberra",
    "Brazil": "Brasilia",
    "Switzerland": "Bern",
    "Czechia": "Prague",
    "Ukraine": "Kyiv",
    "Colombia": "Bogota",
    "Saudi Arabia": "Riyadh",
    "Romania": "Bucharest",
    "Bulgaria": "Sofia",
    "Serbia": "Belgrade",
    "Croatia": "Zagreb",
    "Iceland": "Reykjavik",
    "Estonia": "Tallinn",
    "Latvia": "Riga",
    "Lithuania": "Vilnius",
    "Slovakia": "Bratislava",
    "Malaysia": "Kuala Lumpur",
    "Singapore": "Singapore",
    "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka",
    "Nepal": "Kathmandu",
    "Afghanistan": "Kabul",
    "Syria": "Damascus",
    "Lebanon": "Beirut",
    "Jordan": "Amman",
    "Israel": "Jerusalem",
    "Morocco": "Rabat",
    "Algeria": "Algiers",
    "Tunisia": "Tunis",
    "Libya": "Tripoli",
    "Ethiopia": "Addis Ababa",
    "Ghana": "Accra",
    "Venezuela": "Caracas",
    "Ecuador": "Quito",
    "Uruguay": "Montevideo",
    "Paraguay": "Asuncion",
    "Bolivia": "La Paz",
    "Jamaica": "Kingston",
    "Taiwan": "Taipei",
    "Mongolia": "Ulaanbaatar",
    "Qatar": "Doha",
    "Scotland": "Edinburgh",
}
OPPOSITES = {
    "hot": "cold",
    "up": "down",
    "big": "small",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "open": "closed",
    "early": "late",
    "young": "old",
    "wet": "dry",
    "rich": "poor",
    "strong": "weak",
    "full": "empty",
    "hard": "soft",
    "high": "low",
    "true": "false",
    "win": "lose",
    "day": "night",
    "black": "white",
    "north": "south",
    "left": "right",
    "in": "out",
    "good": "bad",
    "love": "hate",
    "thick": "thin",
    "push": "pull",
    "long": "short",
    "east": "west",
    "buy": "sell",
    "clean": "dirty",
    "heavy": "light",
    "loud": "quiet",
    "begin": "end",
    "above": "below",
    "always": "never",
    "before": "after",
    "first": "last",
    "inside": "outside",
    "give": "take",
    "remember": "forget",
    "friend": "enemy",
    "sweet": "sour",
    "deep": "shallow",
    "cheap": "expensive",
}
FACTS = [
    ("What is the chemical symbol for gold?", ["Au"]),
    ("What is the chemical symbol for water?", ["H2O"]),
    ("What is the chemical symbol for sodium?", ["Na"]),
    ("What is the chemical symbol for iron?", ["Fe"]),
    ("What is the chemical symbol for oxygen?", ["O"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Which planet is closest to the Sun?", ["Mercury"]),
    ("What star is at the center of our solar system?", ["Sun"]),
    ("What gas do plants absorb from the air for photosynthesis?", ["carbon dioxide", "CO2"]),
    ("What gas do humans need to breathe?", ["oxygen"]),
    ("How many days are there in a week?", ["7", "seven"]),
    ("How many months are there in a year?", ["12", "twelve"]),
    ("How many hours are there in a day?", ["24", "twenty-four"]),
    ("How many minutes are there in an hour?", ["60", "sixty"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many legs does a dog have?", ["4", "four"]),
    ("How many continents are there?", ["7", "seven"]),
    ("What is the freezing point of water in Celsius?", ["0", "zero"]),
    ("What is the boiling point of water in Celsius?", ["100"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color is grass?", ["green"]),
    ("What color are ripe bananas?", ["yellow"]),
    ("What color is snow?", ["white"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the tallest mountain in the world?", ["Everest"]),
    ("What is the longest river in Africa?", ["Nile"]),
    ("Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
    ("Who developed the theory of relativity?", ["Einstein"]),
    ("What is the largest mammal?", ["blue whale", "whale"]),
    ("What animal is known as the king of the jungle?", ["lion"]),
    ("What do bees make?", ["honey"]),
    ("What is the main language spoken in Brazil?", ["Portuguese"]),
    ("What is the main language spoken in Mexico?", ["Spanish"]),
    ("What is the currency of Japan?", ["yen"]),
    ("What is the currency of the United States?", ["dollar"]),
    ("How do you say 'thank you' in French?", ["merci"]),
    ("How do you say 'hello' in Spanish?", ["hola"]),
    ("What is the plural of mouse?", ["mice"]),
    ("What is the plural of child?", ["children"]),
    ("What is the past tense of 'go'?", ["went"]),
    ("What is the square root of 81?", ["9", "nine"]),
    ("What is the square root of 64?", ["8", "eight"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("How many sides does a hexagon have?", ["6", "six"]),
    ("What is the first letter of the English alphabet?", ["A"]),
    ("What organ pumps blood through the body?", ["heart"]),
    ("What organ do humans use to think?", ["brain"]),
    ("What is frozen water called?", ["ice"]),
    ("What is the capital city of the United States?", ["Washington"]),
    ("Which planet do we live on?", ["Earth"]),
    ("What is the natural satellite of the Earth called?", ["Moon"]),
    ("Which ocean lies between Europe and North America?", ["Atlantic"]),
    ("What is the largest desert in Africa?", ["Sahara"]),
    ("What is the largest country in the world by area?", ["Russia"]),
    ("Which country is home to the kangaroo?", ["Australia"]),
    ("Which country built the Great Wall?", ["China"]),
    ("In which city is the Eiffel Tower?", ["Paris"]),
    ("In which country are the pyramids of Giza?", ["Egypt"]),
    ("Who was the first president of the United States?", ["Washington"]),
    ("Who wrote Hamlet?", ["Shakespeare"]),
    ("Who discovered penicillin?", ["Fleming"]),
    ("Who proposed the theory of evolution by natural selection?", ["Darwin"]),
    ("What is the hardest natural substance?", ["diamond"]),
    ("What is the main ingredient of bread?", ["flour", "wheat"]),
    ("What do cows drink?", ["water"]),
    ("Which animal is known for its long neck?", ["giraffe"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("What is a baby cat called?", ["kitten"]),
    ("What is a baby dog called?", ["puppy"]),
    ("What do caterpillars turn into?", ["butterfly", "butterflies", "moth"]),
    ("What is the boiling point of water in Fahrenheit?", ["212"]),
    ("How many seconds are there in a minute?", ["60", "sixty"]),
    ("How many wheels does a bicycle have?", ["2", "two"]),
    ("How many players are on a soccer team on the field?", ["11", "eleven"]),
    ("How many strings does a standard guitar have?", ["6", "six"]),
    ("What is the largest organ of the human body?", ["skin"]),
    ("What part of the plant conducts photosynthesis?", ["leaf", "leaves"]),
    ("What is the process by which plants make food from sunlight?", ["photosynthesis"]),
    ("What force keeps us on the ground?", ["gravity"]),
    ("What is the center of an atom called?", ["nucleus"]),
    ("What is H2O commonly called?", ["water"]),
    ("What language is spoken in France?", ["French"]),
    ("What language is spoken in Germany?", ["German"]),
    ("What language is spoken in Italy?", ["Italian"]),
    ("What language is spoken in Japan?", ["Japanese"]),
    ("What is the currency of the United Kingdom?", ["pound"]),
    ("What is the currency used in Germany?", ["euro"]),
    ("What is the plural of tooth?", ["teeth"]),
    ("What is the plural of foot?", ["feet"]),
    ("What is the past tense of 'eat'?", ["ate"]),
    ("What is the past tense of 'run'?", ["ran"]),
    ("What color do you get by mixing blue and yellow?", ["green"]),
    ("What color do you get by mixing red and white?", ["pink"]),
    ("What season comes after winter?", ["spring"]),
    ("What is the day after Monday?", ["Tuesday"]),
    ("What is the month after January?", ["February"]),
    ("What instrument has 88 keys?", ["piano"]),
]


def _sums(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    pairs = sorted({(rng.randint(2, 20), rng.randint(2, 20)) for _ in range(n * 3)})
    rng.shuffle(pairs)
    return [(f"What is {a} plus {b}?", [str(a + b)]) for a, b in pairs[:n]]


def _products(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    pairs = sorted({(rng.randint(2, 9), rng.randint(2, 9)) for _ in range(n * 3)})
    rng.shuffle(pairs)
    return [(f"What is {a} times {b}?", [str(a * b)]) for a, b in pairs[:n]]


def question_pool(seed: int) -> list[dict]:
    """All general questions, each {"question", "answer", "aliases", "category"}."""
    rng = random.Random(seed)
    items = [(f"What is the capital of {c}?", [city], "capital") for c, city in CAPITALS.items()]
    items += [(f"What is the opposite of '{w}'?", [o], "opposite") for w, o in OPPOSITES.items()]
    items += [(q, a, "fact") for q, a in FACTS]
    items += [(q, a, "arithmetic") for q, a in _sums(rng, 30) + _products(rng, 20)]
    return [{"question": q, "answer": a[0], "aliases": a[1:], "category": cat} for q, a, cat in items]


def split_pool(pool: list[dict], seed: int, probe_share: float = 0.6) -> tuple[list[dict], list[dict]]:
    """Disjoint (probe candidates, replay candidates), stratified by category."""
    rng = random.Random(seed + 7)
    probe, replay = [], []
    for category in sorted({item["category"] for item in pool}):
        group = [item for item in pool if item["category"] == category]
        rng.shuffle(group)
        cut = round(len(group) * probe_share)
        probe += group[:cut]
        replay += group[cut:]
    return probe, replay


def multiple_choice(items: list[dict], seed: int, n_choices: int = 4) -> list[dict]:
    """Four-choice versions of general questions: distractors are other answers of the same category."""
    rng = random.Random(seed + 11)
    letters = "ABCDEFGH"[:n_choices]
    rows = []
    for i, item in enumerate(items):
        same = sorted({it["answer"] for it in items if it["category"] == item["category"]} - {item["answer"]})
        if len(same) < n_choices - 1:
            continue
        choices = [item["answer"], *rng.sample(same, n_choices - 1)]
        rng.shuffle(choices)
        rows.append(
            {
                "id": f"general.mc.{i}",
                "question": item["question"],
                **dict(zip(letters, choices, strict=True)),
                "answer": letters[choices.index(item["answer"])],
            }
        )
    return rows


def _statement(item: dict) -> str | None:
    """The question's fact as a plain declarative sentence, or None when it has no template (free-form facts)."""
    q, a = item["question"], item["answer"]
    if item["category"] == "capital":
        return f"The capital of {q.removeprefix('What is the capital of ').rstrip('?')} is {a}."
    if item["category"] == "opposite":
        word = q.removeprefix("What is the opposite of '").removesuffix("'?")
        return f"The opposite of {word} is {a}."
    if item["category"] == "arithmetic":
        body = q.removeprefix("What is ").rstrip("?")
        return f"{body[0].upper()}{body[1:]} equals {a}."
    return None


def reference_texts(items: list[dict], per_document: int = 6) -> list[dict]:
    """Held-out general text for perplexity: the facts of the given questions as plain sentences (not the
    question-answer turns SFT trains on), a few per document so the perplexity change gets a CI over documents."""
    sentences = [s for s in map(_statement, items) if s]
    docs = [" ".join(sentences[i : i + per_document]) for i in range(0, len(sentences), per_document)]
    return [{"id": f"general.text.{i}", "text": text} for i, text in enumerate(docs)]
