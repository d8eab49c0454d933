"""A run's life on the widget's timers, without Qt: start, poll, finish, re-cut, shut down.

The widget owns two Qt timers (a 100 ms poll and a single-shot re-cut) and the labels; this
class owns what they do, so that it runs headless. A run started in the module may finish
after the user left the module (``exit()`` detaches the parameter node): its segments still
land, and nothing writes to the absent parameter node. ``shutdown()`` (the widget's
``cleanup()``) stops both timers, cancels a running job and closes the engine.

    controller = RunController(session, client, poll_timer, recut_timer)
    controller.parameter_node = node          # while the module is shown; None after exit()
    controller.start(volume, query, output, roi, threshold, device)
    update = controller.tick()                # from the poll timer: progress, then the result
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from malenia.cancel import CancelToken

from MaleniaSegmentLib.logic import Run


class Timer(Protocol):
    """What the controller needs of a timer (qt.QTimer has these)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def isActive(self) -> bool: ...  # noqa: N802 - Qt's name


class BackgroundRun:
    """One call of ``work(progress, cancel)`` on a worker thread; the main thread polls it."""

    def __init__(self, work: Callable[[Callable, CancelToken], Any], name: str = "malenia-job"):
        self.cancel_token = CancelToken()
        self._progress: tuple[str, int, int] = ("starting", 0, 1)
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name=name)

    def _report(self, stage: str, done: int, total: int) -> None:
        self._progress = (stage, done, total)

    def _run(self, work) -> None:
        try:
            self._result = work(self._report, self.cancel_token)
        except Exception as error:  # handed to the main thread by outcome()
            self._error = error

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self.cancel_token.cancel()

    @property
    def progress(self) -> tuple[str, int, int]:
        return self._progress

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.finished

    def outcome(self) -> Any:
        """The work's return value, or its exception raised here (main thread)."""
        if not self.finished:
            raise RuntimeError("The job is still running.")
        if self._error is not None:
            raise self._error
        return self._result


@dataclass
class Update:
    """What the widget shows after a poll tick."""

    progress: tuple[str, int, int]
    finished: bool = False
    run: Run | None = None
    message: str = ""


@dataclass(frozen=True)
class Buttons:
    """What the Segment (Cancel while running) and Find-all buttons show: the extension
    template's ``_checkCanApply``, so a user learns what is missing before clicking."""

    segment_text: str
    segment_enabled: bool
    segment_tooltip: str
    find_all_enabled: bool
    find_all_tooltip: str


SEGMENT_TIP = "Segment the lesion the preset, the rows or the text describe (Ctrl+Enter)."
FIND_ALL_TIP = "Find every lesion the model sees in the volume, without a description."


# Slicer's PythonQt keeps the GIL on the main thread while the Qt loop idles, so the worker
# thread runs only while main-thread Python runs. Each poll tick of a running job therefore
# sleeps this long, releasing the GIL: benchmarks/gil_starved_worker.py measured an engine
# status request at 1.4 ms with the GIL free, 282 ms starved, 32 ms with a 5 ms yield and
# 1.4 ms with 20 ms (a 64 MB upload: 0.14 s, 1.9 s, 0.98 s, 0.59 s).
WORKER_YIELD_S = 0.02


