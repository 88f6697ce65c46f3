"""Training-loop overhead: what a training step costs on top of a bare PyTorch loop doing the same
useful work on the same network and the same in-memory batches.

The bare step: uint8 → normalised float, forward, tempo's loss, backward, optimiser step (tempo's
parameter groups), LR-scheduler step (tempo's warm-up + cosine, per step). Compared with it:

* plain Lightning — a minimal LightningModule doing exactly that on `lightning.Trainer`, with no
  callbacks, logger or progress bar: Lightning's own overhead;
* tempo — `tempo.module.RecognitionModule` built from the real Hydra config (`build_module`), with
  tempo's default callbacks (checkpoint, LR monitor, Rich progress bar, data-bottleneck, plus the
  metric history and run info `tempo.train` adds) and the default CSV logger, as
  `python -m tempo.train` runs it: every loss term logged, train top-1, the non-finite-loss check,
  ... The progress bar draws to /dev/null.

The machine is shared and noisy, so the two loops are interleaved step by step: after each
Lightning step a callback runs one bare step (on a twin network, built the same way, fed the same
batch) and times it; the Lightning step is the time from the end of that callback to its next
call (everything Lightning and tempo do per step: fetch, transfer, hooks, the step, logging,
callbacks). Load drifts then hit both alike. One intra-op thread. Per side: `--repeats` runs of one
epoch of `--steps` steps (the first `SKIP` steps are warm-up), each giving Σ Lightning / Σ bare
and the mean per-step difference; the medians over runs are printed (target ≤ 1.05×).

The network is TSN on the CPU-sized ResNet (`backbone=resnet_tiny`), 4 segments of 56×56, batch 8,
8 classes: a tiny video step of a few tens of ms. `--network linear` swaps in a one-layer network
(a step of ~0.5 ms), where the step is almost all loop overhead (and Python-bound, so the busy
machine's cache and memory contention shows most there).

`python benchmarks/bench_loop.py [--steps 40] [--repeats 7] [--network tsn|linear] [--profile]`
(≈ 1 min on a busy core); `--profile` prints cProfile's top functions of tempo's loop instead.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from tempo import CONF_DIR
from tempo.callbacks import MetricsHistory
from tempo.checkpoint import RunInfo
from tempo.module import RecognitionModule, param_groups
from tempo.schedules import Span, build_scheduler
from tempo.train import build_callbacks, build_module

BATCH, SEGMENTS, SIZE, CLASSES = 8, 4, 56, 8
SKIP = 3  # warm-up steps left out of every run
OVERRIDES = ["model=tsn", "backbone=resnet_tiny", f"dataset.num_segments={SEGMENTS}",
             f"dataset.input_size={SIZE}", f"dataset.batch_size={BATCH}", "trainer=cpu", "trainer.max_epochs=1",
             "trainer.num_sanity_val_steps=0", "trainer.limit_val_batches=0", "trainer.enable_model_summary=false"]


class Linear(nn.Module):
    """The smallest network with tempo's interface: a step costs almost nothing but the loop."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, CLASSES)

    def forward(self, video: torch.Tensor) -> dict:
        return {"logits": self.fc(video.mean((2, 3, 4)))}


def config(out_dir: Path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out_dir}", *OVERRIDES])


def make_batches(steps: int) -> list[dict]:
    """What tempo's loader yields: uint8 clips (B, C, T, H, W), int64 labels, dataset indices."""
    g = torch.Generator().manual_seed(0)
    return [{"video": torch.randint(0, 256, (BATCH, 3, SEGMENTS, SIZE, SIZE), generator=g, dtype=torch.uint8),
             "label": torch.randint(0, CLASSES, (BATCH,), generator=g),
             "index": torch.arange(i * BATCH, (i + 1) * BATCH)} for i in range(steps)]


