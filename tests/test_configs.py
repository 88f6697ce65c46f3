"""Every option of every config group composes and instantiates (as the CLI would)."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, StepLR

from tempo.data.transforms import Compose
from tempo.models.backbones.resnet import ResNet
from tempo.run.build import build_callbacks, build_loggers, build_module
from tempo.run.callbacks import EpochRichProgressBar, EpochTQDMProgressBar, RunCheckpoint
from tempo.run.schedules import PlateauSchedule
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
    untrained = ["model.network.allow_untrained_crm=true"] if model == "tcnn_sparse" else []  # no checkpoint here
    cfg = compose_config([*TINY, f"model={model}", *backbone, *untrained], tmp_path)
    net = instantiate(cfg.model.network).eval()
    t, s = cfg.dataset.num_segments, cfg.dataset.input_size
    with torch.no_grad():
        out = net(torch.randn(2, 3, t, s, s))
    assert out["logits"].shape == (2, cfg.dataset.num_classes)
    terms = instantiate(cfg.model.loss)(out, torch.tensor([0, 1]))
    assert terms["loss"].ndim == 0


# trunk parameters without the classifier (torchvision's counts minus fc)
TRUNK_PARAMS = {"resnet18": 11_176_512, "resnet50": 23_508_032, "resnet101": 42_500_160}
# the 3D backbones are the 2D trunks inflated: a k×k kernel becomes t×k×k, adding (t − 1)·k²·in·out per conv
INFLATED_PARAMS = {
    # SlowOnly: conv1 (1×1 → 3×1×1) of every res4/res5 block, +2·in·planes each
    "resnet3d50": 23_508_032 + 2 * (512 * 256 + 5 * 1024 * 256) + 2 * (1024 * 512 + 2 * 2048 * 512),
    "resnet3d101": 42_500_160 + 2 * (512 * 256 + 22 * 1024 * 256) + 2 * (1024 * 512 + 2 * 2048 * 512),
    # ST-MANet: 7×7×7 stem (+6·64·3·49) and every 3×3 conv2 → 3×3×3 (+2·planes²·9)
    "resnet3d50_stmanet": 23_508_032 + 6 * 64 * 3 * 49 + 2 * 9 * (3 * 64**2 + 4 * 128**2 + 6 * 256**2 + 3 * 512**2),
    "tcnn": 2_457_797 - (512 * 101 + 101),  # spec A: T-CNN at 101 classes (tests/test_tcnn.py) minus its fc
}


@pytest.mark.parametrize("backbone", options("backbone"))
def test_every_backbone_instantiates(backbone, tmp_path):
    cfg = compose_config([f"backbone={backbone}"], tmp_path)
    net = instantiate(cfg.backbone)()  # the config is a partial: models add their own arguments
    params = sum(p.numel() for p in net.parameters())
    assert params == {**TRUNK_PARAMS, **INFLATED_PARAMS}.get(backbone, params)
    if backbone in TRUNK_PARAMS or "tiny" in backbone:  # runs: a feature map of out_channels channels
        clip = torch.randn(1, 3, 32, 32) if isinstance(net, ResNet) else torch.randn(1, 3, 4, 32, 32)
        with torch.no_grad():
            features = net.eval()(clip)
        assert features.shape[:2] == (1, net.out_channels) and torch.isfinite(features).all()
    assert backbone in TRUNK_PARAMS or backbone in INFLATED_PARAMS or "tiny" in backbone


DECAY = {"cosine": CosineAnnealingLR, "multistep": MultiStepLR, "step": StepLR}


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("schedule", options("schedule"))
def test_optimizer_and_schedule_options(optimizer, schedule, tmp_path, synthetic_cache):
    """configure_optimizers as Lightning runs it: optimiser class, LR and weight decay per
    group, warm-up and decay schedulers, the LR of the first step."""
    cfg = compose_config([*TINY, f"optimizer={optimizer}", f"schedule={schedule}"], tmp_path, synthetic_cache)
    module = build_module(cfg)
    datamodule = instantiate(cfg.dataset.datamodule)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1 if schedule == "plateau" else 0,  # plateau follows val/top1
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    opt = trainer.optimizers[0]
    assert type(opt).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["decay"]["weight_decay"] == cfg.optimizer.weight_decay and groups["norm"]["weight_decay"] == 0
    assert groups["decay"]["initial_lr"] == pytest.approx(cfg.optimizer.lr)
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == cfg.schedule.interval
    if schedule == "plateau":
        assert type(scheduler.scheduler) is PlateauSchedule and scheduler.monitor == "val/top1"
        return
    kinds = [type(s) for s in scheduler.scheduler._schedulers]
    assert kinds == ([LinearLR] if cfg.schedule.warmup_epochs else []) + [DECAY[schedule]]


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
        assert cfg.trainer.precision == "auto-mixed"
        cfg.trainer.accelerator, cfg.trainer.precision = "cpu", "32-true"
        cfg.trainer.devices = 1
    trainer_obj = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer_obj.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callbacks_option_instantiates(callbacks, tmp_path):
    cfg = compose_config([f"callbacks={callbacks}"], tmp_path)
    built = build_callbacks(cfg, has_logger=True)
    checkpoints = [c for c in built if isinstance(c, RunCheckpoint)]
    assert len(checkpoints) == 1 and checkpoints[0].save_last and checkpoints[0].monitor == cfg.optimized_metric
    assert any(isinstance(c, (EpochRichProgressBar, EpochTQDMProgressBar)) for c in built)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_config_instantiates(dataset, tmp_path):
    cfg = compose_config([f"dataset={dataset}"], tmp_path)
    dm = instantiate(cfg.dataset.datamodule)
    bound = getattr(dm.reader, "keywords", {})  # official readers are partials bound to the paths
    assert bound.get("root", cfg.dataset.get("root")) == cfg.dataset.get("root")
    assert dm.sampler.clip_frames == cfg.dataset.num_segments
    # every transform chain turns a uint8 clip into crops of the configured input size
    clip = torch.randint(0, 255, (1, cfg.dataset.num_segments, 3, 64, 80), dtype=torch.uint8)
    for chain in (dm.train_transforms, dm.val_transforms):
        out = Compose(chain)({"video": clip, "label": 0})["video"]
        assert out.dtype == torch.uint8 and tuple(out.shape[-2:]) == (cfg.dataset.input_size,) * 2


@pytest.mark.slow  # builds every recipe's full-size network (R50/R101, 3D)
@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    # no ImageNet download here: the recipes' weights are checked by key in test_tsm_backbone
    # the T-CNN chain starts from checkpoints of earlier runs (tcnn_k400 → tcnn_<data> → tcnn_sparse_<data>)
    start = (["model.network.init_checkpoint=null"] if experiment.startswith("tcnn_") and experiment != "tcnn_k400"
             else []) + (["model.network.allow_untrained_crm=true"] if experiment.startswith("tcnn_sparse") else [])
    cfg = compose_config([f"experiment={experiment}", "backbone.pretrained=null", *start], tmp_path)
    module = build_module(cfg)
    network = type(module.network)
    assert f"{network.__module__}.{network.__name__}" == cfg.model.network._target_
    assert module.network.fc.out_features == cfg.dataset.num_classes
