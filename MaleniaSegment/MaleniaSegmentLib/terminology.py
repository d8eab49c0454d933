"""Slicer's side of our terminology: load our context into the terminologies logic and make
serialized terminology entries for segments. The codes and the category -> kind / region
tables are in ``malenia.terminology`` (plain Python, shared with the DICOM SEG writer)."""

from __future__ import annotations

from pathlib import Path

import vtk
from malenia.terminology import (  # noqa: F401  (re-exported: the module's public names)
    _EMPTY,
    CATEGORY_KIND,
    LOCATION_REGION,
    REGION_CONTEXT_FILE,
    TERMINOLOGY_FILE,
    Code,
    Codes,
    TerminologyError,
    category_color,
    category_colors,
    category_kind,
    category_region,
    location_region,
    read_codes,
    terminology_dir,
)


def _loaded_names(getter) -> set[str]:
    names = vtk.vtkStringArray()
    getter(names)
    return {names.GetValue(i) for i in range(names.GetNumberOfValues())}


def load_context(terminologies_logic, folder: Path | None = None) -> tuple[str, str]:
    """Load our terminology and anatomic context into a vtkSlicerTerminologiesModuleLogic
    (once: already-loaded contexts are not parsed again).

    Returns (terminology context name, region context name).
    """
    folder = Path(folder or terminology_dir())
    codes = read_codes(folder)
    if codes.terminology_name not in _loaded_names(terminologies_logic.GetLoadedTerminologyNames):
        name = terminologies_logic.LoadTerminologyFromFile(str(folder / TERMINOLOGY_FILE))
        if name != codes.terminology_name:
            raise TerminologyError(
                f"Slicer could not load {folder / TERMINOLOGY_FILE}; "
                "restore Resources/Terminology from the repository."
            )
    loaded_regions = _loaded_names(terminologies_logic.GetLoadedRegionContextNames)
    if codes.region_context_name not in loaded_regions:
        name = terminologies_logic.LoadRegionContextFromFile(str(folder / REGION_CONTEXT_FILE))
        if name != codes.region_context_name:
            raise TerminologyError(
                f"Slicer could not load {folder / REGION_CONTEXT_FILE}; "
                "restore Resources/Terminology from the repository."
            )
    return codes.terminology_name, codes.region_context_name


def entry_for(
    terminologies_logic,
    kind: str,
    region: str | None = None,
    laterality: str | None = None,
    folder: Path | None = None,
) -> str:
    """Serialized terminology entry: lesion ``kind`` (mass, cyst, neoplasm, carcinoma, nodule,
    metastasis, lesion) in anatomic ``region`` (a CodeMeaning of our anatomic context, e.g.
    "Kidney") with ``laterality`` "Left" / "Right" / None. Store it with
    ``segment.SetTag(segment.GetTerminologyEntryTagName(), entry)``.
    """
    terminology_name, region_context = load_context(terminologies_logic, folder)
    codes = read_codes(Path(folder or terminology_dir()))
    if kind not in codes.kinds:
        raise TerminologyError(
            f"Unknown lesion kind '{kind}'; use one of: {', '.join(sorted(codes.kinds))}."
        )
    region_code = modifier = _EMPTY
    if region:
        if region not in codes.regions:
            raise TerminologyError(
                f"Unknown anatomic region '{region}'; use one of: {', '.join(codes.regions)}."
            )
        region_code = codes.regions[region]
    if laterality:
        allowed = codes.modifiers.get(region or "", {})
        if laterality not in allowed:
            raise TerminologyError(
                f"Region '{region}' takes no laterality '{laterality}'"
                + (f"; use one of: {', '.join(allowed)}." if allowed else "; leave it empty.")
            )
        modifier = allowed[laterality]
    kind_code = codes.kinds[kind]
    return terminologies_logic.SerializeTerminologyEntry(
        terminology_name,
        codes.category.value,
        codes.category.scheme,
        codes.category.meaning,
        kind_code.value,
        kind_code.scheme,
        kind_code.meaning,
        "",
        "",
        "",
        region_context if region_code.value else "",
        region_code.value,
        region_code.scheme,
        region_code.meaning,
        modifier.value,
        modifier.scheme,
        modifier.meaning,
    )


def terminology_entry(
    terminologies_logic,
    category: str | None,
    location: str | None = None,
    folder: Path | None = None,
) -> str:
    """Serialized terminology entry for a lesion of ``category`` at canonical ``location``.

    The kind comes from the category ("renal cyst" -> cyst; unknown -> the generic "lesion",
    never a guessed specific kind). The region comes from the location ("left kidney" ->
    Kidney, Left); without a known location, from the organ the category names ("renal cyst"
    -> Kidney, no side); otherwise it stays empty rather than guessed.
    """
    located = location_region(location)
    region, laterality = located if located else (category_region(category), None)
    return entry_for(terminologies_logic, category_kind(category), region, laterality, folder)
