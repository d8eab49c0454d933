"""SegmentationSession: everything the module does, without Qt, testable headless.

    session = SegmentationSession(logics, client)
    run = session.segment(volume_node, "renal cyst")   # new segments (model's default threshold)
    session.recut(run, 0.7)                                         # only this run's segments
    run = session.find_lesions(volume_node)

The widget splits a run in three so that Slicer stays responsive and MRML is only touched
on the main thread: ``prepare`` (main thread: read the scene), ``run_engine`` (worker thread:
HTTP to the engine process, cancellable) and ``apply`` (main thread: new segments, rolled
back on failure). ``segment`` / ``find_lesions`` chain the three for scripts and tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from malenia.attributes.schema import ATTRIBUTE_KEYS
from malenia.cancel import CancelToken
from malenia.errors import InvalidVolumeError, MaleniaError

from MaleniaSegmentLib import segments, volumes
from MaleniaSegmentLib.engine_client import EngineClient, EngineResult


@dataclass
class Job:
    """What the worker thread needs, read from the scene on the main thread."""

    volume_node: object
    output_node: object | None
    array: object  # numpy [k, j, i]
    ijk_to_ras: object  # numpy 4x4
    roi: tuple | None  # (centre RAS, size mm)
    query: object  # str | dict; None = find all lesions
    threshold: float | None  # None: the model's calibrated default
    volume_key: str
    volume_id: str | None = None  # engine volume already encoded for this key


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

    def status(self) -> str:
        """What the user is told after the run: how many segments for what (or, when none,
        what to try next), the organ the answer was grounded in, and the engine's warning
        when that organ's map was larger than the organ can be (the organ was not found in
        this scan)."""
        result = self.result
        if self.segment_ids:
            text = (
                f"{len(self.segment_ids)} new segment(s) for: {result.query} "
                f"(threshold {result.threshold:.2f})."
            )
        else:  # say what to try, not just "0"
            text = (
                f"No lesion found for: {result.query} at threshold {result.threshold:.2f}. "
                "Move the threshold slider down to look again (no new run), set a Region of "
                "interest around the area, or use Find all lesions."
            )
        if result.extra.get("grounded_in"):
            text += f" Searched the {result.extra['grounded_in']} for any lesion too."
        if result.extra.get("grounding_warning"):
            text += " " + result.extra["grounding_warning"]
        if result.extra.get("not_understood"):
            text += " Not understood (ignored): " + "; ".join(
                f'"{u}"' for u in result.extra["not_understood"]
            )
        return text


def build_query(attributes: dict | None = None, free_text: str = "", preset: str = ""):
    """The engine query from what the user filled in: the attribute rows (canonicalised, so an
    unknown value is refused here with the allowed list), else the free text, else the preset.

    ``specific_features`` may be a list or text separated by commas / semicolons.
    """
    from malenia.attributes import LesionDescription

    values = {}
    for key, value in (attributes or {}).items():
        if key == "specific_features" and isinstance(value, str):
            value = [v.strip() for v in re.split(r"[,;]", value) if v.strip()]
        elif isinstance(value, str):
            value = value.strip()
        if value:
            values[key] = value
    if values:
        description = LesionDescription.from_dict(values).to_dict()
        return {k: v for k, v in description.items() if v not in (None, "", [], ())}
    if free_text.strip():
        return free_text.strip()
    if preset.strip():
        return preset.strip()
    raise MaleniaError(
        "Describe the lesion first: pick a preset, set at least one attribute, or type a "
        "description (or use Find all lesions)."
    )


def attribute_rows(values: dict) -> dict[str, str]:
    """The text of each attribute row for a description (``LesionDescription.to_dict()``):
    the inverse of ``build_query``; several specific features are joined by commas."""
    rows = {}
    for key in ATTRIBUTE_KEYS:
        value = values.get(key) or ""
        rows[key] = ", ".join(value) if isinstance(value, list | tuple) else str(value)
    return rows


def check_node_size(volume_node, budget_bytes: int | None = None) -> None:
    """The node's declared size (dimensions x scalar size) against the memory budget, before
    its voxels are copied and sent to the engine (``malenia.validation.check_header``)."""
    from malenia.validation import VolumeHeader, check_header

    image = volume_node.GetImageData()
    if image is None:
        return  # array_from_volume_node says "no image data"
    spacing = tuple(float(s) for s in volume_node.GetSpacing())
    header = VolumeHeader(
        volume_node.GetName(),
        tuple(int(d) for d in image.GetDimensions()),
        {1: "uint8", 2: "int16", 4: "float32", 8: "float64"}.get(image.GetScalarSize(), "int16"),
        int(image.GetNumberOfScalarComponents()),
        spacing,
        (),
    )
    check_header(header, budget_bytes)


def _engine_forgot(error: Exception) -> bool:
    """The engine no longer knows a volume id (restarted, evicted, failed): upload again."""
    return isinstance(error, KeyError) or getattr(error, "status", None) in (404, 409)


class SegmentationSession:
    def __init__(self, logics, client: EngineClient) -> None:
        """``logics``: any object with segmentations_logic and terminologies_logic
        (Slicer's module logics in the app, the test harness headless)."""
        self.logics = logics
        self.client = client
        self._volume_ids: dict[str, str] = {}  # volume content key -> engine volume id

    # ------------------------------------------------------------------ main thread: read
    @staticmethod
    def volume_input(volume_node):
        """(array [k, j, i], IJK-to-RAS) of a scalar volume node; the engine validates more."""
        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise InvalidVolumeError("Select a CT volume (a scalar volume node) as input.")
        if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InvalidVolumeError(
                f"'{volume_node.GetName()}' is a labelmap, not a CT; select the CT volume."
            )
        check_node_size(volume_node)
        try:
            array = volumes.array_from_volume_node(volume_node)
        except ValueError as error:
            raise InvalidVolumeError(str(error)) from error
        return array, volumes.ijk_to_ras_matrix(volume_node)

    @staticmethod
    def roi_from_node(roi_node):
        """(centre RAS, size mm) of a markups ROI node, or None."""
        if roi_node is None:
            return None
        centre, size = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        roi_node.GetCenter(centre)
        roi_node.GetSize(size)
        if min(size) <= 0:
            raise MaleniaError(
                f"The region of interest '{roi_node.GetName()}' has no volume; resize it or "
                "clear the ROI selector."
            )
        return (tuple(centre), tuple(size))

    def prepare(
        self, volume_node, query, threshold: float | None = None, output_node=None, roi_node=None
    ) -> Job:
        """Validate the inputs and copy what the engine needs out of the scene. ``threshold``
        None: the model's calibrated default, chosen by the engine."""
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise MaleniaError(f"Threshold {threshold} must lie strictly between 0 and 1.")
        if output_node is not None and not output_node.IsA("vtkMRMLSegmentationNode"):
            raise MaleniaError("The output must be a segmentation node (or empty for a new one).")
        if query is not None:
            from malenia.attributes import resolve_query

            resolve_query(query)  # an empty or unknown description: refused before any copy
        array, ijk_to_ras = self.volume_input(volume_node)
        roi = self.roi_from_node(roi_node)
        image = volume_node.GetImageData()
        key = (
            f"{volume_node.GetID()}:{image.GetMTime()}:{image.GetPointData().GetScalars().GetMTime()}"
            f":{ijk_to_ras.round(6).tolist()}:{roi}"
        )
        return Job(
            volume_node,
            output_node,
            array,
            ijk_to_ras,
            roi,
            query,
            None if threshold is None else float(threshold),
            key,
            self._volume_ids.get(key),
        )

    # ------------------------------------------------------------------ worker thread
    def run_engine(
        self, job: Job, progress: Callable | None = None, cancel: CancelToken | None = None
    ) -> tuple[str, EngineResult]:
        """Encode (once per volume content) and query. Touches no MRML node: safe off the
        main thread. A volume id the engine forgot (restart, eviction) is re-uploaded."""
        if job.volume_id is not None:
            try:
                return job.volume_id, self._query(job.volume_id, job)
            except Exception as error:
                if not _engine_forgot(error):
                    raise
                self._volume_ids.pop(job.volume_key, None)
        volume_id = self.client.encode(
            job.array, job.ijk_to_ras, roi=job.roi, progress=progress, cancel=cancel
        )
        self._volume_ids[job.volume_key] = volume_id
        if cancel is not None:
            cancel.check()
        return volume_id, self._query(volume_id, job)

    def _query(self, volume_id: str, job: Job) -> EngineResult:
        if job.query is None:
            return self.client.find_lesions(volume_id, job.threshold)
        return self.client.segment(volume_id, job.query, job.threshold)

    # ------------------------------------------------------------------ main thread: write
    def apply(
        self, job: Job, volume_id: str, result: EngineResult, cancel: CancelToken | None = None
    ) -> Run:
        """New segments from an engine result; on any failure the scene is as before."""
        if cancel is not None:
            cancel.check()
        scene = job.volume_node.GetScene()
        if scene is None or not scene.IsNodePresent(job.volume_node):
            raise MaleniaError("The input volume was removed while the engine ran; nothing added.")
        output = job.output_node
        if output is not None and not scene.IsNodePresent(output):
            raise MaleniaError(
                "The output segmentation was removed while the engine ran; nothing added. "
                "Choose an output (or none for a new one) and run again."
            )
        node, ids, run_id = segments.add_result_segments(
            self.logics, job.volume_node, result, output
        )
        return Run(job.volume_node, node, ids, run_id, volume_id, result, result.lesions)

    # ------------------------------------------------------------------ one call
    def segment(
        self,
        volume_node,
        query,
        threshold: float | None = None,
        output_node=None,
        roi_node=None,
        progress=None,
        cancel: CancelToken | None = None,
    ) -> Run:
        """Segment lesions matching ``query`` (preset name, free text or attribute dict) into
        new segments. On any error (engine, cancel, bad input) the scene is left as it was."""
        if query is None or (isinstance(query, str | dict) and not query):
            raise MaleniaError("Describe the lesion first (or use find_lesions).")
        job = self.prepare(volume_node, query, threshold, output_node, roi_node)
        volume_id, result = self.run_engine(job, progress, cancel)
        return self.apply(job, volume_id, result, cancel)

    def find_lesions(
        self,
        volume_node,
        threshold: float | None = None,
        output_node=None,
        roi_node=None,
        progress=None,
        cancel: CancelToken | None = None,
    ) -> Run:
        """Every lesion the model sees, with predicted attributes and likely category."""
        job = self.prepare(volume_node, None, threshold, output_node, roi_node)
        volume_id, result = self.run_engine(job, progress, cancel)
        return self.apply(job, volume_id, result, cancel)

    def recut(self, run: Run, threshold: float) -> Run:
        """New threshold from the engine's cached probabilities (no network pass); replaces
        only this run's segments, in this run's output node."""
        if not 0.0 < float(threshold) < 1.0:
            raise MaleniaError(f"Threshold {threshold} must lie strictly between 0 and 1.")
        scene = run.volume_node.GetScene()
        if scene is None or not scene.IsNodePresent(run.output_node):
            raise MaleniaError(
                "The output segmentation of that run was removed; click Segment to run again."
            )
        try:
            result = self.client.recut(run.volume_id, run.result.result_id, float(threshold))
        except Exception as error:
            if not _engine_forgot(error):
                raise
            raise MaleniaError(
                "The engine no longer holds this run's probabilities (it was restarted or "
                "freed memory); segments unchanged. Click Segment to run again."
            ) from error
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

    # ------------------------------------------------------------------ results
    @staticmethod
    def lesion_centre_ras(run: Run, segment_id: str) -> tuple[float, float, float]:
        """Centre (RAS) of a result segment, where a table click moves the views."""
        centre = run.output_node.GetSegmentCenterRAS(segment_id)
        if centre is None:
            raise MaleniaError("That segment is empty or was deleted; nothing to centre on.")
        return tuple(float(v) for v in centre)  # type: ignore[return-value]

    @staticmethod
    def results_table(run: Run) -> list[dict]:
        """Rows for the results table (lesion, likely category, volume ml, diameter mm, score),
        read back from the segments' own tags so the table shows what is in the scene."""
        segmentation = run.output_node.GetSegmentation()
        rows = []
        for segment_id in run.segment_ids:
            segment = segmentation.GetSegment(segment_id)
            if segment is None:  # deleted by the user since
                continue
            tag = lambda name, s=segment: segments.tag(s, name) or ""  # noqa: E731
            rows.append({
                "segment_id": segment_id,
                "lesion": segment.GetName(),
                "category": tag("Malenia.Category"),
                "volume_ml": float(tag("Malenia.VolumeMl") or 0),
                "diameter_mm": float(tag("Malenia.DiameterMm") or 0),
                "score": float(tag("Malenia.Score") or 0),
            })  # fmt: skip
        return rows
