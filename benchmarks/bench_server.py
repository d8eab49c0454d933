"""Re-query latency over HTTP for a cached volume, and throughput with 8 concurrent clients.

python benchmarks/bench_server.py [--weights W]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    from malenia.client import EngineHTTPClient, EngineProcess

    process = EngineProcess(weights=args.weights, device="auto")
    start = time.perf_counter()
    process.start()
    print(f"server start-up: {time.perf_counter() - start:.1f} s")
    try:
        client = EngineHTTPClient(process.url, process.token)
        rng = np.random.default_rng(0)
        array = np.full((80, 160, 160), -1000, np.int16)
        array[:, 20:140, 20:140] = (40 + rng.normal(0, 10, (80, 120, 120))).astype(np.int16)
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
        start = time.perf_counter()
        volume_id = client.encode(array, affine)
        print(f"upload + encode of a 160x160x80 volume: {time.perf_counter() - start:.2f} s")
        queries = [
            "renal cyst",
            "liver cancer",
            {"location": "left kidney", "density": "hyperdense"},
            "pancreatic cyst",
        ]
        latencies = []
        for i in range(args.requests):
            start = time.perf_counter()
            client.segment(volume_id, queries[i % len(queries)], 0.5)
            latencies.append(time.perf_counter() - start)
        print(
            f"re-query over HTTP (cached volume): median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms over {len(latencies)}"
        )
        done = []

        def worker(index: int) -> None:
            own = EngineHTTPClient(process.url, process.token)
            for j in range(5):
                own.segment(volume_id, queries[(index + j) % len(queries)], 0.5)
                done.append(1)

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        print(
            f"8 concurrent clients x 5 queries: {len(done)} answered in {seconds:.2f} s = {len(done) / seconds:.1f} queries/s"
        )
    finally:
        process.stop()


if __name__ == "__main__":
    main()
