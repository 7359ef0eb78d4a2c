"""Soak: good requests with bad ones mixed in; every good request must be served, every bad one answered with its JSON
error (or, for a connection the client drops, nothing), and the server must still answer at the end.

    python benchmarks/serve_soak.py                        # 2,000 good requests from 4 clients, 2 bad clients
    python benchmarks/serve_soak.py --good 10000 --bad-clients 4

Bad kinds (round robin): wrong content type, bytes that are no image, truncated JPEG, GIF, a PNG header claiming
100000x100000 pixels, an oversize body announced with Expect: 100-continue, malformed JSON, bad base64, a connection
dropped in the middle of the body, and WebSocket sessions that send text garbage, a non-image frame and then vanish
mid-stream. The server runs with --max-body-mb 2. Bounded: stops after --good good requests.
"""

import argparse
import collections
import json
import socket
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_common import (clip_frames, load_average, percentiles, photos_640x480,  # noqa: E402
                                     predict_client, request, rss_mb, serve_process)

MAX_BODY = 2 * 2**20


def png_bomb() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def bad_kinds(photo: bytes, frame: bytes):
    """(name, callable(port) -> outcome string) for each kind of bad request."""

    def post(body, content_type):
        return lambda port: str(request(port, "POST", "/v1/predict", body, {"Content-Type": content_type})[0])

    def oversize(port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nExpect: 100-continue"
                          f"\r\nContent-Length: {MAX_BODY * 4}\r\n\r\n").encode())
            return sock.recv(65536).split(b" ", 2)[1].decode()

    def dropped(port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                          f"Content-Length: {len(photo)}\r\n\r\n").encode() + photo[:len(photo) // 2])
        return "dropped"

    def websocket(port):
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/v1/live", max_size=None) as ws:
            ws.send("{not json")
            outcomes = [json.loads(ws.recv(timeout=30)).get("error", "")[:9]]
            ws.send(b"\x00garbage")
            outcomes.append(json.loads(ws.recv(timeout=30)).get("error", "")[:9])
            for _ in range(3):
                ws.send(frame)
            ws.socket.shutdown(socket.SHUT_RDWR)  # vanish without a close handshake, frames in flight
            try:
                ws.close()
            except (ConnectionClosed, OSError):
                pass
        return "ws:" + "+".join(outcomes)

    return [("text/plain", post(b"hello", "text/plain")),
            ("not an image", post(b"\x00" * 5000, "image/jpeg")),
            ("truncated JPEG", post(photo[:len(photo) // 3], "image/jpeg")),
            ("GIF", post(b"GIF89a" + b"\x00" * 100, "image/gif")),
            ("PNG bomb header", post(png_bomb(), "image/png")),
            ("oversize body", oversize),
            ("malformed JSON", post(b"{\"image\":", "application/json")),
            ("bad base64", post(json.dumps({"image": "%%%"}).encode(), "application/json")),
            ("dropped connection", dropped),
            ("websocket abuse", websocket)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=2000, help="good requests in all")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--bad-clients", type=int, default=2)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    photos = photos_640x480()
    kinds = bad_kinds(photos[0], clip_frames()[0])
    lock = threading.Lock()
    counter = iter(range(args.good))
    good_latencies, good_failures = [], []
    bad_outcomes = collections.Counter()
    done = threading.Event()

    with serve_process("--max-body-mb", str(MAX_BODY / 2**20)) as (port, pid):
        rss_start = rss_mb(pid)

        def bad_client(offset):
            k = offset
            while not done.is_set():
                name, send = kinds[k % len(kinds)]
                try:
                    outcome = send(port)
                except Exception as error:  # noqa: BLE001  an unexpected client-side failure is an outcome too
                    outcome = f"client error {type(error).__name__}"
                with lock:
                    bad_outcomes[f"{name} -> {outcome}"] += 1
                k += 1

        start = time.perf_counter()
        good = [threading.Thread(target=predict_client, args=(port, photos, counter, lock, good_latencies, good_failures))
                for _ in range(args.clients)]
        bad = [threading.Thread(target=bad_client, args=(i * 3,)) for i in range(args.bad_clients)]
        for thread in good + bad:
            thread.start()
        for thread in good:
            thread.join()
        done.set()
        for thread in bad:
            thread.join()
        seconds = time.perf_counter() - start
        status, health = request(port, "GET", "/healthz")
        report = {"good_requests": args.good, "good_failures": len(good_failures),
                  "good_failure_examples": good_failures[:5], "good_per_s": round(args.good / seconds, 2),
                  **percentiles(good_latencies), "bad_requests": sum(bad_outcomes.values()),
                  "bad_outcomes": dict(sorted(bad_outcomes.items())), "healthz_after": status,
                  "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_mb(pid), 1),
                  "seconds": round(seconds, 1), "load_average": load_average()}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
