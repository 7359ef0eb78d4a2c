"""Dynamic batching of face crops across concurrent requests, after Triton's dynamic batcher.

One batcher thread takes the first waiting request and every request already queued behind it (up to `max_batch`
faces), and classifies them all in one classifier.predict call; each caller gets back the rows of its own crops. By
default it waits for nobody (window_s = 0): batches form by themselves when the classifier is the bottleneck and cost
no latency when it is not. With window_s > 0 the first request waits that long for others (Triton's
max_queue_delay), closing early once it holds a request from every request in progress (`active`): nobody else could
join. On 2 CPU cores the faces of a request are few and the detector dominates, so a window only added latency
(docs/serving.md, Concurrency).
"""

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)


class Batcher:
    """Args:
        predict: uint8 crops (N, S, S[, 3]) -> probs (N, K); called from the batcher's own thread only.
        window_s: how long the first crop of a batch waits for more.
        max_batch: faces per predict call at most (a request with more faces is classified alone, whole).
        active: () -> number of requests in progress that may still send crops (None: always wait window_s).
    """

    def __init__(self, predict, window_s: float = 0.0, max_batch: int = 64, active=None):
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"batching window must be >= 0 s and max_batch >= 1, got {window_s}, {max_batch}")
        self.predict_fn = predict
        self.window_s = window_s
        self.max_batch = max_batch
        self.active = active
        self.batches = 0  # predict calls made
        self.faces = 0  # faces classified
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="fer-batcher", daemon=True)
        self._thread.start()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Classify crops (N, S, S[, 3]) in the next batch; blocks until done. Thread-safe."""
        if len(crops) == 0:
            raise ValueError("Batcher.predict needs at least one crop")
        future: Future = Future()
        self._queue.put((crops, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            count = len(item[0])
            deadline = time.perf_counter() + self.window_s
            while count < self.max_batch and (self.active is None or len(batch) < self.active()):
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                if count + len(item[0]) > self.max_batch:
                    self._run(batch)  # this one would overflow the batch: it opens the next one
                    batch, count = [], 0
                batch.append(item)
                count += len(item[0])
            self._run(batch)

    def _run(self, batch: list) -> None:
        if not batch:
            return
        try:
            probs = self.predict_fn(np.concatenate([crops for crops, _ in batch]))  # (sum N, K)
        except Exception as error:  # every waiting request gets the error; the batcher keeps running
            log.exception("batched classification of %d request(s) failed", len(batch))
            for _, future in batch:
                future.set_exception(error)
            return
        self.batches += 1
        start = 0
        for crops, future in batch:
            future.set_result(probs[start:start + len(crops)])
            start += len(crops)
        self.faces += start
