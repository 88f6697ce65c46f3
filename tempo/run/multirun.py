"""Hydra multirun + DDP: every job in its own folder, every rank of a job in the same one.

Lightning starts ranks 1..N-1 of a DDP job by re-running the command line with
`hydra.run.dir=<HydraConfig.run.dir>`. In a multirun that command line still holds `-m` and
the sweep (`seed=0,1`), and `run.dir` is not the job's folder: each extra rank would start a
sweep of its own in another folder. Before fitting, a multirun job therefore rewrites what
Lightning reads: the command line becomes this job's own overrides, and `run.dir` its output
folder, so the extra ranks run exactly this job, in this job's folder. (Under SLURM every
rank is a task of the same submitit job, which runs the same job config: nothing to do.)
Lightning also leaves its rendezvous variables (LOCAL_RANK, MASTER_PORT, ...) in the
environment of the sweep's process; the next job would take them as an external launcher's and
wait for ranks that have exited. Each job starts from the environment the sweep started with.

`SweepOutcome` (a Hydra callback, `conf/train.yaml`) ends a sweep with a non-zero exit status when
a job did not complete, after every job has run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

# what Lightning's DDP launch sets in the launching process
DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
           "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
_sweep_env: dict[str, str | None] | None = None


def _restore_sweep_env() -> None:
    """First job: remember the DDP variables; later jobs: put them back as they were."""
    global _sweep_env
    if _sweep_env is None:
        _sweep_env = {k: os.environ.get(k) for k in DDP_ENV}
        return
    for key, value in _sweep_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pin_ddp_ranks_to_job() -> bool:
    """In a Hydra multirun job: point Lightning's rank re-launch at this job only. Returns True
    when it changed anything."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    _restore_sweep_env()
    return True


class SweepOutcome(Callback):
    """After a multirun: one line per job that did not complete (diverged, pre-empted, crashed before
    its summary), and a non-zero exit status when there is one. The other jobs ran to the end: a
    diverging job returns NaN to the sweeper instead of raising (`tempo.train.main`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        unfinished = []
        for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) if sweep_dir.is_dir() else []:
            summary = job / "summary.json"
            status = json.loads(summary.read_text()).get("status") if summary.is_file() else "no summary.json"
            if status != "completed":
                unfinished.append(f"{job.name}: {status}")
        if unfinished:
            print(f"{len(unfinished)} sweep job(s) did not complete ({sweep_dir}):\n  " + "\n  ".join(unfinished),
                  file=sys.stderr)
            raise SystemExit(1)  # passes Hydra's callback guard (it catches Exception only)
