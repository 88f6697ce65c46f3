"""`python -m tempo.evaluate ckpt_path=<ckpt> [overrides]`: evaluate a trained checkpoint.

The checkpoint carries its training config and class names (`tempo.run.checkpoint`): the network is rebuilt
exactly and the dataset's test protocol is run as in training (Lightning's test loop, multi-view
averaging, per-branch top-1). Command-line overrides apply on top (`dataset.root=…`, `test_views=10x3`);
one that contradicts the checkpoint's network is an error. `ckpt_path=[a.ckpt,b.ckpt]` evaluates the
ensemble of the checkpoints (`tempo.analysis.ensemble`: averaged scores over the same views, shared classes).

Writes into the run directory: `eval.json` (the evaluated checkpoints as `members`: checkpoint, model, frames,
weight; top-1, top-5, mean-class, per-class and per-branch accuracy, excluded videos, most-confused pairs),
`predictions.csv` (video, label, top-5 classes with scores), `confusion.png` (row-normalised; with many classes
the most-confused pairs beside it).

Options: `eval.tempo_strides=[1,…,8]`: tempo robustness (TCM paper, Fig. 4), accuracy when the T frames of
the centre clip of each validation video are taken every τ frames (DenseSampler; frames past the end
repeat the last one) → `tempo_robustness.csv` / `.png`. `eval.save_attention=N` (sparse-attention models):
PNG strips of the attention of the first N validation videos in `<run dir>/attention/` (`tempo.analysis.visualize`).
`eval.test=false` skips the test protocol.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from tempo import CONF_DIR
from tempo.analysis.visualize import save_attention_strips
from tempo.data.datamodule import VideoDataModule
from tempo.data.samplers import DenseSampler
from tempo.run.checkpoint import task_overrides
from tempo.run.config import ConfigError, check_config
from tempo.run.frontdoor import to_log_file, user_errors
from tempo.run.module import RecognitionModule
from tempo.run.predictions import (
    PredictionCollector,
    confusion_matrix,
    most_confused,
    per_class_accuracy,
    plot_confusion,
    write_predictions,
)
from tempo.run.quiet import quiet_startup
from tempo.run.restore import ckpt_paths, load_evaluated, match_classes

log = logging.getLogger(__name__)

CSV_FIELDS = ("stride", "top1", "top5", "mean_class", "videos", "excluded")


def check_strides(strides: Iterable[int], allow_empty: bool = False) -> list[int]:
    values = [int(s) for s in strides]
    if (not values and not allow_empty) or any(s < 1 for s in values):
        raise ConfigError(f"eval.tempo_strides must be a non-empty list of positive frame strides, got {values}"
                          + ("" if allow_empty else " ([] is allowed with eval.save_attention=N)"))
    return values


def attention_pngs(module: RecognitionModule, datamodule: VideoDataModule, count: int, out_dir: Path,
                   device: str = "auto", frames: int = 4) -> list:
    """PNG strips of the sparse attention for the first `count` validation videos (tempo.analysis.visualize)."""
    if not hasattr(module.network, "forward_with_attention"):
        raise ConfigError(f"eval.save_attention needs a sparse-attention model (model=tcnn_sparse), got "
                          f"{type(module.network).__name__}")
    target = torch.device("cuda" if device in ("auto", "cuda", "gpu") and torch.cuda.is_available() else "cpu")
    module = module.to(target).eval()
    datamodule.setup("validate")

    def batches():
        for batch in datamodule.val_dataloader():
            batch = {k: v.to(target) if torch.is_tensor(v) else v for k, v in batch.items()}
            yield module.on_after_batch_transfer(batch, 0)

    paths = save_attention_strips(module.network, batches(), count, out_dir, module.mean, module.std,
                                  datamodule.class_names, frames)
    print(f"attention: {len(paths)} strips in {out_dir}")
    return paths


def stride_loader(datamodule: VideoDataModule, clip_len: int, stride: int, batch_size: int | None):
    """Validation loader whose clips are `clip_len` frames every `stride` frames (centre clip)."""
    datamodule.sampler = DenseSampler(clip_len=clip_len, interval=stride, num_clips=1)
    datamodule.datasets.pop("val", None)
    datamodule.setup("validate")
    if batch_size:
        datamodule.val_batch_size = batch_size
    return datamodule.val_dataloader()


ACCELERATORS = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}


def accuracy(module: RecognitionModule, loader, accelerator: str) -> dict[str, float]:
    """The module's validation metrics on `loader`, through Lightning's validation loop."""
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    excluded = int(metrics["val/excluded"])
    videos = len(loader.dataset) - excluded
    if not videos:
        raise RuntimeError("no readable validation video: nothing to evaluate")
    return {**{k: float(metrics[f"val/{k}"]) for k in ("top1", "top5", "mean_class")},
            "videos": videos, "excluded": excluded}


def tempo_robustness(module: RecognitionModule, datamodule: VideoDataModule, clip_len: int,
                     strides: Sequence[int], accelerator: str = "auto", batch_size: int | None = None) -> list[dict]:
    """One row per stride: {"stride", "top1", "top5", "mean_class", "videos", "excluded"}."""
    rows = []
    for stride in strides:
        loader = stride_loader(datamodule, clip_len, stride, batch_size)
        row = {"stride": stride, **accuracy(module, loader, accelerator)}
        log.info("stride %d: top1 %.4f", stride, row["top1"])
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in CSV_FIELDS} for row in rows)
    return path


def plot_curve(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["stride"] for r in rows], [100 * r["top1"] for r in rows], marker="o")
    ax.set(xlabel="frame stride τ", ylabel="top-1 accuracy (%)", title=title)
    ax.set_xticks([r["stride"] for r in rows])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_curve(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("stride τ", "top-1", "top-5", "mean class", "videos"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(str(r["stride"]), f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}",
                      f"{100 * r['mean_class']:.2f}", str(r["videos"]))
    Console().print(table)


def test_trainer(config: DictConfig, device: str, callbacks: list, run_dir: Path) -> L.Trainer:
    """The run's trainer settings (precision…) on one device, without logger or checkpoints."""
    options = {"devices": 1, "num_nodes": 1, "strategy": "auto", "logger": False, "callbacks": callbacks,
               "enable_checkpointing": False, "enable_model_summary": False, "default_root_dir": str(run_dir)}
    if device != "auto":
        options["accelerator"] = ACCELERATORS[device]
    return instantiate(config.trainer, **options)


