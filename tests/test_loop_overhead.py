"""The cheap training loop: per-step values logged only on the steps the loggers write, epoch
means still over every step; the batched non-finite-loss check (`module.finite_check_every`);
progress bars that read a few times a second; the loop benchmark doing the same work on both
sides."""

from __future__ import annotations

import csv
import logging
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import rich
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from tempo.run.bottleneck import DataBottleneck
from tempo.run.build import build_callbacks, build_module
from tempo.run.callbacks import (
    EpochRichProgressBar,
    EpochTQDMProgressBar,
    MetricsHistory,
    RunCheckpoint,
    StepLearningRateMonitor,
)
from tempo.run.divergence import TrainingDiverged
from tempo.run.metrics import EpochMean
from tests.conftest import compose_config
from tests.module_fixtures import batch, batches, make_module

SIZES = [4, 2, 4, 2, 4]  # unequal batches: the epoch mean is weighted by batch size


class RecordedLoss(torch.nn.Module):
    """The module's loss, recording each step's total."""

    def __init__(self, loss):
        super().__init__()
        self.inner, self.totals = loss, []

    def forward(self, outputs, labels):
        terms = self.inner(outputs, labels)
        self.totals.append(float(terms["loss"]))
        return terms


def training_batches(nan_at: int | None = None):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, size in enumerate(SIZES):
        labels = torch.randint(0, 3, (size,), generator=g)
        logits = torch.randn(size, 3, generator=g)
        if i == nan_at:
            logits[0, 0] = float("nan")
        item = batch(logits, labels)
        item["index"] = torch.arange(10 * i, 10 * i + size)
        out.append(item)
    return out


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    kwargs = {"logger": False, "limit_val_batches": 0, "max_epochs": 1, "enable_checkpointing": False, **kwargs}
    return L.Trainer(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, **kwargs)


def test_step_values_on_logger_steps_only_epoch_means_over_every_step(tmp_path):
    module = make_module()
    module.loss = RecordedLoss(module.loss)
    calls: dict[int, int] = {}
    log = module.log

    def counting_log(*args, **kwargs):
        calls[module.trainer.global_step] = calls.get(module.trainer.global_step, 0) + 1
        return log(*args, **kwargs)

    module.log = counting_log
    data = training_batches()
    fit = trainer(tmp_path, logger=CSVLogger(tmp_path, name="csv", version=""), log_every_n_steps=2)
    fit.fit(module, batches(*data))
    # step 0 hands Lightning every metric (loss, ce, top1, decode failures); steps 1 and 3 are the
    # logger's (every 2nd): loss and ce; steps 2 and 4 call no `self.log` at all
    assert calls == {0: 4, 1: 2, 3: 2}
    totals = module.loss.totals
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    step_rows = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    assert step_rows == {1: pytest.approx(totals[1], rel=1e-6), 3: pytest.approx(totals[3], rel=1e-6)}
    epoch = [r for r in rows if r.get("train/loss_epoch")]
    assert len(epoch) == 1
    mean = sum(t * n for t, n in zip(totals, SIZES, strict=True)) / sum(SIZES)
    assert float(epoch[0]["train/loss_epoch"]) == pytest.approx(mean, rel=1e-6)
    assert float(epoch[0]["train/loss_ce_epoch"]) == pytest.approx(mean, rel=1e-6)  # CE is the only term
    callback = fit.callback_metrics
    assert {"train/loss", "train/loss_step", "train/loss_epoch", "train/loss_ce", "train/top1",
            "train/decode_failures"} <= set(callback)
    assert float(callback["train/loss_epoch"]) == pytest.approx(mean, rel=1e-6)


def test_train_top1_counts_every_step(tmp_path):
    """A network that never learns (lr 0): train/top1 = correct / all over every step's batch."""
    module = make_module(optimizer=lambda params, lr=0.0: torch.optim.SGD(params, lr=0.0))
    data = training_batches()
    fit = trainer(tmp_path, log_every_n_steps=50)
    fit.fit(module, batches(*data))
    correct = sum(int((item["video"][:, :3, 0, 0, 0].argmax(1) == item["label"]).sum()) for item in data)
    assert float(fit.callback_metrics["train/top1"]) == pytest.approx(correct / sum(SIZES))


