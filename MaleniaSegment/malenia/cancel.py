"""One cancel token for the engine, the server and the Slicer module.

Standard library only: the Slicer process imports it without pulling in torch.
"""

from __future__ import annotations

import threading

from malenia.errors import CancelledError


class CancelToken:
    """Set from any thread (the UI, an HTTP request); the engine checks it between window
    batches. ``cancelled`` for polling, ``check()`` to raise ``CancelledError``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError("Cancelled by the user; nothing was changed.")
