"""Slicer-side logic of MaleniaSegment: MRML nodes <-> the Malenia engine.

Imports only Slicer's VTK/MRML classes, vtk and numpy, so it runs headless under the
slicer-core wheel in tests and inside Slicer unchanged.
"""
