"""Volume nodes <-> numpy arrays with geometry, and labelmaps <-> segmentation nodes.

Slicer stores geometry as an IJK-to-RAS matrix; the engine (SimpleITK) as LPS spacing,
origin and direction. Both conversions live here so that there is exactly one place where
a sign or an axis order can go wrong — and it is tested.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras_from_lps(spacing, origin, direction) -> np.ndarray:
    """4x4 IJK-to-RAS from SimpleITK-style (spacing xyz, origin LPS, 3x3 direction LPS)."""
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(np.asarray(spacing, dtype=float))
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(origin, dtype=float)
    return matrix


def lps_from_ijk_to_ras(ijk_to_ras) -> tuple[tuple, tuple, tuple]:
    """Inverse of ijk_to_ras_from_lps: (spacing, origin, flat direction) in LPS."""
    matrix = np.asarray(ijk_to_ras, dtype=float)
    lps = _LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
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


def array_from_volume_node(node) -> np.ndarray:
    """Voxels of a scalar/labelmap volume node as a numpy array indexed [k, j, i] (a copy)."""
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"Volume '{node.GetName()}' has no image data; load a CT first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(
            f"Volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components "
            "(colour/vector image); choose a single-component CT volume."
        )
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(dims[2], dims[1], dims[0]).copy()


def update_volume_node(node, array: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    """Replace the node's voxels (array [k, j, i]) and geometry (4x4 IJK-to-RAS)."""
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
    update_volume_node(node, array, ijk_to_ras)
    node.CreateDefaultDisplayNodes()
    return node


def import_labelmap_to_segmentation(
    segmentations_logic, segmentation_node, labelmap: np.ndarray, ijk_to_ras: np.ndarray
) -> list[str]:
    """Import each non-zero label of ``labelmap`` as a new segment; return the new segment ids.

    A temporary labelmap node carries the geometry and is removed again, so the scene gains
    nothing but the segments.
    """
    scene = segmentation_node.GetScene()
    before = set(segment_ids(segmentation_node))
    temporary = add_volume_node(scene, labelmap.astype(np.int16), ijk_to_ras, "_malenia_tmp", True)
    try:
        if not segmentations_logic.ImportLabelmapToSegmentationNode(temporary, segmentation_node):
            raise RuntimeError("Slicer could not import the labelmap into the segmentation.")
    finally:
        display = temporary.GetDisplayNode()
        if display is not None:
            scene.RemoveNode(display)
        scene.RemoveNode(temporary)
    return [sid for sid in segment_ids(segmentation_node) if sid not in before]


def segment_ids(segmentation_node) -> list[str]:
    """Segment ids of a segmentation node, in order."""
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def export_segment_to_array(
    segmentations_logic, segmentation_node, segment_id: str, reference_volume_node
) -> np.ndarray:
    """Binary mask (uint8, [k, j, i]) of one segment on the reference volume's grid."""
    scene = segmentation_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "_malenia_export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not segmentations_logic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap_node, reference_volume_node
        ):
            raise RuntimeError(f"Slicer could not export segment '{segment_id}'.")
        return (array_from_volume_node(labelmap_node) > 0).astype(np.uint8)
    finally:
        scene.RemoveNode(labelmap_node)
