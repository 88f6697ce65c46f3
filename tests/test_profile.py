"""`python -m tempo.profile`: parameters (spec A6/B8), GMACs (counter + analytic hooks), throughput."""

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

import tempo.analysis.counting as profile_mod
from tempo.analysis.counting import count_macs, median_seconds, param_report, profile_network, throughput
from tempo.models.backbones.resnet import ResNet
from tempo.models.tcm import TCM
from tests.conftest import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def profile_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("profile", overrides=["paths.output_dir=unused", *overrides])


@pytest.mark.slow
def test_cli_reports_tcm_r50_params_and_gmacs(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "tempo.profile", "model=tcm", "backbone=resnet50", "dataset=sthv1",
                          "profile.repeats=0", f"profile.json_out={out}", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "TCM@res3" in res.stdout and "23,935,721" in res.stdout and "correlation (analytic)" in res.stdout
    report = json.loads(out.read_text())
    assert json.loads((tmp_path / "run" / "profile.json").read_text()) == report
    assert report["clip"] == [3, 8, 224, 224] and report["num_classes"] == 174
    assert report["params"]["total"] == report["params"]["inference"] == 23_935_721
    assert report["params"]["training_only"] == {}
    assert report["params"]["modules"]["backbone.after_stage.2"] == 71_163
    block = report["blocks"]["TCM@res3"]
    assert block["params"] == 71_163 and block["input"] == [8, 512, 28, 28]
    assert block["gmacs"]["counter"] == pytest.approx(0.436, rel=0.02)
    assert block["gmacs"]["analytic"] == {"correlation": 2 * 7 * 15 * 15 * 64 * 28 * 28 / 1e9}  # 0.158 (B8)
    assert block["gmacs"]["total"] == pytest.approx(0.594, rel=0.02)
    gmacs = report["gmacs"]
    assert gmacs["analytic"] == block["gmacs"]["analytic"]
    assert gmacs["total"] == pytest.approx(gmacs["counter"] + gmacs["analytic"]["correlation"])
    assert gmacs["total"] == pytest.approx(32.9 + 0.594, rel=0.01)  # spec A6 (≈4.11 per frame) + B8
    assert gmacs["replaced_gemm"] > gmacs["analytic"]["correlation"]  # the GEMMs over-count, so they are replaced
    assert "throughput" not in report  # profile.repeats=0 skips the timing


def test_tsm_r50_k400_params_and_gmacs(one_thread):
    report = profile_network(profile_cfg("model=tsm", "backbone=resnet50", "dataset=k400", "profile.repeats=0"))
    assert report["params"]["total"] == 24_327_632
    assert report["blocks"] == {} and report["gmacs"]["analytic"] == {} and report["gmacs"]["replaced_gemm"] == 0
    assert report["gmacs"]["total"] == report["gmacs"]["counter"] == pytest.approx(32.9, rel=0.01)


def test_tiny_tcm_blocks_and_timing(one_thread):
    cfg = profile_cfg("model=tcm", "backbone=resnet_tiny", "model.network.positions=[2,3]", "dataset.num_segments=4",
                      "dataset.input_size=32", "profile.batch_size=2", "profile.warmup=0", "profile.repeats=2")
    report = profile_network(cfg)
    assert set(report["blocks"]) == {"TCM@res2", "TCM@res3"}
    assert report["blocks"]["TCM@res2"]["input"] == [4, 16, 8, 8]
    blocks = sum(b["params"] for b in report["blocks"].values())
    assert report["params"]["modules"]["backbone.after_stage"] == blocks
    analytic = sum(b["gmacs"]["analytic"]["correlation"] for b in report["blocks"].values())
    assert report["gmacs"]["analytic"]["correlation"] == pytest.approx(analytic)
    timing = report["throughput"]
    assert (timing["batch_size"], timing["device"], timing["repeats"], timing["warmup"]) == (2, "cpu", 2, 0)
    assert timing["forward_clips_per_s"] == pytest.approx(2 / timing["forward_s"])
    assert timing["train_clips_per_s"] == pytest.approx(2 / timing["train_step_s"])


def test_throughput_runs_eval_forwards_then_train_steps(one_thread):
    net = TCM(partial(ResNet, depth=18, layers=[1, 1, 1, 1], widths=[8, 8, 8, 8], stem_width=8), 3, 4)
    modes = []
    net.register_forward_hook(lambda module, args, out: modes.append(module.training))
    timing = throughput(net, torch.randn(2, 3, 4, 32, 32), warmup=1, repeats=2)
    assert (timing["repeats"], timing["warmup"], timing["batch_size"]) == (2, 1, 2)
    assert modes == [False] * 3 + [True] * 3  # warm-up + repeats, first forward (eval), then train steps
    assert all(p.grad is None for p in net.parameters())  # the train steps' gradients are cleared afterwards


def test_median_seconds_is_the_median_of_the_timed_runs(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # timed runs of 3, 1 and 2 s
    monkeypatch.setattr(profile_mod.time, "perf_counter", lambda: next(clock))
    calls = []
    assert median_seconds(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=3) == 2.0
    assert len(calls) == 5


# -- the generic hooks: any network, no model-specific code in tempo/profile.py ---------------------------
class Matcher(nn.Module):
    """A GEMM the counter would over-count; reports its own cost through ``analytic_macs``."""

    def forward(self, x):
        flat = x.flatten(1)
        return flat @ flat.T

    def analytic_macs(self, input_shape):
        return {"matching": 7 * input_shape[0]}


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)  # 12 params
        self.matcher = Matcher()
        self.fc = nn.Linear(4, 2)  # 10 params
        self.aux = nn.Linear(4, 2)  # 10 params, training only

    def forward(self, video):
        x = self.conv(video[:, :, 0])
        self.matcher(x)
        out = {"logits": self.fc(x.mean((2, 3)))}
        if self.training:
            out["aux_logits"] = self.aux(x.mean((2, 3)))
        return out

    def profile_blocks(self):
        return {"the matcher": self.matcher}

    def training_only_modules(self):
        return [self.aux]


def test_generic_hooks_count_replace_and_exclude():
    net = ToyNet()
    macs = count_macs(net, torch.randn(2, 3, 1, 5, 5))
    conv, fc, gemm = 2 * 4 * 3 * 25, 2 * 4 * 2, 2 * (4 * 25) * 2  # batch 2
    assert macs["counter_macs"] == conv + fc  # the matcher's GEMM is replaced, the aux head does not run in eval
    assert macs["replaced_gemm_macs"] == gemm
    assert macs["analytic_macs"] == {"matching": 14}
    assert macs["total_macs"] == conv + fc + 14
    block = macs["blocks"]["the matcher"]
    assert (block["module"], block["input"], block["params"]) == ("matcher", [2, 4, 5, 5], 0)
    assert (block["counter_macs"], block["analytic_macs"], block["total_macs"]) == (0, {"matching": 14}, 14)
    params = param_report(net)
    assert (params["total"], params["inference"], params["training_only"]) == (32, 22, {"aux": 10})
    assert params["modules"] == {"conv": 12, "fc": 10, "aux": 10}


def test_profile_has_no_model_specific_code():
    source = Path(profile_mod.__file__).read_text()
    code = source.split('"""', 2)[2]  # past the module docstring
    assert "tcm" not in code.lower() and "import tempo.models" not in code and "from tempo.models" not in code
