"""Headless Slicer for tests: a real MRML scene with the module logics MaleniaSegment uses.

Built on the slicer-core wheel (real Slicer MRML and module-logic classes, no Qt), wired
the way a Slicer application does it: one application logic, each module logic attached
to it and to the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import slicer
import vtk

REPO = Path(__file__).resolve().parents[1]
TERMINOLOGY_DIR = REPO / "Resources" / "Terminology"


@dataclass
class SlicerScene:
    scene: object
    app_logic: object
    volumes_logic: object
    segmentations_logic: object
    terminologies_logic: object
    colors_logic: object
    subject_hierarchy_logic: object

    def close(self) -> None:
        self.scene.Clear(1)


def create_slicer_scene() -> SlicerScene:
    """A fresh scene with Colors, Subject Hierarchy, Volumes, Segmentations, Terminologies."""
    # Slicer logs errors for default resources (colour tables, DICOM terminologies) that the
    # wheel does not ship; they are irrelevant here and would drown real problems.
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)

    def attach(name: str, logic):
        logic.SetMRMLApplicationLogic(app_logic)
        if name == "Terminologies":
            logic.SetModuleShareDirectory(str(TERMINOLOGY_DIR))
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        return logic

    colors = attach("Colors", slicer.vtkSlicerColorLogic())
    subject_hierarchy = attach("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic())
    volumes = attach("Volumes", slicer.vtkSlicerVolumesLogic())
    segmentations = attach("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())
    terminologies = attach("Terminologies", slicer.vtkSlicerTerminologiesModuleLogic())
    app_logic.SetColorLogic(colors)
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_WARNING)
    return SlicerScene(
        scene=scene,
        app_logic=app_logic,
        volumes_logic=volumes,
        segmentations_logic=segmentations,
        terminologies_logic=terminologies,
        colors_logic=colors,
        subject_hierarchy_logic=subject_hierarchy,
    )
