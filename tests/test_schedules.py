"""LR schedules read from the optimiser at chosen steps: epoch- and step-interval, warm-up,
`max_steps` runs, gradient accumulation, resuming."""

from __future__ import annotations

import logging
import math
from functools import partial

import lightning as L
import pytest
import torch

from tempo.run.schedules import Cosine, MultiStep, Step, build_scheduler
from tests.test_module import batch, batches, make_module, one_hot

BASE = 0.1
STEPS_PER_EPOCH = 4


def loader():
    labels = [0, 1, 2, 1]
    return batches(*[batch(one_hot(labels, value=1.0), labels) for _ in range(STEPS_PER_EPOCH)])


class LRTrace(L.Callback):
    """The main group's LR at the start of every optimiser step (what that step uses)."""

    def __init__(self):
        self.lrs: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def fit(tmp_path, factor, interval="epoch", warmup_epochs=0.0, start_factor=0.1, ckpt_path=None,
        callbacks=(), **trainer_kwargs):
    trace = LRTrace()
    schedule = {"factor": factor, "interval": interval, "warmup_epochs": warmup_epochs,
                "warmup_start_factor": start_factor}
    module = make_module(optimizer=partial(torch.optim.SGD, lr=BASE, momentum=0.9), schedule=schedule)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[trace, *callbacks], **trainer_kwargs)
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trace.lrs, trainer


def cosine(progress: float, min_factor: float = 0.0) -> float:
    return BASE * (min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_step_cosine_sized_by_max_steps_with_warmup(tmp_path):
    """max_epochs=-1 max_steps=40 (issue 7 defect 3: the LR was 0 from step 9 on)."""
    lrs, trainer = fit(tmp_path, Cosine(), "step", warmup_epochs=1, max_epochs=-1, max_steps=40)
    assert trainer.global_step == 40 and len(lrs) == 40
    warm = STEPS_PER_EPOCH
    for step in range(warm):  # linear 0.1× → 1× over one epoch of steps
        assert lrs[step] == pytest.approx(BASE * (0.1 + 0.9 * step / warm))
    for step in (4, 10, 22, 39):
        assert lrs[step] == pytest.approx(cosine((step - warm) / (40 - warm)))
    assert min(lrs.values()) > 0


def test_step_cosine_sized_by_max_epochs_and_min_factor(tmp_path):
    lrs, _ = fit(tmp_path, Cosine(min_factor=0.01), "step", max_epochs=3)
    total = 3 * STEPS_PER_EPOCH
    for step in (0, 5, 11):
        assert lrs[step] == pytest.approx(cosine(step / total, 0.01))


def test_epoch_cosine_steps_once_per_epoch(tmp_path):
    lrs, _ = fit(tmp_path, Cosine(), "epoch", max_epochs=4)
    for epoch in range(4):
        for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH):
            assert lrs[step] == pytest.approx(cosine(epoch / 4))


def test_epoch_cosine_cut_short_by_max_steps(tmp_path):
    # 10 epochs asked, 6 steps allowed: 2 epochs run, so the decay spans 2 epochs
    lrs, trainer = fit(tmp_path, Cosine(), "epoch", max_epochs=10, max_steps=6)
    assert trainer.global_step == 6
    assert lrs[5] == pytest.approx(cosine(1 / 2))


def test_epoch_multistep_with_warmup(tmp_path):
    lrs, _ = fit(tmp_path, MultiStep(milestones=[2, 3], gamma=0.1), "epoch", warmup_epochs=1, start_factor=0.5,
                 max_epochs=4)
    per_epoch = [lrs[e * STEPS_PER_EPOCH] for e in range(4)]
    assert per_epoch == pytest.approx([0.5 * BASE, BASE, 0.1 * BASE, 0.01 * BASE])
    assert lrs[STEPS_PER_EPOCH - 1] == lrs[0]  # constant within an epoch


def test_step_multistep_milestones_stay_in_epochs(tmp_path):
    lrs, _ = fit(tmp_path, MultiStep(milestones=[1.5], gamma=0.1), "step", warmup_epochs=0.5, max_epochs=2)
    assert lrs[0] == pytest.approx(0.1 * BASE) and lrs[1] == pytest.approx(0.55 * BASE)
    assert lrs[2] == lrs[5] == pytest.approx(BASE)
    assert lrs[6] == lrs[7] == pytest.approx(0.1 * BASE)


def test_step_schedule(tmp_path):
    lrs, _ = fit(tmp_path, Step(step_size=1, gamma=0.5), "epoch", max_epochs=3)
    assert [lrs[e * STEPS_PER_EPOCH] for e in range(3)] == pytest.approx([BASE, BASE / 2, BASE / 4])


def test_step_interval_counts_optimiser_steps_under_accumulation(tmp_path):
    lrs, trainer = fit(tmp_path, Cosine(), "step", max_epochs=2, accumulate_grad_batches=2)
    assert trainer.global_step == 4  # 2 optimiser steps per epoch
    assert lrs[3] == pytest.approx(cosine(3 / 4))


def test_bias_group_keeps_its_multiplier(tmp_path):
    trace = LRTrace()
    module = make_module(optimizer=partial(torch.optim.SGD, lr=BASE), bias_lr_mult=2.0,
                         schedule={"factor": MultiStep(milestones=[1]), "interval": "epoch"})
    module.network.bias = torch.nn.Parameter(torch.zeros(()))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=2,
                        limit_val_batches=0, default_root_dir=tmp_path, callbacks=[trace])
    trainer.fit(module, train_dataloaders=loader())
    groups = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert groups == pytest.approx({"decay": 0.1 * BASE, "bias": 0.2 * BASE})


class StopAfterEpochs(L.Callback):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_resume_continues_the_schedule(tmp_path, interval):
    factor = Cosine() if interval == "step" else MultiStep(milestones=[1, 2], gamma=0.1)
    kwargs = {"interval": interval, "warmup_epochs": 1 if interval == "step" else 0, "max_epochs": 3}
    whole, _ = fit(tmp_path / "whole", factor, **kwargs)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first, trainer = fit(tmp_path / "first", factor, callbacks=[StopAfterEpochs(2), checkpoint], **kwargs)
    assert trainer.global_step == 2 * STEPS_PER_EPOCH
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)  # no pickled objects
    assert state["lr_schedulers"] == [{"last_epoch": 2 * STEPS_PER_EPOCH if interval == "step" else 2}]
    resumed, trainer = fit(tmp_path / "resumed", factor, ckpt_path=str(last), **kwargs)
    assert trainer.global_step == 3 * STEPS_PER_EPOCH and min(resumed) == 2 * STEPS_PER_EPOCH
    assert {**first, **resumed} == pytest.approx(whole)


def test_a_warm_up_covering_the_run_is_said_once_not_warned(caplog):
    from tempo.run.schedules import Cosine, Span, describe

    span = Span(per_epoch=3, total=3, warmup=3)  # a 1-epoch run with the default 1-epoch warm-up
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with caplog.at_level(logging.INFO):
        build_scheduler(optimizer, Cosine(), span, 0.1, "step")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "covering the whole run: no decay" in describe(Cosine(), span, "step", 0.1)
    assert "covering" not in describe(Cosine(), Span(per_epoch=3, total=9, warmup=3), "step", 0.1)
