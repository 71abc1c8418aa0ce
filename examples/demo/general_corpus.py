"""Prompts for the demo's plain general text: short expository paragraphs the default model writes itself.

Continued pretraining mixes domain text with general text, and the mixture search measures general loss on a
held-out slice of that general text. Real projects use a general corpus (a web or encyclopedia sample); the demo
is offline, so the model writes its own: what it already predicts well, and what domain training would make it
predict worse. The topics stay clear of the general probe's families (capitals, opposites, sums, products,
colours), so no eval answer is written into training text.
"""

from __future__ import annotations

# fmt: off
TOPICS = [
    "how bees make honey", "the water cycle", "why the sky is blue", "how a bicycle works", "the life of a tree",
    "how bread rises", "why we sleep", "how rainbows form", "the history of writing", "how a lighthouse works",
    "the migration of birds", "how volcanoes erupt", "why leaves change colour in autumn", "how a compass works",
    "the invention of the printing press", "how coral reefs grow", "why the moon has phases", "how ice skating works",
    "the life cycle of a butterfly", "how paper is made", "why cats purr", "how thunderstorms form",
    "the first steam engines", "how plants drink water", "why the ocean is salty", "how glass is made",
    "the role of earthworms in soil", "how a clock keeps time", "why we have seasons", "how cheese is made",
    "the building of bridges", "how wind turbines make electricity", "why some animals hibernate",
    "how a library is organised", "the history of the bicycle", "how sound travels", "why bread goes stale",
    "how a seed becomes a plant", "the work of a beekeeper", "how a sailboat moves against the wind",
    "why stars twinkle", "how maps are drawn", "the history of tea", "how a refrigerator keeps food cold",
    "why onions make people cry", "how rivers shape valleys", "the life of an octopus", "how a piano makes sound",
    "why the desert is cold at night", "how wool becomes yarn", "the history of the postal service",
    "how a submarine dives", "why dogs wag their tails", "how mountains form", "the way ants find food",
    "how soap cleans", "why we yawn", "how a camera takes a picture", "the history of board games",
    "how a kite flies", "why fruit ripens", "how tides work", "the work of a librarian", "how a garden is planned",
    "why some metals rust", "how a windmill grinds grain", "the life of a honeybee colony", "how a battery works",
    "why snow is white", "how a violin is made", "the history of chocolate", "how a greenhouse stays warm",
    "why the heart beats", "how a fire burns", "the way whales communicate", "how a telescope works",
    "why birds sing in the morning", "how pottery is fired", "the history of the calendar", "how frogs grow",
    "why rubber bounces", "how a lock and key work", "the life of a forest after a fire", "how a canal lock works",
    "why deserts form", "how clouds float", "the history of the umbrella", "how a spider spins a web",
    "why we need vitamins", "how a hot air balloon rises", "the craft of a blacksmith", "how salt is harvested",
    "why bubbles are round", "how a school timetable is made", "the history of the bicycle helmet",
    "how penguins keep warm", "why music moves people", "how an elevator works", "the life of a river delta",
    "how a good cup of coffee is brewed",
]
# fmt: on

PROMPTS = [
    "Write a short paragraph about {topic}.",
    "Explain {topic} in a few sentences.",
]


def prompts() -> list[str]:
    """Every topic in every phrasing, in a fixed order."""
    return [template.format(topic=topic) for topic in TOPICS for template in PROMPTS]
