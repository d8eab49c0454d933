"""Engine server over HTTP on 127.0.0.1: re-query latency for a cached volume, and throughput
with 8 concurrent clients (shared cached volume; and each client with its own upload).

    python benchmarks/bench_server.py [--weights W] [--device auto|cpu|cuda] [--requests 20]

Uses the bundled sample CT (real anatomy, 3 mm) for the cached-volume figures and 48^3
synthetic phantoms at the model spacing for the 8-uploads figure. Prints the machine's load
average too: on a shared CPU, wall-clock figures rise with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_clients(count: int, work) -> tuple[float, list[Exception]]:
    errors: list[Exception] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except Exception as error:  # reported below
            errors.append(error)

    start = time.perf_counter()
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from malenia.client import EngineHTTPClient, EngineProcess
    from malenia.io import read_volume
    from malenia.paths import resource
    from malenia.synth import make_phantom

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    process = EngineProcess(weights=args.weights, device=args.device)
    start = time.perf_counter()
    process.start()
    print(f"server start-up (process start to healthy): {time.perf_counter() - start:.1f} s")
    try:
        client = process.client()
        print(f"device: {client.info()['device']}")
        ct = read_volume(resource("SampleData", "sample_ct.nii.gz"))
        start = time.perf_counter()
        volume_id = client.encode(ct.array, ct.ijk_to_ras())
        encode_s = client.status(volume_id)["encode_seconds"]
        print(
            f"upload + encode of the sample CT {ct.array.shape[::-1]} voxels: "
            f"{time.perf_counter() - start:.2f} s (encode itself {encode_s:.2f} s)"
        )
        queries = [
            "renal cyst",
            "liver cancer",
            {"location": "left kidney", "density": "hyperdense"},
            "pancreatic cyst",
        ]
        client.segment(volume_id, queries[0], 0.5)  # warm-up
        latencies, server_side = [], []
        for i in range(args.requests):
            start = time.perf_counter()
            result = client.segment(volume_id, queries[i % len(queries)], 0.5)
            latencies.append(time.perf_counter() - start)
            server_side.append(sum(result.extra["timing"].values()))
        recuts = []
        for threshold in (0.3, 0.4, 0.6, 0.7, 0.8):
            start = time.perf_counter()
            client.recut(volume_id, result.result_id, threshold)
            recuts.append(time.perf_counter() - start)
        print(
            f"re-query over HTTP (cached volume, {len(queries)} alternating queries incl. "
            f"new ones): median {statistics.median(latencies) * 1000:.0f} ms, "
            f"p90 {percentile(latencies, 90) * 1000:.0f} ms over {len(latencies)}; of which "
            f"engine + mask encoding in the server: median "
            f"{statistics.median(server_side) * 1000:.0f} ms, so HTTP + JSON + client decode: "
            f"median {statistics.median(np.subtract(latencies, server_side)) * 1000:.0f} ms"
        )
        print(f"re-cut over HTTP: median {statistics.median(recuts) * 1000:.0f} ms")

        per_client = 5
        answered = []

        def shared(index: int) -> None:
            own = EngineHTTPClient(process.url, process.token)
            for j in range(per_client):
                own.segment(volume_id, queries[(index + j) % len(queries)], 0.5)
                answered.append(1)

        seconds, errors = run_clients(args.clients, shared)
        print(
            f"{args.clients} concurrent clients x {per_client} queries on the cached volume: "
            f"{len(answered)} answered in {seconds:.2f} s = {len(answered) / seconds:.1f} "
            f"queries/s ({len(errors)} errors)"
        )

        phantoms = [
            make_phantom(seed, shape=(48, 48, 48), spacing=(2.0, 2.0, 2.0)).ct.astype(np.int16)
            for seed in range(args.clients)
        ]
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        done = []

        def own_volume(index: int) -> None:
            own = EngineHTTPClient(process.url, process.token)
            vid = own.encode(phantoms[index], affine)
            own.segment(vid, "liver cancer", 0.5)
            own.delete(vid)
            done.append(1)

        seconds, errors = run_clients(args.clients, own_volume)
        print(
            f"{args.clients} concurrent clients each uploading, encoding and segmenting its own "
            f"48^3 volume: {len(done)} done in {seconds:.2f} s = {len(done) / seconds:.2f} "
            f"volumes/s ({len(errors)} errors)"
        )
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    finally:
        process.close()


if __name__ == "__main__":
    main()
