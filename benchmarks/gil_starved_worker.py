"""How fast the module's worker thread talks to the engine when Slicer's main thread holds
the GIL while the Qt loop idles, and what the poll tick's GIL yield buys back.

Slicer's PythonQt runs without thread support (CTK's ctkAbstractPythonManager never enables
it), so the main thread keeps the GIL while Qt idles, and a Python worker thread runs only when
the main thread executes Python (the 100 ms poll timer) or releases the GIL. This script
imitates that: the main thread holds the GIL inside a C call (ctypes.PyDLL, which keeps the
GIL, sleeping 100 ms), then runs one poll tick in Python, in a loop. A worker meanwhile does
what MaleniaSegmentLib does over HTTP with the engine: upload a volume's bytes and poll a
status route, against a real HTTP server on 127.0.0.1 (a standard-library one, in a child
process so it has its own GIL).

    python benchmarks/gil_starved_worker.py [--mb 64] [--polls 20] [--yield-ms 0 10 20]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

SERVER = textwrap.dedent(
    """
    import http.server, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers["Content-Length"]); self.rfile.read(n)
            self._reply(b'{"volume_id": "v1"}')
        def do_GET(self):
            self._reply(b'{"state": "encoding", "progress": [1, 10]}')
        def _reply(self, body):
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def worker(url: str, body: bytes, polls: int, times: dict) -> None:
    started = time.perf_counter()
    request = urllib.request.Request(url + "/volumes", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        json.loads(response.read())
    times["upload_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(polls):
        with urllib.request.urlopen(url + "/volumes/v1", timeout=600) as response:
            json.loads(response.read())
    times["poll_s"] = (time.perf_counter() - started) / polls


def run(url: str, body: bytes, polls: int, starve: bool, yield_ms: float) -> dict:
    libc = ctypes.PyDLL(None)  # PyDLL: calls keep the GIL, as PythonQt's idle Qt loop does
    times: dict = {}
    thread = threading.Thread(target=worker, args=(url, body, polls, times))
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        if starve:
            libc.usleep(100_000)  # Qt idles for one timer interval, GIL held
            sum(range(200))  # the poll tick's own Python work
            if yield_ms:
                time.sleep(yield_ms / 1000)  # what RunController.tick() does while a job runs
        else:
            time.sleep(0.1)
    thread.join()
    times["total_s"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=64)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--yield-ms", type=float, nargs="*", default=[0, 10, 20])
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        body = bytes(int(args.mb * 2**20))
        cases = [("GIL free (plain Python)", False, 0)]
        cases += [(f"GIL held while idle, yield {y:g} ms/tick", True, y) for y in args.yield_ms]
        for name, starve, yield_ms in cases:
            times = run(url, body, args.polls, starve, yield_ms)
            print(
                f"{name:40s} upload {args.mb:g} MB {times['upload_s']:6.2f} s   "
                f"status poll {times['poll_s'] * 1000:7.1f} ms   total {times['total_s']:6.2f} s",
                flush=True,
            )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
