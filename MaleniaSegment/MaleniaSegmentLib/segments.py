"""Engine results -> new, well-labelled segments. Never touches a segment we did not make.

Every segment this module creates carries the tag ``Malenia.RunId``; re-cut and re-run
replace only segments with that run's id, in that output node. Any failure rolls back
what this call added, so the scene is exactly as before.
"""

from __future__ import annotations

import json
import uuid

import numpy as np

from MaleniaSegmentLib import terminology, volumes

CREATED_BY_TAG = "Malenia.CreatedBy"
RUN_TAG = "Malenia.RunId"


def tag(segment, name: str) -> str | None:
    """The value of the segment's tag ``name`` (None when the segment has no such tag)."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def _geometry_parameter() -> str:
    import slicer

    return slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()


def reference_geometry(segmentation_node) -> str:
    """The node's reference image geometry (serialised), '' when it has none yet."""
    segmentation = segmentation_node.GetSegmentation()
    return segmentation.GetConversionParameter(_geometry_parameter()) or ""


def segment_names(segmentation_node) -> set[str]:
    segmentation = segmentation_node.GetSegmentation()
    return {
        segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
    }


def unique_name(base: str, taken: set[str]) -> str:
    """'Renal cyst 1' -> 'Renal cyst 2' ... until unused."""
    stem = base.rstrip("0123456789 ").strip() or "Lesion"
    number = 1
    while f"{stem} {number}" in taken:
        number += 1
    return f"{stem} {number}"


def run_segment_ids(segmentation_node, run_id: str) -> list[str]:
    return [
        sid
        for sid in volumes.segment_ids(segmentation_node)
        if tag(segmentation_node.GetSegmentation().GetSegment(sid), RUN_TAG) == run_id
    ]


def new_output_node(scene, volume_node, subject_hierarchy_logic=None):
    """A new segmentation node for results, tied to the volume's geometry and study."""
    node = scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{volume_node.GetName()} lesions")
    )
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    place_under_study(scene, volume_node, node)
    return node


def place_under_study(scene, volume_node, node) -> None:
    """Put ``node`` in the same subject-hierarchy folder (study) as the volume."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    parent = hierarchy.GetItemParent(volume_item) if volume_item else 0
    if not parent:
        return
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # no subject-hierarchy plugins (headless): make the item ourselves
        hierarchy.CreateItem(parent, node)


def add_result_segments(
    logics,
    volume_node,
    result,
    output_node=None,
    run_id: str | None = None,
) -> tuple[object, list[str], str]:
    """Add one new segment per lesion of ``result`` (an EngineResult) to ``output_node``
    (a new node when None). Returns (node, new segment ids, run id)."""
    scene = volume_node.GetScene()
    run_id = run_id or uuid.uuid4().hex[:12]
    created_node = output_node is None
    node = output_node or new_output_node(scene, volume_node)
    geometry_before = reference_geometry(node)
    if not geometry_before:  # a user's node keeps the geometry it has
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    new_ids: list[str] = []
    try:
        labelmap = np.asarray(result.labelmap)
        present = [lesion for lesion in result.lesions if (labelmap == lesion["index"]).any()]
        if present:
            compact = np.zeros(labelmap.shape, np.int16)
            for order, lesion in enumerate(present, start=1):
                compact[labelmap == lesion["index"]] = order
            new_ids = volumes.import_labelmap_to_segmentation(
                logics.segmentations_logic, node, compact, volumes.ijk_to_ras_matrix(volume_node)
            )
        taken = segment_names(node) - set(_names(node, new_ids))
        for segment_id, lesion in zip(new_ids, present, strict=True):
            segment = node.GetSegmentation().GetSegment(segment_id)
            name = unique_name(lesion["name"], taken)
            taken.add(name)
            segment.SetName(name)
            segment.SetColor(*terminology.category_color(lesion.get("category")))
            location = (lesion.get("attributes") or {}).get("location")
            entry = terminology.terminology_entry(
                logics.terminologies_logic, lesion.get("category"), location
            )
            segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
            for key, value in {
                CREATED_BY_TAG: "MaleniaSegment",
                RUN_TAG: run_id,
                "Malenia.Query": str(result.query),
                "Malenia.RequestedDescription": json.dumps(
                    getattr(result, "description", None) or {}, ensure_ascii=False
                ),
                "Malenia.Description": json.dumps(
                    lesion.get("attributes") or {}, ensure_ascii=False
                ),
                "Malenia.Category": lesion.get("category") or "",
                "Malenia.Score": f"{lesion.get('score', 0):.4f}",
                "Malenia.Threshold": f"{result.threshold:.3f}",
                # The organ the answer was grounded in ("" when the prompt answered alone).
                "Malenia.GroundedIn": result.extra.get("grounded_in") or "",
                # Set when that organ's map was larger than the organ can be.
                "Malenia.GroundingWarning": result.extra.get("grounding_warning") or "",
                "Malenia.ModelId": result.model_id,
                "Malenia.VolumeMl": f"{lesion.get('volume_ml', 0):.3f}",
                "Malenia.DiameterMm": f"{lesion.get('diameter_mm', 0):.1f}",
            }.items():
                segment.SetTag(key, value)
    except Exception:
        for segment_id in new_ids:
            node.GetSegmentation().RemoveSegment(segment_id)
        if created_node:
            _remove_node(scene, node)
        elif reference_geometry(node) != geometry_before:
            node.GetSegmentation().SetConversionParameter(_geometry_parameter(), geometry_before)
        raise
    return node, new_ids, run_id


def replace_run_segments(logics, volume_node, result, output_node, run_id: str) -> list[str]:
    """Re-cut / re-run: swap this run's segments for new ones; every other segment stays.
    The new segments are added first, so a failure leaves the old ones in place."""
    old = run_segment_ids(output_node, run_id)
    _, new_ids, _ = add_result_segments(logics, volume_node, result, output_node, run_id + "-next")
    segmentation = output_node.GetSegmentation()
    for segment_id in old:
        segmentation.RemoveSegment(segment_id)
    taken = segment_names(output_node) - set(_names(output_node, new_ids))
    for segment_id in new_ids:  # reuse the names the old segments of this run had
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(unique_name(segment.GetName(), taken))
        taken.add(segment.GetName())
        segment.SetTag(RUN_TAG, run_id)
    return new_ids


def _names(node, segment_ids) -> list[str]:
    return [node.GetSegmentation().GetSegment(sid).GetName() for sid in segment_ids]


def _remove_node(scene, node) -> None:
    for index in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(index)
        if display is not None:
            scene.RemoveNode(display)
    scene.RemoveNode(node)
