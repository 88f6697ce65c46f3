"""Issue 22: the data order and every random draw derive from (seed, epoch, index); the loader's
position is in the checkpoint; a resumed, pre-empted or re-run run ends where the straight one does."""

from __future__ import annotations

import multiprocessing
import shutil

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tempo.data.dataset import VideoDataset
from tempo.data.manifest import FrameManifest, probe_num_frames
from tempo.data.packet_store import PacketIndexStore
from tempo.data.records import VideoRecord
from tempo.data.resumable import ResumableLoader, SeededShuffle, draw_seed
from tempo.data.samplers import SegmentSampler
from tempo.data.transforms import Compose, HorizontalFlip, RandomSquareResizedCrop
from tempo.train import run
from tests.conftest import TINY, compose_config
from tests.official_fixtures import write_clip


class Keys(Dataset):
    """Returns its key: shows which (index, draw seed) a loader hands the dataset."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        return torch.tensor(key)


def epoch_keys(n: int, seed: int, epoch: int, replicas: int = 1, rank: int = 0) -> list[tuple[int, int]]:
    sampler = SeededShuffle(Keys(n), seed, replicas, rank)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_processes_share_one_permutation_and_draw_seeds():
    one = epoch_keys(12, seed=3, epoch=2)
    assert sorted(i for i, _ in one) == list(range(12)) and all(s == draw_seed(3, 2, i) for i, s in one)
    ranks = [epoch_keys(12, 3, 2, replicas=2, rank=r) for r in (0, 1)]
    for step in range(3):  # 2 processes × batch 2 = 1 process × batch 4, step by step, same draws
        assert sorted(ranks[0][2 * step: 2 * step + 2] + ranks[1][2 * step: 2 * step + 2]) == \
            sorted(one[4 * step: 4 * step + 4])
    assert epoch_keys(12, 3, 3) != one and epoch_keys(12, 4, 2) != one  # another epoch / seed: another order
    assert draw_seed(3, 2, 5) != draw_seed(3, 3, 5) != draw_seed(4, 2, 5)


def _loader(n: int, batch: int, trained: int, replicas: int = 1, rank: int = 0) -> ResumableLoader:
    data = Keys(n)
    return ResumableLoader(data, batch_size=batch, sampler=SeededShuffle(data, 7, replicas, rank), drop_last=True,
                           progress=lambda: (trained, n // (batch * replicas)))


def _batches(loader) -> list[list[int]]:
    return [b[:, 0].tolist() for b in loader]


def test_loader_state_resumes_mid_epoch_and_after_an_epoch():
    straight = _loader(16, 4, trained=0)
    straight.sampler.set_epoch(1)
    full = _batches(straight)
    saved = _loader(16, 4, trained=2)
    saved.sampler.set_epoch(1)
    state = saved.position()
    assert state == {"epoch": 1, "epoch_finished": False, "samples": 8}
    resumed = _loader(16, 4, trained=0)
    resumed.resume(state)
    assert _batches(resumed) == full[2:]
    assert _batches(resumed) == full  # the skip is for the first pass only
    # resumed over 2 processes × batch 2 (the same global batch): step by step the same samples
    halves = [_loader(16, 2, trained=0, replicas=2, rank=r) for r in (0, 1)]
    with pytest.raises(ValueError, match="same global batch"):
        halves[0].resume({**state, "samples": 7})
    for half in halves:
        half.resume(state)
    steps = list(zip(_batches(halves[0]), _batches(halves[1]), strict=True))
    assert [sorted(a + b) for a, b in steps] == [sorted(batch) for batch in full[2:]]
    # saved at the epoch's end: the next epoch starts from its beginning
    done = _loader(16, 4, trained=4)
    done.sampler.set_epoch(1)
    after = _loader(16, 4, trained=0)
    after.resume(done.position())
    following = _loader(16, 4, trained=0)
    following.sampler.set_epoch(2)
    assert _batches(after) == _batches(following) != full


@pytest.fixture
def clips(tmp_path) -> list[VideoRecord]:
    records = [VideoRecord(str(write_clip(tmp_path / f"v{k}.mp4", k % 2, variant=k, num_frames=16)), k % 2)
               for k in range(4)]
    (tmp_path / "broken.mp4").write_bytes(b"")  # a corrupt video, replaced in training
    return [*records, VideoRecord(str(tmp_path / "broken.mp4"), 0)]


def _train_set(records, index_dir=None) -> VideoDataset:
    transforms = Compose([RandomSquareResizedCrop(24, scale=(0.5, 1.0)), HorizontalFlip(0.5)])
    return VideoDataset(records, SegmentSampler(4), transforms, train=True,
                        source_kwargs={"index_dir": str(index_dir)} if index_dir else None)


def test_a_sample_is_a_function_of_its_key(clips):
    data = _train_set(clips)
    first = data[(1, 123)]["video"]
    state = torch.get_rng_state()
    torch.rand(5)  # the process's generator moves: the sample does not
    assert torch.equal(data[(1, 123)]["video"], first)
    assert not torch.equal(torch.get_rng_state(), state)
    after = torch.get_rng_state()
    data[(1, 99)]
    assert torch.equal(torch.get_rng_state(), after)  # the draws do not touch the global generator
    assert any(not torch.equal(data[(1, seed)]["video"], first) for seed in range(5))
    broken = data[(4, 5)]  # the corrupt video: replaced by the same other video for the same key
    assert broken["failures"] >= 1 and torch.equal(data[(4, 5)]["video"], broken["video"])


def _epoch(records, workers: int, index_dir) -> list[dict]:
    data = _train_set(records, index_dir)
    sampler = SeededShuffle(data, seed=1)
    sampler.set_epoch(3)
    loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=workers,
                        multiprocessing_context="fork" if workers else None)
    return list(loader)


def test_two_workers_load_what_one_process_loads(clips, tmp_path):
    """2 workers: per-sample seeding (not per worker), packet indexes written from both workers at
    once, and a corrupt video handled inside a worker."""
    index_dir = tmp_path / "packet_index"
    in_workers = _epoch(clips, 2, index_dir)
    assert len(list(index_dir.rglob("*.idx"))) == len(clips) - 1  # one index per readable video
    store = PacketIndexStore(index_dir)
    assert all(store.load(r.path) is not None for r in clips[:-1])
    in_process = _epoch(clips, 0, index_dir)  # now read from those indexes
    assert len(in_workers) == len(in_process) == 3
    for a, b in zip(in_workers, in_process, strict=True):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["index"], b["index"])
        assert torch.equal(a["failures"], b["failures"])
    assert sum(int(b["failures"].sum()) for b in in_workers) >= 1


def _fill(root, cache, paths) -> None:
    FrameManifest(root, cache).fill([VideoRecord(p, 0) for p in paths], workers=1)


def test_manifest_written_from_two_processes(clips, tmp_path):
    paths = [r.path for r in clips[:-1]]
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_fill, args=(tmp_path, tmp_path / "manifest", paths)) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    manifest = FrameManifest(tmp_path, tmp_path / "manifest")
    assert [manifest.lookup(p) for p in paths] == [probe_num_frames(p) for p in paths]


# -- whole runs (in-process; CPU, deterministic switch on) ---------------------------------------
CHECKPOINT_EVERY_STEP = ["callbacks=default", "callbacks.progress=null", "callbacks.lr_monitor=null",
                         "callbacks.data_bottleneck=null", "+callbacks.checkpoint.every_n_train_steps=1",
                         "callbacks.checkpoint.save_top_k=-1", "callbacks.checkpoint.monitor=null",
                         "callbacks.checkpoint.filename='step{step:03d}'"]
REPRO = ["trainer.deterministic=true", "run_test=false", "trainer.max_epochs=4"]


def history(summary: dict) -> list[dict]:
    """The metrics history without the timing entries (data/wait_fraction, clips per second)."""
    return [{k: v for k, v in row.items() if not k.startswith("data/")} for row in summary["history"]]


def weights(summary: dict) -> dict[str, torch.Tensor]:
    return torch.load(summary["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"]


def assert_same_run(a: dict, b: dict) -> None:
    assert history(a) == history(b)
    assert a["global_step"] == b["global_step"] and a["decode_failures"] == b["decode_failures"]
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.mark.slow
def test_same_seed_twice_and_any_worker_count_give_the_same_run(tmp_path, synthetic_cache):
    def train(name: str, *overrides: str) -> dict:
        return run(compose_config([*TINY, *REPRO, "trainer.max_epochs=2", *overrides], tmp_path / name,
                                  synthetic_cache))

    first = train("a")
    assert_same_run(first, train("b"))
    assert_same_run(first, train("workers", "dataset.num_workers=2"))
    other = train("seed1", "seed=1")
    assert history(other) != history(first)


@pytest.mark.slow
def test_resume_at_an_epoch_end_or_mid_epoch_ends_like_the_straight_run(tmp_path, synthetic_cache):
    """4 epochs of 3 steps straight; then resumed from its checkpoint at the end of epoch 2 and from
    the one of step 4 (a third into epoch 2), with 2 loader workers."""
    epoch_ends = tmp_path / "epoch_ends"  # a second ModelCheckpoint keeps every epoch's end
    keep_epochs = (f"+callbacks.epoch_ends={{_target_:lightning.pytorch.callbacks.ModelCheckpoint,"
                   f"dirpath:'{epoch_ends}',save_top_k:-1,every_n_epochs:1,filename:'e{{epoch}}',"
                   "auto_insert_metric_name:false}")
    straight = run(compose_config([*TINY, *REPRO, *CHECKPOINT_EVERY_STEP, keep_epochs], tmp_path / "straight",
                                  synthetic_cache))
    assert straight["global_step"] == 12 and len(straight["history"]) == 4
    for name, saved in (("epoch2", epoch_ends / "e1.ckpt"), ("step4", tmp_path / "straight" / "checkpoints" /
                                                             "step004.ckpt")):
        copy = tmp_path / f"{name}.ckpt"  # outside the run folder: the resumed run gets its own
        shutil.copy(saved, copy)
        resumed = run(compose_config([*TINY, *REPRO, *CHECKPOINT_EVERY_STEP, "dataset.num_workers=2",
                                      f"ckpt_path={copy}"], tmp_path / name, synthetic_cache))
        assert resumed["run_dir"] == str(tmp_path / name)
        assert_same_run(straight, resumed)


@pytest.mark.parametrize("delay", [None, 300])
def test_slurm_launcher_asks_for_the_preemption_signal(tmp_path, delay):
    """SIGUSR1 (Preemption's requeue signal) `signal_delay_s` before the time limit, replacing submitit's USR2."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    overrides = ["hydra/launcher=slurm", f"paths.output_dir={tmp_path}"]
    overrides += [f"hydra.launcher.signal_delay_s={delay}"] if delay else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.launcher.additional_parameters.signal == f"USR1@{delay or 120}"


def test_deterministic_with_cudnn_benchmark_fails_at_start(tmp_path):
    from tempo.run.config import ConfigError, check_config

    with pytest.raises(ConfigError, match="trainer.benchmark=false"):
        check_config(compose_config(["trainer.deterministic=true", "trainer.benchmark=true"], tmp_path))
    with pytest.raises(ConfigError, match="trainer.deterministic=warn"):
        check_config(compose_config(["trainer.deterministic=warn", "trainer.benchmark=true"], tmp_path))
    check_config(compose_config(["trainer.deterministic=true", "trainer.benchmark=false"], tmp_path))
