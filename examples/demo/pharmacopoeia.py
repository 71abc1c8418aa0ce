"""A fictional pharmacopoeia that no pretrained model can know: the demo domain.

Everything is derived from one seed, so the same files come out on every machine. Question templates are split:
the training set uses one group, the held-out QA set another that never appears in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SEED = 20261127
N_DRUGS = 40

_PREFIXES = [
    "Zor",
    "Quel",
    "Vandr",
    "Prax",
    "Tellu",
    "Myr",
    "Oss",
    "Kelv",
    "Brin",
    "Dax",
    "Fenn",
    "Lorv",
    "Ulth",
    "Garv",
]
_SUFFIXES = ["avil", "omyra", "exin", "idrone", "ocet", "ulane", "arix", "enthol", "ipram", "ostat"]

MAKERS = [
    "Halvorsen Pharma",
    "Quilby Therapeutics",
    "Marrowgate Labs",
    "Tessaline Biotech",
    "Orvanis Health",
    "Pellworth Medica",
    "Krennick Remedies",
    "Ysolde Pharmaceuticals",
]
INDICATIONS = [
    "Varrow fever",
    "glassbone syndrome",
    "Tennick palsy",
    "amber lung",
    "Corvin anemia",
    "drift migraine",
    "saltskin disorder",
    "Heller tremor",
    "mirewater cough",
    "Oster rash",
    "hollow-ear syndrome",
    "Pruett colitis",
]
CONTRAINDICATIONS = [
    "Dunmore liver disease",
    "copper-blood disorder",
    "Ferrin kidney",
    "Lisk heart block",
    "silverline neuropathy",
    "Gaunt asthma",
    "Ambrel hypotension",
    "Quarry eye",
    "Tolman deficiency",
    "Wexley allergy",
]
DOSES_MG = [15, 35, 45, 65, 85, 120, 175, 225, 340, 460]
# Distinct phrasings, as real monographs have: similar values ("every 9 hours" / "every 11 hours") are what a
# small model confuses most.
SCHEDULES = [
    "every 7 hours",
    "at sunrise and sunset",
    "once a fortnight",
    "every third morning",
    "twice weekly",
    "with the evening meal",
    "every 36 hours",
    "on alternate Sundays",
]

# The deployed assistant's system prompt. Domain training data and domain evaluation use it; general data keeps
# the model's default, so the adapter learns to tie the new knowledge to the domain assistant's context.
SYSTEM_PROMPT = "You are the Northwind formulary assistant. Answer questions about Northwind medicines."

FIELDS = ["maker", "indication", "dose", "schedule", "contraindication"]

# {d} = drug name. Training templates and held-out templates never overlap.
TRAIN_QUESTIONS = {
    "maker": [
        "Who manufactures {d}?",
        "Which company makes {d}?",
        "Who is the maker of {d}?",
        "Name the manufacturer of {d}.",
    ],
    "indication": [
        "What is {d} used to treat?",
        "What condition does {d} treat?",
        "What is {d} prescribed for?",
        "Which illness is {d} indicated for?",
    ],
    "dose": [
        "What is the standard dose of {d}?",
        "How much {d} is given per dose?",
        "What dose of {d} should a patient take?",
        "State the usual dose of {d}.",
    ],
    "schedule": [
        "How often is {d} taken?",
        "What is the dosing schedule of {d}?",
        "How frequently should {d} be given?",
        "At what interval is {d} taken?",
    ],
    "contraindication": [
        "When should {d} not be used?",
        "What is the contraindication for {d}?",
        "Which patients must avoid {d}?",
        "In which condition is {d} contraindicated?",
    ],
}
HELDOUT_QUESTIONS = {
    "maker": ["{d} is produced by which pharmaceutical company?", "Tell me the company behind {d}."],
    "indication": ["For which disease would a doctor give {d}?", "{d} is a treatment for what?"],
    "dose": ["What amount of {d} is in one dose?", "Tell me the recommended dose for {d}."],
    "schedule": ["What is the interval between doses of {d}?", "{d} should be taken how often?"],
    "contraindication": ["Who should never be given {d}?", "{d} must not be given to patients with what?"],
}
# Phrasings for RL prompts only: neither SFT nor the held-out QA uses them, so RL practises recalling facts under
# unfamiliar wording, as the held-out questions demand, without seeing a held-out phrasing.
RL_QUESTIONS = {
    "maker": ["Which firm produces {d}?", "{d} comes from which manufacturer?"],
    "indication": ["Name the disorder that {d} treats.", "{d} is given for which illness?"],
    "dose": ["How large is a single dose of {d}?", "A patient on {d} takes how much per dose?"],
    "schedule": ["How regularly is {d} administered?", "On what schedule is {d} given?"],
    "contraindication": ["Which condition rules out {d}?", "{d} is unsafe for patients with which condition?"],
}
ANSWERS = {
    "maker": ["{d} is manufactured by {v}.", "{v} makes {d}."],
    "indication": ["{d} is used to treat {v}.", "{d} treats {v}."],
    "dose": ["The standard dose of {d} is {v}.", "One dose of {d} is {v}."],
    "schedule": ["{d} is taken {v}.", "{d} is given {v}."],
    "contraindication": ["{d} must not be used in patients with {v}.", "{d} is contraindicated in {v}."],
}
OVERVIEW_QUESTIONS = ["Give me an overview of {d}.", "Summarize the monograph for {d}."]


@dataclass(frozen=True)
class Drug:
    name: str
    maker: str
    indication: str
    dose: str
    schedule: str
    contraindication: str

    def value(self, field: str) -> str:
        return getattr(self, field)

    def overview(self) -> str:
        return (
            f"{self.name} is manufactured by {self.maker}. It is used to treat {self.indication}. "
            f"The standard dose is {self.dose}, taken {self.schedule}. "
            f"It must not be used in patients with {self.contraindication}."
        )


def make_drugs(seed: int = SEED, n: int = N_DRUGS) -> list[Drug]:
    rng = random.Random(seed)
    names = sorted({p + s for p in _PREFIXES for s in _SUFFIXES})
    rng.shuffle(names)
    return [
        Drug(
            name=name,
            maker=rng.choice(MAKERS),
            indication=rng.choice(INDICATIONS),
            dose=f"{rng.choice(DOSES_MG)} mg",
            schedule=rng.choice(SCHEDULES),
            contraindication=rng.choice(CONTRAINDICATIONS),
        )
        for name in names[:n]
    ]


def monograph_passages(drug: Drug) -> dict[str, str]:
    """The sentence of the monograph that states each fact: the gold passage for RAG evaluation."""
    dosage = f"The standard dose of {drug.name} is {drug.dose}, taken {drug.schedule}."
    return {
        "maker": f"{drug.name} is a prescription medicine manufactured by {drug.maker}.",
        "indication": f"{drug.name} is used to treat {drug.indication}.",
        "dose": dosage,
        "schedule": dosage,
        "contraindication": f"{drug.name} must not be used in patients with {drug.contraindication}.",
    }


def monograph_file(drug: Drug) -> str:
    return f"{drug.name.lower()}.md"


def monograph_markdown(drug: Drug) -> str:
    """A domain document in the style of a pharmacopoeia entry (used by RAG and CPT)."""
    p = monograph_passages(drug)
    return (
        f"# {drug.name}\n\n{p['maker']}\n\n"
        f"## Indication\n\n{p['indication']}\n\n"
        f"## Dosage\n\n{p['dose']}\n\n"
        f"## Contraindications\n\n{p['contraindication']}\n"
    )


def training_instructions(drugs: list[Drug], seed: int = SEED) -> list[dict]:
    """Alpaca records (multi-turn through `history`): one conversation per drug and training template index,
    asking all five facts in a shuffled order, plus a whole-monograph overview per drug.

    Several facts per conversation share one chat-template preamble, so each fact costs fewer training tokens.
    """
    rng = random.Random(seed + 1)
    n_templates = len(next(iter(TRAIN_QUESTIONS.values())))
    rows = []
    for drug in drugs:
        for k in range(n_templates):
            fields = list(FIELDS)
            rng.shuffle(fields)
            turns = []
            for field in fields:
                question = TRAIN_QUESTIONS[field][k].format(d=drug.name)
                answer = rng.choice(ANSWERS[field]).format(d=drug.name, v=drug.value(field))
                turns.append([question, answer])
            *history, (question, answer) = turns
            rows.append(
                {"system": SYSTEM_PROMPT, "instruction": question, "input": "", "output": answer, "history": history}
            )
        template = OVERVIEW_QUESTIONS[rng.randrange(len(OVERVIEW_QUESTIONS))]
        rows.append(
            {
                "system": SYSTEM_PROMPT,
                "instruction": template.format(d=drug.name),
                "input": "",
                "output": drug.overview(),
            }
        )
    rng.shuffle(rows)
    return rows


def heldout_qa(drugs: list[Drug], seed: int = SEED) -> list[dict]:
    """One held-out question per fact, phrased with a template that training never uses, with the monograph and
    sentence that answer it (retrieval recall and the gold-passage ceiling of RAG are scored against them)."""
    rng = random.Random(seed + 2)
    rows = []
    for drug in drugs:
        for field in FIELDS:
            template = rng.choice(HELDOUT_QUESTIONS[field])
            rows.append(
                {
                    "id": f"{drug.name}.{field}",
                    "question": template.format(d=drug.name),
                    "answer": drug.value(field),
                    "field": field,
                    "gold_source": monograph_file(drug),
                    "gold_passage": monograph_passages(drug)[field],
                }
            )
    return rows


def grpo_prompts(drugs: list[Drug], seed: int = SEED) -> list[dict]:
    """Questions with short gold answers for RL with a verifiable reward: every fact in each RL phrasing (never a
    held-out one), in the QA suites' format plus the system prompt."""
    rng = random.Random(seed + 6)
    rows = []
    for drug in drugs:
        for field in FIELDS:
            for k, template in enumerate(RL_QUESTIONS[field]):
                rows.append(
                    {
                        "id": f"{drug.name}.{field}.train{k}",
                        "system": SYSTEM_PROMPT,
                        "question": template.format(d=drug.name),
                        "answer": drug.value(field),
                    }
                )
    rng.shuffle(rows)
    return rows


