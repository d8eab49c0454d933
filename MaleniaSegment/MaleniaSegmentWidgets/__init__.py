"""Qt-side pieces of the MaleniaSegment widget. They import ``qt`` and Slicer's
parameterNodeWrapper, so they load inside Slicer only; every behaviour the widget relies on
lives in MaleniaSegmentLib, which runs headless. Like MaleniaSegment.py, this package stays
importable on Python 3.9 (Slicer 5.8), where the module shows its version message."""
