"""What the model is asked during training: the attribute vocabulary as embedding matrices,
which lesions a prompt means (its target), prompts with attributes dropped, and the contrast
prompts (other categories, an absent one) whose different targets make the model read them."""

from __future__ import annotations

import random

import numpy as np

from malenia.attributes.schema import ATTRIBUTE_KEYS, LesionDescription


class Vocabulary:
    """Embedding matrices of every attribute value, and value indices of descriptions."""

    def __init__(self, device) -> None:
        from malenia.text import load_embedding_table

        self.table = load_embedding_table()
        self.phrases = [self.table.vocabulary_matrix(k)[0] for k in ATTRIBUTE_KEYS]
        self.matrices = [self.table.vocabulary_matrix(k)[1].to(device) for k in ATTRIBUTE_KEYS]

    def value_index(self, key_index: int, description) -> int:
        value = getattr(description, ATTRIBUTE_KEYS[key_index])
        if ATTRIBUTE_KEYS[key_index] == "specific_features":
            value = value[0] if value else None
        return self.phrases[key_index].index(value) if value in self.phrases[key_index] else -1


def fits(lesion: LesionDescription, prompt: LesionDescription) -> bool:
    """Whether a lesion matches every attribute the prompt specifies."""
    for key in prompt.specified_keys():
        wanted, has = getattr(prompt, key), getattr(lesion, key)
        if key == "specific_features":
            if not set(wanted) <= set(has):
                return False
        elif wanted != has:
            return False
    return True


def prompt_target(item: dict, category: str | None, prompt: LesionDescription) -> np.ndarray:
    """The target of a prompt: the item's lesions of ``category`` (the category the prompt was
    drawn from; None for none) and every other lesion the description fits."""
    ids = [
        i + 1
        for i, (c, d) in enumerate(zip(item["categories"], item["descriptions"], strict=True))
        if c == category or fits(d, prompt)
    ]
    return np.isin(item["instance_mask"], ids).astype(np.float32)


def drop_attributes(
    description: LesionDescription, rng: random.Random, rate: float
) -> LesionDescription:
    """The description with each attribute left out with probability ``rate`` (location with
    ``rate / 3``); at least one attribute is kept."""
    if rate <= 0:
        return description
    keys = description.specified_keys()
    kept = [k for k in keys if rng.random() >= (rate / 3 if k == "location" else rate)]
    return description.only(*(kept or [rng.choice(keys)])) if keys else description


def choose_prompt(item: dict, rng: random.Random, negative_prob: float, pool: dict, dropout=0.0):
    """(category, description, target mask) for the prompted loss: a lesion's description
    and the lesions it describes; sometimes an absent category's description (whose target
    is empty unless its description fits a lesion present). An item's ``ask`` (a category
    and description chosen with the window, ``RealMixDataset``'s organ negatives) is asked
    instead."""
    if item.get("ask"):
        category, description = item["ask"]
        description = drop_attributes(description, rng, dropout)
        return category, description, prompt_target(item, None, description)
    present = set(item["categories"]) | set(item.get("compatible", ()))
    absent = [c for c in pool if c not in present]
    if absent and (rng.random() < negative_prob or not item["descriptions"]):
        category = rng.choice(absent)
        description = drop_attributes(rng.choice(pool[category]), rng, dropout)
        return category, description, prompt_target(item, None, description)
    j = rng.randrange(len(item["descriptions"]))
    category = item["categories"][j]
    description = drop_attributes(item["descriptions"][j], rng, dropout)
    return category, description, prompt_target(item, category, description)


def contrast_prompts(item: dict, primary: str, rng: random.Random, pool: dict, dropout=0.0):
    """(descriptions, targets) for the categories in ``item`` other than ``primary`` (the
    category already prompted) and one absent category."""
    descriptions, targets, done = [], [], {primary}
    for j, category in enumerate(item["categories"]):
        if category in done:
            continue
        done.add(category)
        description = drop_attributes(item["descriptions"][j], rng, dropout)
        descriptions.append(description)
        targets.append(prompt_target(item, category, description))
    taken = set(item["categories"]) | set(item.get("compatible", ())) | done
    absent = sorted(c for c in pool if c not in taken)
    if absent:
        description = drop_attributes(rng.choice(pool[rng.choice(absent)]), rng, dropout)
        descriptions.append(description)
        targets.append(prompt_target(item, None, description))
    return descriptions, targets
