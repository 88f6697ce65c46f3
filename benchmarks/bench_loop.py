"""Training-loop overhead: what a training step costs on top of a bare PyTorch loop doing the same
useful work on the same network and the same in-memory batches.

The bare step: uint8 → normalised float, forward, tempo's loss, backward, optimiser step (tempo's
parameter groups), LR-scheduler step (tempo's warm-up + cosine, per step). Compared with it:

* plain Lightning — a minimal LightningModule doing exactly that on `lightning.Trainer`, with no
  callbacks, logger or progress bar: Lightning's own overhead;
* tempo — `tempo.run.module.RecognitionModule` built from the real Hydra config (`build_module`), with
  tempo's default callbacks (checkpoint, LR monitor, Rich progress bar, data-bottleneck, plus the
  metric history and run info `tempo.train` adds) and the default CSV logger, as
  `python -m tempo.train` runs it: every loss term logged, train top-1, the non-finite-loss check,
  ... The progress bar draws to /dev/null.

Each run is one epoch of `--steps` steps on one side; a step ends at the end of its optimiser and
LR step (bare) or when Lightning calls `on_train_batch_end` (so a Lightning step holds everything
Lightning and tempo do per step: fetch, transfer, hooks, the step, logging, callbacks, and any
background thread such as the progress bar's drawing). The mean step time over the epoch, the
first `SKIP` steps (warm-up) left out, is one sample. The machine is shared and noisy, so the
sides are interleaved run by run (bare, plain, tempo, the order rotating every repeat) and the
medians over `--repeats` are printed: per-step overhead in ms and the ratio to bare (target ≤ 1.05×),
and the same from each side's fastest run (interference only ever adds time).
One intra-op thread.

The network is TSN on the CPU-sized ResNet (`backbone=resnet_tiny`), 4 segments of 56×56, batch 8,
8 classes: a tiny video step of a few tens of ms. `--network linear` swaps in a one-layer network
(a step of ~0.5 ms), where the step is almost all loop overhead (and Python-bound, so the busy
machine's cache and memory contention shows most there).

`python benchmarks/bench_loop.py [--steps 24] [--repeats 11] [--network tsn|linear] [--profile]`
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
from tempo.run.build import build_callbacks, build_module
from tempo.run.callbacks import MetricsHistory
from tempo.run.checkpoint import RunInfo
from tempo.run.module import RecognitionModule, param_groups
from tempo.run.schedules import Span, build_scheduler

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


class Run:
    """One epoch of one side: the end time of every step and the trained network."""

    def __init__(self):
        self.ends: list[float] = []
        self.network: nn.Module | None = None

    def step_time(self) -> float:
        """Mean seconds per step after the warm-up."""
        ends = self.ends[SKIP - 1:]
        return (ends[-1] - ends[0]) / (len(ends) - 1)


def bare_run(cfg, network: str, loader: Loader) -> Run:
    """The bare PyTorch loop."""
    module = tempo_module(cfg, network)
    net, loss = module.network, module.loss
    optimizer, schedule = optimiser_and_schedule(module, len(loader))
    scheduler = schedule["scheduler"]
    net.train()
    run = Run()
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        loss(net(normalise(module, batch["video"])), batch["label"])["loss"].backward()
        optimizer.step()
        scheduler.step()
        run.ends.append(time.perf_counter())
    run.network = net
    return run


class StepClock(L.Callback):
    """Records when each Lightning training step ends."""

    def __init__(self, run: Run):
        self.run = run

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.run.ends.append(time.perf_counter())


# the measuring adds no hook calls of its own (Lightning skips non-callable hooks)
for _hook in ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
              "on_before_optimizer_step"):
    setattr(StepClock, _hook, None)


class PlainModule(L.LightningModule):
    """The bare loop's work as a minimal LightningModule."""

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


def plain_run(cfg, network: str, loader: Loader) -> Run:
    run = Run()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[StepClock(run)])
    module = PlainModule(cfg, network, len(loader))
    trainer.fit(module, loader)
    run.network = module.inner.network
    return run


def tempo_run(cfg, network: str, loader: Loader) -> Run:
    """`python -m tempo.train`'s module, default callbacks and logger on `loader` (no validation)."""
    run = Run()
    logger = CSVLogger(cfg.paths.output_dir, name="csv", version="")
    callbacks = [*build_callbacks(cfg, has_logger=True), MetricsHistory(print_lines=False), RunInfo(cfg)]
    for i, c in enumerate(callbacks):  # the bar still draws, to nowhere
        if isinstance(c, RichProgressBar):
            console = {"file": nowhere(), "force_terminal": True}
            callbacks[i] = type(c)(refresh_rate=c.refresh_rate, console_kwargs=console)
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, StepClock(run)], logger=logger,
                          default_root_dir=cfg.paths.output_dir)
    module = tempo_module(cfg, network)
    trainer.fit(module, loader)
    run.network = module.network
    return run


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
    times: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):  # run by run, the order rotating
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(sides[name](cfg, network, loader).step_time())
    return times


def report(times: dict[str, list], network: str, steps: int, repeats: int) -> None:
    what = (f"TSN/resnet_tiny, batch {BATCH} × {SEGMENTS} segments × {SIZE}²" if network == "tsn"
            else f"one linear layer, batch {BATCH} × {SEGMENTS} × {SIZE}²")
    bare = statistics.median(times["bare"])
    print(f"{what}; {steps - SKIP} timed steps per run, median of {repeats} interleaved runs, 1 thread: "
          f"bare PyTorch {bare * 1e3:.2f} ms/step")
    for name, runs in times.items():
        if name == "bare":
            continue
        side = statistics.median(runs)
        best = min(runs) / min(times["bare"])  # interference only adds time: the least disturbed runs
        print(f"  {name:>15}: {side * 1e3:6.2f} ms/step, overhead {(side - bare) * 1e3:+.2f} ms/step, "
              f"{name}/bare = {side / bare:.3f}× (best runs: {best:.3f}×, overhead "
              f"{(min(runs) - min(times['bare'])) * 1e3:+.2f} ms/step; target ≤ 1.05×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=11)
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
        times = measure({"bare": bare_run, "plain Lightning": plain_run, "tempo": tempo_run}, cfg, args.network,
                        loader, args.repeats)
    report(times, args.network, args.steps, args.repeats)


if __name__ == "__main__":
    main()
