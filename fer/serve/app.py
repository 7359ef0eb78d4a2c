"""The FastAPI app: routes, token check, JSON errors. Inference lives in fer.serve.engine; this module only moves bytes.

Routes: GET / (the webcam page), GET /static/{app.js,style.css}, GET /healthz, GET /v1/models, POST /v1/predict,
WS /v1/live, and FastAPI's own /docs and /openapi.json.

Every refusal is JSON {"error": "<what is wrong>"} with its status (401 token, 404, 405, 413 too large, 415 not a
supported type, 422 not a decodable image, 503 busy, 500 a bug), and the server goes on serving the other requests.
Nothing from a request names a file: the page's three files are read once at start-up and served from memory.
"""

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from fer.serve.engine import Engine
from fer.serve.images import RequestError, decode_base64

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
RAW_TYPES = ("image/", "application/octet-stream")
TOKEN_HELP = "send the header 'Authorization: Bearer TOKEN' or the query parameter ?token=TOKEN"
PREDICT_BODY_DOC = {  # the request bodies POST /v1/predict takes, for the OpenAPI page
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "format": "binary"}}, "required": ["image"]}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "description": "base64 of the image file, or a data: URL"}},
            "required": ["image"]}},
    },
}


class TokenMiddleware:
    """Pure ASGI: every HTTP request and WebSocket must carry the token (header or query), else 401 / close 1008."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "http":
            response = JSONResponse({"error": f"missing or wrong token: {TOKEN_HELP}"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong token"})

    def _authorized(self, scope) -> bool:
        candidates = []
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                candidates.append(value[7:].strip())
        for pair in scope.get("query_string", b"").split(b"&"):
            if pair.startswith(b"token="):
                candidates.append(unquote_to_bytes(pair[6:]))
        return any(hmac.compare_digest(candidate, self.token) for candidate in candidates)


def create_app(engine: Engine, *, token: str | None = None, max_body_bytes: int = 10 * 2**20,
               max_pending: int = 64) -> FastAPI:
    """The app around a ready Engine. token: required on every request when given. max_body_bytes: larger uploads
    and WebSocket frames are refused (413 / an error message). max_pending: requests waiting for a worker at most;
    beyond, 503 at once instead of a growing queue."""
    app = FastAPI(title="fer-toolkit", version=engine.info["fer_version"],
                  description="Facial expression recognition: faces, boxes, landmarks and expression probabilities.")
    page = {name: (STATIC / name).read_bytes() for name in PAGE_FILES}
    pending = {"n": 0}
    loop_pool = engine.pool

    async def in_pool(fn, *args):
        if pending["n"] >= max_pending:
            raise RequestError(503, f"server busy: {max_pending} requests already waiting; retry shortly")
        pending["n"] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(loop_pool, fn, *args)
        finally:
            pending["n"] -= 1

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        return JSONResponse({"error": f"invalid request: {error.errors()}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(error).__name__}); the server logged it"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    async def index(request: Request):
        html = page["index.html"]
        given = request.query_params.get("token")
        if given:  # the middleware accepted it: the page's own files need it too (a script tag sends no header)
            suffix = b"?token=" + quote(given, safe="").encode()
            html = html.replace(b"static/app.js", b"static/app.js" + suffix).replace(
                b"static/style.css", b"static/style.css" + suffix)
        return HTMLResponse(html)

    @app.get("/static/app.js", include_in_schema=False)
    async def app_js():
        return Response(page["app.js"], media_type=PAGE_FILES["app.js"])

    @app.get("/static/style.css", include_in_schema=False)
    async def style_css():
        return Response(page["style.css"], media_type=PAGE_FILES["style.css"])

    @app.get("/healthz", summary="Liveness: 200 while the server answers")
    async def healthz():
        batcher = engine.batcher
        return {"status": "ok", "model": engine.info["name"], "workers": engine.workers,
                "batching": batcher is not None, "pending": pending["n"],
                "batches": batcher.batches if batcher else None, "batched_faces": batcher.faces if batcher else None}

    @app.get("/v1/models", summary="The model this server runs: name, version (weights' sha256), classes, input")
    async def models():
        return {"models": [engine.info]}

    @app.post("/v1/predict", openapi_extra={"requestBody": PREDICT_BODY_DOC},
              summary="Faces, boxes, landmarks, labels and probabilities in one image (`run.py predict --json`'s "
                      "object for one image)")
    async def predict(request: Request):
        start = time.perf_counter()
        data, filename = await read_image_body(request, max_body_bytes)
        faces, (width, height) = await in_pool(engine.predict_bytes, data)
        model = {"name": engine.info["name"], "version": engine.info["version"]}
        return JSONResponse({"path": filename, "error": None, "faces": faces,
                             "image": {"width": width, "height": height}, "model": model,
                             "ms": round(1000 * (time.perf_counter() - start), 2)})

    @app.websocket("/v1/live")
    async def live(websocket: WebSocket):
        await websocket.accept()
        await LiveConnection(websocket, engine, in_pool, max_body_bytes).run()

    if token:
        app.add_middleware(TokenMiddleware, token=token)
    return app


async def read_image_body(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The image bytes of a predict request (multipart field, raw body or base64 JSON) and the upload's file name."""
    content_type = request.headers.get("content-type", "").lower()
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body of {int(length)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to read the answer; not a server error
        log.info("client disconnected after %d bytes of its request body", size)
        raise RequestError(400, f"the client disconnected after {size} bytes of the body") from None
    body = b"".join(chunks)
    if content_type.startswith("multipart/form-data"):
        return await _multipart_image(request, body)
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(422, f"malformed JSON body ({error})") from None
        if not isinstance(payload, dict) or "image" not in payload:
            raise RequestError(422, "JSON body must be an object with the field 'image' (base64 or a data: URL)")
        return decode_base64(payload["image"]), None
    if content_type.startswith(RAW_TYPES):
        return body, None
    raise RequestError(415, f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data with "
                            "a file field 'image', a raw image body (image/jpeg, image/png, application/octet-stream) "
                            "or JSON {\"image\": base64}")


async def _multipart_image(request: Request, body: bytes) -> tuple[bytes, str | None]:
    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=16).parse()
    except MultiPartException as error:
        raise RequestError(422, f"malformed multipart body ({error.message})") from None
    try:
        upload = form.get("image") or form.get("file")
        if upload is None:
            upload = next((value for value in form.values() if isinstance(value, UploadFile)), None)
        if not isinstance(upload, UploadFile):
            raise RequestError(422, f"multipart body has no file field: send the image as the file field 'image' "
                                    f"(fields seen: {sorted(form.keys()) or 'none'})")
        return await upload.read(), upload.filename
    finally:
        await form.close()