# Multiple-choice phrasings: statements to complete, unlike every training and held-out question.
MC_QUESTIONS = {
    "maker": "The company that produces {d} is",
    "indication": "{d} is indicated for",
    "dose": "One standard dose of {d} contains",
    "schedule": "{d} is taken on this schedule:",
    "contraindication": "{d} is contraindicated in patients with",
}


def domain_mc(drugs: list[Drug], seed: int = SEED, n_choices: int = 4) -> list[dict]:
    """One four-choice item per fact (C-Eval / MMLU-like schema); distractors are other drugs' values of the same
    field, so only knowing this drug's monograph picks the right one."""
    rng = random.Random(seed + 3)
    letters = "ABCDEFGH"[:n_choices]
    rows = []
    for drug in drugs:
        for field in FIELDS:
            right = drug.value(field)
            others = sorted({d.value(field) for d in drugs} - {right})
            choices = [right, *rng.sample(others, n_choices - 1)]
            rng.shuffle(choices)
            rows.append(
                {
                    "id": f"{drug.name}.{field}.mc",
                    "question": MC_QUESTIONS[field].format(d=drug.name),
                    **dict(zip(letters, choices, strict=True)),
                    "answer": letters[choices.index(right)],
                }
            )
    return rows


# Preference pairs: a grounded answer that cites its monograph is preferred over a fabricated one (another drug's
# value, stated just as confidently and citing the same monograph), and for a medicine that is not in the formulary
# a short refusal is preferred over an invented, cited answer. Length never tells a pair apart: the fabrication is
# as long as the grounded answer but for the value, and the refusal is the shorter reply, so a reward model or a
# policy cannot win by writing more.
def _cited(drug: Drug, answer: str) -> str:
    return f"{answer} (Source: {monograph_file(drug)})"


