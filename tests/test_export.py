"""`tempo.export`: every model of conf/model/ in all three formats at tiny sizes, parity to eager PyTorch checked
(ONNX through onnxruntime), metadata inside the file, the checkpoint command end to end, and the clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from tempo.run.config import ConfigError
from tempo.run.export import (
    FORMATS,
    ClipClassifier,
    ExportError,
    export_and_check,
    export_checkpoint,
    load_exported,
    random_clip,
    read_metadata,
)
from tempo.run.module import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import CONF_DIR, REPO, TINY, compose_config, train_tiny_checkpoint

NO_BACKBONE = [o for o in TINY if not o.startswith("backbone=")]
TCNN_TINY = [*NO_BACKBONE, "backbone@model.network.backbone=tcnn_tiny", "dataset.num_segments=8"]
# each model of conf/model/ at a CPU size that keeps its blocks non-trivial (every pyramid level, T ≥ 2)
MODELS = {
    "tsn": [*TINY, "model=tsn"],
    "tsm": [*TINY, "model=tsm"],
    "tcm": [*TINY, "model=tcm"],
    "i3d": [*NO_BACKBONE, "model=i3d", "backbone=resnet3d_tiny"],
    "tpn": [*NO_BACKBONE, "model=tpn", "backbone=resnet3d_tiny"],
    "tdpn": [*NO_BACKBONE, "model=tdpn", "backbone=resnet3d_tiny", "dataset.input_size=32"],
    "tcnn": [*TCNN_TINY, "model=tcnn"],
    "tcnn_sparse": [*TCNN_TINY, "model=tcnn_sparse", "model.network.allow_untrained_crm=true"],
    "stmanet": [*NO_BACKBONE, "model=stmanet", "backbone=resnet3d_stmanet_tiny", "dataset.num_segments=16",
                "dataset.input_size=48"],
}


def test_every_model_of_conf_model_is_covered():
    assert sorted(MODELS) == sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))


def tiny_model(name: str, tmp_path: Path, include_preprocessing: bool = False) -> tuple[ClipClassifier, list[int]]:
    cfg = compose_config(MODELS[name], tmp_path)
    torch.manual_seed(0)
    network = instantiate(cfg.model.network)
    frames = instantiate(cfg.dataset.datamodule.sampler).clip_frames
    size = int(cfg.dataset.input_size)
    model = ClipClassifier(network, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD), include_preprocessing)
    return model.eval(), [3, frames, size, size]


# every model × format builds and exports a network: the CPU tier (make test), not the unit tier
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_exports_with_parity(name, fmt, tmp_path, one_thread):
    model, shape = tiny_model(name, tmp_path)
    path = tmp_path / f"model{FORMATS[fmt]}"
    difference = export_and_check(model, fmt, path, {"class_names": ["a", "b"]}, 1e-4, shape)
    assert difference <= 1e-4
    assert read_metadata(path, fmt) == {"class_names": ["a", "b"]}
    # batch 1 as well (the parity check ran batch 3, the export traced batch 2), and the logits depend on the clip
    run = load_exported(path, fmt)
    clips = random_clip(shape, False, 1, seed=5), random_clip(shape, False, 1, seed=6)
    with torch.no_grad():
        for clip in clips:
            assert torch.allclose(run(clip), model(clip), rtol=1e-4, atol=1e-4 * float(model(clip).abs().max()))
        assert not torch.allclose(run(clips[0]), run(clips[1]))


class CallCounter(nn.Module):
    """Python state in forward: a trace bakes the count of the call it saw, so later calls differ."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.calls


