"""The headless Slicer harness: real MRML volume and segmentation round trips."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from MaleniaSegmentLib import terminology, volumes  # noqa: E402

SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-120.0, 95.5, -310.25)


def oblique_direction() -> np.ndarray:
    """A proper rotation (20 degrees about z, then 10 about x) in LPS."""
    a, b = np.radians(20.0), np.radians(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.fixture
def oblique_volume(slicer_scene):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(12, 20, 16)).astype(np.int16)  # [k, j, i]
    ijk_to_ras = volumes.ijk_to_ras_from_lps(SPACING, ORIGIN, oblique_direction())
    node = volumes.add_volume_node(slicer_scene.scene, array, ijk_to_ras, "CT")
    return node, array, ijk_to_ras


def test_volume_node_keeps_voxels_and_oblique_geometry(oblique_volume):
    node, array, ijk_to_ras = oblique_volume
    assert np.array_equal(volumes.array_from_volume_node(node), array)
    assert np.allclose(volumes.ijk_to_ras_matrix(node), ijk_to_ras)
    assert np.allclose(node.GetSpacing(), SPACING)
    spacing, origin, direction = volumes.lps_from_ijk_to_ras(volumes.ijk_to_ras_matrix(node))
    assert np.allclose(spacing, SPACING)
    assert np.allclose(origin, ORIGIN)
    assert np.allclose(np.reshape(direction, (3, 3)), oblique_direction())


def test_lps_to_ras_convention_matches_simpleitk():
    """A voxel's RAS position equals SimpleITK's LPS physical point with x, y negated."""
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.Image(16, 20, 12, sitk.sitkInt16)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(oblique_direction().ravel()))
    matrix = volumes.ijk_to_ras_from_lps(SPACING, ORIGIN, oblique_direction())
    for ijk in [(0, 0, 0), (15, 19, 11), (3, 7, 5)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = matrix @ np.array([*ijk, 1.0])
        assert np.allclose(ras[:3], lps * [-1, -1, 1])


def _labelmap(shape) -> np.ndarray:
    labelmap = np.zeros(shape, dtype=np.int16)
    labelmap[2:6, 3:9, 4:10] = 1
    labelmap[7:10, 12:17, 2:6] = 2
    return labelmap


def test_labelmap_import_lands_on_same_ras_and_exports_identically(slicer_scene, oblique_volume):
    node, _, ijk_to_ras = oblique_volume
    labelmap = _labelmap(volumes.array_from_volume_node(node).shape)
    segmentation = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Lesions")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    segmentation.CreateDefaultDisplayNodes()
    nodes_before = slicer_scene.scene.GetNumberOfNodes()
    new_ids = volumes.import_labelmap_to_segmentation(
        slicer_scene.segmentations_logic, segmentation, labelmap, ijk_to_ras
    )
    assert len(new_ids) == 2
    assert slicer_scene.scene.GetNumberOfNodes() == nodes_before  # temporary node removed

    for label, segment_id in enumerate(new_ids, start=1):
        # Same RAS position: the segment's own oriented image maps its voxels to world (RAS)
        # exactly where the input volume's voxels of that label are.
        oriented = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)
        import vtk

        image_to_world = vtk.vtkMatrix4x4()
        oriented.GetImageToWorldMatrix(image_to_world)
        k, j, i = np.argwhere(labelmap == label)[0]
        expected_ras = ijk_to_ras @ np.array([i, j, k, 1.0])
        world_to_image = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(image_to_world, world_to_image)
        seg_ijk = np.array(world_to_image.MultiplyPoint(list(expected_ras)))[:3]
        assert np.allclose(seg_ijk, np.round(seg_ijk), atol=1e-3)
        extent = oriented.GetExtent()
        ii, jj, kk = np.round(seg_ijk).astype(int)
        assert extent[0] <= ii <= extent[1] and extent[2] <= jj <= extent[3]
        assert oriented.GetScalarComponentAsDouble(ii, jj, kk, 0) > 0

        exported = volumes.export_segment_to_array(
            slicer_scene.segmentations_logic, segmentation, segment_id, node
        )
        assert np.array_equal(exported, (labelmap == label).astype(np.uint8))


def test_seg_nrrd_round_trip_keeps_names_colours_extents_tags(
    slicer_scene, oblique_volume, tmp_path
):
    slicerio = pytest.importorskip("slicerio")
    import slicer

    node, _, ijk_to_ras = oblique_volume
    labelmap = _labelmap(volumes.array_from_volume_node(node).shape)
    segmentation_node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Lesions")
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(node)
    ids = volumes.import_labelmap_to_segmentation(
        slicer_scene.segmentations_logic, segmentation_node, labelmap, ijk_to_ras
    )
    names = ["Renal cyst 1", "Renal cell carcinoma 1"]
    categories = ["renal cyst", "renal cell carcinoma"]
    locations = ["left kidney", "right kidney"]
    entries = []
    for segment_id, name, category, location in zip(ids, names, categories, locations, strict=True):
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        segment.SetName(name)
        segment.SetColor(*terminology.category_color(category))
        segment.SetTag("Malenia.Category", category)
        entry = terminology.terminology_entry(slicer_scene.terminologies_logic, category, location)
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
        entries.append(entry)

    path = tmp_path / "lesions.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    slicer_scene.scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation_node)

    read = slicerio.read_segmentation(str(path))
    by_name = {segment["name"]: segment for segment in read["segments"]}
    assert set(by_name) == set(names)
    for name, category in zip(names, categories, strict=True):
        segment = by_name[name]
        assert np.allclose(segment["color"], terminology.category_color(category), atol=1e-3)
        assert segment["tags"]["Malenia.Category"] == category
    # The extent of each segment covers exactly its voxels in the saved (shared) labelmap.
    voxels = read["voxels"]
    for name, label in zip(names, (1, 2), strict=True):
        segment = by_name[name]
        assert np.count_nonzero(voxels == segment["labelValue"]) == np.count_nonzero(
            labelmap == label
        )

    # MRML reads its own file back: same names and the terminology entry with our codes.
    reread = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Reread")
    storage2 = slicer.vtkMRMLSegmentationStorageNode()
    slicer_scene.scene.AddNode(storage2)
    storage2.SetFileName(str(path))
    assert storage2.ReadData(reread)
    segmentation = reread.GetSegmentation()
    read_names = [
        segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
    ]
    assert sorted(read_names) == sorted(names)
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        entry = _tag(segment, segment.GetTerminologyEntryTagName())
        assert entry in entries
    cyst = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Renal cyst 1"))
    cyst_entry = _tag(cyst, cyst.GetTerminologyEntryTagName())
    assert "49755003" in cyst_entry and "367643001" in cyst_entry  # altered structure / cyst
    assert "64033007" in cyst_entry and "7771000" in cyst_entry  # kidney / left


def _tag(segment, name: str) -> str:
    import vtk

    value = vtk.reference("")
    assert segment.GetTag(name, value), f"segment has no tag {name}"
    return str(value)


def test_terminology_entry_unknown_category_and_location(slicer_scene):
    entry = terminology.terminology_entry(slicer_scene.terminologies_logic, "sarcoma", "thigh")
    assert "52988006" in entry  # generic "lesion" type, never a guessed specific kind
    assert "64033007" not in entry
    entry = terminology.terminology_entry(
        slicer_scene.terminologies_logic, "pancreatic cancer", "pancreatic head"
    )
    assert "68453008" in entry and "64163001" in entry
