"""LR schedules read from the optimiser at chosen steps: epoch- and step-interval, warm-up,
`max_steps` runs, gradient accumulation, resuming."""

from __future__ import annotations

import logging
import math
from functools import partial

import lightning as L
import pytest
import torch

from tempo.run.schedules import Cosine, MultiStep, Plateau, Span, Step, build_scheduler
from tests.module_fixtures import batch, batches, make_module, one_hot

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
    from tempo.run.schedules import describe

    span = Span(per_epoch=3, total=3, warmup=3)  # a 1-epoch run with the default 1-epoch warm-up
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with caplog.at_level(logging.INFO):
        build_scheduler(optimizer, Cosine(), span, 0.1, "step")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "covering the whole run: no decay" in describe(Cosine(), span, "step", 0.1)
    assert "covering" not in describe(Cosine(), Span(per_epoch=3, total=9, warmup=3), "step", 0.1)


# ---------------------------------------------------------------- schedule=plateau (TDPN §IV.A: "divided by a
# coefficient of 10 when the saturation rate is determined by the verification performance")

def fit_plateau(tmp_path, ckpt_path=None, callbacks=(), max_epochs=5, **plateau):
    """Validation every epoch on the same batch: val/top1 is constant, so it stops improving after epoch 0."""
    trace = LRTrace()
    factor = Plateau(**{"patience": 1, **plateau})
    module = make_module(optimizer=partial(torch.optim.SGD, lr=BASE, momentum=0.9),
                         schedule={"factor": factor, "interval": "epoch", "warmup_epochs": 0})
    labels = [0, 1, 2, 1]
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                        max_epochs=max_epochs, callbacks=[trace, *callbacks])
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=batches(batch(one_hot(labels), labels)),
                ckpt_path=ckpt_path)
    return {step // STEPS_PER_EPOCH: lr for step, lr in trace.lrs.items()}, trainer


def test_plateau_divides_by_10_after_patience_validations_without_improvement(tmp_path):
    # epoch 0 sets the best; epochs 1, 2 do not improve (2 > patience 1) → ×0.1 from epoch 3; again after 4
    lrs, _ = fit_plateau(tmp_path, max_epochs=6)
    assert lrs == pytest.approx({0: BASE, 1: BASE, 2: BASE, 3: BASE / 10, 4: BASE / 10, 5: BASE / 100})


def test_plateau_cooldown_and_min_lr(tmp_path):
    lrs, _ = fit_plateau(tmp_path / "cool", max_epochs=7, cooldown=2)
    assert lrs == pytest.approx({0: BASE, 1: BASE, 2: BASE, 3: BASE / 10, 4: BASE / 10, 5: BASE / 10,
                                 6: BASE / 10})  # 2 validations not counted after the cut
    lrs, _ = fit_plateau(tmp_path / "floor", max_epochs=6, min_lr=0.05)
    assert lrs == pytest.approx({0: BASE, 1: BASE, 2: BASE, 3: 0.05, 4: 0.05, 5: 0.05})


def test_plateau_resume_continues_the_count(tmp_path):
    whole, _ = fit_plateau(tmp_path / "whole", max_epochs=6)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first, _ = fit_plateau(tmp_path / "first", callbacks=[StopAfterEpochs(2), checkpoint], max_epochs=6)
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)["lr_schedulers"][0]
    assert state["num_bad_epochs"] == 1 and state["best"] == 1.0  # the 2nd validation (epoch 1) is counted
    resumed, trainer = fit_plateau(tmp_path / "resumed", ckpt_path=str(last), max_epochs=6)
    assert min(resumed) == 2 and trainer.current_epoch == 6
    assert {**first, **resumed} == pytest.approx(whole)


def test_plateau_config_and_bad_settings(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config(["schedule=plateau"], tmp_path)
    factor = instantiate(cfg.schedule.factor)
    assert factor == Plateau(monitor="val/top1", mode="max", factor=0.1, patience=5, cooldown=0, min_lr=0.0)
    assert cfg.schedule.interval == "epoch" and cfg.schedule.warmup_epochs == 0
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    built = build_scheduler(optimizer, factor, Span(per_epoch=1, total=10, warmup=0), val_every=2)
    assert (built["monitor"], built["frequency"], built["interval"]) == ("val/top1", 2, "epoch")
    assert "plateau ×0.1 after 5 validations" in factor.describe()
    with pytest.raises(ValueError, match="warmup_epochs=0"):
        build_scheduler(optimizer, factor, Span(per_epoch=1, total=10, warmup=1))
    with pytest.raises(ValueError, match="interval=epoch"):
        build_scheduler(optimizer, factor, Span(per_epoch=4, total=40, warmup=0), interval="step")
    with pytest.raises(ValueError, match="limit_val_batches"):
        build_scheduler(optimizer, factor, Span(per_epoch=1, total=10, warmup=0), val_every=0)
