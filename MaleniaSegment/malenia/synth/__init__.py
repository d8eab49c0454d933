"""The synthetic training world: CT phantoms and attribute-driven lesion rendering."""

from malenia.synth.dataset import SyntheticLesionDataset, make_sample
from malenia.synth.lesions import LesionRecord, render_lesions
from malenia.synth.phantom import Phantom, make_phantom
from malenia.synth.split import SEEN_CATEGORIES, TEST_SET_SEED, UNSEEN_CATEGORIES, unseen_categories

__all__ = [
    "SEEN_CATEGORIES", "TEST_SET_SEED", "UNSEEN_CATEGORIES", "LesionRecord", "Phantom",
    "SyntheticLesionDataset", "make_phantom", "make_sample", "render_lesions", "unseen_categories",
]  # fmt: skip