def test_protocol(config: DictConfig, module: RecognitionModule, datamodule: VideoDataModule,
                  class_names: list[str] | None, device: str, run_dir: Path) -> dict:
    """The dataset's test protocol through Lightning's test loop; writes eval.json, predictions.csv and
    confusion.png into `run_dir` and returns what eval.json holds."""
    collector = PredictionCollector()
    trainer = test_trainer(config, device, [collector], run_dir)
    datamodule.setup("test")  # the dataset's class names, to match the checkpoint's before testing
    class_names = match_classes(module, class_names, datamodule.class_names, str(config.dataset.name))
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    names = check_class_names(class_names, datamodule.class_names, config)
    result = collector.result()
    records = datamodule.datasets["test"].records
    paths = [str(r.path) for r in records]
    valid = result["valid"]
    matrix = confusion_matrix(result["labels"][valid], result["scores"][valid].argmax(1), len(names))
    per_class = per_class_accuracy(matrix)
    excluded = [paths[int(i)] for i in result["indices"][~valid]]
    members = members_of(config)
    report = {
        "checkpoints": ckpt_paths(config),
        "model": config.model.network._target_ if len(members) == 1 else "tempo.analysis.ensemble.Ensemble",
        "members": members,
        "dataset": config.dataset.name,
        "test_views": config.dataset.get("test_views"),
        "videos": int(valid.sum()),
        **{k: float(metrics[f"test/{k}"]) for k in ("top1", "top5", "mean_class")},
        "per_class": {name: (None if np.isnan(a) else float(a)) for name, a in zip(names, per_class, strict=True)},
        "branches": {k.removeprefix("test/top1_"): float(v) for k, v in metrics.items() if k.startswith("test/top1_")},
        "excluded": {"count": len(excluded), "videos": excluded},
        "most_confused": most_confused(matrix, names),
    }
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    write_predictions(run_dir / "predictions.csv", result, paths, names)
    title = f"{config.model.network._target_.rsplit('.', 1)[-1]} on {config.dataset.name}"
    plot_confusion(matrix, names, run_dir / "confusion.png", title)
    branches = "".join(f"  {k} {100 * v:.2f}" for k, v in report["branches"].items())
    if len(members) > 1:
        print(f"ensemble of {len(members)} ({config.dataset.test_reduce} averaged):")
        for m in members:
            print(f"  {m['weight']:.3f} × {m['model']} ({m['frames']} frames)  {m['checkpoint']}")
    result = (f"test ({report['videos']} videos, {config.dataset.get('test_views')} views): top-1 "
              f"{100 * report['top1']:.2f}  top-5 {100 * report['top5']:.2f}  mean class "
              f"{100 * report['mean_class']:.2f}{branches}  excluded {len(excluded)}\n"
              f"wrote {run_dir / 'eval.json'}  {run_dir / 'predictions.csv'}  {run_dir / 'confusion.png'}")
    print(result)
    to_log_file(result)
    return report


