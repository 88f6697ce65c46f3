"""`python -m tempo.evaluate`: tempo robustness of a trained checkpoint (TCM paper, Fig. 4)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tempo.config import ConfigError
from tempo.data.samplers import DenseSampler
from tempo.evaluate import load_module, run, stride_loader
from tempo.train import run as train
from tests.conftest import CONF_DIR, TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_checkpoint(tiny_cfg, one_thread) -> str:
    summary = train(tiny_cfg("model=tcm", "run_test=false"))
    return summary["checkpoints"]["last"]


def evaluate_cfg(tmp_path: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.output_dir={tmp_path / 'eval'}", f"paths.cache_dir={cache}",
                                              *TINY, "model=tcm", *overrides])


def test_cli_writes_csv_and_png_for_eight_strides(tiny_checkpoint, tmp_path, synthetic_cache):
    run_dir = tmp_path / "eval_cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "tempo.evaluate", f"ckpt_path={tiny_checkpoint}", "model=tcm", *TINY,
                          f"paths.cache_dir={synthetic_cache}", "eval.tempo_strides=[1,2,3,4,5,6,7,8]",
                          f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tempo robustness" in res.stdout
    with (run_dir / "tempo_robustness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["stride"]) for r in rows] == list(range(1, 9))
    assert all(0.0 <= float(r["top1"]) <= float(r["top5"]) <= 1.0 for r in rows)
    assert all(int(r["videos"]) == 16 and int(r["excluded"]) == 0 for r in rows)  # 2 val clips × 8 classes
    assert (run_dir / "tempo_robustness.png").stat().st_size > 1000


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
        run(evaluate_cfg(tmp_path, synthetic_cache))
    with pytest.raises(ConfigError, match="tempo_strides"):
        run(evaluate_cfg(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}", "eval.tempo_strides=[0,2]"))
    with pytest.raises(ConfigError, match="does not fit .* unexpected keys"):  # a checkpoint of another network
        run(evaluate_cfg(tmp_path, synthetic_cache, f"ckpt_path={tiny_checkpoint}", "model=tsm"))
