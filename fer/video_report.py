"""Video reports (`run.py analyze`): a video file -> per-frame CSV, per-track summary (JSON + Markdown), PNG timelines.

Frames are read one at a time (fer.live.VideoFileReader) and stepped through fer.stream.FaceStream, the same detect /
track / classify / smooth step as `live`. Nothing grows with the video's length but the number of tracks: each track
keeps counters and a timeline of at most MAX_TIMELINE_POINTS bins (when a track outgrows it, neighbouring bins are
merged and the bin width doubles), so hours of video take the memory of seconds.

Files in the output folder:
- frames.csv: frame, time_s, track_id, x, y, w, h, label, p_<class> ... (one row per face per frame; smoothed).
- summary.json / summary.md: the video (frames, fps, duration) and per track: start, end, duration, frames seen,
  dominant expression (the most frequent top label) and the share of the track's frames per expression.
- timeline_track<ID>.png: the track's probabilities over time as stacked bands, for tracks seen at least
  min_track_s seconds.
"""

import csv
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fer.live import VideoFileReader
from fer.stream import DEFAULT_SMOOTHING, FaceStream

log = logging.getLogger(__name__)

MAX_TIMELINE_POINTS = 1000  # per track; a 1,000-point line is finer than a 10-inch PNG shows
CLASS_COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#f2b701", "sad": "#1f77b4",
                 "surprise": "#ff7f0e", "neutral": "#9aa0a6", "contempt": "#17becf"}


