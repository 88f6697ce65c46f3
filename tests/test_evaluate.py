"""`python -m tempo.evaluate`: the test protocol of a checkpoint from its own config (eval.json, predictions.csv,
confusion.png), ensembles, contradicting overrides, and the tempo-robustness curve (TCM paper, Fig. 4)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from tempo.analysis.ensemble import Ensemble
from tempo.data.samplers import DenseSampler
from tempo.evaluate import run, stride_loader
from tempo.run.config import ConfigError
from tempo.run.predictions import confusion_matrix, most_confused, per_class_accuracy, plot_confusion
from tempo.run.restore import load_module
from tempo.train import run as train
from tests.conftest import CONF_DIR, TINY, compose_config, evaluate

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
# TINY with the real checkpoint callback (best + last), without the progress bar
TINY_CKPT = [*TINY, "callbacks=default", "~callbacks.progress"]


@pytest.fixture
def tiny_checkpoint(tiny_cfg, one_thread) -> str:
    summary = train(tiny_cfg("model=tcm", "run_test=false"))
    return summary["checkpoints"]["last"]


def evaluate_cfg(tmp_path: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.output_dir={tmp_path / 'eval'}", f"paths.cache_dir={cache}",
                                              *TINY, "model=tcm", *overrides])


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_cli_default_run_then_evaluate_reproduces_test_top1(tmp_path):
    """Acceptance: `tempo.train` (default model, tiny), then `tempo.evaluate ckpt_path=<best>` with nothing else."""
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    res = cli("tempo.train", *TINY_CKPT, "trainer.max_epochs=2", "optimizer.lr=0.05", f"hydra.run.dir={train_dir}",
              f"paths.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((train_dir / "summary.json").read_text())
    best = summary["checkpoints"]["best"]
    res = cli("tempo.evaluate", f"ckpt_path={best}", f"hydra.run.dir={eval_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((eval_dir / "eval.json").read_text())
    for key in ("top1", "top5", "mean_class"):
        assert report[key] == summary["test"][f"test/{key}"], key
    assert report["model"] == "tempo.models.tsm.TSM" and report["videos"] == 16 and report["excluded"]["count"] == 0
    names = list(report["per_class"])
    assert len(names) == 8 and names[0] == "moving right slowly"
    with (eval_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and all(Path(r["video"]).is_file() and r["label"] in names for r in rows)
    assert np.mean([r["class1"] == r["label"] for r in rows]) == report["top1"]
    scores = [float(rows[0][f"score{i}"]) for i in range(1, 6)]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    image = Image.open(eval_dir / "confusion.png")
    assert image.size[0] > 400 and np.asarray(image.convert("L")).std() > 10


def test_contradicting_overrides_fail_naming_both_values(tiny_checkpoint, tmp_path, synthetic_cache):
    ckpt = f"ckpt_path={tiny_checkpoint}"
    cases = {"model=tsm": r"model.network._target_=tempo.models.tcm.TCM .* model.network._target_=tempo.models.tsm.TSM",
             "dataset.num_segments=8": "dataset.num_segments=4 .* dataset.num_segments=8",
             "dataset.input_size=56": "dataset.input_size=28 .* dataset.input_size=56",
             "dataset.variant=hard": "dataset.num_classes=8 .* dataset.num_classes=12",
             "backbone=resnet18": r"backbone.layers=\[1, 1, 1, 1\] .* backbone.layers=\(unset\)"}
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            evaluate(tmp_path, synthetic_cache, ckpt, override)


def test_overrides_apply_on_the_checkpoint_config(tiny_checkpoint, tmp_path, synthetic_cache, one_thread):
    # a test-views group and a key; nothing else repeated from the training run
    result = evaluate(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}", "test_views=2x1",
                      "dataset.batch_size=5")["test"]
    assert result["test_views"] == "2x1" and result["model"] == "tempo.models.tcm.TCM" and result["videos"] == 16
    resolved = (tmp_path / "eval" / "config_resolved.yaml").read_text()
    assert "batch_size: 5" in resolved and "test_clips: 2" in resolved
    assert "input_size: 28" in resolved  # from the checkpoint, not conf/dataset/synthetic.yaml's 56
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {"eval.json", "predictions.csv", "confusion.png"}


def test_ensemble_of_one_model_twice_scores_as_the_model(tiny_checkpoint, tmp_path, synthetic_cache, one_thread):
    single = evaluate(tmp_path / "one", synthetic_cache, f"ckpt_path={tiny_checkpoint}")["test"]
    both = evaluate(tmp_path / "two", synthetic_cache, f"ckpt_path=[{tiny_checkpoint},{tiny_checkpoint}]")["test"]
    assert both["checkpoints"] == [tiny_checkpoint] * 2
    assert both["top1"] == single["top1"] and both["top5"] == single["top5"]


def test_ensemble_members_must_share_classes(tiny_checkpoint, tmp_path, synthetic_cache):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["tempo"]["class_names"] = [f"other {i}" for i in range(8)]
    other = tmp_path / "other.ckpt"
    torch.save(state, other)
    with pytest.raises(ConfigError, match="share their classes"):
        evaluate(tmp_path, synthetic_cache, f"ckpt_path=[{tiny_checkpoint},{other}]")


class Constant(torch.nn.Module):
    """Logits that depend on the clip's first frame value, to see which frames a member gets."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))
        self.seen = None

    def forward(self, video):
        self.seen = video[0, 0, :, 0, 0].tolist()
        return {"logits": self.logits.expand(video.shape[0], -1)}


