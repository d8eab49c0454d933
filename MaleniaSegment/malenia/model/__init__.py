"""The Malenia network."""

from malenia.model.config import MaleniaConfig
from malenia.model.network import ImageFeatures, MaleniaNet, count_parameters

__all__ = ["ImageFeatures", "MaleniaConfig", "MaleniaNet", "count_parameters"]
