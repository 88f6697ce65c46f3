"""Shared by the reproducibility and pre-emption tests: checkpoint-every-step callbacks, the deterministic
run's overrides, and the check that two runs are the same run (metric history and every weight)."""

from __future__ import annotations

import torch

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