def test_ensemble_averages_probabilities_and_subsamples_frames():
    a, b = Constant([2.0, 0.0, 0.0]), Constant([0.0, 1.0, 0.0])
    video = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(2, 3, 8, 2, 2)
    out = Ensemble([a, b], num_frames=[8, 4], reduce="prob")(video)["logits"]
    expected = (a.logits.softmax(-1) + b.logits.softmax(-1)) / 2
    assert torch.allclose(out.softmax(-1), expected.expand(2, -1), atol=1e-6)
    assert a.seen == list(range(8)) and b.seen == [1.0, 3.0, 5.0, 7.0]  # every 2nd frame, centred
    score = Ensemble([a, b], num_frames=[8, 8], reduce="score")(video)["logits"]
    assert torch.allclose(score[0], (a.logits + b.logits) / 2)
    with pytest.raises(ValueError, match="divide"):
        Ensemble([a, b], num_frames=[8, 3])


def test_confusion_outputs_at_8_and_174_classes(tmp_path):
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(labels, torch.tensor([0, 1, 1, 1, 0, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert per_class_accuracy(matrix).tolist() == [0.5, 1.0, 0.0]
    assert most_confused(matrix, ["a", "b", "c"])[0] == {"true": "c", "predicted": "a", "rate": 1.0, "videos": 2}
    rng = np.random.default_rng(0)
    for k in (8, 174):
        names = [f"something something class {i}" for i in range(k)]
        true = rng.integers(0, k, 20 * k)
        pred = np.where(rng.random(20 * k) < 0.6, true, rng.integers(0, k, 20 * k))
        matrix = confusion_matrix(torch.from_numpy(true), torch.from_numpy(pred), k)
        path = plot_confusion(matrix, names, tmp_path / f"confusion{k}.png", "test")
        width, height = Image.open(path).size
        assert width >= 450 and height >= 450
        assert width >= 1500 if k > 30 else width < 1500  # large: matrix + most-confused pairs side by side


@pytest.mark.slow
def test_cli_writes_csv_and_png_for_eight_strides(tiny_checkpoint, tmp_path, synthetic_cache):
    run_dir = tmp_path / "eval_cli"
    res = cli("tempo.evaluate", f"ckpt_path={tiny_checkpoint}", "eval.tempo_strides=[1,2,3,4,5,6,7,8]",
              "eval.test=false", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tempo robustness" in res.stdout
    with (run_dir / "tempo_robustness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["stride"]) for r in rows] == list(range(1, 9))
    assert all(0.0 <= float(r["top1"]) <= float(r["top5"]) <= 1.0 for r in rows)
    assert all(int(r["videos"]) == 16 and int(r["excluded"]) == 0 for r in rows)  # 2 val clips × 8 classes
    assert (run_dir / "tempo_robustness.png").stat().st_size > 1000
    assert not (run_dir / "eval.json").exists()


def test_strides_change_the_sampled_frames(tiny_checkpoint, tmp_path, synthetic_cache):
    cfg = evaluate_cfg(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}")
    datamodule = instantiate(cfg.dataset.datamodule)
    clips = {}
    for stride in (1, 3):
        loader = stride_loader(datamodule, clip_len=4, stride=stride, batch_size=None)
        dataset = datamodule.datasets["val"]
        assert dataset.sampler == DenseSampler(clip_len=4, interval=stride, num_clips=1)
        clips[stride] = next(iter(loader))["video"]
    assert clips[1].shape == clips[3].shape and clips[1].shape[2] == 4
    assert not torch.equal(clips[1], clips[3])
    # 8-frame videos: stride 3 covers frames 0, 3, 6, 7 (last frame repeated past the end)
    assert DenseSampler(4, 3).sample(8).tolist() == [[0, 3, 6, 7]]


def test_checkpoint_weights_are_loaded(tiny_checkpoint, tmp_path, synthetic_cache):
    cfg = evaluate_cfg(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}")
    module = load_module(cfg)
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    key = "network.backbone.after_stage.2.mtdm.reduce.0.weight"
    assert torch.equal(module.state_dict()[key], state[key]) and not module.training


def test_clear_errors(tiny_checkpoint, tmp_path, synthetic_cache):
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        run(evaluate_cfg(tmp_path, synthetic_cache), overrides=[])
    with pytest.raises(ConfigError, match="no such checkpoint"):
        evaluate(tmp_path, synthetic_cache, f"ckpt_path={tmp_path / 'missing.ckpt'}")
    with pytest.raises(ConfigError, match="tempo_strides"):
        evaluate(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}", "eval.tempo_strides=[0,2]")
    with pytest.raises(ConfigError, match="does not fit .* unexpected keys"):  # weights of another network
        load_module(evaluate_cfg(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}", "model=tsm"))


def test_ensemble_lists_every_member(tiny_checkpoint, tiny_cfg, tmp_path, synthetic_cache, one_thread, capsys):
    tsm = train(compose_config([*TINY, "model=tsm", "run_test=false"], tmp_path / "tsm", synthetic_cache))
    other = tsm["checkpoints"]["last"]
    result = evaluate(tmp_path, synthetic_cache, f"ckpt_path=[{tiny_checkpoint},{other}]")["test"]
    assert result["model"] == "tempo.analysis.ensemble.Ensemble"
    assert result["members"] == [
        {"checkpoint": tiny_checkpoint, "model": "tempo.models.tcm.TCM", "frames": 4, "weight": 0.5},
        {"checkpoint": other, "model": "tempo.models.tsm.TSM", "frames": 4, "weight": 0.5}]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["members"] == result["members"]
    out = capsys.readouterr().out
    assert f"0.500 × tempo.models.tsm.TSM (4 frames)  {other}" in out and "tempo.models.tcm.TCM" in out
