"""Volume nodes <-> numpy arrays with geometry, and labelmaps <-> segmentation nodes.

Slicer stores geometry as an IJK-to-RAS matrix; the engine (SimpleITK, malenia.io.CTVolume)
as LPS spacing, origin and direction. Both conversions live here so that there is exactly
one place where a sign or an axis order can go wrong — and it is tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import vtk
from malenia.errors import InvalidVolumeError, MaleniaError
from vtk.util import numpy_support

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class SegmentationTransferError(MaleniaError):
    """Slicer refused to import or export a labelmap (the message says which and why)."""


# --- geometry: IJK-to-RAS <-> SimpleITK (LPS) --------------------------------------------------


def ijk_to_ras_from_lps(spacing, origin, direction) -> np.ndarray:
    """4x4 IJK-to-RAS from SimpleITK-style (spacing xyz, origin LPS, 3x3 direction LPS)."""
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(np.asarray(spacing, dtype=float))
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(origin, dtype=float)
    return matrix


def lps_from_ijk_to_ras(ijk_to_ras) -> tuple[tuple, tuple, tuple]:
    """Inverse of ijk_to_ras_from_lps: (spacing, origin, flat row-major direction) in LPS."""
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InvalidVolumeError(f"IJK-to-RAS must be a finite 4x4 matrix, got {matrix.tolist()}.")
    lps = _LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0):
        raise InvalidVolumeError(
            f"IJK-to-RAS has a zero-length axis (spacing {spacing.tolist()}); "
            "the volume's geometry is broken: reload it from the original file."
        )
    direction = lps / spacing
    origin = _LPS_TO_RAS @ matrix[:3, 3]
    return tuple(spacing), tuple(origin), tuple(direction.ravel())


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def ijk_to_ras_matrix(node) -> np.ndarray:
    """The node's IJK-to-RAS matrix as a 4x4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


# --- voxels: volume node <-> numpy [k, j, i] ------------------------------------------------


def array_from_volume_node(node) -> np.ndarray:
    """Voxels of a scalar/labelmap volume node as a numpy array indexed [k, j, i] (a copy)."""
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InvalidVolumeError(f"Volume '{node.GetName()}' has no image data; load a CT first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InvalidVolumeError(
            f"Volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components "
            "(colour/vector image); choose a single-component CT volume."
        )
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(dims[2], dims[1], dims[0]).copy()


