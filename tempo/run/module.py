"""`RecognitionModule`: the one LightningModule — network + loss + metrics + optimisation.

Batches arrive as uint8 and are normalised here, on the device. Validation/test use
torchmetrics top-1, top-5 (micro) and mean-class (macro) accuracy, plus top-1 of each entry
of `outputs["branch_logits"]` when a network returns per-branch logits (`val/top1_<branch>`);
multi-view test batches (B, V, C, T, H, W) are run in chunks of views and averaged (softmax
`prob` or logits `score`), branches the same way. Samples the loader marks invalid
(undecodable) are excluded from the metrics and counted, summed over processes.

Training steps are kept cheap (`benchmarks/bench_loop.py`): loss terms and train top-1
accumulate on the device every step, are computed once per epoch, and go through Lightning's
`self.log` only on the steps whose values reach the loggers (every `trainer.log_every_n_steps`).
The loss is checked for non-finite values every `finite_check_every` steps (`tempo.run.divergence`;
1, the default: every step, before its update, one flag read; N: N steps' flags in one read; 0: off).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import SumMetric

from tempo.data.resumable import epoch_progress
from tempo.run.divergence import NonFiniteLossCheck, check_finite_weights
from tempo.run.losses import CrossEntropy
from tempo.run.metrics import (
    BranchAccuracy,
    EpochMean,
    EpochMeans,
    accuracy_metrics,
    restore_running_states,
    running_states,
)
from tempo.run.param_groups import param_groups
from tempo.run.schedules import Plateau, PlateauStep, build_scheduler, describe, run_span

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RecognitionModule(L.LightningModule):
    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        optimizer: Callable,
        schedule: dict | None = None,
        loss: nn.Module | None = None,
        reference_batch_size: int | None = None,
        bias_lr_mult: float = 1.0,
        no_decay_norm_bias: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        test_reduce: str = "prob",
        test_chunk: int = 10,
        finite_check_every: int = 1,
    ):
        super().__init__()
        if test_reduce not in ("prob", "score"):
            raise ValueError(f"test_reduce must be 'prob' or 'score', got {test_reduce!r}")
        self.network = network
        self.loss = loss if loss is not None else CrossEntropy()
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.schedule = dict(schedule or {})
        self.reference_batch_size = reference_batch_size
        self.bias_lr_mult = bias_lr_mult
        self.no_decay_norm_bias = no_decay_norm_bias
        self.test_reduce = test_reduce
        self.test_chunk = test_chunk
        self.finite_check = NonFiniteLossCheck(finite_check_every)  # tempo.run.divergence
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1, 1), persistent=False)
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = accuracy_metrics(num_classes).clone(prefix="test/")
        self.val_branches = BranchAccuracy(num_classes, prefix="val/")
        self.test_branches = BranchAccuracy(num_classes, prefix="test/")
        # top-1 over the epoch = the batch-size-weighted mean of each batch's top-1 (a few device ops
        # a step; MulticlassAccuracy's checks read the labels back to the host)
        self.train_top1 = EpochMean()
        self.train_losses = EpochMeans()  # each loss term's epoch mean
        self._epoch_logged = False  # the epoch-level metrics are registered with Lightning this epoch
        # counted per process, summed over processes when computed (DDP)
        self.train_failures = SumMetric()
        self.excluded_counts = nn.ModuleDict({"val": SumMetric(), "test": SumMetric()})
        self.excluded = {"val": 0, "test": 0}  # of the last val / test epoch, all processes
        self.decode_failures = 0  # training samples replaced, all epochs, all processes
        self.lr_info: dict = {}

    # -- data ------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count decode failures and invalid samples on the host, so steps need no device sync."""
        counts = {}
        if "failures" in batch:
            counts["num_failures"] = int(batch["failures"].sum())
        if "valid" in batch:
            counts["num_invalid"] = int((~batch["valid"]).sum())
        return {**batch, **counts}

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        video = batch["video"]
        if video.dtype == torch.uint8:
            video = (video.float().div_(255) - self.mean) / self.std
        return {**batch, "video": video}

    def forward(self, video: torch.Tensor) -> dict:
        return self.network(video)

    # -- steps -----------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.network(batch["video"])
        terms = self.loss(outputs, batch["label"])
        bs = batch["label"].shape[0]
        new_terms = self.train_losses.update(terms, bs)
        self.train_top1.update((outputs["logits"].detach().argmax(1) == batch["label"]).float().mean(), bs)
        failures = batch.get("num_failures", 0)
        if failures:  # host count: the device sees an update only when a video failed
            self.train_failures.update(float(failures))
        self._log_train_metrics(bs, force=new_terms)
        self.finite_check.after_step(terms, batch.get("index"), self.trainer, self._train_paths)
        return terms["loss"]

    def _log_train_metrics(self, batch_size: int, force: bool = False) -> None:
        """Each loss term as `train/loss[_<name>]` (`_step`: the step's value, `_epoch`: the epoch's
        batch-weighted mean), `train/top1` and `train/decode_failures` per epoch.

        The metrics accumulate on the device in `training_step`; Lightning needs to be handed them
        once per epoch (it computes and resets them at the epoch's end) and again on the steps whose
        values go to the loggers, so `self.log` (≈0.1–0.3 ms of Python a call) runs only then. Between
        those steps the progress bar shows the last logged loss."""
        first = not self._epoch_logged
        if not (first or force or self._logger_step()):
            return
        self._epoch_logged = True
        for name, metric, attribute in self.train_losses.items():
            metric.step_value_to_host()
            self.log("train/loss" if name == "loss" else f"train/loss_{name}", metric, prog_bar=name == "loss",
                     on_step=True, on_epoch=True, batch_size=batch_size,
                     metric_attribute=f"train_losses.{attribute}")
        if first:
            self.log("train/top1", self.train_top1, on_step=False, on_epoch=True, batch_size=batch_size)
            self.log("train/decode_failures", self.train_failures, on_step=False, on_epoch=True,
                     batch_size=batch_size)

    def _logger_step(self) -> bool:
        """Whether Lightning sends this step's values to the loggers (`trainer.log_every_n_steps`)."""
        connector = getattr(self.trainer, "_logger_connector", None)  # private: every step when it is gone
        return bool(getattr(connector, "should_update_logs", True)) or bool(self.trainer.fast_dev_run)

    def _train_paths(self, indices: list[int]) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get("train") if datamodule is not None else None
        records = getattr(dataset, "records", None)
        return [str(records[i].path) for i in indices if i < len(records)] if records else []

    def on_train_epoch_start(self) -> None:
        self.train_failures.update(0.0)  # computed every epoch, also when nothing failed
        self._epoch_logged = False

    def on_train_epoch_end(self) -> None:
        self.finite_check.flush(self.trainer, self._train_paths)  # before saving
        check_finite_weights(self, self.trainer.global_step, self.trainer.current_epoch + 1)
        # callbacks read the metric first (it is computed once, on every process)
        value = self.trainer.callback_metrics.get("train/decode_failures")
        self.decode_failures += int(round(float(value))) if value is not None else 0

    # -- mid-epoch checkpoints ------------------------------------------------------------
    def _running_metrics(self) -> dict:
        return {"top1": self.train_top1, "failures": self.train_failures,
                **{f"loss.{name}": metric for name, metric, _ in self.train_losses.items()}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint saved within an epoch carries the epoch's running training metrics (a resume
        continues their sums) and every checkpoint the run's decode-failure count."""
        checkpoint["decode_failures"] = self.decode_failures
        trainer = self._trainer
        if trainer is not None and trainer.training and (progress := epoch_progress(trainer))[0] < progress[1]:
            checkpoint["running_train_metrics"] = running_states(self._running_metrics())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is None or self._trainer.state.fn != "fit":
            return  # testing the best checkpoint after fitting keeps the whole run's count
        self.decode_failures = int(checkpoint.get("decode_failures", 0))
        states = checkpoint.get("running_train_metrics")
        if states:
            for name in (n.removeprefix("loss.") for n in states if n.startswith("loss.")):
                self.train_losses.update({name: torch.zeros((), device=self.device)}, 0)  # the term's metric, empty
            restore_running_states(self._running_metrics(), states)

    @staticmethod
    def scored_outputs(outputs: dict) -> dict[str, torch.Tensor]:
        """What evaluation scores: the main logits ("logits") and each branch's logits by name.
        Other outputs (auxiliary heads, regularisers, attention maps) are ignored."""
        branches = dict(outputs.get("branch_logits") or {})
        if "logits" in branches:
            raise ValueError('a network\'s "branch_logits" may not hold a branch named "logits"')
        return {"logits": outputs["logits"], **branches}

    def _update(self, stage: str, scores: dict[str, torch.Tensor], batch: dict) -> None:
        labels, keep = batch["label"], slice(None)
        invalid = batch.get("num_invalid", 0)
        if invalid:
            self.excluded_counts[stage].update(float(invalid))
            keep = batch["valid"]
            labels = labels[keep]
        main = scores.pop("logits")
        if len(labels):
            (self.val_metrics if stage == "val" else self.test_metrics).update(main[keep], labels)
        (self.val_branches if stage == "val" else self.test_branches).update(scores, labels, keep)

    def _log_epoch(self, stage: str) -> None:
        metrics, branches = (self.val_metrics, self.val_branches) if stage == "val" else \
            (self.test_metrics, self.test_branches)
        self.log_dict({**metrics.compute(), **branches.compute()}, prog_bar=stage == "val", sync_dist=True)
        counter = self.excluded_counts[stage]
        self.excluded[stage] = int(round(float(counter.compute())))  # summed over processes
        self.log(f"{stage}/excluded", float(self.excluded[stage]), sync_dist=True)  # same on all
        for metric in (metrics, branches, counter):
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._update("val", self.scored_outputs(self.network(batch["video"])), batch)

    def on_validation_epoch_start(self) -> None:
        self.excluded_counts["val"].update(0.0)
        if self.trainer.state.fn == "fit":  # not when evaluating a saved model
            self.finite_check.flush(self.trainer, self._train_paths)
            check_finite_weights(self, self.trainer.global_step, self.trainer.current_epoch + 1)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_callbacks(self) -> list[L.Callback]:
        factor = self.schedule.get("factor")
        return [PlateauStep(factor.monitor)] if isinstance(factor, Plateau) else []

    def multi_view_scores(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, V, C, T, H, W) → {"logits": (B, K), <branch>: (B, K), …}: each averaged over the
        views (softmax probabilities or logits, `test_reduce`), `test_chunk` views at a time."""
        b, v = video.shape[:2]
        chunks = [self.scored_outputs(self.network(part))
                  for part in video.flatten(0, 1).split(max(1, self.test_chunk) * b)]
        reduced = {}
        for name in chunks[0]:
            logits = torch.cat([chunk[name].float() for chunk in chunks]).view(b, v, -1)
            reduced[name] = logits.softmax(-1).mean(1) if self.test_reduce == "prob" else logits.mean(1)
        return reduced

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        video = batch["video"]
        scores = self.multi_view_scores(video) if video.dim() == 6 else \
            self.scored_outputs(self.network(video))
        main = scores["logits"].detach()
        self._update("test", scores, batch)
        return {"scores": main}  # view-averaged scores, for callbacks (predictions, confusion matrix)

    def on_test_epoch_start(self) -> None:
        self.excluded_counts["test"].update(0.0)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self.excluded["test"] and self.trainer.is_global_zero:
            log.warning("%d undecodable test videos were excluded from the accuracy", self.excluded["test"])

    # -- optimisation ------------------------------------------------------------------
    def global_batch_size(self) -> int:
        trainer = self.trainer
        batch = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule else None
        return int(batch or 1) * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        probe = self.optimizer_factory(params=[nn.Parameter(torch.zeros(1))])
        base_lr = probe.defaults["lr"]
        weight_decay = probe.defaults.get("weight_decay", 0.0)
        lr = base_lr
        global_batch = self.global_batch_size()
        if self.reference_batch_size:
            lr = base_lr * global_batch / self.reference_batch_size
        world, accumulate = self.trainer.world_size, self.trainer.accumulate_grad_batches
        self.lr_info = {"recipe_lr": base_lr, "reference_batch_size": self.reference_batch_size,
                        "global_batch_size": global_batch, "world_size": world, "lr": lr}
        batch = (f"global batch {global_batch} = {global_batch // (world * accumulate)} per process × "
                 f"world size {world}" + (f" × {accumulate} accumulated" if accumulate > 1 else ""))
        message = (f"LR {lr:.6g} = recipe {base_lr:g} × {batch} / reference {self.reference_batch_size}"
                   if self.reference_batch_size else f"LR {lr:g} (no reference batch size: not scaled; {batch})")
        if self.trainer.is_global_zero:
            log.info(message)  # Hydra's job logging also prints it to the console
        groups = param_groups(self.network, weight_decay, self.bias_lr_mult, self.no_decay_norm_bias)
        for g in groups:
            g["lr"] = lr * g["lr_mult"]
        optimizer = self.optimizer_factory(params=groups, lr=lr)
        if not self.schedule:
            return optimizer
        factor, interval = self.schedule["factor"], self.schedule.get("interval", "epoch")
        start_factor = self.schedule.get("warmup_start_factor", 0.1)
        span = run_span(self.trainer, interval, self.schedule.get("warmup_epochs", 0.0))
        if self.trainer.is_global_zero:
            log.info(describe(factor, span, interval, start_factor))
        val_every = (self.trainer.check_val_every_n_epoch or 1) if self.trainer.limit_val_batches else 0
        scheduler = build_scheduler(optimizer, factor, span, start_factor, interval, val_every)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
