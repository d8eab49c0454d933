"""Encoded volumes and the encode queue.

One worker thread per device encodes uploads in order; a bounded wait list makes a busy
server say so (503) instead of piling up memory. Cancelling a queued volume takes it off the
list at once; cancelling the running one stops the engine between windows. Finished volumes
live in an LRU cache bounded by a memory budget: the least recently used are dropped first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from malenia.errors import CancelledError, MaleniaError
from malenia.server.backend import CancelToken, EngineBackend, encoded_nbytes, result_nbytes

FINISHED = ("ready", "failed", "cancelled")


class QueueFull(Exception):
    """The wait list is full; the client should retry later."""


@dataclass
class VolumeEntry:
    volume_id: str
    volume: object | None  # CTVolume until encoded
    roi: object = None
    state: str = "queued"  # queued | encoding | ready | failed | cancelled
    stage: str = ""
    progress: tuple[int, int] = (0, 0)
    error: str = ""
    encoded: object = None
    cancel: CancelToken = field(default_factory=CancelToken)
    results: OrderedDict = field(default_factory=OrderedDict)
    result_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: float = field(default_factory=time.time)
    encode_seconds: float = 0.0
    nbytes: int = 0

    def measure(self) -> int:
        """Bytes this entry holds now (volume waiting, or features plus kept results)."""
        if self.encoded is not None:
            total = encoded_nbytes(self.encoded)
            total += sum(result_nbytes(r) for r in list(self.results.values()))
        elif self.volume is not None:
            total = int(self.volume.array.nbytes)
        else:
            total = 0
        self.nbytes = total
        return total

    def status(self) -> dict:
        return {
            "volume_id": self.volume_id,
            "state": self.state,
            "stage": self.stage,
            "progress": list(self.progress),
            "error": self.error,
            "encode_seconds": round(self.encode_seconds, 3),
            "memory_bytes": self.nbytes,
        }


class VolumeStore:
    """Uploaded volumes by id: the wait list, the worker and the LRU cache."""

    def __init__(
        self,
        backend: EngineBackend,
        queue_size: int = 8,
        memory_budget_bytes: int = 3 << 30,
        max_results_per_volume: int = 16,
        max_entries: int = 256,
    ) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self.memory_budget = memory_budget_bytes
        self.max_results = max_results_per_volume
        self.max_entries = max_entries
        self.entries: OrderedDict[str, VolumeEntry] = OrderedDict()
        self.pending: deque[VolumeEntry] = deque()
        self.current: VolumeEntry | None = None
        self.evicted = 0
        self.condition = threading.Condition()
        self.worker = threading.Thread(target=self._work, daemon=True, name="malenia-encoder")
        self.worker.start()

    # ------------------------------------------------------------------ requests
    def submit(self, volume, roi=None) -> VolumeEntry:
        entry = VolumeEntry(uuid.uuid4().hex, volume, roi)
        entry.measure()
        with self.condition:
            if len(self.pending) >= self.queue_size:
                raise QueueFull
            self.entries[entry.volume_id] = entry
            self.pending.append(entry)
            self.condition.notify()
        return entry

    def get(self, volume_id: str) -> VolumeEntry | None:
        """The entry, marked most recently used."""
        with self.condition:
            entry = self.entries.get(volume_id)
            if entry is not None:
                self.entries.move_to_end(volume_id)
            return entry

    def cancel(self, volume_id: str) -> VolumeEntry | None:
        with self.condition:
            entry = self.entries.get(volume_id)
            if entry is None:
                return None
            if entry.state == "queued":
                self.pending.remove(entry)
                self._finish(entry, "cancelled", "Cancelled by the user before encoding started.")
            elif entry.state == "encoding":
                entry.cancel.cancel()
                entry.stage = "cancelling"
        return entry

    def delete(self, volume_id: str) -> bool:
        with self.condition:
            entry = self.entries.pop(volume_id, None)
            if entry is None:
                return False
            if entry.state == "queued":
                self.pending.remove(entry)
            entry.cancel.cancel()
            entry.encoded = entry.volume = None
            entry.results.clear()
        return True

    def keep_result(self, entry: VolumeEntry, result) -> str:
        """Remember a result for re-cuts (a few per volume), then re-check the budget."""
        with self.condition:
            entry.result_count += 1
            result_id = f"r{entry.result_count}"
            entry.results[result_id] = result
            while len(entry.results) > self.max_results:
                entry.results.popitem(last=False)
        self.enforce_budget(keep=entry.volume_id)
        return result_id

    def stats(self) -> dict:
        with self.condition:
            states: dict[str, int] = {}
            for entry in self.entries.values():
                states[entry.state] = states.get(entry.state, 0) + 1
            return {
                "waiting": len(self.pending),
                "queue_size": self.queue_size,
                "encoding": self.current.volume_id if self.current else None,
                "volumes": states,
                "cache_bytes": sum(e.nbytes for e in self.entries.values()),
                "memory_budget_bytes": self.memory_budget,
                "evicted": self.evicted,
            }

    # ------------------------------------------------------------------ worker
    def _next(self) -> VolumeEntry:
        with self.condition:
            while not self.pending:
                self.condition.wait()
            entry = self.pending.popleft()
            entry.state, entry.stage = "encoding", "preparing"
            self.current = entry
            return entry

    def _work(self) -> None:
        while True:
            entry = self._next()

            def progress(stage: str, done: int, total: int, entry=entry) -> None:
                entry.stage, entry.progress = stage, (done, total)

            start = time.perf_counter()
            try:
                encoded = self.backend.encode(entry.volume, entry.roi, progress, entry.cancel)
                with self.condition:
                    entry.encoded, entry.volume = encoded, None
                    self._finish(entry, "ready")
            except CancelledError:
                with self.condition:
                    self._finish(entry, "cancelled", "Cancelled by the user; nothing was kept.")
            except MaleniaError as error:
                with self.condition:
                    self._finish(entry, "failed", str(error))
            except Exception as error:  # reported to the client; the worker keeps serving
                with self.condition:
                    self._finish(entry, "failed", f"{type(error).__name__}: {error}")
            finally:
                entry.encode_seconds = time.perf_counter() - start
                with self.condition:
                    self.current = None
            self.enforce_budget(keep=entry.volume_id)

    def _finish(self, entry: VolumeEntry, state: str, error: str = "") -> None:
        entry.state, entry.error = state, error
        entry.stage = "done" if state == "ready" else state
        if state != "ready":
            entry.volume = entry.encoded = None
        entry.measure()

    # ------------------------------------------------------------------ LRU cache
    def enforce_budget(self, keep: str | None = None) -> None:
        """Drop least recently used finished volumes until the cache fits the budget (the
        volume just used stays, even alone above the budget)."""
        with self.condition:
            total = sum(e.measure() for e in self.entries.values())
            for volume_id in list(self.entries):
                over_budget = total > self.memory_budget
                too_many = len(self.entries) > self.max_entries
                if not (over_budget or too_many):
                    break
                entry = self.entries[volume_id]
                if volume_id == keep or entry.state not in FINISHED:
                    continue
                if not too_many and entry.nbytes == 0:
                    continue  # a failed/cancelled record costs nothing; keep its message
                total -= entry.nbytes
                del self.entries[volume_id]
                entry.encoded = None
                entry.results.clear()
                self.evicted += 1
