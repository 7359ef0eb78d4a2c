"""The HTTP/WebSocket server (`run.py serve`, extra [serve]: FastAPI + uvicorn) and its webcam page.

engine.py: the recognizer behind worker threads and the batcher; app.py: routes, token, JSON errors; images.py:
untrusted bytes -> image; batcher.py: dynamic batching; server.py: bind policy and uvicorn; static/: the page.
Nothing is imported here, so `import fer.serve.images` needs no FastAPI.
"""
