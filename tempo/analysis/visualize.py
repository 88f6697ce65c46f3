"""What the sparse attention does: one PNG strip per video with, for a few frames, the original frame (peaks
marked: discriminative red, complementary blue), its discriminative zoom and its complementary zoom side by side.

Used by ``python -m tempo.evaluate ... eval.save_attention=N`` (model=tcnn_sparse with a D or C branch).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

PANELS = ("original", "discriminative", "complementary")
GAP = 2  # white pixels between panels and rows
COLOURS = {"discriminative": (230, 30, 30), "complementary": (30, 90, 240)}


def to_uint8(clip: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Normalised (3, T, H, W) → uint8 (T, H, W, 3)."""
    images = clip.detach().float().cpu() * std.view(3, 1, 1, 1).cpu() + mean.view(3, 1, 1, 1).cpu()
    return (images.clamp(0, 1) * 255).round().byte().permute(1, 2, 3, 0).numpy()


def frame_indices(num_frames: int, count: int) -> list[int]:
    """`count` evenly spaced frames (all when the clip is shorter)."""
    if count >= num_frames:
        return list(range(num_frames))
    return np.linspace(0, num_frames - 1, count).round().astype(int).tolist()


def mark_peaks(image: Image.Image, coords: torch.Tensor, masks: dict[str, torch.Tensor], grid_size: int) -> None:
    """Crosses at the peaks (grid coordinates (row, col) → pixels), one colour per set."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    arm = max(2, min(w, h) // 25)
    for name, mask in masks.items():
        for row, col in coords[mask].tolist():
            y, x = row * (h - 1) / (grid_size - 1), col * (w - 1) / (grid_size - 1)
            draw.line([(x - arm, y), (x + arm, y)], fill=COLOURS[name], width=max(1, arm // 3))
            draw.line([(x, y - arm), (x, y + arm)], fill=COLOURS[name], width=max(1, arm // 3))


def attention_strip(clips: dict[str, np.ndarray], coords: torch.Tensor, masks: dict[str, torch.Tensor],
                    grid_size: int, frames: int = 4) -> Image.Image:
    """Rows = frames, columns = original / discriminative / complementary. `clips`: uint8 (T, H, W, 3) by panel;
    `coords` (T, K, 2) and `masks` (T, K) by set name from the sparse-attention block."""
    t, h, w, _ = clips["original"].shape
    rows = frame_indices(t, frames)
    strip = Image.new("RGB", (len(PANELS) * w + (len(PANELS) - 1) * GAP, len(rows) * h + (len(rows) - 1) * GAP),
                      (255, 255, 255))
    for r, index in enumerate(rows):
        for c, panel in enumerate(PANELS):
            image = Image.fromarray(clips[panel][index])
            if panel == "original":
                mark_peaks(image, coords[index], {k: m[index] for k, m in masks.items()}, grid_size)
            strip.paste(image, (c * (w + GAP), r * (h + GAP)))
    return strip


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "video"


@torch.no_grad()
def save_attention_strips(network: torch.nn.Module, batches: Iterable[dict], count: int, out_dir: Path,
                          mean: torch.Tensor, std: torch.Tensor, class_names: Sequence[str] | None = None,
                          frames: int = 4) -> list[Path]:
    """Run `network.forward_with_attention` on normalised batches (video (B, 3, T, H, W), label, index) and
    write one strip per video for the first `count` videos into `out_dir`; returns the paths."""
    if not hasattr(network, "forward_with_attention"):
        raise ValueError(f"eval.save_attention needs a sparse-attention model (model=tcnn_sparse), "
                         f"got {type(network).__name__}")
    out_dir.mkdir(parents=True, exist_ok=True)
    network.eval()
    paths: list[Path] = []
    for batch in batches:
        _, attention = network.forward_with_attention(batch["video"])
        if attention is None:
            raise ValueError("eval.save_attention needs a discriminative or complementary branch: "
                             "model.network.branches=O has no attention")
        grid_size = attention["response"].shape[-1]
        for i in range(batch["video"].shape[0]):
            if len(paths) >= count:
                return paths
            # a set the model does not use (e.g. C with branches=OD) is shown as the original clip
            clips = {p: to_uint8(attention.get(p, batch["video"])[i], mean, std) for p in PANELS}
            masks = {p: attention[f"{p}_mask"][i] for p in PANELS[1:]}
            label = int(batch["label"][i])
            name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
            index = int(batch["index"][i]) if "index" in batch else len(paths)
            path = out_dir / f"{len(paths):03d}_video{index}_{safe_name(name)}.png"
            attention_strip(clips, attention["coords"][i], masks, grid_size, frames).save(path)
            paths.append(path)
    return paths
