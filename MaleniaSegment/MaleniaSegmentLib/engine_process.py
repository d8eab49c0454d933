"""The module's engine: a supervised local server process, reached through a stdlib client.

Slicer stays responsive because the model runs in another process; if that process dies,
the next run says so and starts a fresh one.
"""

from __future__ import annotations


class EngineProcessClient:
    """EngineClient over HTTP to a server started and restarted on demand."""

    def __init__(self, device: str = "auto", python: str | None = None) -> None:
        from malenia.client import EngineProcess

        self.process = EngineProcess(device=device, python=python)
        self.restarted_note = ""

    def _client(self):
        from malenia.client import EngineHTTPClient

        if not self.process.alive():
            self.restarted_note = (
                "The engine process was not running (or had died); started a new one."
                if self.process.started_once
                else ""
            )
            self.process.start()
        return EngineHTTPClient(self.process.url, self.process.token)

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None) -> str:
        return self._client().encode(array, ijk_to_ras, roi=roi, progress=progress, cancel=cancel)

    def segment(self, volume_id, query, threshold):
        return self._client().segment(volume_id, query, threshold)

    def recut(self, volume_id, result_id, threshold):
        return self._client().recut(volume_id, result_id, threshold)

    def find_lesions(self, volume_id, threshold):
        return self._client().find_lesions(volume_id, threshold)

    def stop(self) -> None:
        self.process.stop()
