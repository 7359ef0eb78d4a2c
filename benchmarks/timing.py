"""The one timing helper the benchmarks share."""

import statistics
import time


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over repeats calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
