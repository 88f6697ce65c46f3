"""Long-video inference: the checkpoint's clip slid over the whole video, `window` seconds every `stride`.

Window k spans [k·stride, k·stride + window) seconds, i.e. frames [round(start·fps), round(end·fps)); the last
window is moved to end at the video's end, so the windows cover it all (a video shorter than one window is one
window). Inside its span each window's frames are the ones the checkpoint's evaluation sampler picks, exactly as
`VideoDataset` reads a record bounded by start/end frames. The video is decoded once, front to back (PyAV):
a frame is decoded and converted once however many windows share it, kept only until the last window that
needs it is complete, and the windows go through the network in batches.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tempo.data.sources import DecodeError, first_video_stream, open_video


@dataclass(frozen=True)
class Window:
    start: float  # seconds
    end: float
    frames: np.ndarray  # absolute frame indices the sampler picks in [first_frame, last_frame)


def plan_windows(num_frames: int, fps: float, window: float, stride: float, sampler) -> list[Window]:
    """The windows over a video of `num_frames` frames at `fps`, with the frames `sampler` picks in each."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive seconds, got window={window}, stride={stride}")
    if num_frames <= 0 or fps <= 0:
        raise ValueError(f"a video with {num_frames} frames at {fps} fps has no windows")
    duration = num_frames / fps
    window = min(window, duration)
    starts = list(np.arange(0.0, duration - window + 1e-9, stride))
    if starts[-1] + window < duration - 1e-9:
        starts.append(duration - window)  # the last window ends with the video
    windows = []
    for start in starts:
        first = min(int(round(start * fps)), num_frames - 1)
        last = max(min(int(round((start + window) * fps)), num_frames), first + 1)
        clip = sampler.sample(last - first)[0] + first  # as VideoDataset.load with record start/end
        windows.append(Window(float(start), float(start + window), clip))
    return windows


def video_timing(path: str) -> tuple[int, float]:
    """(frames, frames per second): the frame count as `VideoDataset` sees it (`open_video`), the rate of
    PyAV's first video stream."""
    import av

    num_frames = open_video(path).num_frames  # fails naming the file when it is no readable video
    try:
        with av.open(path) as container:
            stream = first_video_stream(path, container)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except av.FFmpegError as err:
        raise DecodeError(path, f"PyAV could not read its video stream ({err})") from err
    if not rate:
        raise DecodeError(path, "the video stream states no frame rate; windows in seconds need one")
    return num_frames, float(rate)


def decoded_frames(path: str, wanted: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB uint8 (H, W, 3)) of the `wanted` frames, in one front-to-back decode (PyAV)."""
    import av

    from tempo.data.sparse_decode import to_rgb

    last = max(wanted)
    with av.open(path) as container:
        # decoder output order: the full decode every tempo source equals (docs/datasets-decoding.md)
        for index, frame in enumerate(container.decode(first_video_stream(path, container))):
            if frame.is_corrupt:
                raise DecodeError(path, f"the decoder flagged frame {index} corrupt")
            if index in wanted:
                yield index, to_rgb(frame)
            if index >= last:
                return
    raise DecodeError(path, f"the video ended before frame {last} (truncated file?)")


def window_clips(path: str, windows: list[Window], transform: Callable | None) -> Iterator[tuple[int, torch.Tensor]]:
    """(window index, uint8 clip (C, T, H, W)) for every window, in the order its last frame is decoded;
    `transform` is the dataset's evaluation transform (a sample dict of (V, T, C, H, W) video)."""
    order = sorted(range(len(windows)), key=lambda k: int(windows[k].frames.max()))
    last_use = {}  # frame → the position in `order` of the last window that needs it
    for position, k in enumerate(order):
        for i in windows[k].frames.tolist():
            last_use[i] = position
    released: list[list[int]] = [[] for _ in order]  # frames to drop once the window at each position is out
    for i, position in last_use.items():
        released[position].append(i)
    buffer: dict[int, np.ndarray] = {}
    position = 0
    for index, frame in decoded_frames(path, set(last_use)):
        buffer[index] = frame
        while position < len(order) and int(windows[order[position]].frames.max()) <= index:
            k = order[position]
            video = torch.from_numpy(np.stack([buffer[i] for i in windows[k].frames.tolist()]))
            sample = {"video": video.permute(0, 3, 1, 2)[None], "label": -1}  # (1, T, C, H, W)
            if transform is not None:
                sample = transform(sample)
            yield k, sample["video"][0].permute(1, 0, 2, 3).contiguous()
            for i in released[position]:
                del buffer[i]
            position += 1


def batched(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def window_scores(clips: Iterator[tuple[int, torch.Tensor]], classify: Callable[[torch.Tensor], torch.Tensor],
                  num_windows: int, batch_size: int) -> torch.Tensor:
    """(windows, classes) class probabilities: `classify` maps a uint8 clip batch to logits."""
    scores: list[torch.Tensor | None] = [None] * num_windows
    for batch in batched(clips, batch_size):
        with torch.no_grad():
            probs = classify(torch.stack([clip for _, clip in batch])).float().softmax(-1).cpu()
        for (k, _), row in zip(batch, probs, strict=True):
            scores[k] = row
    return torch.stack(scores)


def write_timeline_csv(path: Path, windows: list[Window], scores: torch.Tensor, names: list[str], top_k: int) -> None:
    k = min(top_k, len(names))
    values, classes = scores.topk(k, dim=1)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        ranks = [f"{field}_{r}" for r in range(1, k + 1) for field in ("class", "score")]
        writer.writerow(["start_s", "end_s", *ranks])
        for window, row_values, row_classes in zip(windows, values.tolist(), classes.tolist(), strict=True):
            cells = [c for v, i in zip(row_values, row_classes, strict=True) for c in (names[i], f"{v:.4f}")]
            writer.writerow([f"{window.start:.3f}", f"{window.end:.3f}", *cells])


def plot_timeline(path: Path, windows: list[Window], scores: torch.Tensor, names: list[str], top_k: int,
                  title: str) -> list[str]:
    """timeline.png: the scores of the `top_k` classes with the highest peak score over time (each window
    drawn as a step over its span's centre ±stride/2); returns the classes drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = scores.max(0).values.topk(min(top_k, len(names))).indices.tolist()
    centres = [(w.start + w.end) / 2 for w in windows]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for c in shown:
        ax.step(centres, scores[:, c].numpy(), where="mid", label=names[c])
    ax.set_xlim(windows[0].start, windows[-1].end)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s, window centre)")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [names[c] for c in shown]
