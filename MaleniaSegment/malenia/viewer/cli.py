"""`malenia view [CT]`: start the engine server on 127.0.0.1, load the CT if given, and open
the viewer in the default browser. Ctrl-C stops the server.

    malenia view                       # then "Load sample CT" or upload a file on the page
    malenia view CT.nii.gz             # NIfTI, NRRD, MHA or a DICOM series folder
    malenia view CT.nrrd --no-browser  # print the URL only
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "view",
        help="open the browser viewer (starts a local engine server)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ct", nargs="?", type=Path, help="CT file or DICOM folder to preload")
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.set_defaults(handler=_view)


def viewer_url(url: str, token: str, volume_id: str | None = None) -> str:
    """The page's address, carrying the token once (the page swaps it for a cookie)."""
    return f"{url}/?token={token}" + (f"&volume={volume_id}" if volume_id else "")


def _view(args: argparse.Namespace) -> int:
    import webbrowser

    from malenia.client import EngineProcess
    from malenia.io import read_volume

    volume = read_volume(args.ct) if args.ct else None  # refuse a bad CT before starting
    # "Ctrl-C stops the engine" holds even when this process inherited SIGINT ignored (a
    # background job of a script): Python then leaves it ignored and Ctrl-C would do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    process = EngineProcess(str(args.weights) if args.weights else None, args.device)
    print("starting the engine ...", file=sys.stderr, flush=True)
    with process:
        client = process.client()
        volume_id = None
        if volume is not None:
            volume_id = client.upload(volume.array, volume.ijk_to_ras())
        url = viewer_url(process.url, process.token, volume_id)
        print(f"Web viewer: {url}\n(Ctrl-C stops the engine)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        while process.alive():
            time.sleep(1.0)
        print(f"the engine stopped:\n{process.log_tail()}", file=sys.stderr)
    return 1
