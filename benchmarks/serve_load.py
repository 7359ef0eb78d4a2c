"""POST /v1/predict under load on loopback, against in-process predict on the same photos and cores.

    python benchmarks/serve_load.py                        # 8 clients x 1,000 requests on each server setting
    python benchmarks/serve_load.py --memory 10000         # also resident memory after 100 and 10,000 requests
    python benchmarks/serve_load.py --clients 1 4 8 --requests 500
    python benchmarks/serve_load.py --interleave 7         # also 7 rounds of server vs in-process back to back

Photos: the shared photos resized to 640x480 (JPEG, 1-3 faces each). The server is `run.py serve` in a child
process, in each setting of SERVERS: batching as it comes (the default), batching with a 3 ms window, the worker pool
alone (one worker per core, one torch/OpenCV thread each), and one request at a time. The clients are threads of this
process with keep-alive connections, so they share the cores with the server, as on a one-box deployment.
In-process baselines on the same photos, in this process: (a) ExpressionRecognizer.predict in a loop with the
library's default threads, (b) the same with one torch/OpenCV thread, (c) the server's own Engine (worker pool +
batcher) fed by all requests at once without HTTP. They run before and again after the servers, because the
machine's load moves. Bounded: every run is a fixed number of requests. Timings are wall-clock on whatever else the
machine is doing; the load average is printed with them.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_common import (load_average, percentiles, photos_640x480, predict_client, request,  # noqa: E402
                                     rss_mb, serve_process)

DEFAULT_THREADS = (__import__("torch").get_num_threads(), cv2.getNumThreads())  # before anything changes them
SERVERS = (  # (name, `run.py serve` options); the memory check runs on the first
    ("batching, no window (default)", []),
    ("batching, 3 ms window", ["--batch-window-ms", "3"]),
    ("worker pool, no batching", ["--no-batching"]),
    ("one at a time (1 worker, no batching)", ["--no-batching", "--workers", "1"]),
)


def run_clients(port: int, photos: list[bytes], clients: int, total: int) -> dict:
    """`total` requests from `clients` threads with keep-alive connections; throughput, latency, errors."""
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(total))
    threads = [threading.Thread(target=predict_client, args=(port, photos, counter, lock, latencies, errors))
               for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {"clients": clients, "requests": total, "seconds": round(seconds, 2),
            "requests_per_s": round(total / seconds, 2), **percentiles(latencies), "errors": len(errors),
            "error_examples": errors[:3]}


def in_process_baselines(photos: list[bytes], total: int, workers: int) -> dict:
    import torch

    from fer import ExpressionRecognizer
    from fer.serve.engine import Engine

    results = {}
    recognizer = ExpressionRecognizer()
    for name, threads in (("sequential, default threads", DEFAULT_THREADS), ("sequential, 1 thread", (1, 1))):
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
        for data in photos:  # warm-up
            recognizer.predict(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        start = time.perf_counter()
        for index in range(total):
            recognizer.predict(cv2.imdecode(np.frombuffer(photos[index % len(photos)], np.uint8), cv2.IMREAD_COLOR))
        results[name] = round(total / (time.perf_counter() - start), 2)
    engine = Engine(workers=workers)  # the server's pool + batcher, no HTTP
    for data in photos:
        engine.pool.submit(engine.predict_bytes, data).result()
    start = time.perf_counter()
    futures = [engine.pool.submit(engine.predict_bytes, photos[index % len(photos)]) for index in range(total)]
    for future in futures:
        future.result()
    results[f"server engine in-process ({engine.workers} workers, batching)"] = round(
        total / (time.perf_counter() - start), 2)
    engine.close()
    return results


def interleaved(port: int, photos: list[bytes], rounds: int, total: int, workers: int) -> dict:
    """Rounds of: the server (8 clients), the server's Engine in-process, a sequential one-thread loop in-process,
    `total` images each, back to back, so that each ratio compares readings taken within seconds of each other."""
    import torch

    from fer import ExpressionRecognizer
    from fer.serve.engine import Engine

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    recognizer = ExpressionRecognizer()
    engine = Engine(workers=workers)
    for data in photos:  # warm-up
        engine.pool.submit(engine.predict_bytes, data).result()
    rows = []
    for _ in range(rounds):
        server = run_clients(port, photos, 8, total)["requests_per_s"]
        start = time.perf_counter()
        for future in [engine.pool.submit(engine.predict_bytes, photos[i % len(photos)]) for i in range(total)]:
            future.result()
        pool = total / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(total):
            recognizer.predict(cv2.imdecode(np.frombuffer(photos[i % len(photos)], np.uint8), cv2.IMREAD_COLOR))
        sequential = total / (time.perf_counter() - start)
        rows.append({"server": server, "engine_in_process": round(pool, 2), "sequential_1_thread": round(sequential, 2),
                     "server_vs_best_in_process": round(server / max(pool, sequential), 3)})
        print("interleaved:", json.dumps(rows[-1]), flush=True)
    engine.close()
    ratios = sorted(row["server_vs_best_in_process"] for row in rows)
    return {"rounds": rows, "median_server_vs_best_in_process": ratios[len(ratios) // 2],
            "min": ratios[0], "max": ratios[-1], "requests_per_round": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--requests", type=int, default=1000, help="requests per measured run")
    parser.add_argument("--memory", type=int, default=0, help="also total requests for the memory check (e.g. 10000)")
    parser.add_argument("--baseline-requests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                        help="also: ROUNDS of server / in-process back to back on the default server (ratio per round)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    photos = photos_640x480()
    report = {"load_average_start": load_average(), "photos": len(photos)}
    report["in_process_images_per_s"] = in_process_baselines(photos, args.baseline_requests, args.workers or 0)
    print("in-process images/s:", json.dumps(report["in_process_images_per_s"]), flush=True)
    report["server"] = []
    for index, (name, options) in enumerate(SERVERS):
        if args.workers and "--workers" not in options:
            options = options + ["--workers", str(args.workers)]
        with serve_process(*options) as (port, pid):
            warm = run_clients(port, photos, 8, 100)  # the first 100 requests
            rss_100 = rss_mb(pid)
            served = 100
            for clients in args.clients:
                result = run_clients(port, photos, clients, args.requests)
                served += args.requests
                result.update(server=name, rss_mb=round(rss_mb(pid), 1))
                status, health = request(port, "GET", "/healthz")
                if health.get("batches"):
                    result["mean_faces_per_batch"] = round(health["batched_faces"] / health["batches"], 2)
                report["server"].append(result)
                print(json.dumps(result), flush=True)
            if index == 0 and args.interleave:
                report["interleaved"] = interleaved(port, photos, args.interleave, 200, args.workers or 0)
                print("interleaved:", json.dumps({k: v for k, v in report["interleaved"].items() if k != "rounds"}))
            if index == 0 and args.memory > served:
                long_run = run_clients(port, photos, 8, args.memory - served)
                report["memory"] = {"server": name, "rss_mb_after_100": round(rss_100, 1), "requests": args.memory,
                                    "rss_mb_after_all": round(rss_mb(pid), 1),
                                    "growth_mb": round(rss_mb(pid) - rss_100, 1), "errors": long_run["errors"] +
                                    warm["errors"] + sum(r["errors"] for r in report["server"]),
                                    "long_run": long_run}
                print("memory:", json.dumps(report["memory"]), flush=True)
    # the machine's load moves: measure the baselines again after the server runs, so the ratio is bracketed
    report["in_process_images_per_s_after"] = in_process_baselines(photos, args.baseline_requests, args.workers or 0)
    print("in-process images/s after:", json.dumps(report["in_process_images_per_s_after"]), flush=True)
    report["load_average_end"] = load_average()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
