"""`malenia serve`: the warm engine on 127.0.0.1 (a free port), its URL and a fresh random
token written to a file only this user can read.

    malenia serve [--token-file F] [--weights W] [--device auto|cpu|cuda]
    malenia serve --host 0.0.0.0 --allow-remote     # another machine may connect (token still required)
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

from malenia.astra import ORGAN_FEATURES, ORGAN_FEATURES_HELP
from malenia.errors import MaleniaError


def runtime_dir() -> Path:
    """A per-user private folder: $XDG_RUNTIME_DIR/malenia, else <tmp>/malenia-<user>."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "malenia"
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"malenia-{user}"


def default_token_file() -> Path:
    return runtime_dir() / "server.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the local engine server (used by the Slicer module)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="required to listen on a non-loopback interface (the token is always required)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help=f"where to write URL, port and token, mode 0600 (default {default_token_file()})",
    )
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--organ-features", choices=ORGAN_FEATURES, help=ORGAN_FEATURES_HELP)
    parser.add_argument("--max-upload-mb", type=float, default=2048)
    parser.add_argument(
        "--cache-mb", type=float, default=3072, help="memory budget of encoded volumes"
    )
    parser.add_argument("--queue-size", type=int, default=8, help="volumes waiting to encode")
    parser.add_argument(
        "--max-volume-mb",
        type=float,
        default=None,
        help="memory one uploaded volume may need to be segmented, checked on its declared "
        "size before it is allocated (default: $MALENIA_MAX_MEMORY_GB or half the RAM)",
    )
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        default=None,
        metavar="PID",
        help="shut down when process PID exits (the engine-process manager passes its own)",
    )
    parser.add_argument(
        "--instance-id",
        default="",
        help="copied into the token file, so the manager that started this server knows the "
        "file is this server's (its pid may be a launcher's, not this process's)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.set_defaults(handler=_serve)


def check_host(host: str, allow_remote: bool) -> None:
    """Loopback unless explicitly allowed: other machines must not reach a model by accident."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except OSError as error:
            raise MaleniaError(f"Cannot resolve --host {host} ({error}).") from error
    if not address.is_loopback and not allow_remote:
        raise MaleniaError(
            f"Refusing to listen on {host}: other machines could reach the engine. Pass "
            "--allow-remote to mean it (clients then need the token from the token file)."
        )


def _private_folder(folder: Path) -> None:
    """Create the folder 0700 and refuse one that another user owns or others can enter."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise MaleniaError(f"{folder} is not a plain folder; pass --token-file elsewhere.")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise MaleniaError(f"{folder} belongs to another user; pass --token-file elsewhere.")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700)


def write_token_file(path: Path, content: dict) -> None:
    """Atomically: readers see the whole file or none; mode 0600 from creation."""
    _private_folder(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


def _bind(host: str, port: int) -> socket.socket:
    """Bind now (port 0: the OS picks a free one) and hand the socket to uvicorn: no race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise MaleniaError(
            f"Cannot listen on {host}:{port} ({error}); pick another --port."
        ) from error
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not). Works for any process, not only
    our parent: inside Slicer the engine's parent is PythonSlicer, a launcher (CTKAppLauncher)
    that starts python-real as its child, so the parent is not the process to watch."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            return True
    if os.name == "posix":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _windows_process_alive(pid)


def _windows_process_alive(pid: int) -> bool:
    """OpenProcess + GetExitCodeProcess (Slicer's Python has ctypes, not always psutil)."""
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _remove_token_file(token_file: Path) -> None:
    """Remove our token file (only if it is still ours: a newer server may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(token_file.read_text(encoding="utf-8")).get("pid") == os.getpid():
            token_file.unlink()


def _terminate(signum, frame) -> None:
    """SIGTERM / SIGHUP: leave through the normal exit path, so `finally` removes the token
    file (uvicorn stops serving on SIGTERM, then raises the signal again to our handler)."""
    raise SystemExit(128 + signum)


def _watch_parent(pid: int, server, token_file: Path) -> None:
    """Stop when the process that started us (Slicer, through any launcher) is gone, so no
    engine is orphaned."""

    def watch() -> None:
        while process_alive(pid):
            time.sleep(0.5)
        print(f"process {pid} exited; shutting down", file=sys.stderr, flush=True)
        server.should_exit = True
        time.sleep(10)
        _remove_token_file(token_file)
        os._exit(0)  # graceful shutdown hung (a long request): leave anyway

    threading.Thread(target=watch, daemon=True, name="malenia-parent-watch").start()


def _serve(args: argparse.Namespace) -> int:
    check_host(args.host, args.allow_remote)
    if args.queue_size < 1 or args.max_upload_mb <= 0 or args.cache_mb <= 0:
        raise MaleniaError("--queue-size, --max-upload-mb and --cache-mb must be positive.")
    if args.max_volume_mb is not None and not args.max_volume_mb > 0:
        raise MaleniaError("--max-volume-mb must be positive.")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as error:
        raise MaleniaError(
            f"`malenia serve` needs {error.name}, which is not installed in this Python: "
            "pip install 'fastapi>=0.115,<1' 'uvicorn>=0.30,<1' (both are part of "
            "MaleniaSegment's default install: pip install malenia-segment)."
        ) from None
    sock = _bind(args.host, args.port)
    token_file = args.token_file or default_token_file()

    from malenia.server.app import create_app
    from malenia.server.backend import EngineBackend

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backend = EngineBackend.load(args.weights, args.device, args.organ_features)
    token = secrets.token_urlsafe(32)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    app = create_app(
        backend,
        token,
        int(args.max_upload_mb * (1 << 20)),
        args.queue_size,
        int(args.cache_mb * (1 << 20)),
        None if args.max_volume_mb is None else int(args.max_volume_mb * (1 << 20)),
    )
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    if args.exit_with_parent:
        _watch_parent(args.exit_with_parent, server, token_file)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _terminate)
    try:
        write_token_file(
            token_file,
            {
                "url": f"http://{host}:{port}",
                "port": port,
                "token": token,
                "pid": os.getpid(),
                "instance": args.instance_id,
                "model": backend.model_id,
            },
        )
        print(
            f"MaleniaSegment engine on http://{host}:{port} ({backend.device_note}); "
            f"token in {token_file}",
            flush=True,
        )
        if not args.exit_with_parent:  # a person started it: the viewer URL carries the token once
            print(f"Web viewer: http://{host}:{port}/?token={token}", flush=True)
        server.run(sockets=[sock])
    finally:
        _remove_token_file(token_file)
        sock.close()
    return 0
