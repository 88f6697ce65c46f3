"""Grad-CAM for any tempo network, 2D (frames folded into the batch) or 3D, through one mechanism.

The feature layer is the network's `gradcam_layer()` when it has one, else found by a generic rule: the
last module, in execution order, whose output is a feature map with spatial extent (4D (B·T, C, h, w) or
5D (B, C, T', h, w), h·w > 1), i.e. the last feature stage before global pooling (not counting maps inside
a module whose own output is 1×1, as the last stage of a small input can be). Its output and gradient
for the class score give the map relu(Σ_c w_c A_c) with w_c the gradient averaged over time and space;
each frame of the clip gets the map of its time step (3D maps are interpolated in time).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

GAP = 2
HEADER = 16


def is_feature_map(value) -> bool:
    return torch.is_tensor(value) and value.dim() in (4, 5) and value.is_floating_point()


def has_extent(value: torch.Tensor) -> bool:
    return value.shape[-1] * value.shape[-2] > 1


class FeatureRecorder:
    """Records, during one forward pass, the feature maps of every module (or of the given layer only).
    `choice()`: the last map with spatial extent, skipping maps inside a module whose own output has
    none (at small inputs the last stage can be 1×1: its inner maps are not that stage's output), unless
    that module holds every map (the whole backbone)."""

    def __init__(self, network: nn.Module):
        layer = network.gradcam_layer() if hasattr(network, "gradcam_layer") else None
        self.maps: list[tuple[str, torch.Tensor]] = []
        modules = [(n, m) for n, m in network.named_modules() if (m is layer if layer is not None else n)]
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if is_feature_map(output) and output.requires_grad:
                if has_extent(output):
                    output.retain_grad()
                self.maps.append((name, output))
        return hook

    def choice(self) -> tuple[str | None, torch.Tensor | None]:
        spatial = [name for name, out in self.maps if has_extent(out)]
        # a 1×1 module holding every map (the backbone itself) says nothing about which stage is the last
        collapsed = [name for name, out in self.maps if not has_extent(out)
                     and not all(n.startswith(f"{name}.") for n in spatial)]
        for name, out in reversed(self.maps):
            if has_extent(out) and not any(name.startswith(f"{c}.") for c in collapsed):
                return name, out
        return None, None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def class_activation(network: nn.Module, clip: torch.Tensor, target: int | None = None) -> dict:
    """Grad-CAM of one normalised clip (1, C, T, H, W): {"cam": (T, H, W) in [0, 1], "layer", "logits", "target"}."""
    recorder = FeatureRecorder(network)
    try:
        with torch.enable_grad():
            logits = network(clip)["logits"]
            target = int(logits[0].argmax()) if target is None else target
            layer, output = recorder.choice()
            if output is None:
                raise RuntimeError(f"{type(network).__name__}: no layer with a spatial feature map (4D/5D output "
                                   "with h·w > 1) ran with gradients; give the network a gradcam_layer() method")
            network.zero_grad(set_to_none=True)
            logits[0, target].backward()
    finally:
        recorder.remove()
    features, grads = output.detach(), output.grad
    if features.dim() == 4:  # frames folded into the batch: (B·T', C, h, w) → (C, T', h, w) of the one clip
        features, grads = (x.view(1, -1, *x.shape[1:])[0].transpose(0, 1) for x in (features, grads))
    else:  # (1, C, T', h, w)
        features, grads = features[0], grads[0]
    weights = grads.float().mean(dim=(1, 2, 3), keepdim=True)
    cam = F.relu((weights * features.float()).sum(0))  # (T', h, w)
    t, h, w = clip.shape[2:]
    cam = F.interpolate(cam[None, None], size=(t, h, w), mode="trilinear", align_corners=False)[0, 0]
    cam = cam / cam.max().clamp_min(1e-12)
    return {"cam": cam.cpu(), "layer": layer, "logits": logits.detach()[0].cpu(), "target": target}


def overlay(frame: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) frame with the jet-coloured map (H, W) in [0, 1] blended over it."""
    from matplotlib import colormaps

    heat = colormaps["jet"](cam)[..., :3] * 255
    return (frame * (1 - alpha) + heat * alpha).round().clip(0, 255).astype(np.uint8)


def gradcam_strip(frames: np.ndarray, cam: np.ndarray, title: str, indices: list[int], scale: int = 1) -> Image.Image:
    """Header with `title`, then a row of the frames `indices` and a row of the same frames with the map.
    `frames` uint8 (T, H, W, 3), `cam` (T, H, W) in [0, 1]."""
    panels = ([Image.fromarray(frames[i]) for i in indices],
              [Image.fromarray(overlay(frames[i], cam[i])) for i in indices])
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    strip = Image.new("RGB", (len(indices) * w + (len(indices) - 1) * GAP, HEADER + 2 * h + GAP), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 2), title, fill=(0, 0, 0))
    for row, images in enumerate(panels):
        for col, image in enumerate(images):
            strip.paste(image.resize((w, h), Image.BILINEAR), (col * (w + GAP), HEADER + row * (h + GAP)))
    return strip
