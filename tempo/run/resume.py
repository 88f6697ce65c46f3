"""Runs that end where an uninterrupted run does: per-step seeding, pre-emption, SLURM requeue.

`StepSeeding` reseeds torch's generator before every training step from (seed, step, rank), so the
model's own random draws (dropout, the sparse model's random split of attention peaks) do not
depend on what the process did before — a resumed run draws what the uninterrupted one drew.

`Preemption` turns SIGTERM (a pre-empting scheduler, `kill`) and SIGUSR1 (SLURM's warning before
the time limit: `conf/hydra/launcher/slurm.yaml` asks for it with `--signal`) into a clean stop at
the end of the current training step (the next epoch's first, when it is an epoch's last): it
saves `<run>/checkpoints/last.ckpt` (that step, loader position included) and raises
`RunPreempted`; `tempo.train` writes summary.json with `"status": "preempted"` and exits with
`PREEMPTED_EXIT`. Under SLURM, SIGUSR1 also requeues the job (`scontrol requeue`; SLURM requeues
pre-empted jobs itself), and the requeued job — same command, same run folder — resumes from that
checkpoint by itself (`requeued_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import torch

from tempo.data.resumable import draw_seed, epoch_progress
from tempo.run.callbacks import skip_unused_batch_hooks

log = logging.getLogger(__name__)

PREEMPTED_EXIT = os.EX_TEMPFAIL  # 75, sysexits' "temporary failure, retry later": not an error (1)
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class RunPreempted(Exception):
    """Training stopped on a pre-emption signal after saving `checkpoint` (step `step`)."""

    def __init__(self, signal_name: str, checkpoint: str, step: int, epoch: int):
        super().__init__(f"{signal_name} received: stopped after step {step} (epoch {epoch}); "
                         f"resume with ckpt_path={checkpoint}")
        self.details = {"signal": signal_name, "checkpoint": checkpoint, "step": step, "epoch": epoch}


@skip_unused_batch_hooks
class StepSeeding(L.Callback):
    """torch's generator seeded from (seed, global step, rank) before each training step."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        torch.manual_seed(draw_seed(self.seed, trainer.global_step, trainer.global_rank))


@skip_unused_batch_hooks
class Preemption(L.Callback):
    """Stop at the end of the training step during which a pre-emption signal arrived, saving it."""

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)
        self.received: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # after Lightning's own handlers (set just before training): its SIGTERM handler would end
        # the run only at the epoch's end, without a checkpoint; Lightning restores the previous
        # handlers when the run ends
        self.received = None
        for signum in PREEMPTION_SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame) -> None:
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        received = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step (one tiny all-reduce a step)
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        done, epoch_batches = epoch_progress(trainer)
        if not received or done >= epoch_batches:  # at an epoch's last step: after its validation and checkpoint
            return
        name = signal.Signals(self.received).name if self.received is not None else "signal (another rank)"
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)  # collective; rank 0 writes
        if self.received == signal.SIGUSR1 and trainer.is_global_zero:
            requeue_slurm_job()
        raise RunPreempted(name, str(path), trainer.global_step, trainer.current_epoch + 1)


def requeue_slurm_job() -> None:
    """Put this SLURM job back in the queue (what Lightning's SLURM environment does on its signal)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    if not job:
        log.warning("SIGUSR1 outside SLURM: not requeued; resume with ckpt_path=<run>/checkpoints/last.ckpt")
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode:
        log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
    else:
        log.info("requeued SLURM job %s", job)


def requeued_checkpoint(run_dir: str | Path) -> str | None:
    """The checkpoint a requeued SLURM job continues from: its run folder's pre-emption checkpoint,
    when SLURM says the job was restarted (SLURM_RESTART_COUNT ≥ 1) and summary.json says pre-empted."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    summary = Path(run_dir) / "summary.json"
    if not summary.is_file() or json.loads(summary.read_text()).get("status") != "preempted":
        return None
    checkpoint = json.loads(summary.read_text()).get("failure", {}).get("checkpoint")
    return checkpoint if checkpoint and Path(checkpoint).is_file() else None