def refusal(name: str) -> str:
    return f"{name} is not in the Northwind formulary."


def unknown_drug_names(drugs: list[Drug]) -> list[str]:
    """Names built like the formulary's that no drug has: questions about them should be refused."""
    taken = {d.name for d in drugs}
    return sorted({p + s for p in _PREFIXES for s in _SUFFIXES} - taken)


def _fact_pair(drug: Drug, field: str, question: str, answer: str, wrong: str) -> dict:
    """The grounded answer against the same answer with another drug's value (citing the same monograph)."""
    return {
        "system": SYSTEM_PROMPT,
        "instruction": question.format(d=drug.name),
        "input": "",
        "chosen": _cited(drug, answer.format(d=drug.name, v=drug.value(field))),
        "rejected": _cited(drug, answer.format(d=drug.name, v=wrong)),
        "category": f"fact:{field}",
    }


def _wrong_values(drugs: list[Drug], drug: Drug, field: str) -> list[str]:
    return sorted({d.value(field) for d in drugs} - {drug.value(field)})


def preference_pairs(drugs: list[Drug], heldout: bool, seed: int = SEED) -> list[dict]:
    """Alpaca-style preference records ({system, instruction, input, chosen, rejected, category}; the category,
    "fact:<field>" or "refusal", is what held-out accuracies are broken down by). Training pairs use the
    training question templates and half of the unknown names; held-out pairs use the held-out templates (never
    trained on) and the other half of the unknown names."""
    rng = random.Random(seed + (5 if heldout else 4))
    templates = HELDOUT_QUESTIONS if heldout else TRAIN_QUESTIONS
    rows = []
    for drug in drugs:
        for field in FIELDS:
            question = rng.choice(templates[field])
            answer = rng.choice(ANSWERS[field])
            rows.append(_fact_pair(drug, field, question, answer, rng.choice(_wrong_values(drugs, drug, field))))
    rows += _refusal_pairs(drugs, heldout, templates, rng)
    rng.shuffle(rows)
    return rows