class Loader:
    """The same pre-collated batches for every side (len() lets Lightning size the schedule)."""

    def __init__(self, batches: list[dict]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def tempo_module(cfg, network: str) -> RecognitionModule:
    """Network, loss, optimiser factory and schedule exactly as `tempo.train` builds them (seeded)."""
    torch.manual_seed(0)
    return build_module(cfg, network=Linear() if network == "linear" else None)


def optimiser_and_schedule(module: RecognitionModule, steps: int):
    """tempo's parameter groups, optimiser and warm-up + cosine, sized for `steps` optimiser steps."""
    probe = module.optimizer_factory(params=[nn.Parameter(torch.zeros(1))])
    lr, decay = probe.defaults["lr"], probe.defaults.get("weight_decay", 0.0)
    groups = param_groups(module.network, decay, module.bias_lr_mult, module.no_decay_norm_bias)
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    optimizer = module.optimizer_factory(params=groups, lr=lr)
    schedule = module.schedule
    span = Span(per_epoch=steps, total=steps, warmup=int(round(schedule.get("warmup_epochs", 0) * steps)))
    scheduler = build_scheduler(optimizer, schedule["factor"], span, schedule.get("warmup_start_factor", 0.1),
                                schedule.get("interval", "step"))
    return optimizer, scheduler


def normalise(module: RecognitionModule, video: torch.Tensor) -> torch.Tensor:
    return (video.float().div_(255) - module.mean) / module.std


class BareLoop:
    """The bare PyTorch training step, on its own copy of the network."""

    def __init__(self, cfg, network: str, steps: int):
        self.module = tempo_module(cfg, network)
        self.optimizer, schedule = optimiser_and_schedule(self.module, steps)
        self.scheduler = schedule["scheduler"]
        self.module.network.train()

    def step(self, batch: dict) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        network, loss = self.module.network, self.module.loss
        loss(network(normalise(self.module, batch["video"])), batch["label"])["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()


class Interleave(L.Callback):
    """After each Lightning step, one timed bare step on the same batch; times the Lightning step as
    the interval between the end of this hook and its next call."""

    def __init__(self, bare: BareLoop, loader: Loader):
        self.bare, self.loader = bare, loader
        self.lightning: list[float] = []
        self.bare_times: list[float] = []
        self.module: L.LightningModule | None = None
        self._resumed = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.module = pl_module
        if self._resumed is not None:  # Lightning's step `batch_idx` (the first one has no start mark)
            self.lightning.append(now - self._resumed)
        start = time.perf_counter()
        self.bare.step(self.loader.batches[batch_idx])
        self.bare_times.append(time.perf_counter() - start)
        self._resumed = time.perf_counter()

    def result(self) -> tuple[float, float]:
        """(mean Lightning step, mean bare step) in seconds over the same steps, warm-up left out."""
        return statistics.fmean(self.lightning[SKIP:]), statistics.fmean(self.bare_times[SKIP + 1:])


# the measuring adds no hook calls of its own to either side (Lightning skips non-callable hooks)
for _hook in ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
              "on_before_optimizer_step"):
    setattr(Interleave, _hook, None)


class PlainModule(L.LightningModule):
    """The bare step's work as a minimal LightningModule."""

    def __init__(self, cfg, network: str, steps: int):
        super().__init__()
        self.inner = tempo_module(cfg, network)
        self.steps = steps

    def training_step(self, batch, batch_idx):
        inner = self.inner
        return inner.loss(inner.network(normalise(inner, batch["video"])), batch["label"])["loss"]

    def configure_optimizers(self):
        optimizer, schedule = optimiser_and_schedule(self.inner, self.steps)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def plain_run(cfg, network: str, loader: Loader) -> Interleave:
    timer = Interleave(BareLoop(cfg, network, len(loader)), loader)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[timer])
    trainer.fit(PlainModule(cfg, network, len(loader)), loader)
    return timer


def tempo_run(cfg, network: str, loader: Loader) -> Interleave:
    """`python -m tempo.train`'s module, default callbacks and logger on `loader` (no validation)."""
    timer = Interleave(BareLoop(cfg, network, len(loader)), loader)
    logger = CSVLogger(cfg.paths.output_dir, name="csv", version="")
    callbacks = [*build_callbacks(cfg, has_logger=True), MetricsHistory(print_lines=False), RunInfo(cfg)]
    for i, c in enumerate(callbacks):  # the bar still draws, to nowhere
        if isinstance(c, RichProgressBar):
            console = {"file": nowhere(), "force_terminal": True}
            callbacks[i] = type(c)(refresh_rate=c.refresh_rate, console_kwargs=console)
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, timer], logger=logger,
                          default_root_dir=cfg.paths.output_dir)
    trainer.fit(tempo_module(cfg, network), loader)
    return timer


@functools.cache
def nowhere():
    """/dev/null, open for the process's life: the bar makes it rich's global console."""
    return open(os.devnull, "w")  # noqa: SIM115


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "tempo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def profile_tempo(cfg, network: str, loader: Loader) -> None:
    import cProfile
    import pstats

    tempo_run(cfg, network, loader)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    tempo_run(cfg, network, loader)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(40)


def measure(sides: dict[str, Callable], cfg, network: str, loader: Loader, repeats: int) -> dict[str, list]:
    for run in sides.values():  # warm-up: first calls, allocator, lazy imports
        run(cfg, network, loader)
    results: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):  # alternate which side goes first
        for name in names[r % 2:] + names[:r % 2]:
            results[name].append(sides[name](cfg, network, loader).result())
    return results


def report(results: dict[str, list], network: str, steps: int, repeats: int) -> None:
    what = (f"TSN/resnet_tiny, batch {BATCH} × {SEGMENTS} segments × {SIZE}²" if network == "tsn"
            else f"one linear layer, batch {BATCH} × {SEGMENTS} × {SIZE}²")
    print(f"{what}; {steps - 1 - SKIP} timed steps per run, median of {repeats} runs, 1 thread, "
          f"each Lightning step interleaved with a bare one:")
    for name, runs in results.items():
        bare = statistics.median(b for _, b in runs)
        side = statistics.median(lt for lt, _ in runs)
        overhead = statistics.median(lt - b for lt, b in runs)
        ratio = statistics.median(lt / b for lt, b in runs)
        spread = sorted(round(lt / b, 3) for lt, b in runs)
        print(f"  {name:>15}: {side * 1e3:6.2f} ms/step vs bare {bare * 1e3:6.2f} ms/step: overhead "
              f"{overhead * 1e3:+.2f} ms/step, {name}/bare = {ratio:.3f}× (runs: {spread[0]}–{spread[-1]}; "
              "target ≤ 1.05×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--network", choices=("tsn", "linear"), default="tsn")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.steps <= SKIP + 2:
        parser.error(f"--steps must be > {SKIP + 2}")
    torch.set_num_threads(1)
    quiet_lightning()
    loader = Loader(make_batches(args.steps))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp))
        if args.profile:
            profile_tempo(cfg, args.network, loader)
            return
        results = measure({"plain Lightning": plain_run, "tempo": tempo_run}, cfg, args.network, loader,
                          args.repeats)
    report(results, args.network, args.steps, args.repeats)


if __name__ == "__main__":
    main()
