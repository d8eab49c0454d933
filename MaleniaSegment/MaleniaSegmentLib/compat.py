"""Which Slicer the module runs in, checked before anything else of MaleniaSegmentLib is
imported. Kept importable on Python 3.9 (Slicer 5.8), so that an old Slicer shows this
message instead of a SyntaxError or TypeError from newer code."""

from __future__ import annotations

# Slicer 5.10 is the first with Python >= 3.10 (it ships 3.12; 5.8 ships 3.9) and with the
# terminology logic's "RegionContext" methods (5.8 has "AnatomicContext" ones).
MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)


def version_problem(slicer_version, python_version):
    """A message saying what to install, or None when this Slicer can run the module.
    ``slicer_version``: (major, minor); ``python_version``: sys.version_info."""
    slicer_version = tuple(slicer_version)[:2]
    python_version = tuple(python_version)[:2]
    if slicer_version >= MINIMUM_SLICER and python_version >= MINIMUM_PYTHON:
        return None
    return (
        "MaleniaSegment needs 3D Slicer {}.{} or newer (this is {}.{}, with Python {}.{}; "
        "the engine needs Python {}.{} or newer). Install a newer Slicer from "
        "download.slicer.org."
    ).format(*MINIMUM_SLICER, *slicer_version, *python_version, *MINIMUM_PYTHON)


def self_test_skip_reason(slicer_version, python_version, requirements=None):
    """Why the module's self-test cannot run here (an old Slicer; the engine's packages not
    installed, as on a build machine), or None. The self-test starts the real engine, which
    needs torch; it never installs anything itself."""
    problem = version_problem(slicer_version, python_version)
    if problem:
        return problem
    from MaleniaSegmentLib.dependencies import missing

    needed = missing(requirements)
    if needed:
        return "the engine's Python packages are not installed (" + ", ".join(needed) + ")"
    return None
