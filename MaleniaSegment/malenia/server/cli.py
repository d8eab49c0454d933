"""`malenia serve`: the warm engine on 127.0.0.1 (a free port), token in a private file."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import socket
from pathlib import Path


def default_token_file() -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".cache")
    return base / "malenia" / "server.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the local engine server (used by the Slicer module)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--allow-remote", action="store_true", help="required to listen on a non-loopback interface"
    )
    parser.add_argument(
        "--token-file", type=Path, default=None, help="where to write port and token (mode 0600)"
    )
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-upload-mb", type=float, default=2048)
    parser.add_argument(
        "--cache-mb", type=float, default=3072, help="memory budget of encoded volumes"
    )
    parser.add_argument("--queue-size", type=int, default=8)
    parser.set_defaults(handler=_serve)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from malenia.errors import MaleniaError
    from malenia.inference import Engine
    from malenia.server.app import create_app

    if (
        not ipaddress.ip_address(socket.gethostbyname(args.host)).is_loopback
        and not args.allow_remote
    ):
        raise MaleniaError(
            f"Refusing to listen on {args.host}: other machines could reach the engine. Pass --allow-remote (a token is always required)."
        )
    engine = Engine.load(args.weights, args.device)
    token = secrets.token_urlsafe(32)
    port = args.port or _free_port(args.host)
    token_file = args.token_file or default_token_file()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(token_file.parent, 0o700)
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(
            {
                "url": f"http://{args.host}:{port}",
                "port": port,
                "token": token,
                "pid": os.getpid(),
                "model": engine.model_id,
            },
            handle,
        )
    os.chmod(token_file, 0o600)
    app = create_app(
        engine,
        token,
        int(args.max_upload_mb * (1 << 20)),
        args.queue_size,
        int(args.cache_mb * (1 << 20)),
    )
    print(
        f"MaleniaSegment engine on http://{args.host}:{port} ({engine.device_note}); token in {token_file}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0
