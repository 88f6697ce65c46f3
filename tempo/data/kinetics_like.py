"""Kinetics-like synthetic footage: what `benchmarks/bench_pipeline.py` encodes as its "original"
videos and what the stored formats' quality test prepares (tests/test_prepare.py)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FRAMES, HEIGHT, WIDTH = 300, 256, 340


def natural_texture(rng: np.random.Generator, h: int, w: int, alpha: float = 1.3) -> np.ndarray:
    """(h, w, 3) zero-mean unit-variance texture with a natural image's 1/f^alpha spectrum."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]
    radius = np.sqrt(fy ** 2 + fx ** 2)
    radius[0, 0] = 1
    amplitude = radius ** -alpha
    amplitude[0, 0] = 0
    planes = [np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.uniform(size=amplitude.shape)), s=(h, w))
              for _ in range(3)]
    image = np.stack(planes, -1) @ rng.uniform(0.2, 1, (3, 3))  # correlated colour channels
    return (image - image.mean()) / image.std()


def kinetics_like(seed: int, n: int = FRAMES, h: int = HEIGHT, w: int = WIDTH, objects: int = 12):
    """Hand-held footage: a natural-texture scene under a shaking, zooming, rotating camera, a dozen
    independently moving textured objects that change shape, flicker, and sensor noise.

    Calibrated on real Kinetics clips (MMAction2's demo clip and test clip, by hand): x264 defaults
    give ~4 KB/frame with ~40 % non-reference frames, all-intra at the same crf is ~1.8× and JPEG
    q90 ~9× the original's size (real clips: 1.1–1.9× and 4.6–8.7×). A smooth panning texture, by
    contrast, compresses so well between frames that every re-encode looks 10–30× larger.
    """
    rng = np.random.default_rng(seed)
    scene = torch.from_numpy(np.clip(128 + 50 * natural_texture(rng, 2 * h, 2 * w), 0, 255).astype(np.float32))
    scene = scene.permute(2, 0, 1)[None]
    sprites = []
    for _ in range(objects):
        r = int(rng.integers(25, 60))
        texture = np.clip(128 + 60 * natural_texture(rng, 2 * r, 2 * r) + rng.uniform(-60, 60, 3), 0, 255)
        sprites.append((r, texture.astype(np.float32), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.02, 0.08, 2)))
    shake = np.cumsum(rng.normal(0, 4, (n, 2)), 0) / 200
    disc = np.arange(-60, 60)
    for t in range(n):
        zoom, angle = 0.5 * (1 + 0.08 * np.sin(t / 40 + seed)), 0.03 * np.sin(t / 55)
        theta = torch.tensor([[zoom * np.cos(angle), -zoom * np.sin(angle), 0.3 * np.sin(t / 90) + shake[t, 0]],
                              [zoom * np.sin(angle), zoom * np.cos(angle), 0.2 * np.cos(t / 70) + shake[t, 1]]],
                             dtype=torch.float32)
        grid = F.affine_grid(theta[None], (1, 3, h, w), align_corners=False)
        frame = F.grid_sample(scene, grid, align_corners=False)[0].permute(1, 2, 0).numpy().copy()
        for r, texture, phase, speed in sprites:
            y0 = int(h / 2 + (h / 2 - r) * np.sin(t * speed[0] + phase[0])) - r
            x0 = int(w / 2 + (w / 2 - r) * np.sin(t * speed[1] + phase[1])) - r
            inside = disc[60 - r: 60 + r] ** 2
            mask = inside[:, None] + inside[None] < r * r * (0.8 + 0.2 * np.sin(t * 0.2))
            ys, xs = slice(max(y0, 0), min(y0 + 2 * r, h)), slice(max(x0, 0), min(x0 + 2 * r, w))
            cut = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
            frame[ys, xs][mask[cut]] = texture[cut][mask[cut]]
        frame *= 1 + 0.03 * np.sin(t / 15)
        frame += rng.normal(0, 2, frame.shape)
        yield np.clip(frame, 0, 255).astype(np.uint8)
