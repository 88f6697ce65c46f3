"""ST-MANet recipes and sweeps (conf/experiment/stmanet_*.yaml, spec D.6–D.7): the recipe numbers, the sweeps'
job lists, and end-to-end CLI runs at tiny scale (synthetic set, each sweep, Diving48 official layout)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, TINY, compose_config, sweep_params, train_cli
from tests.official_fixtures import make_diving48

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"stmanet_ucf101": "ucf101", "stmanet_hmdb51": "hmdb51", "stmanet_diving48": "diving48"}
ROWS = {"r50": (False, False, False), "tda": (True, False, False), "sda": (False, True, False),
        "tda_sda": (True, True, False), "mf": (False, False, True), "all": (True, True, True)}
LAMBDAS = [0, 0.0001, 0.001, 0.01, 0.1, 1]
SWEEPS = {
    "stmanet_ablation_components": {"components": list(ROWS)},
    # λ1 over the values with λ2 = 0.001, then λ2 with λ1 = 0.01; the default pair once
    "stmanet_lambda": {"div_lambdas": [f"[{v},0.001]" for v in LAMBDAS]
                       + [f"[0.01,{v}]" for v in LAMBDAS if v != 0.001]},
    # Fig. 5: "the influence of … learning rate r on three datasets"
    "stmanet_lr": {"dataset": ["ucf101", "hmdb51", "diving48"],
                   "optimizer.lr": ["0.001", "0.005", "0.01", "0.02", "0.05", "0.1"]},
}
# CPU-sized overrides for the recipes: tiny 3D backbone, 4 frames (every 2nd of 7) at 28²
TINY_3D = [o for o in TINY if not o.startswith("backbone=")] + ["backbone=resnet3d_stmanet_tiny"]


def experiments() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("stmanet_*.yaml"))


def test_every_stmanet_experiment_is_tested():
    assert set(experiments()) == set(RECIPES) | set(SWEEPS)


@pytest.mark.parametrize("name", [*sorted(RECIPES), *sorted(SWEEPS)])
def test_recipe_numbers(name, tmp_path):
    cfg = compose_config([f"experiment={name}"], tmp_path)
    assert cfg.dataset.name == RECIPES.get(name, "ucf101")
    net = cfg.model.network
    assert net._target_ == "tempo.models.stmanet.STMANet" and net.dropout == 0.0  # [D34]
    assert (net.tda.enabled, net.sda.enabled, net.fusion.mf, net.head_from_stage) == (True, True, True, 5)
    assert list(cfg.backbone.stem.kernel) == [7, 7, 7] and list(cfg.backbone.stem.pool_stride) == [1, 2, 2]
    assert list(cfg.backbone.temporal_strides) == [1, 2, 2, 2] and cfg.backbone.inflate_style == "3x3x3"
    assert cfg.backbone.pretrained is None
    loss = cfg.model.loss
    assert loss._target_ == "tempo.run.losses.MultiTermLoss" and dict(loss.weights) == {"logits": 1.0}
    assert dict(loss.regularizer_weights) == {"div_s": 0.01, "div_t": 0.001}
    # 32 frames every 2nd frame of a random 64-frame window, loop-padded [D32]; crop U(0.5, 1) → 112² [D33]
    assert (cfg.dataset.num_segments, cfg.dataset.input_size, cfg.dataset.short_side) == (32, 112, 112)
    sampler = cfg.sampler
    assert sampler._target_.endswith("DenseSampler") and (sampler.interval, sampler.loop_pad) == (2, True)
    crop, flip = cfg.dataset.datamodule.train_transforms
    assert crop._target_.endswith("RandomSquareResizedCrop") and list(crop.scale) == [0.5, 1.0]
    assert flip._target_.endswith("HorizontalFlip") and flip.p == 0.5
    # test: every non-overlapping 64-frame window at stride 2, centre 112, softmax averaged [D35]
    test_sampler = cfg.dataset.datamodule.test_sampler
    assert cfg.dataset.test_views == "consecutive" and cfg.dataset.test_reduce == "prob"
    assert test_sampler._target_.endswith("ConsecutiveSampler")
    assert (test_sampler.interval, test_sampler.stride) == (2, 64)
    # "batch SGD … momentum coefficient of 0.9 and 32 batch size", "initial learning rate is set at 0.01"; weight
    # decay: not stated (none)
    opt = cfg.optimizer
    assert (opt._target_, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ("torch.optim.SGD", 0.01, 0.9,
                                                                                     False, 0.0)
    assert cfg.module.reference_batch_size == 32 and cfg.dataset.batch_size == 32  # one GPU: 32 clips per BN
    assert (cfg.schedule.factor.step_size, cfg.schedule.factor.gamma, cfg.schedule.warmup_epochs) == (15, 0.1, 0)
    assert cfg.trainer.max_epochs == 90
    OmegaConf.to_container(cfg.dataset, resolve=True)  # every interpolation resolves
    OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_params(name):
    assert sweep_params(name) == SWEEPS[name]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_component_rows_set_the_switches(row, tmp_path):
    cfg = compose_config(["experiment=stmanet_ablation_components", f"components={row}"], tmp_path)
    net = cfg.model.network
    assert (net.tda.enabled, net.sda.enabled, net.fusion.mf) == ROWS[row]


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51", "diving48"])
def test_lr_study_job_trains_the_recipe_on_each_dataset(dataset, tmp_path):
    cfg = compose_config(["experiment=stmanet_lr", f"dataset={dataset}", "optimizer.lr=0.05"], tmp_path)
    assert (cfg.dataset.name, cfg.optimizer.lr, cfg.dataset.num_segments, cfg.dataset.input_size) == (
        dataset, 0.05, 32, 112)
    assert cfg.sampler.loop_pad and cfg.dataset.datamodule.test_sampler._target_.endswith("ConsecutiveSampler")


def test_lambda_pairs_set_the_regularizer_weights(tmp_path):
    cfg = compose_config(["experiment=stmanet_lambda", "div_lambdas=[0.1,0.001]"], tmp_path)
    assert OmegaConf.to_container(cfg.model.loss.regularizer_weights, resolve=True) == {"div_s": 0.1, "div_t": 0.001}


# -- end to end (CLI) ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_stmanet_trains_on_the_synthetic_set(tmp_path, synthetic_cache):
    run_dir = tmp_path / "run"
    res = train_cli(["model=stmanet", *TINY_3D, "sampler=dense", "logger=csv", "trainer.max_epochs=2",
                f"paths.cache_dir={synthetic_cache}", f"hydra.run.dir={run_dir}"])
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "tempo.models.stmanet.STMANet" and summary["global_step"] == 6
    assert "test/top1" in summary["test"]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    columns = set(rows[0])
    for term in ("loss", "loss_ce", "loss_div_s", "loss_div_t"):  # every loss term is logged
        assert f"train/{term}_epoch" in columns, columns
    epochs = [r for r in rows if r.get("train/loss_div_t_epoch")]
    assert len(epochs) == 2
    for r in epochs:  # the logged total is CE + λ1·L_s + λ2·L_t with the paper's λ1 = 0.01, λ2 = 0.001
        terms = {k: float(r[f"train/loss_{k}_epoch"]) for k in ("ce", "div_s", "div_t")}
        expected = terms["ce"] + 0.01 * terms["div_s"] + 0.001 * terms["div_t"]
        assert float(r["train/loss_epoch"]) == pytest.approx(expected, rel=1e-5)


def _job_overrides(sweep_dir: Path) -> list[list[str]]:
    jobs = sorted(sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name))
    return [yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text()) for p in jobs]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_runs_end_to_end_at_tiny_scale(name, tmp_path, synthetic_cache):
    sweep_dir = tmp_path / "sweep"
    res = train_cli([f"experiment={name}", "dataset=synthetic", *TINY_3D, "trainer.max_steps=1",
                "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                "dataset.datamodule.test_sampler.stride=4",
                f"paths.cache_dir={synthetic_cache}", f"hydra.sweep.dir={sweep_dir}"])
    assert res.returncode == 0, res.stderr[-3000:]
    # dataset=synthetic on the command line wins over a swept dataset: the tiny run sweeps the other key
    (key, values), = ((k, v) for k, v in SWEEPS[name].items() if k != "dataset")
    swept = [[o for o in job if o.startswith(f"{key}=")] for job in _job_overrides(sweep_dir)]
    assert swept == [[f"{key}={v}"] for v in values]
    for job, value in zip(sorted(sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name)), values,
                          strict=True):
        summary = json.loads(job.read_text())
        assert summary["model"] == "tempo.models.stmanet.STMANet" and summary["dataset"] == "synthetic"
        assert summary["global_step"] == 1 and "test/top1" in summary["test"]
        resolved = yaml.safe_load(Path(summary["config"]).read_text())
        if key == "components":
            net = resolved["model"]["network"]
            assert (net["tda"]["enabled"], net["sda"]["enabled"], net["fusion"]["mf"]) == ROWS[value]
        elif key == "optimizer.lr":
            assert resolved["optimizer"]["lr"] == float(value)
        else:
            weights = resolved["model"]["loss"]["regularizer_weights"]
            assert [weights["div_s"], weights["div_t"]] == yaml.safe_load(value)
    report = subprocess.run([sys.executable, "-m", "tempo.report", str(sweep_dir)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert len(list(csv.DictReader((sweep_dir / "report.csv").open()))) == len(values)


@pytest.mark.slow
def test_diving48_recipe_runs_on_the_official_layout(tmp_path):
    root, annotations = make_diving48(tmp_path / "data")  # 12-frame clips: 8 frames at stride 2 loop-pad
    run_dir = tmp_path / "run"
    generic = [o for o in TINY_3D if not o.startswith("dataset.datamodule.reader.")]
    res = train_cli(["experiment=stmanet_diving48", *generic, f"dataset.root={root}",
                     f"dataset.annotations={annotations}",
                "dataset.num_classes=3", "dataset.num_segments=8", "dataset.input_size=32", "dataset.short_side=36",
                "dataset.batch_size=3", "dataset.datamodule.pin_memory=false", "trainer.max_steps=2",
                "dataset.datamodule.test_sampler.stride=4", f"paths.cache_dir={tmp_path / 'cache'}",
                f"hydra.run.dir={run_dir}"])
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "diving48" and summary["global_step"] == 2
    assert summary["decode_failures"] == 0 and "test/top1" in summary["test"]
    resolved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert resolved.sampler.loop_pad is True and resolved.dataset.test_views == "consecutive"
