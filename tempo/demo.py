"""`python -m tempo.demo ckpt_path=<ckpt> video=<file> [gradcam=true] [window=<s> stride=<s>]`: classify a video
with a checkpoint (one clip, or with `window` a timeline of clips slid over the whole video).

The network, class names, frame sampling and centre crop are the checkpoint's (its training config,
`tempo.run.checkpoint`); a video larger than the training frames is first resized to their scale (the short side of
`dataset.short_side`, or the synthetic set's frame size), as its validation transforms expect, and the demo prints
what it did to the frames. The video is read by `tempo.data.sources.open_video` (decord, else PyAV: any container
either reads). Prints the top-k classes with their probabilities and writes them to `<run dir>/prediction.json`;
`gradcam=true` also writes `<run dir>/gradcam.png`: the sampled frames and, below them, the Grad-CAM map of the
top class overlaid (`tempo.analysis.gradcam`, the same for 2D and 3D networks).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from tempo import CONF_DIR
from tempo.analysis import timeline
from tempo.analysis.gradcam import class_activation, gradcam_strip
from tempo.analysis.visualize import frame_indices, to_uint8
from tempo.data.datamodule import with_clips
from tempo.data.dataset import VideoDataset
from tempo.data.records import VideoRecord
from tempo.data.sources import DecodeError, open_video
from tempo.data.transforms import Compose, ResizeShortSide
from tempo.run.checkpoint import task_overrides
from tempo.run.config import ConfigError
from tempo.run.frontdoor import to_log_file, user_errors
from tempo.run.quiet import quiet_startup
from tempo.run.restore import load_evaluated

#: val: one clip, the validation crop (default); test: the checkpoint's test protocol (clips × crops, scores
#: averaged as `dataset.test_reduce` says) — what a released model's own test does (conf/zoo entries)
VIEWS = ("val", "test")

class FrameSize:
    """A transform that records the (height, width) of the frames passing it."""

    size: tuple[int, int] | None = None

    def __call__(self, sample: dict) -> dict:
        self.size = tuple(sample["video"].shape[-2:])
        return sample


def training_short_side(config: DictConfig) -> int | None:
    """The short side of the frames the checkpoint trained on: `dataset.short_side`, else the synthetic set's
    frame size (`dataset.datamodule.reader.size`); None when the config says neither."""
    reader = config.dataset.datamodule.get("reader") or {}
    return config.dataset.get("short_side") or reader.get("size")


def demo_transforms(config: DictConfig, chain) -> tuple[list, str]:
    """The checkpoint's transforms `chain` (validation or test), with a resize to the training scale in front when
    they have none (the synthetic set trains on its own small frames: a real clip's centre crop would be a small
    patch), and what they do, in words."""
    transforms = [instantiate(t) for t in chain if t is not None]
    side = training_short_side(config)
    added = ""
    if side and not any(type(t).__name__.startswith("Resize") for t in transforms):
        transforms.insert(0, ResizeShortSide(int(side)))
        added = f" (resize added: the checkpoint trained on frames of short side {side})"
    steps = " → ".join(f"{type(t).__name__}({getattr(t, 'size', '')})" for t in transforms)
    return transforms, steps + added


def read_clip(config: DictConfig, path: str, views: str = "val") -> torch.Tensor:
    """uint8 (C, T, H, W): the validation sampling and transforms of the checkpoint's dataset; with
    views="test", (V, C, T, H, W): its test protocol's views (test_views: clips × crops). The transforms
    start with a resize to the training scale where they have none (`demo_transforms`); prints what was done
    to the frames."""
    if views not in VIEWS:
        raise ConfigError(f"views must be one of {list(VIEWS)}, got {views!r}")
    try:
        source = open_video(path)  # fails early, naming the file, when neither decord nor PyAV reads it
    except DecodeError as err:  # the file the user named is no video: theirs to fix, not a crash
        raise ConfigError(f"video={path}: {err.reason}") from err
    datamodule = config.dataset.datamodule
    test = views == "test"
    chain = datamodule.get("test_transforms") or datamodule.val_transforms if test else datamodule.val_transforms
    sampler = instantiate(datamodule.get("test_sampler") or datamodule.sampler) if test else \
        instantiate(datamodule.sampler)
    if test:
        sampler = with_clips(sampler, int(datamodule.get("test_clips") or 1))
    transforms, steps = demo_transforms(config, chain)
    probe = FrameSize()
    dataset = VideoDataset([VideoRecord(path, label=0, num_frames=source.num_frames)], sampler,
                           Compose([probe, *transforms]), backend="decord", multi_view=test)
    clip = dataset.load(0, None)["video"]
    height, width = probe.size
    print(f"frames {width}×{height}: {steps}")
    to_log_file(f"{path}: frames {width}×{height}: {steps}")
    return clip


def pick_device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda", "gpu"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    if name in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Top-k of `cfg.video` (and the Grad-CAM strip with `cfg.gradcam`); returns what prediction.json holds."""
    quiet_startup()
    if not cfg.get("video"):
        raise ConfigError("video is required: python -m tempo.demo ckpt_path=<ckpt> video=<file>")
    if not Path(str(cfg.video)).is_file():
        raise ConfigError(f"video={cfg.video}: no such file")
    overrides = task_overrides() if overrides is None else list(overrides)
    config, class_names, module = load_evaluated(cfg, overrides)
    names = list(class_names or [str(i) for i in range(int(config.dataset.num_classes))])
    device = pick_device(str(cfg.device))
    module = module.to(device).eval()
    if cfg.get("window"):
        return run_timeline(cfg, config, names, module, device)
    views = str(cfg.get("views") or "val")
    if views == "test" and cfg.gradcam:
        raise ConfigError("gradcam=true needs views=val (one clip): Grad-CAM explains a single view")
    clip = read_clip(config, str(cfg.video), views)
    video = module.on_after_batch_transfer({"video": clip[None].to(device)}, 0)["video"]
    if cfg.gradcam:
        result = class_activation(module.network, video)
        probs = result["logits"].float().softmax(-1)
    elif views == "test":
        with torch.no_grad():  # the test step's averaging over the views
            scores = module.multi_view_scores(video)["logits"][0].float().cpu()
        probs = scores if module.test_reduce == "prob" else scores.softmax(-1)
    else:
        with torch.no_grad():
            probs = module.network(video)["logits"][0].float().cpu().softmax(-1)
    k = min(int(cfg.top_k), len(names))
    values, classes = probs.topk(k)
    paths = [cfg.ckpt_path] if isinstance(cfg.ckpt_path, str) else list(cfg.ckpt_path)
    top = [{"class": names[c], "index": c, "score": float(v)}
           for c, v in zip(classes.tolist(), values.tolist(), strict=True)]
    prediction = {"video": str(cfg.video), "checkpoints": [str(p) for p in paths], "top": top}
    lines = [f"{rank}. {entry['class']:<40s} {entry['score']:.4f}" for rank, entry in enumerate(prediction["top"], 1)]
    print("\n".join(lines))
    to_log_file("top classes:\n" + "\n".join(lines))
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.gradcam:
        frames = to_uint8(video[0], module.mean, module.std)
        indices = frame_indices(frames.shape[0], int(cfg.gradcam_frames))
        size = frames.shape[1]
        title = f"{names[result['target']]} ({float(probs[result['target']]):.2f}) - Grad-CAM of {result['layer']}"
        strip = gradcam_strip(frames, result["cam"].numpy(), title, indices, scale=max(1, 112 // size))
        path = run_dir / "gradcam.png"
        strip.save(path)
        prediction["gradcam"] = {"png": str(path), "layer": result["layer"], "frames": indices}
        print(f"Grad-CAM ({result['layer']}): {path}")
    (run_dir / "prediction.json").write_text(json.dumps(prediction, indent=2))
    return prediction


def run_timeline(cfg: DictConfig, config: DictConfig, names: list[str], module, device: torch.device) -> dict:
    """`window=<s> [stride=<s>]`: the checkpoint's clip slid over the whole video (`tempo.analysis.timeline`);
    writes timeline.csv and timeline.png to the run dir and returns {"csv", "png", "windows", "classes"}."""
    if cfg.gradcam:
        raise ConfigError("gradcam=true explains one clip; drop it with window=... (the timeline has many)")
    if str(cfg.get("views") or "val") != "val":
        raise ConfigError("window=... classifies one validation clip per window; drop views=test")
    window = float(cfg.window)
    stride = float(cfg.stride) if cfg.get("stride") else window
    datamodule = config.dataset.datamodule
    transform = Compose([instantiate(t) for t in datamodule.val_transforms if t is not None])
    path = str(cfg.video)
    num_frames, fps = timeline.video_timing(path)
    try:
        windows = timeline.plan_windows(num_frames, fps, window, stride, instantiate(datamodule.sampler))
    except ValueError as err:
        raise ConfigError(f"window={cfg.window} stride={cfg.get('stride')}: {err}") from None

    def classify(clips: torch.Tensor) -> torch.Tensor:
        return module.network(module.on_after_batch_transfer({"video": clips.to(device)}, 0)["video"])["logits"]

    clips = timeline.window_clips(path, windows, transform)
    scores = timeline.window_scores(clips, classify, len(windows), int(cfg.window_batch))
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    k = int(cfg.top_k)
    timeline.write_timeline_csv(run_dir / "timeline.csv", windows, scores, names, k)
    shown = timeline.plot_timeline(run_dir / "timeline.png", windows, scores, names, k,
                                   f"{Path(path).name}: {window:g} s windows every {stride:g} s")
    print(f"{len(windows)} windows of {window:g} s every {stride:g} s over {num_frames / fps:.1f} s "
          f"({num_frames} frames at {fps:g} fps): {run_dir / 'timeline.csv'}, {run_dir / 'timeline.png'}")
    return {"csv": str(run_dir / "timeline.csv"), "png": str(run_dir / "timeline.png"), "windows": windows,
            "scores": scores, "classes": shown}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="demo")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