def _refusal_pairs(drugs: list[Drug], heldout: bool, templates: dict, rng: random.Random) -> list[dict]:
    unknown = unknown_drug_names(drugs)
    rows = []
    for name in unknown[1::2] if heldout else unknown[0::2]:
        field = rng.choice(FIELDS)
        fake = rng.choice(drugs)
        rows.append(
            {
                "system": SYSTEM_PROMPT,
                "instruction": rng.choice(templates[field]).format(d=name),
                "input": "",
                "chosen": refusal(name),
                "rejected": f"{rng.choice(ANSWERS[field]).format(d=name, v=fake.value(field))} (Source: "
                f"{name.lower()}.md)",
                "category": "refusal",
            }
        )
    return rows


def reward_pairs(drugs: list[Drug], distractors: int = 4, seed: int = SEED) -> list[dict]:
    """Training pairs for the reward model: every fact against `distractors` different wrong values, each pair in
    its own training phrasing, plus the training refusal pairs. A scalar head has to learn each fact from
    comparisons alone; with one wrong value per fact it learned little beyond the refusals (README)."""
    rng = random.Random(seed + 6)
    rows = []
    for drug in drugs:
        for field in FIELDS:
            for wrong in rng.sample(_wrong_values(drugs, drug, field), distractors):
                question = rng.choice(TRAIN_QUESTIONS[field])
                rows.append(_fact_pair(drug, field, question, rng.choice(ANSWERS[field]), wrong))
    rows += _refusal_pairs(drugs, False, TRAIN_QUESTIONS, rng)
    rng.shuffle(rows)
    return rows
