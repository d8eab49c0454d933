"""Talk to the engine server with the standard library only (no torch; numpy is used when it
is importable, e.g. in Slicer), and run that server as a supervised child process.

Importing this module imports neither torch nor numpy nor the engine, so Slicer's Python can
use it before the heavy dependencies are installed.

Engine process (one per Slicer session)::

    process = EngineProcess(weights=None, device="auto")   # bundled weights by default
    process.start()              # `python -m malenia.server`, waits until /v1/health answers
    process.ensure()             # before each job: restarts it if it died (True if it did)
    client = process.client()    # EngineHTTPClient(process.url, process.token)
    process.stop()               # SIGTERM (then SIGKILL) to its whole process group
    process.close()              # stop + remove its private folder (also at interpreter exit)

The server is told to exit by itself when this process dies (`--exit-with-parent`), so a
crashed Slicer leaves no engine behind.

Client (all methods raise `MaleniaError` subclasses with a readable message)::

    client = EngineHTTPClient(url, token)        # or EngineHTTPClient.from_token_file(path)
    client.health() -> dict;  client.info() -> dict (model card, vocabulary, presets, queue)
    volume_id = client.encode(array, ijk_to_ras, roi=None, progress=cb, cancel=token)
        # = upload(...) + wait(...); array [k, j, i] numpy, ijk_to_ras Slicer's 4x4 matrix;
        # progress(stage, done, total); cancel: anything with a truthy `.cancelled`
    volume_id = client.upload(array, ijk_to_ras)            # returns at once (202)
    volume_id = client.upload(array, spacing=(sx, sy, sz), origin=(...), direction=(9 values))
    volume_id = client.upload_raw(data_bytes, shape, dtype, spacing=..., origin=...)  # no numpy
    volume_id = client.upload_file("ct.nii.gz")            # NIfTI / NRRD / MHA bytes
    client.status(volume_id) -> {"state": queued|encoding|ready|failed|cancelled, "progress"...}
    client.wait(volume_id, progress=None, cancel=None)
    result = client.segment(volume_id, "renal cyst" | free text | {attribute: value}, 0.5)
    result = client.recut(volume_id, result.result_id, 0.7)   # new threshold, no network pass
    result = client.find_lesions(volume_id, 0.5)
    client.cancel(volume_id);  client.delete(volume_id)

`ClientResult.labelmap` is an int16 numpy array [k, j, i] on the uploaded grid (None when numpy
is missing; `mask_bytes`, `shape`, `dtype` always hold the raw labelmap). `lesions` is the
server's lesion report (name, category ranking, score, volume_ml, diameter_mm, ...).

Errors: `EngineUnavailableError` (server not reachable / died mid-job: ensure() and retry),
`EngineBusyError` (503 for longer than `busy_wait_s`), `CancelledError`, `MaleniaError`
(anything the server refused, with its message and HTTP status in `.status`).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import json
import os
import secrets
import shutil
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

API = "/v1"
ARRAY_CONTENT_TYPE = "application/x-malenia-array"


class EngineRequestError(MaleniaError):
    """The server answered with an error; `.status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EngineBusyError(EngineRequestError):
    """The encode queue stayed full (503) for longer than the client was willing to wait."""

    retry_after: float = 5.0


@dataclass
class ClientResult:
    labelmap: object  # numpy int16 [k, j, i] on the input grid; None without numpy
    lesions: list[dict]
    query: str
    threshold: float
    model_id: str
    result_id: str
    description: dict | None = None
    extra: dict = field(default_factory=dict)
    mask_bytes: bytes = b""
    shape: tuple[int, ...] = ()
    dtype: str = "<i2"


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


class EngineHTTPClient:
    """One engine server, reached over HTTP with a bearer token."""

    def __init__(
        self, url: str, token: str, timeout: float = 600.0, busy_wait_s: float = 120.0
    ) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.busy_wait_s = busy_wait_s
        self._max_upload: int | None = None

    @classmethod
    def from_token_file(cls, path: str | Path, **kwargs) -> EngineHTTPClient:
        """Connect with the URL and token a server wrote (e.g. copied from a workstation)."""
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(info["url"], info["token"], **kwargs)
        except (OSError, ValueError, KeyError) as error:
            raise EngineUnavailableError(
                f"Cannot read the engine's token file {path} ({error}); is the server running?"
            ) from error

    # ------------------------------------------------------------------ transport
    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        auth: bool = True,
    ) -> dict:
        deadline = time.monotonic() + self.busy_wait_s
        while True:
            try:
                return self._send(method, path, body, headers, auth)
            except EngineBusyError as busy:
                if time.monotonic() + busy.retry_after > deadline:
                    raise
                time.sleep(busy.retry_after)

    def _send(self, method, path, body, headers, auth) -> dict:
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read() or b"{}").get("detail", "") or error.reason
            except (ValueError, OSError, http.client.HTTPException):
                detail = error.reason
            message = f"The engine refused the request ({error.code}): {detail}"
            if error.code == 503:
                busy = EngineBusyError(message, 503)
                busy.retry_after = float(error.headers.get("Retry-After") or 5)
                raise busy from None
            raise EngineRequestError(message, error.code) from None
        except (OSError, http.client.HTTPException) as error:
            raise EngineUnavailableError(
                f"The engine process is not reachable or stopped mid-request ({error}). "
                "It will be restarted on the next run; then run again."
            ) from error

    def _json(self, method: str, path: str, payload: dict | None = None) -> dict:
        return self._request(
            method, path, json.dumps(payload or {}).encode(), {"Content-Type": "application/json"}
        )

    # ------------------------------------------------------------------ server
    def health(self) -> dict:
        return self._request("GET", f"{API}/health", auth=False)

    def info(self) -> dict:
        return self._request("GET", f"{API}/info")

    def _check_size(self, size: int) -> None:
        """Refuse early what the server would refuse (413) before sending the bytes."""
        if self._max_upload is None:
            self._max_upload = int(self.info().get("max_upload_bytes", 0))
        if self._max_upload and size > self._max_upload:
            raise MaleniaError(
                f"The volume is {size / 2**20:.1f} MB, above the engine's upload limit of "
                f"{self._max_upload / 2**20:.1f} MB: crop it to a region of interest, or restart "
                "the server with a larger --max-upload-mb."
            )

    # ------------------------------------------------------------------ volumes
    def upload_raw(
        self,
        data: bytes,
        shape,
        dtype: str = "<i2",
        *,
        ijk_to_ras=None,
        spacing=None,
        origin=None,
        direction=None,
        roi=None,
    ) -> str:
        """Raw voxel bytes (C order, [k, j, i]) + geometry; no numpy needed."""
        self._check_size(len(data))
        headers = {
            "Content-Type": ARRAY_CONTENT_TYPE,
            "X-Shape": ",".join(str(int(n)) for n in shape),
            "X-Dtype": str(dtype),
        }
        if ijk_to_ras is not None:
            headers["X-Ijk-To-Ras"] = json.dumps(_flat(ijk_to_ras))
        else:
            if spacing is None or origin is None:
                raise MaleniaError("Give the geometry: ijk_to_ras, or spacing and origin.")
            headers["X-Spacing"] = json.dumps(_flat(spacing))
            headers["X-Origin"] = json.dumps(_flat(origin))
            if direction is not None:
                headers["X-Direction"] = json.dumps(_flat(direction))
        if roi is not None:
            headers["X-Roi"] = json.dumps([_flat(roi[0]), _flat(roi[1])])
        return self._request("POST", f"{API}/volumes", bytes(data), headers)["volume_id"]

    def upload(
        self, array, ijk_to_ras=None, roi=None, *, spacing=None, origin=None, direction=None
    ) -> str:
        """A numpy array [k, j, i] with Slicer's IJK-to-RAS matrix (or LPS geometry)."""
        np = _numpy()
        if np is None:
            raise MaleniaError("upload() needs numpy; use upload_raw() with the voxel bytes.")
        array = np.ascontiguousarray(array)
        return self.upload_raw(
            array.tobytes(),
            array.shape,
            array.dtype.str,
            ijk_to_ras=None if ijk_to_ras is None else np.asarray(ijk_to_ras, float).tolist(),
            spacing=spacing,
            origin=origin,
            direction=direction,
            roi=roi,
        )

    def upload_file(self, path: str | Path) -> str:
        path = Path(path)
        self._check_size(path.stat().st_size)
        name = path.name.lower()
        kind = "nrrd" if name.endswith(".nrrd") else "mha" if name.endswith(".mha") else "nifti"
        return self._request(
            "POST",
            f"{API}/volumes",
            path.read_bytes(),
            {"Content-Type": "application/octet-stream", "X-Format": kind, "X-Name": path.name},
        )["volume_id"]

    def status(self, volume_id: str) -> dict:
        return self._request("GET", f"{API}/volumes/{volume_id}")

    def cancel(self, volume_id: str) -> dict:
        return self._json("POST", f"{API}/volumes/{volume_id}/cancel")

    def delete(self, volume_id: str) -> None:
        self._request("DELETE", f"{API}/volumes/{volume_id}")

    def wait(self, volume_id: str, progress=None, cancel=None, poll: float = 0.2) -> dict:
        """Poll until the volume is encoded; cancel -> tell the server, raise CancelledError."""
        while True:
            if cancel is not None and getattr(cancel, "cancelled", False):
                self.cancel(volume_id)
                raise CancelledError("Cancelled by the user; nothing was changed.")
            state = self.status(volume_id)
            done, total = state["progress"]
            if progress and total:
                progress(state.get("stage") or "encoding", done, total)
            if state["state"] == "ready":
                return state
            if state["state"] == "cancelled":
                raise CancelledError(state["error"] or "The encode was cancelled.")
            if state["state"] == "failed":
                raise MaleniaError(state["error"] or "The engine could not encode the volume.")
            time.sleep(poll)

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None) -> str:
        volume_id = self.upload(array, ijk_to_ras, roi)
        self.wait(volume_id, progress, cancel)
        return volume_id

    # ------------------------------------------------------------------ queries
    @staticmethod
    def _result(payload: dict) -> ClientResult:
        if payload.get("mask_encoding", "zlib+base64") != "zlib+base64":
            raise MaleniaError(f"Unknown mask encoding {payload['mask_encoding']}; update malenia.")
        raw = zlib.decompress(base64.b64decode(payload["mask_zlib_b64"]))
        shape, dtype = tuple(payload["shape"]), payload["dtype"]
        np = _numpy()
        labelmap = np.frombuffer(raw, dtype=dtype).reshape(shape).copy() if np else None
        return ClientResult(
            labelmap,
            payload["lesions"],
            payload["query"],
            payload["threshold"],
            payload["model"],
            payload["result_id"],
            payload.get("description"),
            {
                "mode": payload.get("mode"),
                "timing": payload.get("timing", {}),
                "grounded_in": payload.get("grounded_in"),
                "grounding_warning": payload.get("grounding_warning"),
                "not_understood": payload.get("not_understood") or [],
                "query_notes": payload.get("query_notes") or [],
            },
            raw,
            shape,
            dtype,
        )

    def segment(self, volume_id: str, query, threshold: float | None = None) -> ClientResult:
        return self._result(
            self._json(
                "POST",
                f"{API}/volumes/{volume_id}/segment",
                {"query": query, "threshold": threshold},
            )
        )

    def recut(self, volume_id: str, result_id: str, threshold: float) -> ClientResult:
        return self._result(
            self._json(
                "POST",
                f"{API}/volumes/{volume_id}/recut",
                {"result_id": result_id, "threshold": threshold},
            )
        )

    def find_lesions(self, volume_id: str, threshold: float | None = None) -> ClientResult:
        return self._result(
            self._json("POST", f"{API}/volumes/{volume_id}/find", {"threshold": threshold})
        )


def _flat(values) -> list[float]:
    """Numbers from nested lists / tuples / arrays, without needing numpy."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    out: list[float] = []
    for value in values:
        if isinstance(value, list | tuple):
            out += _flat(value)
        else:
            out.append(float(value))
    return out


CREATE_NO_WINDOW = 0x08000000  # subprocess.CREATE_NO_WINDOW, which exists only on Windows


def child_process_options(os_name: str = os.name, new_group: bool = True) -> dict:
    """Popen options for a background child: its own process group (so stop() reaches a
    launcher and the interpreter it started) and, on Windows, no console window. PythonSlicer
    is a console program: without CREATE_NO_WINDOW, Windows opens a console for it, and
    closing that window kills the engine."""
    if os_name == "posix":
        return {"start_new_session": True} if new_group else {}
    flags = CREATE_NO_WINDOW
    if new_group:
        flags |= getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x00000200)
    return {"creationflags": flags}


def _package_root() -> str:
    """The folder holding the `malenia` package, so the child finds it even when this
    process only has it through sys.path (as inside Slicer)."""
    return str(Path(__file__).resolve().parent.parent)


class EngineProcess:
    """Start `python -m malenia.server` as a child, wait until healthy, restart, stop."""

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
        self.log_path = self.folder / "server.log"
        self.popen: subprocess.Popen | None = None
        self._log = None
        self.url = self.token = ""
        self.instance = ""  # nonce of the server being started, echoed in its token file
        self.server_pid: int | None = None  # the server's own pid (behind any launcher)
        self.started_once = False
        self.restarts = 0
        atexit.register(self.close)

    def command(self) -> list[str]:
        command = [
            self.python,
            "-m",
            "malenia.server",
            "--token-file",
            str(self.token_file),
            "--device",
            self.device,
            "--exit-with-parent",
            str(os.getpid()),
            "--instance-id",
            self.instance,
            *self.extra_args,
        ]
        if self.weights:
            command += ["--weights", str(self.weights)]
        return command

    def start(self, cancel=None) -> None:
        """(Re)start the server and wait until it answers /v1/health. ``cancel`` (anything
        with a truthy ``.cancelled``) stops the start-up, which can take minutes on a cold
        disk, and raises CancelledError."""
        self.stop()
        self.token_file.unlink(missing_ok=True)
        self.instance = secrets.token_hex(16)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
        )
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        self.popen = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            **child_process_options(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if cancel is not None and getattr(cancel, "cancelled", False):
                self.stop()
                raise CancelledError("Cancelled while the engine was starting; nothing changed.")
            if self.popen.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise EngineUnavailableError(f"The engine process exited during start-up:\n{tail}")
            if self._read_token_file() and self.healthy():
                if self.started_once:
                    self.restarts += 1
                self.started_once = True
                return
            time.sleep(0.1)
        self.stop()
        raise EngineUnavailableError(
            f"The engine did not start within {self.startup_timeout:.0f} s; see {self.log_path}."
        )

    def _read_token_file(self) -> bool:
        """The URL and token of the server this start launched: a token file carrying our
        nonce (not our child's pid: through PythonSlicer the child is the launcher, and the
        server is the launcher's child)."""
        try:
            info = json.loads(self.token_file.read_text(encoding="utf-8"))
            if not self.instance or info.get("instance") != self.instance:
                return False
            self.url, self.token = info["url"], info["token"]
            self.server_pid = info.get("pid")
            return True
        except (OSError, ValueError, KeyError):
            return False

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def healthy(self) -> bool:
        if not self.url:
            return False
        try:
            with urllib.request.urlopen(self.url + f"{API}/health", timeout=2) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):
            return False

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None and self.healthy()

    def ensure(self, cancel=None) -> bool:
        """Make sure a healthy server runs; True when it had to be (re)started."""
        if self.alive():
            return False
        self.start(cancel)
        return True

    def client(self, **kwargs) -> EngineHTTPClient:
        return EngineHTTPClient(self.url, self.token, **kwargs)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's whole process group, then make sure it is gone."""
        popen, self.popen = self.popen, None
        if popen is not None and popen.poll() is None:
            self._signal_group(popen, graceful=True)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(popen, graceful=False)
                popen.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.url = self.token = ""
        self.server_pid = None
        self.token_file.unlink(missing_ok=True)

    @staticmethod
    def _signal_group(popen: subprocess.Popen, graceful: bool) -> None:
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        elif graceful:
            with contextlib.suppress(OSError):
                popen.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(popen.pid)], capture_output=True, check=False
            )

    def close(self) -> None:
        """Stop the server and remove the private folder (token file, log)."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> EngineProcess:
        self.ensure()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
