"""`python -m tempo.demo`: top-5 of one real (PyAV-encoded) clip and the Grad-CAM strip, for a 2D frame-folded
network (TSM) and a 3D one (a tiny Conv3d network: no 3D model on main yet), through the one generic hook."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

from tempo.analysis.gradcam import GAP, HEADER, class_activation
from tempo.data.encode import write_video
from tempo.demo import run as demo
from tempo.run.config import ConfigError
from tempo.train import run as train
from tests.conftest import CONF_DIR
from tests.video_files import moving_square

REPO = Path(__file__).resolve().parents[1]


class TinyConv3d(nn.Module):
    """A few Conv3d layers (clips stay (B, C, T, H, W)); the temporal stride makes the map coarser in time."""

    def __init__(self, num_classes: int, **unused):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                                      nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, video: torch.Tensor) -> dict:
        return {"logits": self.fc(self.pool(self.features(video)).flatten(1))}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, synthetic_cache) -> dict[str, str]:
    from tests.conftest import TINY, compose_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo-runs")
    runs = {"2d": ["model=tsm"], "3d": ["model=tsn", f"model.network._target_={__name__}.TinyConv3d"]}
    try:
        return {name: train(compose_config([*TINY, *extra, "run_test=false"], out / name, synthetic_cache))
                ["checkpoints"]["last"] for name, extra in runs.items()}
    finally:
        torch.set_num_threads(threads)


def run_demo(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tmp_path}", *overrides])
    return demo(cfg, overrides=list(overrides))


@pytest.mark.parametrize(("kind", "container", "layer"), [("2d", "clip.mp4", "backbone.layer3"),
                                                         ("3d", "clip.avi", "features")])
def test_top5_and_gradcam_strip(checkpoints, tmp_path, capsys, one_thread, kind, container, layer):
    video = moving_square(tmp_path / container)
    prediction = run_demo(tmp_path / "out", f"ckpt_path={checkpoints[kind]}", f"video={video}", "gradcam=true",
                          "device=cpu")
    top = prediction["top"]
    scores = [entry["score"] for entry in top]
    assert len(top) == 5 and scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6
    assert {entry["class"] for entry in top} <= {"moving right slowly", "moving right fast", "moving left slowly",
                                                 "moving left fast", "moving down slowly", "moving down fast",
                                                 "moving up slowly", "moving up fast"}
    printed = capsys.readouterr().out
    assert f"1. {top[0]['class']}" in printed and f"{scores[0]:.4f}" in printed
    assert json.loads((tmp_path / "out" / "prediction.json").read_text())["top"] == top
    assert prediction["gradcam"]["layer"] == layer  # the generic rule: the last feature stage
    image = np.asarray(Image.open(prediction["gradcam"]["png"]).convert("RGB")).astype(int)
    side = 28 * 4  # input_size 28, scaled ×4 for readability
    frames = 4  # dataset.num_segments (all of them: gradcam_frames=8 > 4)
    assert image.shape == (HEADER + 2 * side + GAP, frames * side + (frames - 1) * GAP, 3)
    originals = image[HEADER:HEADER + side]
    overlays = image[HEADER + side + GAP:]
    assert originals.std() > 10 and overlays.std() > 10
    # the heat map differs across each overlaid panel (not a constant tint) and changes the frames
    diff = np.abs(overlays - originals).mean(-1)
    assert all(diff[:, c * (side + GAP):c * (side + GAP) + side].std() > 1 for c in range(frames))


def test_gradcam_of_a_3d_network_matches_a_direct_computation():
    torch.manual_seed(0)
    net = TinyConv3d(5).eval()
    clip = torch.randn(1, 3, 8, 16, 16)
    result = class_activation(net, clip, target=2)
    assert result["layer"] == "features" and result["cam"].shape == (8, 16, 16)
    features = net.features(clip)
    score = net.fc(net.pool(features).flatten(1))[0, 2]
    grads = torch.autograd.grad(score, features)[0][0]
    cam = torch.relu((grads.mean(dim=(1, 2, 3), keepdim=True) * features[0]).sum(0))  # (4, 8, 8): stride 2
    cam = torch.nn.functional.interpolate(cam[None, None], size=(8, 16, 16), mode="trilinear")[0, 0]
    assert torch.allclose(result["cam"], cam / cam.max(), atol=1e-5)
    assert result["cam"].max() == 1 and result["cam"].std() > 0.01


def test_gradcam_layer_method_overrides_the_rule():
    net = TinyConv3d(3).eval()
    net.gradcam_layer = lambda: net.features[0]
    assert class_activation(net, torch.randn(1, 3, 4, 8, 8))["layer"] == "features.0"


def test_clear_errors(checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="video is required"):
        run_demo(tmp_path, f"ckpt_path={checkpoints['2d']}")
    with pytest.raises(ConfigError, match="no such file"):
        run_demo(tmp_path, f"ckpt_path={checkpoints['2d']}", f"video={tmp_path / 'missing.mp4'}")
    with pytest.raises(ConfigError, match="model.network._target_"):
        run_demo(tmp_path, f"ckpt_path={checkpoints['2d']}", f"video={moving_square(tmp_path / 'c.mp4')}", "model=tcm")
    text = tmp_path / "readme.txt"
    text.write_text("# tempo\n\nA training framework.\n" * 30)
    with pytest.raises(ConfigError, match="video=.*readme.txt: "):  # no video: a message, exit status 2
        run_demo(tmp_path, f"ckpt_path={checkpoints['2d']}", f"video={text}")


@pytest.mark.slow
def test_cli_prints_top5(checkpoints, tmp_path):
    video = moving_square(tmp_path / "clip.webm")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "tempo.demo", f"ckpt_path={checkpoints['2d']}", f"video={video}",
                          f"hydra.run.dir={tmp_path / 'out'}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line[:2] in {f"{i}." for i in range(1, 6)}]
    assert len(lines) == 5 and not (tmp_path / "out" / "gradcam.png").exists()


def framed_square(path: Path, frames: int = 8, height: int = 96, width: int = 128) -> Path:
    """Black frames with a 16-px white border: a centre crop of the full-size frame is all black; of the frame
    resized to a short side of 32, it reaches into the border."""
    frame = np.full((height, width, 3), 255, np.uint8)
    frame[16:-16, 16:-16] = 0
    return write_video(path, [frame] * frames, fps=10)


def test_video_is_resized_to_the_training_scale_first(checkpoints, tmp_path, capsys):
    from tempo.demo import read_clip
    from tempo.run.restore import load_evaluated

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tmp_path}", f"ckpt_path={checkpoints['2d']}"])
    config = load_evaluated(cfg, [f"ckpt_path={checkpoints['2d']}"])[0]
    clip = read_clip(config, str(framed_square(tmp_path / "big.mp4")))
    assert clip.shape[-2:] == (28, 28)  # input_size of the tiny run (trained on 32-px frames)
    assert clip.float().amax() > 200  # the border, 16 px at 96 px = 5 px at 32 px, is inside the 28-px crop
    assert "frames 128×96: ResizeShortSide(32) → CenterCrop(28) (resize added" in capsys.readouterr().out
