"""benchmarks/gpu_check.py on CPU: the no-CUDA exit, and its whole measuring and table code at tiny sizes
(`--device cpu --tiny`: the same models, settings, prepared-set loader and ratios as on a GPU)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_runs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "model_rate", lambda *a: pytest.fail("measured without a GPU"))
    assert gpu_check.main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


def test_table_ratios_come_from_the_rows():
    rows = [gpu_check.Row("A", "fp32", 8, "8×224²", 10.0, 1000.0), gpu_check.Row("A", "bf16", 8, "8×224²", 25.0, 600.0),
            gpu_check.Row("A", "bf16+compile", 8, "8×224²", error="RuntimeError: boom")]
    text = gpu_check.table(rows, {("A", 8): 50.0, ("A", 16): 12.5}, "cpu")
    lines = text.splitlines()
    assert re.search(r"^A\s+bf16\s+8\s+8×224²\s+25\.0\s+2\.50×\s+600$", text, re.M), text
    assert any("bf16+compile" in line and "FAILED: RuntimeError: boom" in line for line in lines)
    # loader / the model's fastest setting (25 clips/s): 2.00× with 8 workers, 0.50× with 16
    assert re.search(r"^A\s+8\s+50\.0\s+25\.0\s+2\.00×$", text, re.M), text
    assert re.search(r"^A\s+16\s+12\.5\s+25\.0\s+0\.50×$", text, re.M), text


@pytest.mark.slow  # four models × three settings plus encoding, converting and loading a video set
def test_tiny_run_on_cpu_prints_every_row(capsys, one_thread):
    settings = ["fp32", "bf16", "bf16+channels_last"]  # compile: inductor's C++ build is minutes on CPU
    assert gpu_check.main(["--device", "cpu", "--tiny", "--settings", *settings, "--steps", "1", "--warmup", "1",
                           "--workers", "0", "--loader-batches", "2", "--videos", "2"]) == 0
    table = capsys.readouterr().out.split("train clips/s on cpu")[1]
    for model in gpu_check.RECIPES:
        for setting in settings:  # --tiny: every recipe at batch 2 of 4 frames of 32²
            row = rf"^{re.escape(model)}\s+{re.escape(setting)}\s+2\s+4×32²\s+\d+\.\d\s+\d+\.\d\d×\s+-$"
            assert re.search(row, table, re.M), (model, setting, table)
        for workers in (0,):  # forked loader workers under pytest: see docs/development.md
            match = re.search(rf"^{re.escape(model)}\s+{workers}\s+(\S+)\s+(\S+)\s+(\S+)×$", table, re.M)
            loader, best, ratio = map(float, match.groups())
            assert ratio == pytest.approx(loader / best, rel=0.02, abs=0.01)