class RunController:
    """Segment / Find all / Cancel / re-cut, driven by the widget's timers."""

    def __init__(
        self,
        session,
        client,
        poll_timer: Timer,
        recut_timer: Timer,
        worker_yield_s: float = WORKER_YIELD_S,
    ) -> None:
        """``session``: MaleniaSegmentLib.logic.SegmentationSession; ``client``: the engine
        process client (set_device, set_organ_maps, take_note, close); ``worker_yield_s``: how long each poll
        tick of a running job releases the GIL for the worker (see WORKER_YIELD_S)."""
        self.session, self.client = session, client
        self.worker_yield_s = worker_yield_s
        self.poll_timer, self.recut_timer = poll_timer, recut_timer
        self.parameter_node: Any = None  # the widget's, while the module is shown
        self.job: BackgroundRun | None = None
        self._prepared = None
        self.run: Run | None = None
        # Until the user moves the slider, runs use the model's calibrated threshold; the
        # slider then shows the one used, written without counting as the user's choice.
        self.threshold_chosen = False
        self.showing_threshold = False

    @property
    def busy(self) -> bool:
        return self.job is not None

    def buttons(self, volume) -> Buttons:
        """The buttons' state for the selected input ``volume`` (a volume node or None)."""
        if self.job is not None:
            busy = "A run is in progress; cancel it first."
            return Buttons("Cancel", True, "Stop this run; nothing is changed.", False, busy)
        missing = None
        if volume is None:
            missing = "Select a CT volume as input."
        elif volume.IsA("vtkMRMLLabelMapVolumeNode"):
            missing = f"'{volume.GetName()}' is a labelmap, not a CT: select the CT volume."
        if missing:
            return Buttons("Segment", False, missing, False, missing)
        return Buttons("Segment", True, SEGMENT_TIP, True, FIND_ALL_TIP)

    def start(
        self,
        volume,
        query,
        output=None,
        roi=None,
        threshold=None,
        device="auto",
        organ_maps="model",
    ) -> None:
        """Read the scene now (main thread) and run the engine on a worker; raises on bad
        input before anything starts. ``query`` None: find all lesions."""
        if self.job is not None:
            raise RuntimeError("A run is in progress; cancel it first.")
        self.client.set_organ_maps(organ_maps)
        self.client.set_device(device)
        chosen = threshold if self.threshold_chosen else None
        prepared = self.session.prepare(volume, query, chosen, output, roi)
        job = BackgroundRun(
            lambda progress, cancel: self.session.run_engine(prepared, progress, cancel)
        )
        self.job, self._prepared = job, prepared
        job.start()
        self.poll_timer.start()

    def cancel(self) -> bool:
        """Ask the running job to stop (it ends through tick()); False when none runs."""
        if self.job is None:
            return False
        self.job.cancel()
        return True

    def tick(self) -> Update:
        """The poll timer's work: progress while running; at the end, stop the timer and add
        the segments (main thread), or report why nothing changed."""
        job = self.job
        if job is None:
            self.poll_timer.stop()
            return Update(("idle", 0, 1), finished=True)
        if not job.finished:
            time.sleep(self.worker_yield_s)  # lets the worker run (see WORKER_YIELD_S)
            return Update(job.progress)
        self.poll_timer.stop()
        self.job, prepared = None, self._prepared
        note = self.client.take_note()
        try:
            volume_id, result = job.outcome()
            run = self.session.apply(prepared, volume_id, result, job.cancel_token)
        except Exception as error:  # the scene is as it was
            return Update(job.progress, True, None, f"Nothing changed: {error} {note}".strip())
        self.run = run
        node = self.parameter_node
        if node is not None:  # None after exit(): the run lands, the panel shows it on enter()
            node.outputSegmentation = run.output_node
            self.showing_threshold = True
            try:
                node.threshold = result.threshold
            finally:
                self.showing_threshold = False
        return Update(job.progress, True, run, f"{run.status()} {note}".strip())

    def threshold_changed(self) -> None:
        """The slider moved: the user's threshold from now on; re-cut once it rests."""
        if self.showing_threshold:
            return
        self.threshold_chosen = True
        if self.run is not None and self.job is None:
            self.recut_timer.start()

    def recut(self) -> str | None:
        """The re-cut timer's work: the last run at the parameter node's threshold. None when
        there is nothing to do (no run, a run in progress, module not shown)."""
        node = self.parameter_node
        if self.run is None or self.job is not None or node is None:
            return None
        try:
            self.run = self.session.recut(self.run, node.threshold)
        except Exception as error:
            return f"Re-cut failed, segments unchanged: {error}"
        return f"Re-cut at {node.threshold:.2f}: {len(self.run.segment_ids)} segment(s)."

    def scene_closing(self) -> None:
        """The scene is about to close: its nodes go, so the job and the last run do too."""
        self.recut_timer.stop()
        if self.job is not None:
            self.job.cancel()
        self.run = None

    def shutdown(self) -> None:
        """The widget's cleanup(): no timer may fire into a widget that is going away."""
        self.poll_timer.stop()
        self.recut_timer.stop()
        if self.job is not None:
            self.job.cancel()
        self.parameter_node = None
        self.client.close()
