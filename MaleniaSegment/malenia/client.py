"""A client for the engine server using only the standard library (numpy when decoding
masks), so Slicer's Python can use it without torch; and a supervisor for the server process.

    process = EngineProcess(weights=None, device="auto"); process.start()
    client = EngineHTTPClient(process.url, process.token)
    volume_id = client.encode(array, ijk_to_ras)            # uploads, waits, reports progress
    result = client.segment(volume_id, "renal cyst", 0.5)   # .labelmap (numpy), .lesions
    process.stop()                                          # whole process tree
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from malenia.errors import CancelledError, EngineUnavailableError, MaleniaError


@dataclass
class ClientResult:
    labelmap: object  # numpy int16 [k, j, i] on the input grid
    lesions: list[dict]
    query: str
    threshold: float
    model_id: str
    result_id: str
    description: dict | None = None
    extra: dict = field(default_factory=dict)


class EngineHTTPClient:
    def __init__(self, url: str, token: str, timeout: float = 600.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> dict:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read()).get("detail", "")
            except ValueError:
                detail = error.reason
            raise MaleniaError(f"engine refused the request ({error.code}): {detail}") from error
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            raise EngineUnavailableError(
                f"The engine process is not reachable ({error}). It will be restarted on the next run."
            ) from error

    def _json(self, method: str, path: str, payload: dict | None = None) -> dict:
        return self._request(
            method, path, json.dumps(payload or {}).encode(), {"Content-Type": "application/json"}
        )

    def info(self) -> dict:
        return self._request("GET", "/v1/info")

    def _check_size(self, size: int) -> None:
        """Refuse early what the server would refuse (it closes the socket mid-upload)."""
        if not hasattr(self, "_max_upload"):
            self._max_upload = int(self.info().get("max_upload_bytes", 0)) or None
        if self._max_upload and size > self._max_upload:
            raise MaleniaError(
                f"The volume is {size / 2**20:.0f} MB, above the engine's upload limit of {self._max_upload / 2**20:.0f} MB: crop it to a region of interest or restart the server with a larger --max-upload-mb."
            )

    def upload(self, array, ijk_to_ras, roi=None) -> str:
        import numpy as np

        array = np.ascontiguousarray(array)
        self._check_size(array.nbytes)
        headers = {
            "Content-Type": "application/x-malenia-array",
            "X-Shape": ",".join(str(n) for n in array.shape),
            "X-Dtype": array.dtype.str,
            "X-Ijk-To-Ras": json.dumps(np.asarray(ijk_to_ras, float).ravel().tolist()),
        }
        if roi is not None:
            headers["X-Roi"] = json.dumps([list(roi[0]), list(roi[1])])
        return self._request("POST", "/v1/volumes", array.tobytes(), headers)["volume_id"]

    def upload_file(self, path: str | Path) -> str:
        path = Path(path)
        self._check_size(path.stat().st_size)
        kind = "nrrd" if path.suffix == ".nrrd" else "mha" if path.suffix == ".mha" else "nifti"
        return self._request(
            "POST",
            "/v1/volumes",
            path.read_bytes(),
            {"Content-Type": "application/octet-stream", "X-Format": kind},
        )["volume_id"]

    def status(self, volume_id: str) -> dict:
        return self._request("GET", f"/v1/volumes/{volume_id}")

    def wait(self, volume_id: str, progress=None, cancel=None, poll: float = 0.2) -> None:
        while True:
            if cancel is not None and getattr(cancel, "cancelled", False):
                self._json("POST", f"/v1/volumes/{volume_id}/cancel")
                raise CancelledError("Cancelled by the user; nothing was changed.")
            state = self.status(volume_id)
            if progress and state["progress"][1]:
                progress("encoding", *state["progress"])
            if state["state"] == "ready":
                return
            if state["state"] in ("failed", "cancelled"):
                raise (CancelledError if state["state"] == "cancelled" else MaleniaError)(
                    state["error"] or f"encoding {state['state']}"
                )
            time.sleep(poll)

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None) -> str:
        volume_id = self.upload(array, ijk_to_ras, roi)
        self.wait(volume_id, progress, cancel)
        return volume_id

    @staticmethod
    def _result(payload: dict) -> ClientResult:
        import numpy as np

        mask = np.frombuffer(
            zlib.decompress(base64.b64decode(payload["mask_zlib_b64"])), dtype=payload["dtype"]
        ).reshape(payload["shape"])
        return ClientResult(
            mask.copy(),
            payload["lesions"],
            payload["query"],
            payload["threshold"],
            payload["model"],
            payload["result_id"],
            payload.get("description"),
        )

    def segment(self, volume_id: str, query, threshold: float = 0.5) -> ClientResult:
        return self._result(
            self._json(
                "POST", f"/v1/volumes/{volume_id}/segment", {"query": query, "threshold": threshold}
            )
        )

    def recut(self, volume_id: str, result_id: str, threshold: float) -> ClientResult:
        return self._result(
            self._json(
                "POST",
                f"/v1/volumes/{volume_id}/recut",
                {"result_id": result_id, "threshold": threshold},
            )
        )

    def find_lesions(self, volume_id: str, threshold: float = 0.5) -> ClientResult:
        return self._result(
            self._json("POST", f"/v1/volumes/{volume_id}/find", {"threshold": threshold})
        )

    def delete(self, volume_id: str) -> None:
        self._request("DELETE", f"/v1/volumes/{volume_id}")


class EngineProcess:
    """Start `malenia serve` as a child process, wait until healthy, restart, stop."""

    def __init__(
        self,
        weights: str | None = None,
        device: str = "auto",
        python: str | None = None,
        extra_args: list[str] | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        self.weights, self.device, self.python = weights, device, python or sys.executable
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.folder = Path(tempfile.mkdtemp(prefix="malenia-engine-"))
        os.chmod(self.folder, 0o700)
        self.token_file = self.folder / "server.json"
        self.popen: subprocess.Popen | None = None
        self.url = self.token = ""
        self.started_once = False
        atexit.register(self.stop)

    def start(self) -> None:
        self.stop()
        self.token_file.unlink(missing_ok=True)
        command = [
            self.python,
            "-m",
            "malenia.server",
            "--token-file",
            str(self.token_file),
            "--device",
            self.device,
            *self.extra_args,
        ]
        if self.weights:
            command += ["--weights", str(self.weights)]
        self.log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - kept open for the child
        self.popen = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.popen.poll() is not None:
                tail = (self.folder / "server.log").read_text(errors="replace")[-800:]
                raise EngineUnavailableError(f"The engine process exited during start-up:\n{tail}")
            if self.token_file.exists():
                try:
                    info = json.loads(self.token_file.read_text())
                    self.url, self.token = info["url"], info["token"]
                    if self.healthy():
                        self.started_once = True
                        return
                except (ValueError, KeyError):
                    pass
            time.sleep(0.2)
        self.stop()
        raise EngineUnavailableError(
            f"The engine did not start within {self.startup_timeout:.0f} s; see {self.folder / 'server.log'}."
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None and self.healthy()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def stop(self) -> None:
        """Terminate the server's whole process group, then make sure it is gone."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self.popen = None
        if getattr(self, "log", None):
            self.log.close()
