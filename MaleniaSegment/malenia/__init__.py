"""Malenia engine: zero-shot 3D CT lesion segmentation from lesion attributes.

A plain Python package with no Slicer imports. See docs/ARCHITECTURE.md for the map.
"""

__version__ = "0.1.0"
