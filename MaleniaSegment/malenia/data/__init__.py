"""Real datasets laid out as the Medical Segmentation Decathlon or KiTS23, joined with the
Malenia attribute records by case id."""

from malenia.data.real import RealCase, RealLesionDataset, discover_cases

__all__ = ["RealCase", "RealLesionDataset", "discover_cases"]
