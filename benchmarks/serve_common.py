"""Shared by the serve_* benchmarks: start `run.py serve` as a child process on a free loopback port, read its
resident memory, the test photos at 640x480, the shared clip as JPEG frames, and a percentile helper."""

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_SHARED", REPO.parent / "shared"))
MEDIA = SHARED / "media"
PHOTOS = ("obama-720p.jpg", "two_people.jpg", "expression_angry_man.jpg", "expression_crying_woman.jpg",
          "kit_with_rose.jpg", "obama_and_biden.jpg", "astronaut.png", "obama-1080p.jpg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_process(*options: str, timeout: float = 120.0):
    """`run.py serve --port P *options` in a child process; yields (port, pid) once /healthz answers. Its log goes
    to a temporary file, named on stderr when the server logged an error."""
    port = free_port()
    command = [sys.executable, str(REPO / "run.py"), "serve", "--port", str(port), *options]
    log = tempfile.NamedTemporaryFile("w+", prefix="fer-serve-", suffix=".log", delete=False)  # never a full pipe
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = Path(log.name).read_text()[-2000:]
                raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {output}")
            try:
                status, _ = request(port, "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /healthz within {timeout} s")
            time.sleep(0.2)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        text = Path(log.name).read_text()
        if "ERROR" in text or "Traceback" in text:
            print(f"the server logged errors: {log.name}", file=sys.stderr)
        else:
            os.unlink(log.name)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            connection: http.client.HTTPConnection | None = None, timeout: float = 60.0) -> tuple[int, dict]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        if connection is None:
            conn.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def photos_640x480(quality: int = 90) -> list[bytes]:
    """The shared photos resized to 640x480, as JPEG bytes (what a client would upload)."""
    out = []
    for name in PHOTOS:
        image = cv2.imread(str(MEDIA / name))
        assert image is not None, MEDIA / name
        out.append(cv2.imencode(".jpg", cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    return out


def clip_frames(size=(640, 360), quality: int = 80) -> list[bytes]:
    capture = cv2.VideoCapture(str(MEDIA / "short_hamilton_clip.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", cv2.resize(frame, size), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    capture.release()
    return frames


def percentiles(latencies_s) -> dict:
    ms = 1000.0 * np.asarray(latencies_s)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "mean_ms": round(float(ms.mean()), 1)}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def predict_client(port: int, photos: list[bytes], counter, lock: threading.Lock, latencies: list, failures: list) -> None:
    """One keep-alive client: POST /v1/predict with photos[i % len(photos)] for each i drawn from the shared counter
    (under lock) until it is exhausted; a latency per request, a failure for anything but 200 with faces (the
    connection is reopened after a transport error)."""
    headers = {"Content-Type": "image/jpeg"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while True:
        with lock:
            index = next(counter, None)
        if index is None:
            break
        start = time.perf_counter()
        try:
            status, body = request(port, "POST", "/v1/predict", photos[index % len(photos)], headers, conn)
            if status != 200 or not body.get("faces"):
                failures.append(f"{status} {str(body)[:120]}")
        except (OSError, http.client.HTTPException, ValueError) as error:
            failures.append(repr(error))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        latencies.append(time.perf_counter() - start)
    conn.close()