class Timeline:
    """Mean probabilities per bin of frames, at most max_points bins: when full, neighbouring bins merge and the bin
    holds twice as many frames. Bins are counted in frame indices (exact), shown in seconds (index * frame_s)."""

    def __init__(self, frame_s: float, num_classes: int, max_points: int = MAX_TIMELINE_POINTS):
        if frame_s <= 0 or max_points < 2:
            raise ValueError(f"Timeline needs frame_s > 0 and max_points >= 2, got {frame_s}, {max_points}")
        self.frame_s = frame_s
        self.frames_per_bin = 1
        self.max_points = max_points
        self.num_classes = num_classes
        self.bins: dict[int, list] = {}  # bin index -> [sum of probs (K,), count]

    @property
    def bin_s(self) -> float:
        return self.frames_per_bin * self.frame_s

    def add(self, frame_index: int, probs: np.ndarray) -> None:
        index = frame_index // self.frames_per_bin
        entry = self.bins.get(index)
        if entry is None:
            self.bins[index] = [np.asarray(probs, np.float64).copy(), 1]
        else:
            entry[0] += probs
            entry[1] += 1
        while len(self.bins) > self.max_points:
            self._coarsen()

    def _coarsen(self) -> None:
        merged: dict[int, list] = {}
        for index, (total, count) in self.bins.items():
            entry = merged.setdefault(index // 2, [np.zeros(self.num_classes), 0])
            entry[0] += total
            entry[1] += count
        self.bins = merged
        self.frames_per_bin *= 2

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin start times in seconds (T,), mean probs (T, K)) in time order."""
        indices = sorted(self.bins)
        times = np.array([i * self.bin_s for i in indices])
        means = np.array([self.bins[i][0] / self.bins[i][1] for i in indices]).reshape(len(indices), self.num_classes)
        return times, means


class TrackSummary:
    def __init__(self, track_id: int, num_classes: int, frame_s: float):
        self.track_id = track_id
        self.start_s = self.end_s = None
        self.frames = 0
        self.label_counts = np.zeros(num_classes, np.int64)
        self.prob_sum = np.zeros(num_classes)
        self.timeline = Timeline(frame_s, num_classes)

    def add(self, frame_index: int, seconds: float, probs: np.ndarray) -> None:
        self.start_s = seconds if self.start_s is None else self.start_s
        self.end_s = seconds
        self.frames += 1
        self.label_counts[int(np.argmax(probs))] += 1
        self.prob_sum += probs
        self.timeline.add(frame_index, probs)

    def record(self, class_names, frame_s: float) -> dict:
        share = self.label_counts / max(self.frames, 1)
        return {"track_id": self.track_id, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "duration_s": round(self.end_s - self.start_s + frame_s, 3), "frames": self.frames,
                "dominant": class_names[int(np.argmax(self.label_counts))],
                "share": {name: round(float(s), 4) for name, s in zip(class_names, share)},
                "mean_probabilities": {name: round(float(p), 4)
                                       for name, p in zip(class_names, self.prob_sum / max(self.frames, 1))}}


def analyze_video(video: str | os.PathLike, out_dir: str | os.PathLike, classifier, detector, *,
                  detect_every: int = 2, smoothing: str = DEFAULT_SMOOTHING, min_track_s: float = 0.5,
                  max_frames: int | None = None, progress: bool = True, num_threads: int | None = 1) -> dict:
    """Write the report files (module docstring) for one video file; returns the summary dict (summary.json).

    classifier, detector: as fer.live.run_live takes them. detect_every, smoothing: as `live`. min_track_s: tracks
    seen for less get no timeline PNG (they are still in the CSV and the summary). max_frames: stop early.
    num_threads: torch and OpenCV threads during the run, as fer.live.run_live sets them (None: leave them).
    """
    if num_threads is not None:
        with _threads(num_threads):
            return analyze_video(video, out_dir, classifier, detector, detect_every=detect_every, smoothing=smoothing,
                                 min_track_s=min_track_s, max_frames=max_frames, progress=progress, num_threads=None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = VideoFileReader(str(video))
    class_names = list(classifier.class_names)
    stream = FaceStream(classifier, detect_every=detect_every, smoothing=smoothing)
    frame_s = 1.0 / reader.fps
    tracks: dict[int, TrackSummary] = {}
    frames = faces = 0
    total = reader.frame_count if reader.frame_count > 0 else None
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    try:
        with open(out / "frames.csv", "w", newline="", encoding="utf-8") as csv_file, \
                tqdm(total=total, unit="frame", desc=Path(video).name, disable=not progress) as bar:
            writer = csv.writer(csv_file)
            writer.writerow(["frame", "time_s", "track_id", "x", "y", "w", "h", "label"] +
                            [f"p_{name}" for name in class_names])
            while max_frames is None or reader.index < max_frames:
                item = reader.read()
                if item is None:
                    break
                bar.update(1)
                index, image_bgr, seconds = item
                if image_bgr is None:  # a decode failure, counted by the reader
                    continue
                frames += 1
                for face in stream.step(image_bgr, detector):
                    probs = np.array([face["probabilities"][name] for name in class_names])  # (K,)
                    writer.writerow([index, f"{seconds:.4f}", face["track_id"], *face["box"], face["label"]] +
                                    [f"{p:.5f}" for p in probs])
                    track = tracks.get(face["track_id"])
                    if track is None:
                        track = tracks[face["track_id"]] = TrackSummary(face["track_id"], len(class_names), frame_s)
                    track.add(index, seconds, probs)
                    faces += 1
    finally:
        reader.close()

    records = [t.record(class_names, frame_s) for t in sorted(tracks.values(), key=lambda t: t.track_id)]
    label_counts = sum((t.label_counts for t in tracks.values()), np.zeros(len(class_names), np.int64))
    summary = {"video": str(video), "frames": frames, "frames_failed": reader.failed, "fps": round(reader.fps, 3),
               "duration_s": round(frames * frame_s, 3), "face_frames": faces,
               "dominant": class_names[int(np.argmax(label_counts))] if faces else None,
               "detect_every": detect_every, "smoothing": smoothing, "tracks": records, "timelines": []}
    for track, record in zip(sorted(tracks.values(), key=lambda t: t.track_id), records):
        if record["duration_s"] >= min_track_s:
            name = f"timeline_track{track.track_id}.png"
            plot_timeline(track.timeline, class_names, record, out / name)
            summary["timelines"].append(name)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(summary, class_names), encoding="utf-8")
    log.info("analyze: %d frames, %d tracks, report in %s", frames, len(records), out)
    return summary


@contextmanager
def _threads(num_threads: int):
    import cv2
    import torch

    saved = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(num_threads)
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        cv2.setNumThreads(saved[0])
        torch.set_num_threads(saved[1])


def summary_markdown(summary: dict, class_names) -> str:
    lines = [f"# Video report: {Path(summary['video']).name}", "",
             f"{summary['frames']} frames at {summary['fps']} fps ({summary['duration_s']} s), "
             f"{summary['face_frames']} face boxes in {len(summary['tracks'])} track(s); "
             f"dominant expression: {summary['dominant'] or 'no face'}. Share = the fraction of the track's frames "
             f"with that top label (smoothed {summary['smoothing']}).", "",
             "| track | start s | end s | duration s | frames | dominant | " + " | ".join(class_names) + " |",
             "|" + " --- |" * (6 + len(class_names))]
    for t in summary["tracks"]:
        shares = " | ".join(f"{100 * t['share'][name]:.0f} %" for name in class_names)
        lines.append(f"| {t['track_id']} | {t['start_s']:.2f} | {t['end_s']:.2f} | {t['duration_s']:.2f} | "
                     f"{t['frames']} | {t['dominant']} | {shares} |")
    if summary["timelines"]:
        lines += ["", "Timelines: " + ", ".join(f"[{name}]({name})" for name in summary["timelines"])]
    return "\n".join(lines) + "\n"


def plot_timeline(timeline: Timeline, class_names, record: dict, path: Path) -> None:
    """Stacked probability bands over time (gaps where the track was not seen) and the top label as a strip."""
    from fer.plots import _pyplot

    plt = _pyplot()
    times, means = timeline.series()  # (T,), (T, K)
    width = timeline.bin_s
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(10, 3.6), sharex=True,
                                    gridspec_kw={"height_ratios": [6, 1], "hspace": 0.08})
    colours = [CLASS_COLOURS.get(name, plt.get_cmap("tab10")(k % 10)) for k, name in enumerate(class_names)]
    bottom = np.zeros(len(times))
    for k, name in enumerate(class_names):  # bars of the bin width: gaps stay gaps, no interpolation across them
        ax.bar(times, means[:, k], width=width, bottom=bottom, align="edge", color=colours[k], linewidth=0,
               label=f"{name} ({100 * record['share'][name]:.0f} %)")
        bottom += means[:, k]
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="share of frames",
              title_fontsize=8)
    ax.set_title(f"Track #{record['track_id']}: {record['start_s']:.1f}-{record['end_s']:.1f} s, mostly "
                 f"{record['dominant']} ({100 * record['share'][record['dominant']]:.0f} % of {record['frames']} "
                 "frames)", fontsize=10, loc="left")
    top = np.argmax(means, axis=1)
    strip.bar(times, np.ones(len(times)), width=width, align="edge", color=[colours[k] for k in top], linewidth=0)
    strip.set_yticks([])
    strip.set_ylabel("top", rotation=0, ha="right", va="center", fontsize=8)
    strip.set_xlabel("time (s)")
    strip.set_xlim(record["start_s"], record["end_s"] + width)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
