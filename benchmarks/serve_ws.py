"""WS /v1/live throughput: M concurrent streams of the shared clip at 640x360, frames/s served end to end per stream.

    python benchmarks/serve_ws.py                          # 1, 2 and 4 streams, 600 frames each
    python benchmarks/serve_ws.py --streams 1 --frames 1000 --in-flight 1

Each stream is a client thread (websockets' sync client) that sends JPEG frames of the clip (looped) and keeps at
most --in-flight frames unanswered, as the web page does (2); the server drops what it cannot serve, so "served" is
answers received per second and "dropped" counts the frames the server skipped. Time per stream runs from the first
frame sent to the last answer. The server is `run.py serve` in a child process (its defaults: detector every 2nd
frame, ema:0.3 smoothing, one worker per core). Bounded: a fixed number of frames per stream.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_common import clip_frames, load_average, percentiles, rss_mb, serve_process  # noqa: E402


def run_stream(port: int, frames: list[bytes], total: int, in_flight: int, result: dict) -> None:
    from websockets.sync.client import connect

    latencies, sent_at, answers, faces, errors = [], {}, 0, 0, 0
    with connect(f"ws://127.0.0.1:{port}/v1/live", max_size=None) as ws:
        start = time.perf_counter()
        sent = 0
        last = None
        while answers + (last["dropped"] if last else 0) < total:
            while sent < total and sent - answers - (last["dropped"] if last else 0) < in_flight:
                sent_at[sent] = time.perf_counter()
                ws.send(frames[sent % len(frames)])
                sent += 1
            message = json.loads(ws.recv(timeout=60))
            if "error" in message:
                errors += 1
            last = message if "dropped" in message else last
            answers += 1
            faces += len(message.get("faces", []))
            latencies.append(time.perf_counter() - sent_at.pop(message["frame"]))
        seconds = time.perf_counter() - start
    result.update(frames_sent=sent, answers=answers, dropped=last["dropped"] if last else 0, errors=errors,
                  seconds=round(seconds, 2), served_fps=round(answers / seconds, 2),
                  faces_per_frame=round(faces / max(answers, 1), 2), **percentiles(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=600, help="frames per stream")
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    frames = clip_frames((640, 360))
    report = {"load_average_start": load_average(), "clip_frames": len(frames), "runs": []}
    options = ["--workers", str(args.workers)] if args.workers else []
    with serve_process(*options) as (port, pid):
        warm = {}
        run_stream(port, frames, 30, args.in_flight, warm)
        for streams in args.streams:
            results = [{} for _ in range(streams)]
            threads = [threading.Thread(target=run_stream, args=(port, frames, args.frames, args.in_flight, r))
                       for r in results]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            run = {"streams": streams, "served_fps_each": [r["served_fps"] for r in results],
                   "served_fps_total": round(sum(r["served_fps"] for r in results), 2),
                   "dropped": sum(r["dropped"] for r in results), "errors": sum(r["errors"] for r in results),
                   "p50_ms": [r["p50_ms"] for r in results], "p99_ms": [r["p99_ms"] for r in results],
                   "rss_mb": round(rss_mb(pid), 1), "load_average": load_average()}
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