class DataDependentGate(nn.Module):
    """A branch on the values: torch.export cannot keep it symbolic; a trace records the branch taken."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if bool(x.abs().sum() >= 0) else -x


class TinyClipNet(nn.Module):
    def __init__(self, block: nn.Module, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.gate = block
        self.fc = nn.Linear(4, num_classes)

    def forward(self, video: torch.Tensor) -> dict:
        return {"logits": self.fc(self.gate(self.conv(video)).mean((2, 3, 4)))}


def wrap(network: nn.Module) -> ClipClassifier:
    return ClipClassifier(network, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD), False).eval()


def test_parity_failure_is_an_error(tmp_path):
    model = wrap(TinyClipNet(CallCounter()))
    with pytest.raises(ExportError, match="differs from eager PyTorch by .* above parity_tolerance=0.0001"):
        export_and_check(model, "torchscript", tmp_path / "m.pt", {}, 1e-4, [3, 2, 8, 8])


def test_a_block_that_cannot_export_is_named_with_the_format_that_works(tmp_path):
    model = wrap(TinyClipNet(DataDependentGate()))
    with pytest.raises(ExportError) as info:
        export_and_check(model, "torch_export", tmp_path / "m.pt2", {}, 1e-4, [3, 2, 8, 8])
    message = str(info.value)
    assert message.startswith("format=torch_export cannot export gate (DataDependentGate)")
    assert "format=torchscript" in message.splitlines()[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_cache) -> str:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("run"), synthetic_cache, "model=tcm")


def run_export(out_dir: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=[f"paths.output_dir={out_dir}", *overrides])
    return export_checkpoint(cfg, list(overrides))


@pytest.mark.slow
def test_checkpoint_export_with_preprocessing(checkpoint, tmp_path, capsys, one_thread):
    from tempo.run.checkpoint import read_run_info
    from tempo.run.restore import load_module

    result = run_export(tmp_path / "run", f"ckpt_path={checkpoint}", "format=torchscript",
                        "include_preprocessing=true")
    assert result["path"] == str(tmp_path / "run" / "model.pt")  # the default out
    printed = capsys.readouterr().out
    assert f"relative difference {result['parity']:.2e}" in printed
    info = read_run_info(checkpoint)
    metadata = read_metadata(result["path"], "torchscript")
    assert metadata["class_names"] == info["class_names"] and len(metadata["class_names"]) == 8
    assert metadata["input"]["shape"] == ["batch", 3, 4, 28, 28] and metadata["input"]["dtype"] == "uint8"
    assert metadata["model"] == "tempo.models.tcm.TCM"
    side = json.loads(Path(result["metadata"]).read_text())
    assert side["class_names"] == metadata["class_names"] and side["parity"]["relative_difference"] <= 1e-4
    # the uint8 clip in, the logits of the trained module (its own normalisation) out
    module = load_module(compose_config([*TINY, "model=tcm", f"ckpt_path={checkpoint}"], tmp_path / "eval"))
    clip = torch.randint(0, 256, (2, 3, 4, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        expected = module.network(module.on_after_batch_transfer({"video": clip}, 0)["video"])["logits"]
        assert torch.allclose(load_exported(result["path"], "torchscript")(clip), expected, atol=1e-5)


@pytest.mark.slow
def test_checkpoint_export_normalised_input_and_out(checkpoint, tmp_path, one_thread):
    out = tmp_path / "deploy" / "tcm.pt2"
    result = run_export(tmp_path / "run", f"ckpt_path={checkpoint}", "format=torch_export", f"out={out}")
    assert result["path"] == str(out) and Path(str(out) + ".json").is_file()
    metadata = read_metadata(out, "torch_export")
    assert metadata["input"]["dtype"] == "float32" and metadata["format"] == "torch_export"
    clip = random_clip([3, 4, 28, 28], False, 2)
    assert load_exported(out, "torch_export")(clip).shape == (2, 8)


def test_bad_format_is_a_config_error(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="format=tflite: choose one of"):
        run_export(tmp_path, f"ckpt_path={checkpoint}", "format=tflite")
    with pytest.raises(ConfigError, match="parity_tolerance=-0.1"):
        run_export(tmp_path, f"ckpt_path={checkpoint}", "parity_tolerance=-0.1")


@pytest.mark.slow
def test_parity_tolerance_is_applied(checkpoint, tmp_path, one_thread):
    """ONNX Runtime's kernels differ from PyTorch's by ~1e-7: a tolerance below that fails the export."""
    with pytest.raises(ExportError, match="above parity_tolerance=1e-10"):
        run_export(tmp_path, f"ckpt_path={checkpoint}", "format=onnx", "parity_tolerance=1e-10")


@pytest.mark.slow
def test_cli_exports_onnx(checkpoint, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    out = tmp_path / "model.onnx"
    res = subprocess.run([sys.executable, "-m", "tempo.export", f"ckpt_path={checkpoint}", "format=onnx",
                          f"out={out}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "parity: onnx vs eager PyTorch" in res.stdout
    assert read_metadata(out, "onnx")["input"]["shape"] == ["batch", 3, 4, 28, 28]