def members_of(config: DictConfig) -> list[dict]:
    """The evaluated checkpoints: an ensemble's members (`tempo.run.restore.load_evaluated`), or the one."""
    if config.get("ensemble"):
        return OmegaConf.to_container(config.ensemble)
    return [{"checkpoint": ckpt_paths(config)[0], "model": config.model.network._target_,
             "frames": int(config.dataset.num_segments), "weight": 1.0}]


def check_class_names(saved: list[str] | None, data: list[str] | None, config: DictConfig) -> list[str]:
    """The checkpoint's class names, which the test annotations must share."""
    if saved and data and list(saved) != list(data):
        diff = next(i for i, (a, b) in enumerate(zip(saved, data, strict=False)) if a != b) \
            if any(a != b for a, b in zip(saved, data, strict=False)) else min(len(saved), len(data))
        raise ConfigError(f"the test annotations of dataset {config.dataset.name} name other classes than the "
                          f"checkpoint: class {diff} is {data[diff] if diff < len(data) else None!r} there, "
                          f"{saved[diff] if diff < len(saved) else None!r} in the checkpoint")
    return list(saved or data or [str(i) for i in range(int(config.dataset.num_classes))])


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Evaluate `cfg.ckpt_path` (one checkpoint or a list: an ensemble) with its own training config and
    the command line's `overrides` (Hydra's when None): the test protocol (eval.json, predictions.csv,
    confusion.png), optionally the tempo-robustness curve and attention strips."""
    quiet_startup()
    ckpt_paths(cfg)
    overrides = task_overrides() if overrides is None else list(overrides)
    save_attention = int(cfg.eval.get("save_attention") or 0)
    if save_attention < 0:
        raise ConfigError(f"eval.save_attention must be a number of videos ≥ 0, got {save_attention}")
    strides = check_strides(cfg.eval.get("tempo_strides") or [], allow_empty=True)
    device = str(cfg.eval.device)
    if device not in ACCELERATORS:
        raise ConfigError(f"eval.device must be one of {sorted(ACCELERATORS)}, got {device!r}")
    config, class_names, module = load_evaluated(cfg, overrides)
    checked = config.copy()
    with open_dict(checked):
        checked.ckpt_path = None  # read above; check_config checks it as a training run's resume path
    check_config(checked)
    run_dir = Path(config.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    datamodule = instantiate(config.dataset.datamodule, report_dir=str(run_dir))
    results: dict = {}
    if cfg.eval.get("test", True):
        results["test"] = test_protocol(config, module, datamodule, class_names, device, run_dir)
    if save_attention:
        attention_pngs(module, datamodule, save_attention, run_dir / "attention", device,
                       int(cfg.eval.get("attention_frames") or 4))
    if strides:
        rows = tempo_robustness(module, datamodule, int(config.dataset.num_segments), strides,
                                ACCELERATORS[device], cfg.eval.get("batch_size"))
        title = f"tempo robustness: {config.model.network._target_.rsplit('.', 1)[-1]} on {config.dataset.name}"
        print_curve(rows, title)
        csv_path = write_csv(rows, run_dir / "tempo_robustness.csv")
        png_path = plot_curve(rows, run_dir / "tempo_robustness.png", title)
        print(f"tempo robustness: {csv_path}  {png_path}")
        results["tempo_robustness"] = rows
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
@user_errors
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    run(cfg)


if __name__ == "__main__":
    main()
