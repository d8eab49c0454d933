"""Encoded volumes and the encode queue: one worker per device, an LRU cache bounded by a
memory budget, cancellation that frees the slot."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from malenia.errors import CancelledError, MaleniaError
from malenia.inference import CancelToken


class QueueFull(Exception):
    pass


@dataclass
class VolumeEntry:
    volume_id: str
    volume: object  # CTVolume
    roi: object = None
    state: str = "queued"  # queued | encoding | ready | failed | cancelled
    progress: tuple[int, int] = (0, 0)
    error: str = ""
    encoded: object = None
    cancel: CancelToken = field(default_factory=CancelToken)
    results: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: float = field(default_factory=time.time)

    def memory_bytes(self) -> int:
        if self.encoded is None:
            return int(self.volume.array.nbytes)
        windows = sum(w.f4.numel() * 2 + w.weight.numel() * 4 for w in self.encoded.windows)
        return int(
            windows
            + self.encoded._norm.nbytes
            + sum(p.nbytes for p in self.encoded._probabilities.values())
        )

    def status(self) -> dict:
        return {
            "volume_id": self.volume_id,
            "state": self.state,
            "progress": list(self.progress),
            "error": self.error,
        }


class VolumeStore:
    def __init__(self, engine, queue_size: int = 8, memory_budget_bytes: int = 3 << 30) -> None:
        self.engine = engine
        self.memory_budget = memory_budget_bytes
        self.entries: OrderedDict[str, VolumeEntry] = OrderedDict()
        self.lock = threading.Lock()
        self.queue: queue.Queue[VolumeEntry] = queue.Queue(maxsize=queue_size)
        self.worker = threading.Thread(target=self._work, daemon=True, name="malenia-encoder")
        self.worker.start()

    def submit(self, volume, roi=None) -> VolumeEntry:
        entry = VolumeEntry(uuid.uuid4().hex, volume, roi)
        try:
            self.queue.put_nowait(entry)
        except queue.Full as error:
            raise QueueFull from error
        with self.lock:
            self.entries[entry.volume_id] = entry
        return entry

    def get(self, volume_id: str) -> VolumeEntry | None:
        with self.lock:
            entry = self.entries.get(volume_id)
            if entry is not None:
                self.entries.move_to_end(volume_id)
            return entry

    def delete(self, volume_id: str) -> bool:
        with self.lock:
            entry = self.entries.pop(volume_id, None)
        if entry is not None:
            entry.cancel.cancel()
        return entry is not None

    def cancel(self, volume_id: str) -> VolumeEntry | None:
        entry = self.get(volume_id)
        if entry is not None and entry.state in ("queued", "encoding"):
            entry.cancel.cancel()
            if entry.state == "queued":
                entry.state = "cancelled"
        return entry

    def _work(self) -> None:
        while True:
            entry = self.queue.get()
            if entry.cancel.cancelled:
                entry.state = "cancelled"
                continue
            entry.state = "encoding"

            def progress(stage, done, total, entry=entry):
                entry.progress = (done, total)

            try:
                entry.encoded = self.engine.encode(
                    entry.volume, roi=entry.roi, progress=progress, cancel=entry.cancel
                )
                entry.volume = None  # the encoded features are all queries need
                entry.state = "ready"
            except CancelledError:
                entry.state = "cancelled"
            except MaleniaError as error:
                entry.state, entry.error = "failed", str(error)
            except Exception as error:  # reported to the client, the worker keeps serving
                entry.state, entry.error = "failed", f"{type(error).__name__}: {error}"
            self._evict()

    def _evict(self) -> None:
        """Drop least recently used volumes until the cache fits the memory budget."""
        with self.lock:
            total = sum(
                e.memory_bytes()
                for e in self.entries.values()
                if e.volume is not None or e.encoded is not None
            )
            for volume_id in list(self.entries):
                if total <= self.memory_budget or len(self.entries) <= 1:
                    break
                entry = self.entries[volume_id]
                if entry.state in ("ready", "failed", "cancelled"):
                    total -= entry.memory_bytes()
                    del self.entries[volume_id]
        # The engine keeps its own small cache too; the store is the source of truth here.
        self.engine._cache.clear()
