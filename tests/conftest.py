"""Shared test fixtures: compose the real Hydra configs with tiny overrides, as a user would.

Tiers (docs/development.md): `make test-fast` = not slow and not gpu; `make test` = everything on CPU
(gpu tests skip with a reason); `make test-gpu` = `-m gpu`. Marking is enforced here, not by timing:
- a test that launches `python -m tempo.*` (or a `tempo-*` script) must be marked `slow`, else it fails
  with a message saying so (`_guard_tempo_subprocess`), whatever module or fixture launches it;
- tests using a fixture in SLOW_FIXTURES (runs trained for epochs) are marked `slow` automatically;
- `gpu` tests skip without CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
os.environ.setdefault("WANDB_MODE", "offline")

# Fixtures that train runs for epochs (in or out of process): their users are in the slow tier.
SLOW_FIXTURES = {"checkpoints", "trained_run"}
NO_CUDA = "needs a CUDA GPU: run `make test-gpu` on a GPU machine"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    cuda = torch.cuda.is_available()
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if not cuda and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason=NO_CUDA))


def pytest_configure(config):
    # pytest-xdist: each of N workers gets its share of the cores (N × all cores oversubscribes the CPU)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))  # for subprocesses


def launches_tempo(args: str | Sequence) -> bool:
    """Whether a Popen command line runs a tempo command (`python -m tempo.x` or a `tempo-x` script)."""
    words = args.split() if isinstance(args, str) else [os.fspath(a) for a in args]
    module = any(a == "-m" and b.startswith("tempo.") for a, b in zip(words, words[1:], strict=False))
    return module or bool(words) and Path(words[0]).name.startswith("tempo-")


_running: list[pytest.Item] = []  # the test being set up / run / torn down (fixtures included)
_popen_init = subprocess.Popen.__init__


def _guard_tempo_subprocess(self, args, *rest, **kwargs):
    if _running and _running[-1].get_closest_marker("slow") is None and launches_tempo(args):
        pytest.fail(f"{_running[-1].nodeid} launches `{' '.join(map(str, args))[:120]}`: tests that launch tempo "
                    "commands belong to the slow tier, mark them @pytest.mark.slow (docs/development.md)",
                    pytrace=False)
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _guard_tempo_subprocess


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()

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


def train_tiny_checkpoint(out_dir: Path, cache_dir: Path, *overrides: str) -> str:
    """The last checkpoint of a one-epoch TINY run with `overrides` (one thread: a small, steady workload)."""
    from tempo.train import run as train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(compose_config([*TINY, *overrides, "run_test=false"], out_dir, cache_dir))["checkpoints"]["last"]
    finally:
        torch.set_num_threads(threads)


def assert_counted_accuracy(metrics: dict, prefix: str, videos: int) -> None:
    """An accuracy that was counted over `videos` videos: top-1 is a multiple of 1/videos and ≤ top-5 (a range
    check alone would pass for any number in [0, 1])."""
    top1, top5 = metrics[f"{prefix}/top1"], metrics[f"{prefix}/top5"]
    assert top1 * videos == pytest.approx(round(top1 * videos), abs=1e-4), (top1, videos)
    assert top1 <= top5 + 1e-6