def update_volume_node(node, array: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    """Replace the node's voxels (array [k, j, i]) and geometry (4x4 IJK-to-RAS)."""
    array = np.asarray(array)
    if array.ndim != 3 or min(array.shape) < 1:
        raise InvalidVolumeError(
            f"Expected a 3D array indexed [k, j, i], got shape {array.shape}; "
            "give a whole volume, not a slice."
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    lps_from_ijk_to_ras(ijk_to_ras)  # validates the matrix
    array = np.ascontiguousarray(array)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    node.SetIJKToRASMatrix(_vtk_matrix(np.asarray(ijk_to_ras, dtype=float)))
    node.SetAndObserveImageData(image)


def add_volume_node(
    scene, array: np.ndarray, ijk_to_ras: np.ndarray, name: str, labelmap: bool = False
):
    """Add a new scalar (or labelmap) volume node built from a numpy array [k, j, i]."""
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    try:
        update_volume_node(node, array, ijk_to_ras)
    except MaleniaError:
        scene.RemoveNode(node)
        raise
    node.CreateDefaultDisplayNodes()
    return node


# --- engine volumes (malenia.io.CTVolume, SimpleITK conventions) ------------------------------


def ct_volume_from_node(node):
    """malenia.io.CTVolume (array [z, y, x], LPS spacing/origin/direction) of a volume node."""
    from malenia.io import CTVolume

    spacing, origin, direction = lps_from_ijk_to_ras(ijk_to_ras_matrix(node))
    return CTVolume(array_from_volume_node(node), spacing, origin, direction, node.GetName())


def add_volume_node_from_ct(scene, volume, name: str | None = None, labelmap: bool = False):
    """Add a volume node holding a malenia.io.CTVolume (same voxels, same physical grid)."""
    matrix = ijk_to_ras_from_lps(volume.spacing, volume.origin, volume.direction)
    return add_volume_node(scene, volume.array, matrix, name or volume.name, labelmap)


# --- labelmaps <-> segmentation nodes -------------------------------------------------------


def segment_ids(segmentation_node) -> list[str]:
    """Segment ids of a segmentation node, in order."""
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def _checked_labelmap(labelmap: np.ndarray) -> np.ndarray:
    labelmap = np.asarray(labelmap)
    if labelmap.dtype == bool:
        return labelmap.astype(np.uint8)
    if not np.issubdtype(labelmap.dtype, np.integer):
        raise InvalidVolumeError(
            f"A labelmap must hold integer labels, got {labelmap.dtype}; "
            "threshold the probability map first."
        )
    if labelmap.size and labelmap.min() < 0:
        raise InvalidVolumeError("A labelmap cannot hold negative labels; 0 is background.")
    return labelmap


def import_labelmap_to_segmentation(
    segmentations_logic,
    segmentation_node,
    labelmap: np.ndarray,
    ijk_to_ras: np.ndarray,
    names: Mapping[int, str] | Sequence[str] | None = None,
) -> list[str]:
    """Import each non-zero label of ``labelmap`` ([k, j, i] on the grid ``ijk_to_ras``) as a
    new segment; return the new segment ids in ascending label order.

    ``names`` (label -> name, or a list for labels 1, 2, ...) names the new segments; labels
    without a name are called "Label <n>". Existing segments are never touched, and the
    temporary labelmap node that carries the geometry is removed again.
    """
    labelmap = _checked_labelmap(labelmap)
    scene = segmentation_node.GetScene()
    before = set(segment_ids(segmentation_node))
    temporary = add_volume_node(scene, labelmap, ijk_to_ras, "_malenia_import", labelmap=True)
    try:
        if not segmentations_logic.ImportLabelmapToSegmentationNode(temporary, segmentation_node):
            raise SegmentationTransferError(
                f"Slicer could not import the labelmap into '{segmentation_node.GetName()}'. "
                "Check that the segmentation node is in the scene and not locked."
            )
    finally:
        display = temporary.GetDisplayNode()
        if display is not None:
            scene.RemoveNode(display)
        scene.RemoveNode(temporary)
    segmentation = segmentation_node.GetSegmentation()
    new_ids = [sid for sid in segment_ids(segmentation_node) if sid not in before]
    new_ids.sort(key=lambda sid: segmentation.GetSegment(sid).GetLabelValue())
    if isinstance(names, Sequence) and not isinstance(names, str):
        names = {label: name for label, name in enumerate(names, start=1)}
    for segment_id in new_ids:
        segment = segmentation.GetSegment(segment_id)
        label = segment.GetLabelValue()
        segment.SetName((names or {}).get(label, f"Label {label}"))
    return new_ids


def export_segments_to_labelmap(
    segmentations_logic, segmentation_node, segment_ids_: Sequence[str], reference_volume_node
) -> np.ndarray:
    """Labelmap (int16, [k, j, i]) on the reference volume's grid: segment n of
    ``segment_ids_`` -> label n (1-based); later segments win where they overlap."""
    scene = segmentation_node.GetScene()
    known = set(segment_ids(segmentation_node))
    unknown = [sid for sid in segment_ids_ if sid not in known]
    if unknown:
        raise SegmentationTransferError(
            f"Segments {unknown} are not in '{segmentation_node.GetName()}'; "
            "they may have been deleted. Pick existing segments."
        )
    result = None
    for label, segment_id in enumerate(segment_ids_, start=1):
        labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "_malenia_export")
        try:
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not segmentations_logic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap_node, reference_volume_node
            ):
                raise SegmentationTransferError(
                    f"Slicer could not export segment '{segment_id}' onto the grid of "
                    f"'{reference_volume_node.GetName()}'."
                )
            mask = array_from_volume_node(labelmap_node) > 0
        finally:
            scene.RemoveNode(labelmap_node)
        if result is None:
            result = np.zeros(mask.shape, np.int16)
        result[mask] = label
    if result is None:
        image = reference_volume_node.GetImageData()
        dims = image.GetDimensions() if image is not None else (0, 0, 0)
        result = np.zeros((dims[2], dims[1], dims[0]), np.int16)
    return result


def export_segment_to_array(
    segmentations_logic, segmentation_node, segment_id: str, reference_volume_node
) -> np.ndarray:
    """Binary mask (uint8, [k, j, i]) of one segment on the reference volume's grid."""
    labelmap = export_segments_to_labelmap(
        segmentations_logic, segmentation_node, [segment_id], reference_volume_node
    )
    return (labelmap > 0).astype(np.uint8)
