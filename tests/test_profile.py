"""`python -m tempo.profile`: parameters (spec A6/B8), GMACs (counter + analytic correlation), throughput."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tempo.profile import profile_network
from tests.conftest import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def profile_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("profile", overrides=["paths.output_dir=unused", *overrides])


def test_cli_reports_tcm_r50_params_and_gmacs(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "tempo.profile", "model=tcm", "backbone=resnet50", "dataset=sthv1",
                          "profile.repeats=0", f"profile.json_out={out}", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "TCM@res3" in res.stdout and "23,935,721" in res.stdout
    report = json.loads(out.read_text())
    assert json.loads((tmp_path / "run" / "profile.json").read_text()) == report
    assert report["clip"] == [3, 8, 224, 224] and report["num_classes"] == 174
    assert report["params"]["total"] == 23_935_721
    assert report["params"]["modules"]["backbone.after_stage.2"] == 71_163
    block = report["tcm_blocks"]["TCM@res3"]
    assert block["params"] == 71_163 and block["input"] == [8, 512, 28, 28]
    assert block["counter_gmacs"] == pytest.approx(0.436, rel=0.02)
    assert block["correlation_gmacs"] == pytest.approx(0.158, rel=0.01)
    assert block["total_gmacs"] == pytest.approx(0.594, rel=0.02)
    gmacs = report["gmacs"]
    assert gmacs["correlation_macs"] == pytest.approx(block["correlation_gmacs"])
    assert gmacs["total_macs"] == pytest.approx(gmacs["counter_macs"] + gmacs["correlation_macs"])
    assert gmacs["total_macs"] == pytest.approx(32.9 + 0.594, rel=0.01)  # spec A6 (≈4.11 per frame) + B8
    assert "throughput" not in report  # profile.repeats=0 skips the timing


def test_tsm_r50_k400_params_and_gmacs(one_thread):
    report = profile_network(profile_cfg("model=tsm", "backbone=resnet50", "dataset=k400", "profile.repeats=0"))
    assert report["params"]["total"] == 24_327_632
    assert report["tcm_blocks"] == {} and report["gmacs"]["correlation_macs"] == 0
    assert report["gmacs"]["total_macs"] == pytest.approx(32.9, rel=0.01)


def test_tiny_profile_times_forward_and_backward(one_thread):
    cfg = profile_cfg("model=tcm", "backbone=resnet_tiny", "model.network.positions=[2,3]", "dataset.num_segments=4",
                      "dataset.input_size=32", "profile.batch_size=2", "profile.warmup=0", "profile.repeats=2")
    report = profile_network(cfg)
    assert set(report["tcm_blocks"]) == {"TCM@res2", "TCM@res3"}
    assert report["tcm_blocks"]["TCM@res2"]["input"] == [4, 16, 8, 8]
    blocks = sum(b["params"] for b in report["tcm_blocks"].values())
    assert report["params"]["modules"]["backbone.after_stage"] == blocks
    timing = report["throughput"]
    assert timing["batch_size"] == 2 and timing["device"] == "cpu"
    assert timing["forward_clips_per_s"] > 0 and timing["train_clips_per_s"] > 0
    assert timing["train_step_s"] > 0 and timing["forward_s"] > 0
