"""Shared test fixtures: compose the real Hydra configs with tiny overrides, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
os.environ.setdefault("WANDB_MODE", "offline")

# A CPU-sized run of the default pipeline: small synthetic set, 4 segments of 32 px.
TINY = [
    "backbone=resnet_tiny",
    "dataset.num_segments=4",
    "dataset.input_size=28",
    "dataset.batch_size=8",
    "dataset.num_workers=0",
    "dataset.datamodule.reader.train_per_class=3",
    "dataset.datamodule.reader.val_per_class=2",
    "dataset.datamodule.reader.size=32",
    "dataset.datamodule.reader.num_frames=8",
    "logger=none",
    "callbacks=none",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "print_config=false",
]


def compose_config(overrides: list[str], out_dir: Path, cache_dir: Path | None = None):
    """Compose conf/train.yaml with `overrides`; run outputs go to `out_dir`."""
    cache = cache_dir or out_dir / "cache"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out_dir}", f"paths.cache_dir={cache}",
                                           *overrides])


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """One cache folder for the tiny synthetic set, generated once per session."""
    return tmp_path_factory.mktemp("tempo-cache")


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory) -> dict:
    """Every container/codec pair the tests make, timestamps gone wrong included (`tests.video_files`)."""
    from tests.video_files import make_videos

    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture
def tiny_cfg(tmp_path, synthetic_cache):
    def make(*overrides: str):
        return compose_config([*TINY, *overrides], tmp_path / "run", synthetic_cache)

    return make


@pytest.fixture
def one_thread():
    """Small CPU workloads: one intra-op thread is faster and steadier on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REPO = Path(__file__).resolve().parents[1]


def train_cli(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m tempo.train <args>` from the repository root, offline W&B, one thread per process."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tempo.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def sweep_params(experiment: str) -> dict[str, list[str]]:
    """The jobs' values per swept key of a multirun experiment, as Hydra's sweeper expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    parser = OverridesParser.create()
    return {k: list(parser.parse_overrides([f"{k}={v}"])[0].sweep_string_iterator())
            for k, v in cfg.hydra.sweeper.params.items()}
