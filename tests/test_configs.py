"""Every option of every config group composes and instantiates (as the CLI would)."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tempo.train import build_callbacks, build_loggers, build_module
from tests.conftest import CONF_DIR, TINY, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_groups_exist():
    for group in ("model", "backbone", "dataset", "optimizer", "schedule", "logger", "trainer", "callbacks",
                  "experiment"):
        assert (Path(CONF_DIR) / group).is_dir(), group
    assert {"sgd", "adamw"} <= set(options("optimizer"))
    assert {"multistep", "cosine", "step"} <= set(options("schedule"))
    assert {"csv", "wandb", "tensorboard", "none"} <= set(options("logger"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))


# models built on a 3D ResNet get its CPU-sized config instead of TINY's 2D resnet_tiny
TINY_3D_BACKBONE = {"i3d": "resnet3d_tiny", "tpn": "resnet3d_tiny", "tdpn": "resnet3d_tiny",
                    "stmanet": "resnet3d_stmanet_tiny"}


@pytest.mark.parametrize("model", options("model"))
def test_every_model_builds_and_runs_a_tiny_clip(model, tmp_path):
    backbone = [f"backbone={TINY_3D_BACKBONE[model]}"] if model in TINY_3D_BACKBONE else []
    cfg = compose_config([*TINY, f"model={model}", *backbone], tmp_path)
    net = instantiate(cfg.model.network).eval()
    t, s = cfg.dataset.num_segments, cfg.dataset.input_size
    with torch.no_grad():
        out = net(torch.randn(2, 3, t, s, s))
    assert out["logits"].shape == (2, cfg.dataset.num_classes)
    terms = instantiate(cfg.model.loss)(out, torch.tensor([0, 1]))
    assert terms["loss"].ndim == 0


@pytest.mark.parametrize("backbone", options("backbone"))
def test_every_backbone_instantiates(backbone, tmp_path):
    cfg = compose_config([f"backbone={backbone}"], tmp_path)
    net = instantiate(cfg.backbone)
    assert callable(net)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("schedule", options("schedule"))
def test_optimizer_and_schedule_options(optimizer, schedule, tmp_path):
    cfg = compose_config([*TINY, f"optimizer={optimizer}", f"schedule={schedule}"], tmp_path)
    module = build_module(cfg)
    opt = cfg.optimizer
    assert opt.lr > 0 and callable(module.optimizer_factory)
    factor = instantiate(cfg.schedule.factor)
    assert factor(0) == pytest.approx(1.0)
    assert 0 <= factor(1000) <= 1.0


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_instantiates(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config([f"logger={logger}"], tmp_path)
    loggers = build_loggers(cfg)
    assert len(loggers) == (0 if logger == "none" else 1)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_instantiates(trainer, tmp_path):
    # accelerator forced to CPU here: the GPU options are checked for their keys only
    cfg = compose_config([f"trainer={trainer}"], tmp_path)
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        assert cfg.trainer.precision == "16-mixed"
        cfg.trainer.accelerator, cfg.trainer.precision = "cpu", "32-true"
        cfg.trainer.devices = 1
    trainer_obj = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer_obj.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callbacks_option_instantiates(callbacks, tmp_path):
    cfg = compose_config([f"callbacks={callbacks}"], tmp_path)
    built = build_callbacks(cfg, has_logger=True)
    assert any(type(c).__name__ == "ModelCheckpoint" for c in built)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_config_instantiates(dataset, tmp_path):
    cfg = compose_config([f"dataset={dataset}"], tmp_path)
    dm = instantiate(cfg.dataset.datamodule)
    assert dm.num_classes == cfg.dataset.num_classes
    assert callable(dm.reader)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    # no ImageNet download here: the recipes' weights are checked by key in test_tsm_backbone
    cfg = compose_config([f"experiment={experiment}", "backbone.pretrained=null"], tmp_path)
    module = build_module(cfg)
    assert sum(p.numel() for p in module.parameters()) > 0