def test_epoch_mean_keeps_its_step_value_on_the_host():
    metric = EpochMean()
    metric.update(torch.tensor(2.0), 3)
    metric.update(torch.tensor(4.0), 1)
    metric.step_value_to_host()
    assert float(metric.compute()) == pytest.approx((2 * 3 + 4) / 4)
    moved = metric.to("meta")  # where a GPU would be: the states move, the step value does not
    assert moved.total.device.type == "meta" and moved.last.device.type == "meta"
    assert moved._forward_cache.device.type == "cpu" and float(moved._forward_cache) == 4.0
    assert metric.update_count == 2
    fresh = EpochMean()
    fresh.update(torch.tensor(2.0), 3)
    assert float(fresh.compute()) == 2.0
    fresh.update(torch.tensor(1.0), 3)
    assert float(fresh.compute()) == 1.5  # a computed value is not served stale after new steps


def fit_until_diverged(tmp_path, every: int, nan_at: int) -> tuple[TrainingDiverged, object, list[int]]:
    module = make_module(finite_check_every=every)
    steps: list[int] = []

    class Steps(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append(batch_idx)

    with pytest.raises(TrainingDiverged) as err:
        trainer(tmp_path, callbacks=[Steps()]).fit(module, batches(*training_batches(nan_at=nan_at)))
    return err.value, module, steps


def test_every_step_check_stops_before_the_non_finite_update(tmp_path):
    err, module, steps = fit_until_diverged(tmp_path, every=1, nan_at=2)
    assert steps == [0, 1]  # step 2 raised inside its training step
    assert err.details["reason"] == "non-finite loss" and err.details["step"] == 2
    assert err.details["indices"] == [20, 21, 22, 23]
    assert torch.isfinite(module.network.scale).all()  # its update never happened


def test_batched_check_names_the_first_non_finite_step(tmp_path):
    err, module, steps = fit_until_diverged(tmp_path, every=2, nan_at=2)
    assert steps == [0, 1, 2]  # read at step 3 (the 2nd of the pair 2–3), before step 3's update
    assert err.details["step"] == 2 and err.details["indices"] == [20, 21, 22, 23]
    assert "non-finite loss at step 2" in str(err)


def test_batched_check_reads_at_the_epoch_end_before_saving(tmp_path):
    err, _, steps = fit_until_diverged(tmp_path, every=100, nan_at=1)
    assert steps == [0, 1, 2, 3, 4]  # the whole epoch ran; the check ran before any checkpoint
    assert err.details["reason"] == "non-finite loss" and err.details["step"] == 1
    assert err.details["indices"] == [10, 11]


def test_check_off_leaves_the_weight_check(tmp_path):
    err, _, steps = fit_until_diverged(tmp_path, every=0, nan_at=1)
    assert steps == [0, 1, 2, 3, 4] and err.details["reason"] == "non-finite weights"


def test_finite_check_every_is_checked_and_set_from_the_config(tmp_path):
    with pytest.raises(ValueError, match="finite_check_every"):
        make_module(finite_check_every=-1)
    cfg = compose_config(["backbone=resnet_tiny", "dataset.num_segments=2", "module.finite_check_every=10"],
                         tmp_path)
    assert build_module(cfg).finite_check.every == 10
    assert build_module(compose_config([], tmp_path)).finite_check.every == 1  # default: every step


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_progress_bar_reads_at_its_rate_and_ends_on_the_last_step(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(rich, "_console", None)  # the bar reconfigures rich's global console
    base = RichProgressBar if kind == "rich" else TQDMProgressBar
    reads = []
    original = base.on_train_batch_end
    monkeypatch.setattr(base, "on_train_batch_end",
                        lambda self, *args: (reads.append(args[-1]), original(self, *args))[1])
    bar = EpochRichProgressBar(refresh_rate=1) if kind == "rich" else EpochTQDMProgressBar(reads_per_s=1)
    ticks = iter(0.35 * i for i in range(100))  # a clock that advances 0.35 s per step
    bar.clock = lambda: next(ticks)
    fit = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_model_summary=False, default_root_dir=tmp_path, max_epochs=1, limit_val_batches=0,
                    callbacks=[bar])
    fit.fit(make_module(), batches(*training_batches()))
    assert reads == [0, 3]  # at 0 s and 1.05 s: at most once a second; step 4 is shown at the end
    if kind == "rich":
        assert [task.completed for task in bar.progress.tasks] == [len(SIZES)]
    else:
        assert bar._train_progress_bar.n == len(SIZES)


def test_default_progress_bar_draws_twice_a_second(tmp_path):
    bars = [c for c in build_callbacks(compose_config(["callbacks=default"], tmp_path), has_logger=True)
            if isinstance(c, EpochRichProgressBar)]
    assert len(bars) == 1 and bars[0].refresh_rate == 2 and bars[0].reads_per_s == 2


def test_loop_benchmark_does_the_same_work_on_every_side(tmp_path, monkeypatch, request):
    """bench_loop's bare loop, plain Lightning and tempo's loop train the same network on the same
    batches: the same loss, optimiser, LR schedule and normalisation give the same weights."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_loop
    finally:
        sys.path.pop(0)
    # the benchmark quiets these loggers for its process; here they get their levels back afterwards
    levels = {name: logging.getLogger(name).level for name in ("lightning", "lightning.pytorch", "lightning.fabric",
                                                               "tempo")}
    request.addfinalizer(lambda: [logging.getLogger(name).setLevel(level) for name, level in levels.items()])
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    bench_loop.quiet_lightning()
    monkeypatch.setattr(rich, "_console", None)  # the bar reconfigures rich's global console
    cfg = bench_loop.config(tmp_path)
    loader = bench_loop.Loader(bench_loop.make_batches(bench_loop.SKIP + 3))
    runs = [side(cfg, "linear", loader) for side in (bench_loop.bare_run, bench_loop.plain_run,
                                                       bench_loop.tempo_run)]
    initial = bench_loop.tempo_module(cfg, "linear").network
    for run in runs:
        assert len(run.ends) == len(loader)  # one end time per step
        assert all(not torch.equal(p, q) for p, q in zip(run.network.parameters(), initial.parameters(),
                                                             strict=True))
        for p, q in zip(run.network.parameters(), runs[0].network.parameters(), strict=True):
            torch.testing.assert_close(p, q)


def test_tempo_callbacks_skip_their_unused_batch_hooks(tmp_path):
    """Lightning calls a hook only when it is callable: the no-op per-batch hooks are None."""
    for cls in (DataBottleneck, MetricsHistory, RunCheckpoint, StepLearningRateMonitor, EpochRichProgressBar):
        assert cls.on_before_backward is None and cls.on_after_backward is None, cls

    def implemented(cls, hook):  # kept, and not Callback's no-op
        return getattr(cls, hook) not in (None, getattr(L.Callback, hook))

    assert implemented(DataBottleneck, "on_train_batch_start") and implemented(DataBottleneck, "on_train_batch_end")
    assert implemented(RunCheckpoint, "on_train_batch_end")  # ModelCheckpoint's own (every_n_train_steps)
    assert implemented(StepLearningRateMonitor, "on_train_batch_start")
    assert StepLearningRateMonitor.on_train_batch_end is None
    assert implemented(EpochRichProgressBar, "on_train_batch_end")
    assert implemented(EpochRichProgressBar, "on_validation_batch_end")
    assert MetricsHistory.on_train_batch_end is None and implemented(MetricsHistory, "on_train_epoch_end")
    cfg = compose_config(["callbacks=default"], tmp_path)
    built = build_callbacks(cfg, has_logger=True)
    assert any(type(c) is StepLearningRateMonitor for c in built)


def test_checkpoint_checks_steps_only_when_it_saves_within_epochs(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    checked = []
    original = ModelCheckpoint.on_train_batch_end
    monkeypatch.setattr(ModelCheckpoint, "on_train_batch_end",
                        lambda self, *args: (checked.append(args[-1]), original(self, *args))[1])
    per_epoch = RunCheckpoint(dirpath=tmp_path / "epoch", save_last=True)
    trainer(tmp_path, callbacks=[per_epoch], enable_checkpointing=True).fit(make_module(),
                                                                              batches(*training_batches()))
    assert checked == [] and (tmp_path / "epoch" / "last.ckpt").is_file()
    per_steps = RunCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=2, save_top_k=-1,
                              filename="step{step}", auto_insert_metric_name=False)
    trainer(tmp_path, callbacks=[per_steps], enable_checkpointing=True).fit(make_module(),
                                                                              batches(*training_batches()))
    # every step but the epoch's last, which the epoch-end save covers after validation (resume exactness)
    assert checked == [0, 1, 2, 3]
    assert {p.name for p in (tmp_path / "steps").glob("step*.ckpt")} >= {"step2.ckpt", "step4.ckpt"}
