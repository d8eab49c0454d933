"""MaleniaSegmentLogic: everything the module does, without Qt, testable headless.

logic = MaleniaSegmentLogic(logics, client)
run = logic.segment(volume_node, "renal cyst", threshold=0.5)      # new segments
logic.recut(run, 0.7)                                              # only this run's segments
run = logic.find_lesions(volume_node)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from MaleniaSegmentLib import segments, volumes
from MaleniaSegmentLib.engine_client import EngineClient, EngineResult


@dataclass
class Run:
    """One segmentation run: where its segments are and how to re-cut them."""

    volume_node: object
    output_node: object
    segment_ids: list[str]
    run_id: str
    volume_id: str
    result: EngineResult
    lesions: list[dict] = field(default_factory=list)


class MaleniaSegmentLogic:
    def __init__(self, logics, client: EngineClient) -> None:
        """``logics``: any object with segmentations_logic and terminologies_logic
        (Slicer's module logics in the app, the test harness headless)."""
        self.logics = logics
        self.client = client
        self._encoded: dict[str, str] = {}  # volume node id + modified time -> engine volume id

    def volume_input(self, volume_node):
        """(array [k, j, i], IJK-to-RAS) of a scalar volume node, validated by the engine."""
        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError("Select a CT volume (a scalar volume node) as input.")
        return volumes.array_from_volume_node(volume_node), volumes.ijk_to_ras_matrix(volume_node)

    def encode(self, volume_node, roi=None, progress=None, cancel=None) -> str:
        key = f"{volume_node.GetID()}:{volume_node.GetMTime()}:{volume_node.GetImageData().GetMTime()}:{roi}"
        if key not in self._encoded:
            array, ijk_to_ras = self.volume_input(volume_node)
            self._encoded[key] = self.client.encode(
                array, ijk_to_ras, roi=roi, progress=progress, cancel=cancel
            )
        return self._encoded[key]

    @staticmethod
    def roi_from_node(roi_node):
        """(centre RAS, size mm) of a markups ROI node, or None."""
        if roi_node is None:
            return None
        centre, size = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        roi_node.GetCenter(centre)
        roi_node.GetSize(size)
        return (tuple(centre), tuple(size))

    def segment(
        self,
        volume_node,
        query,
        threshold: float = 0.5,
        output_node=None,
        roi_node=None,
        progress=None,
        cancel=None,
    ) -> Run:
        """Segment lesions matching ``query`` into new segments. On any error (engine,
        cancel, bad input) the scene is left exactly as it was."""
        volume_id = self.encode(volume_node, self.roi_from_node(roi_node), progress, cancel)
        result = self.client.segment(volume_id, query, threshold)
        return self._add(volume_node, result, output_node, volume_id)

    def find_lesions(
        self,
        volume_node,
        threshold: float = 0.5,
        output_node=None,
        roi_node=None,
        progress=None,
        cancel=None,
    ) -> Run:
        volume_id = self.encode(volume_node, self.roi_from_node(roi_node), progress, cancel)
        result = self.client.find_lesions(volume_id, threshold)
        return self._add(volume_node, result, output_node, volume_id)

    # The widget splits a run in two: engine work in a worker thread (HTTP only), scene
    # changes back on the main thread (MRML is not thread-safe).
    def engine_job(
        self, array, ijk_to_ras, query, threshold: float, roi=None, progress=None, cancel=None
    ) -> tuple[str, EngineResult]:
        """Worker-thread part: encode (cached by the engine) and query. ``query`` None = find all."""
        volume_id = self.client.encode(array, ijk_to_ras, roi=roi, progress=progress, cancel=cancel)
        result = (
            self.client.find_lesions(volume_id, threshold)
            if query is None
            else self.client.segment(volume_id, query, threshold)
        )
        return volume_id, result

    def apply_result(
        self, volume_node, volume_id: str, result: EngineResult, output_node=None
    ) -> Run:
        """Main-thread part: new segments from an engine result (rolled back on failure)."""
        return self._add(volume_node, result, output_node, volume_id)

    def recut(self, run: Run, threshold: float) -> Run:
        """New threshold from the cached probabilities; replaces only this run's segments."""
        result = self.client.recut(run.volume_id, run.result.result_id, threshold)
        new_ids = segments.replace_run_segments(
            self.logics, run.volume_node, result, run.output_node, run.run_id
        )
        return Run(
            run.volume_node,
            run.output_node,
            new_ids,
            run.run_id,
            run.volume_id,
            result,
            result.lesions,
        )

    def _add(self, volume_node, result: EngineResult, output_node, volume_id: str) -> Run:
        node, ids, run_id = segments.add_result_segments(
            self.logics, volume_node, result, output_node
        )
        return Run(volume_node, node, ids, run_id, volume_id, result, result.lesions)

    @staticmethod
    def results_table(run: Run) -> list[dict]:
        """Rows for the results table (lesion, likely category, volume ml, diameter mm, score),
        read back from the segments' own tags so the table shows what is in the scene."""
        segmentation = run.output_node.GetSegmentation()
        rows = []
        for segment_id in run.segment_ids:
            segment = segmentation.GetSegment(segment_id)
            tag = lambda name, s=segment: segments._tag(s, name) or ""  # noqa: E731
            rows.append({
                "segment_id": segment_id,
                "lesion": segment.GetName(),
                "category": tag("Malenia.Category"),
                "volume_ml": float(tag("Malenia.VolumeMl") or 0),
                "diameter_mm": float(tag("Malenia.DiameterMm") or 0),
                "score": float(tag("Malenia.Score") or 0),
            })  # fmt: skip
        return rows
