"""The server on a real uvicorn socket (127.0.0.1, a free port): predict, models, WebSocket, bad requests, tokens."""

import base64
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")
websockets_client = pytest.importorskip("websockets.sync.client")

from conftest import model_faces  # noqa: E402
from fer import ExpressionRecognizer  # noqa: E402
from fer.face.detect import read_image  # noqa: E402
from fer.serve.batcher import Batcher  # noqa: E402
from fer.serve.images import decode_image, image_size, sniff_format  # noqa: E402
from fer.serve.server import BackgroundServer, resolve_token  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
MAX_BODY = 2 * 2**20  # small, so that the oversize test sends little


@pytest.fixture(scope="module")
def server(engine):
    with BackgroundServer(engine, max_body_bytes=MAX_BODY) as running:
        yield running


def http(url, data=None, headers=None, method=None, timeout=30):
    """(status, parsed JSON body) for any status."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        assert error.headers.get("content-type", "").startswith("application/json"), (error.code, body[:200])
        return error.code, json.loads(body)


def multipart(field, filename, data, content_type="image/jpeg"):
    boundary = "fer-test-boundary-7d1c"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def png_header(width, height):
    """A PNG signature and IHDR chunk claiming width x height (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def assert_same_faces(served, expected):
    assert len(served) == len(expected), (served, expected)
    for got, want in zip(served, expected):
        assert got["box"] == want["box"] and got["label"] == want["label"], (got, want)
        assert got["landmarks"] == want["landmarks"] and got["score"] == want["score"]
        for name, p in want["probabilities"].items():
            assert abs(got["probabilities"][name] - p) < 1e-4, (name, got["probabilities"][name], p)


def test_predict_is_the_api_result_for_raw_multipart_and_base64(server, shared):
    recognizer = ExpressionRecognizer()
    status, models = http(server.url + "/v1/models")
    assert status == 200 and models["models"][0]["classes"] == list(recognizer.class_names)
    model = models["models"][0]
    assert model["version"].startswith("sha256:") and len(model["version"]) == 19, model
    for name in ("two_people.jpg", "expression_angry_man.jpg", "chelsea_cat_noface.png"):
        path = shared / "media" / name
        data = path.read_bytes()
        expected = recognizer.predict(read_image(path))
        kind = "image/png" if name.endswith(".png") else "image/jpeg"
        requests = [(data, {"Content-Type": kind}), multipart("image", name, data, kind),
                    (json.dumps({"image": base64.b64encode(data).decode()}).encode(),
                     {"Content-Type": "application/json"}),
                    (json.dumps({"image": f"data:{kind};base64," + base64.b64encode(data).decode()}).encode(),
                     {"Content-Type": "application/json"})]
        for body, headers in requests:
            status, result = http(server.url + "/v1/predict", body, headers)
            assert status == 200, result
            assert result["error"] is None and result["model"] == {"name": model["name"], "version": model["version"]}
            assert_same_faces(result["faces"], expected)
        assert result["image"] == {"width": read_image(path).shape[1], "height": read_image(path).shape[0]}
    assert len(expected) == 0, "the cat photo has no face"


def test_health_docs_and_page(server):
    status, health = http(server.url + "/healthz")
    assert status == 200 and health["status"] == "ok" and health["batching"] is True
    with urllib.request.urlopen(server.url + "/openapi.json") as response:
        spec = json.loads(response.read())
    assert {"/v1/predict", "/v1/models", "/healthz"} <= set(spec["paths"]), spec["paths"].keys()
    assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    for path, needle in (("/", b"<canvas id=\"view\""), ("/static/app.js", b"getUserMedia"),
                         ("/static/style.css", b"@media"), ("/docs", b"swagger")):
        with urllib.request.urlopen(server.url + path) as response:
            assert response.status == 200 and needle in response.read(), path


def bad_requests(shared):
    jpeg = (shared / "media" / "obama-720p.jpg").read_bytes()
    gif = b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 20
    raw = {"Content-Type": "image/jpeg"}
    return [  # (what, body, headers, method, path, status, words the error must contain)
        ("text/plain body", b"hello", {"Content-Type": "text/plain"}, "POST", "/v1/predict", 415, "content type"),
        ("no content type", jpeg, {"Content-Type": ""}, "POST", "/v1/predict", 415, "content type"),
        ("bytes that are no image", b"hello world" * 10, raw, "POST", "/v1/predict", 422, "not an image"),
        ("empty body", b"", raw, "POST", "/v1/predict", 422, "empty"),
        ("truncated JPEG", jpeg[:3000], raw, "POST", "/v1/predict", 422, "corrupt JPEG"),
        ("JPEG header only", jpeg[:2], raw, "POST", "/v1/predict", 422, "not an image"),
        ("GIF", gif, {"Content-Type": "image/gif"}, "POST", "/v1/predict", 415, "GIF"),
        ("decompression bomb", png_header(100_000, 100_000), {"Content-Type": "image/png"}, "POST", "/v1/predict",
         413, "100000x100000"),
        ("malformed JSON", b"{\"image\": ", {"Content-Type": "application/json"}, "POST", "/v1/predict", 422,
         "malformed JSON"),
        ("JSON without image", b"{\"picture\": 1}", {"Content-Type": "application/json"}, "POST", "/v1/predict",
         422, "'image'"),
        ("bad base64", b"{\"image\": \"@@@\"}", {"Content-Type": "application/json"}, "POST", "/v1/predict", 422,
         "base64"),
        ("multipart without file", b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
         {"Content-Type": "multipart/form-data; boundary=b"}, "POST", "/v1/predict", 422, "no file field"),
        ("path as upload", b"/etc/passwd", {"Content-Type": "application/octet-stream"}, "POST", "/v1/predict", 422,
         "not an image"),
        ("unknown route", None, {}, "GET", "/v1/nothing", 404, "Not Found"),
        ("wrong method", None, {}, "GET", "/v1/predict", 405, "Method Not Allowed"),
    ]


def test_bad_requests_are_json_errors_and_the_server_keeps_serving(server, shared):
    good = (shared / "media" / "expression_angry_man.jpg").read_bytes()
    for what, body, headers, method, path, expected, words in bad_requests(shared):
        status, result = http(server.url + path, body, headers, method)
        assert status == expected and words in result["error"], (what, status, result)
        status, result = http(server.url + "/v1/predict", good, {"Content-Type": "image/jpeg"})
        assert status == 200 and len(result["faces"]) == 1, (what, "then a good request", status, result)


def raw_response(port, request: bytes) -> tuple[int, dict]:
    """Send request bytes on a fresh connection; (status, JSON body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {answer!r}"
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_oversize_body_is_refused_before_it_is_sent(server, shared):
    good = (shared / "media" / "expression_angry_man.jpg").read_bytes()
    # what curl does for large bodies: announce the length, wait for "100 Continue" (that never comes)
    status, result = raw_response(server.port, (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nExpect: 100-continue\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\n\r\n").encode())
    assert status == 413 and f"exceeds the limit of {MAX_BODY} bytes" in result["error"], result
    status, result = http(server.url + "/v1/predict", good, {"Content-Type": "image/jpeg"})
    assert status == 200 and len(result["faces"]) == 1


def test_dropped_connections_do_not_stop_the_server(server, shared, caplog):
    good = (shared / "media" / "expression_angry_man.jpg").read_bytes()
    host, port = "127.0.0.1", server.port
    for cut in (10, 200, len(good) // 2):  # inside the headers, right after them, half way through the body
        request = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                   f"Content-Length: {len(good)}\r\n\r\n").encode() + good
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(request[:cut])
        status, result = http(server.url + "/v1/predict", good, {"Content-Type": "image/jpeg"})
        assert status == 200 and len(result["faces"]) == 1, (cut, status, result)
    time.sleep(0.2)  # the server notices the last dropped connection
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert not errors, f"a client that leaves is not a server error: {errors}"


def clip_frames(shared, count, size=(640, 360)):
    capture = cv2.VideoCapture(str(shared / "media" / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        assert ok, f"the clip ended after {len(frames)} frames"
        frames.append(cv2.imencode(".jpg", cv2.resize(frame, size), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    capture.release()
    return frames


def ws_url(server, token=None):
    return server.url.replace("http://", "ws://") + "/v1/live" + (f"?token={token}" if token else "")


def test_websocket_tracks_faces_and_survives_bad_messages(server, engine, shared):
    frames = clip_frames(shared, 30)
    classes = set(engine.class_names)
    with websockets_client.connect(ws_url(server), max_size=None) as ws:
        answers = []
        for i, frame in enumerate(frames):
            ws.send(frame)
            answers.append(json.loads(ws.recv(timeout=30)))
            if i == 10:
                ws.send("not json")
                assert "malformed message" in json.loads(ws.recv(timeout=10))["error"]
                ws.send(json.dumps({"type": "shout"}))
                assert "unknown control message" in json.loads(ws.recv(timeout=10))["error"]
                ws.send(b"\x00\x01 not a jpeg")
                error = json.loads(ws.recv(timeout=10))
                assert error["frame"] == 11 and "not an image" in error["error"], error
        assert [a["frame"] for a in answers] == [i if i <= 10 else i + 1 for i in range(30)], "one answer per frame"
        assert all(a["width"] == 640 and a["height"] == 360 and a["dropped"] == 0 for a in answers)
        assert sum(1 for a in answers if a["faces"]) >= 27, "a face in (nearly) every frame of the clip"
        for answer in answers:
            for face in answer["faces"]:
                assert face["label"] in classes and set(face["probabilities"]) == classes
                assert abs(sum(face["probabilities"].values()) - 1) < 1e-3
        # the main face keeps its track id across frames, as in `live`
        first_ids = {f["track_id"] for f in answers[0]["faces"]}
        assert first_ids & {f["track_id"] for f in answers[15]["faces"]}, "a track that lives through half a second"
        ws.send(json.dumps({"type": "reset"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "reset"}
        ws.send(frames[0])
        after = json.loads(ws.recv(timeout=30))
        assert after["faces"] and min(f["track_id"] for f in after["faces"]) == 1, "reset starts new track ids"


def test_websocket_drops_frames_instead_of_queueing(server, shared):
    frames = clip_frames(shared, 40)
    with websockets_client.connect(ws_url(server), max_size=None) as ws:
        for frame in frames:  # as fast as the socket takes them, reading nothing
            ws.send(frame)
        answers = []
        while not answers or answers[-1]["frame"] != len(frames) - 1:
            answers.append(json.loads(ws.recv(timeout=30)))
    assert answers[-1]["received"] == len(frames)
    assert answers[-1]["dropped"] > 0 and len(answers) + answers[-1]["dropped"] == len(frames), \
        f"{len(answers)} answers, {answers[-1]['dropped']} dropped of {len(frames)}"


def test_token_is_required_on_http_and_websocket(engine, shared):
    data = (shared / "media" / "expression_angry_man.jpg").read_bytes()
    with BackgroundServer(engine, token=TOKEN) as server:
        for headers, url in (({}, "/healthz"), ({"Authorization": "Bearer wrong-token-0123456789"}, "/healthz"),
                             ({}, "/v1/models"), ({}, "/"), ({}, "/healthz?token=nope")):
            status, result = http(server.url + url, headers=headers)
            assert status == 401 and "token" in result["error"], (headers, url, result)
        status, result = http(server.url + "/v1/predict", data,
                              {"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and len(result["faces"]) == 1
        assert http(server.url + f"/v1/models?token={TOKEN}")[0] == 200
        with pytest.raises(Exception, match="403"):
            with websockets_client.connect(ws_url(server)) as ws:
                ws.recv(timeout=5)
        with websockets_client.connect(ws_url(server, TOKEN), max_size=None) as ws:
            ws.send(clip_frames(shared, 1)[0])
            assert "faces" in json.loads(ws.recv(timeout=30))


def test_bind_policy(monkeypatch):
    monkeypatch.delenv("FER_SERVE_TOKEN", raising=False)
    assert resolve_token("127.0.0.1", None) is None and resolve_token("::1", None) is None
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ValueError, match="token"):
            resolve_token(host, None)
    assert resolve_token("0.0.0.0", TOKEN) == TOKEN
    with pytest.raises(ValueError, match="at least 16"):
        resolve_token("0.0.0.0", "short")
    monkeypatch.setenv("FER_SERVE_TOKEN", TOKEN)
    assert resolve_token("0.0.0.0", None) == TOKEN


def test_image_headers_give_the_decoded_size(shared, tmp_path):
    photo = read_image(shared / "media" / "two_people.jpg")
    files = {"jpeg": (shared / "media" / "two_people.jpg").read_bytes(),
             "png": (shared / "media" / "astronaut.png").read_bytes()}
    for ext, params in (("webp", [cv2.IMWRITE_WEBP_QUALITY, 80]), ("webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                        ("bmp", [])):
        files[f"{ext}{len(files)}"] = cv2.imencode("." + ext, photo[:301, :203], params)[1].tobytes()
    for key, data in files.items():
        fmt = sniff_format(data)
        assert fmt is not None and key.startswith(fmt), (key, fmt)
        image = decode_image(data, max_pixels=10**8)
        assert image_size(data, fmt) == (image.shape[1], image.shape[0]), key


def test_batcher_returns_each_caller_its_own_rows(engine, real_faces):
    classifier = engine.classifier
    faces = model_faces(real_faces, classifier)
    batcher = Batcher(classifier.predict, window_s=0.02, max_batch=64)
    try:
        chunks = [faces[i:i + n] for i, n in ((0, 3), (3, 1), (4, 7), (11, 2), (13, 5), (18, 4), (22, 8), (30, 6))]
        results = [None] * len(chunks)

        def call(k):
            results[k] = batcher.predict(chunks[k])

        threads = [threading.Thread(target=call, args=(k,)) for k in range(len(chunks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for chunk, probs in zip(chunks, results):
            np.testing.assert_allclose(probs, classifier.predict(chunk), atol=1e-5)
        assert batcher.faces == sum(len(c) for c in chunks)
        assert batcher.batches < len(chunks), f"{batcher.batches} batches for {len(chunks)} concurrent callers"
    finally:
        batcher.close()


def test_batch_closes_once_every_active_request_is_in_it(engine, real_faces):
    faces = model_faces(real_faces[:2], engine.classifier)
    batcher = Batcher(engine.classifier.predict, window_s=2.0, active=lambda: 1)  # one request in progress
    try:
        start = time.perf_counter()
        probs = batcher.predict(faces)
        assert time.perf_counter() - start < 1.0, "a lone request must not wait out the 2 s window"
        np.testing.assert_allclose(probs, engine.classifier.predict(faces), atol=1e-5)
    finally:
        batcher.close()


def test_classifier_failure_reaches_the_caller_and_the_batcher_goes_on(real_faces):
    calls = []

    def flaky(crops):
        calls.append(len(crops))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.ones((len(crops), 7), np.float32) / 7

    batcher = Batcher(flaky, window_s=0.0)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.predict(real_faces[:2])
        assert batcher.predict(real_faces[:3]).shape == (3, 7)
    finally:
        batcher.close()


@pytest.mark.parametrize("kwargs, field", [({"detect_every": 0}, "detect_every"),
                                           ({"classify_every": 0}, "classify_every"), ({"smoothing": "ema:2"}, "smoothing")])
def test_bad_stream_settings_fail_when_the_engine_starts(kwargs, field):
    from fer.serve.engine import Engine

    with pytest.raises(ValueError, match=field):
        Engine(set_threads=False, **kwargs)
