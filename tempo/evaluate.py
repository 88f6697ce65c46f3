"""`python -m tempo.evaluate ckpt_path=… [model/backbone/dataset overrides] eval.tempo_strides=[1,…,8]`.

Tempo robustness (TCM paper, Fig. 4): accuracy of a trained checkpoint when the T frames of a clip are
taken every τ frames instead of by TSN segments, for each stride τ in ``eval.tempo_strides``. The clip
of each validation video is ``DenseSampler(clip_len=T, interval=τ)`` centred in the video (frames past
the end repeat the last one), with the dataset's validation transforms (one centre crop). The network is
rebuilt from the composed config, which must match the training run (same model/backbone/dataset
options), and its weights are read from the Lightning checkpoint with ``weights_only=True``.

Writes ``tempo_robustness.csv`` (stride, top1, top5, mean_class, videos, excluded) and
``tempo_robustness.png`` (top-1 vs τ) in the run directory and prints the curve.

``eval.save_attention=N`` (sparse-attention models, ``model=tcnn_sparse``): first writes, for the first N
validation videos (the dataset's own sampling and centre crop), a PNG strip each into ``<run dir>/attention/``:
original, discriminative and complementary frames side by side, peaks marked (``tempo.visualize``).
``eval.tempo_strides=[]`` then skips the robustness curve.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from tempo.config import ConfigError, check_config
from tempo.data.datamodule import VideoDataModule
from tempo.data.samplers import DenseSampler
from tempo.models.weights import state_dict_mismatch
from tempo.module import RecognitionModule
from tempo.train import build_module
from tempo.visualize import save_attention_strips

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
    """PNG strips of the sparse attention for the first `count` validation videos (tempo.visualize)."""
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


def load_module(cfg: DictConfig) -> RecognitionModule:
    """The `RecognitionModule` of `cfg` with the weights of `cfg.ckpt_path` (every key must match)."""
    module = build_module(cfg)
    checkpoint = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    problem = state_dict_mismatch(module.state_dict(), state, unexpected_ok=False)
    if problem:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} does not fit the configured network "
                          f"({cfg.model.network._target_}): {problem}. "
                          "Pass the training run's model/backbone/dataset options (or its experiment=...).")
    module.load_state_dict(state)
    return module.eval()


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


def run(cfg: DictConfig) -> list[dict]:
    """Evaluate `cfg.ckpt_path` at every stride of `cfg.eval.tempo_strides`; writes CSV and PNG."""
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: pass a checkpoint such as "
                          "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt")
    check_config(cfg)
    save_attention = int(cfg.eval.get("save_attention") or 0)
    if save_attention < 0:
        raise ConfigError(f"eval.save_attention must be a number of videos ≥ 0, got {save_attention}")
    strides = check_strides(cfg.eval.tempo_strides, allow_empty=save_attention > 0)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    module = load_module(cfg)
    datamodule = instantiate(cfg.dataset.datamodule, report_dir=str(run_dir))
    device = str(cfg.eval.device)
    if device not in ACCELERATORS:
        raise ConfigError(f"eval.device must be one of {sorted(ACCELERATORS)}, got {device!r}")
    if save_attention:
        attention_pngs(module, datamodule, save_attention, run_dir / "attention", device,
                       int(cfg.eval.get("attention_frames") or 4))
    if not strides:
        return []
    rows = tempo_robustness(module, datamodule, int(cfg.dataset.num_segments), strides,
                            ACCELERATORS[device], cfg.eval.get("batch_size"))
    title = f"tempo robustness: {cfg.model.network._target_.rsplit('.', 1)[-1]} on {cfg.dataset.name}"
    print_curve(rows, title)
    csv_path = write_csv(rows, run_dir / "tempo_robustness.csv")
    png_path = plot_curve(rows, run_dir / "tempo_robustness.png", title)
    print(f"tempo robustness: {csv_path}  {png_path}")
    return rows


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    run(cfg)


if __name__ == "__main__":
    main()