class LiveConnection:
    """One WebSocket client: JPEG frames in (binary messages), one JSON answer per served frame out.

    A receiver keeps only the newest unserved frame: a frame that arrives while another waits replaces it (the older
    one is dropped and counted), so a client that sends faster than the server serves gets fresh answers, not a
    growing delay. Text messages are control messages: {"type": "reset"} starts a new tracker; anything else is
    answered with {"error": ...} and the connection stays open.
    Answer: {"frame": index of the frame among those received, "faces": [live --jsonl faces], "width", "height",
    "received", "dropped", "ms": server time for this frame}, or {"frame", "error"} for a frame that is no image.
    """

    def __init__(self, websocket: WebSocket, engine: Engine, in_pool, max_bytes: int):
        self.websocket = websocket
        self.engine = engine
        self.in_pool = in_pool
        self.max_bytes = max_bytes
        self.stream = engine.new_stream()
        self.latest: tuple[int, bytes] | None = None
        self.received = 0
        self.dropped = 0
        self.closed = False
        self.wake = asyncio.Event()
        self.send_lock = asyncio.Lock()

    async def send(self, message: dict) -> None:
        async with self.send_lock:
            await self.websocket.send_text(json.dumps(message))

    async def run(self) -> None:
        server = asyncio.create_task(self._serve())
        try:
            await self._receive()
        except WebSocketDisconnect:
            pass
        finally:
            self.closed = True
            self.wake.set()
            try:
                await server
            except (WebSocketDisconnect, RuntimeError):  # the client left while an answer was being sent
                pass

    async def _receive(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                data = message["bytes"]
                index = self.received
                self.received += 1
                if len(data) > self.max_bytes:
                    await self.send({"frame": index, "error": f"frame of {len(data)} bytes exceeds the limit of "
                                                              f"{self.max_bytes} bytes"})
                    continue
                if self.latest is not None:
                    self.dropped += 1
                self.latest = (index, data)
                self.wake.set()
            else:
                await self._control(message.get("text") or "")

    async def _control(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self.send({"error": f"malformed message: text messages must be JSON control messages such as "
                                      f"{{\"type\": \"reset\"}}; send frames as binary JPEG messages (got "
                                      f"{text[:40]!r})"})
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "reset":
            self.stream = self.engine.new_stream()
            await self.send({"type": "reset"})
        else:
            await self.send({"error": f"unknown control message type {kind!r}; known: 'reset'"})

    async def _serve(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.closed:
                return
            if self.latest is None:
                continue
            index, data = self.latest
            self.latest = None
            start = time.perf_counter()
            try:
                faces, (width, height) = await self.in_pool(self.engine.stream_bytes, self.stream, data)
            except RequestError as error:
                await self.send({"frame": index, "error": error.message})
                continue
            except Exception as error:  # a bug: say so on this frame and keep the connection serving
                log.exception("live frame %d failed", index)
                await self.send({"frame": index, "error": f"internal error ({type(error).__name__}); the server "
                                                          "logged it"})
                continue
            if self.closed:
                return
            await self.send({"frame": index, "faces": faces, "width": width, "height": height,
                             "received": self.received, "dropped": self.dropped,
                             "ms": round(1000 * (time.perf_counter() - start), 2)})
