"""First check on a GPU: training speed of the four paper models per precision/layout/compile setting,
peak memory, and whether the data loader keeps up (the data-starvation check).

For each model — TSM-R50, TCM-R50, TDPN-R50, ST-MANet, composed from the real Hydra configs as the paper
recipes set them (per-device batch `dataset.batch_size`, frames `dataset.num_segments`, crop
`dataset.input_size`; random init, so nothing is downloaded) — train steps on synthetic in-memory tensors
(no decoding) at fp32, bf16 (autocast), bf16 + channels_last and bf16 + torch.compile: clips/s after
warm-up and the peak memory. Then the real training loader (`tempo.data.datamodule.VideoDataModule` from
the same recipe, on a `dataset=list` set stored by `tempo.prepare`'s converter in `format=fast`, packet
index stored) with 8 and 16 workers: clips/s, and loader rate / model rate for each model's fastest setting.
A ratio under 1 means the GPU waits for data at that worker count.

    python benchmarks/gpu_check.py            # ≈ 5–8 min on one GPU (compile dominates)
    python benchmarks/gpu_check.py --models TSM-R50 --settings fp32 bf16 --workers 8

Without CUDA it says so and exits 0 having run nothing. `--device cpu --tiny` runs the same code at CPU
sizes (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from tempo import CONF_DIR
from tempo.data.encode import write_video
from tempo.data.formats import FAST_FORMAT
from tempo.run.acceleration import apply_model_switches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import kinetics_like, prepare  # noqa: E402  (benchmarks/ is not a package)

# Each paper model as its recipe composes it (TSM has no experiment of its own: TCM's Something-V1 data
# recipe, 8 segments of 224², is TSM's too). Random init: the speed does not depend on the weights.
RECIPES = {
    "TSM-R50": ["model=tsm", "backbone=resnet50", "dataset=sthv1"],
    "TCM-R50": ["experiment=tcm_sthv1_r50_8f"],
    "TDPN-R50": ["experiment=tdpn_sthv1_r50"],
    "ST-MANet": ["experiment=stmanet_ucf101"],
}
COMMON = ["backbone.pretrained=null", "logger=none", "callbacks=none"]
# --tiny: CPU-sized backbones and inputs, the same models and code path (tests/test_gpu_check.py)
TINY = {
    "TSM-R50": ["backbone=resnet_tiny"],
    "TCM-R50": ["backbone=resnet_tiny"],
    "TDPN-R50": ["backbone=resnet3d_tiny"],
    "ST-MANet": ["backbone=resnet3d_stmanet_tiny"],
}
TINY_SIZES = ["dataset.batch_size=2", "dataset.num_segments=4", "dataset.input_size=32", "++dataset.short_side=36",
              "++dataset.frame_height=36", "++dataset.frame_width=48"]
SETTINGS = {  # name → (autocast dtype, channels_last, compile)
    "fp32": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16+channels_last": (torch.bfloat16, True, False),
    "bf16+compile": (torch.bfloat16, False, True),
}


@dataclass
class Row:
    model: str
    setting: str
    batch: int
    clip: str  # frames × crop²
    clips_per_s: float | None = None
    peak_mib: float | None = None
    error: str | None = None


def compose_recipe(model: str, extra: Sequence[str] = (), tiny: bool = False) -> DictConfig:
    overrides = [*RECIPES[model], *COMMON, *(TINY[model] + TINY_SIZES if tiny else []), *extra]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def train_step(network, loss, optimizer, video, labels, dtype=None, scaler=None) -> torch.Tensor:
    """One optimiser step; forward and loss under autocast to `dtype` (None: float32), fp16 with `scaler`."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(video.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        total = loss(network(video), labels)["loss"]
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()
    return total.detach()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_rate(cfg: DictConfig, setting: str, device: torch.device, steps: int,
               warmup: int) -> tuple[float, float | None]:
    """(train clips/s, peak MiB or None off CUDA) of the recipe's network on random in-memory clips."""
    dtype, channels_last, compiled = SETTINGS[setting]
    network = instantiate(cfg.model.network).to(device).train()
    apply_model_switches(network, compile=compiled, channels_last=channels_last, accelerator=device.type)
    loss = instantiate(cfg.model.loss)
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-4, momentum=0.9)
    shape = (cfg.dataset.batch_size, 3, cfg.dataset.num_segments, cfg.dataset.input_size, cfg.dataset.input_size)
    video = torch.randn(shape, device=device)
    labels = torch.randint(0, cfg.dataset.num_classes, (shape[0],), device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):  # cudnn autotuning, compilation
        train_step(network, loss, optimizer, video, labels, dtype)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        total = train_step(network, loss, optimizer, video, labels, dtype)
    synchronize(device)
    elapsed = time.perf_counter() - start
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite loss {total.item()} at {setting}")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return shape[0] * steps / elapsed, peak


def _encode_and_convert(args: tuple[Path, int, int, int, int]) -> Path:
    """One Kinetics-like original, converted to format=fast, in a spawned worker process: a forked child of
    a process that ran OpenMP (torch) deadlocks in it, and a parent that ran the encoder can deadlock the
    DataLoader workers it forks later."""
    folder, seed, frames, height, width = args
    original = write_video(folder / "originals" / f"v{seed}.mp4", kinetics_like(seed, frames, height, width),
                           fps=30, preset="medium", quality=23)
    return prepare([original], folder, FAST_FORMAT, folder / "packet_index")[0]


def make_prepared_set(folder: Path, videos: int, frames: int, height: int, width: int,
                      repeats: int) -> tuple[Path, Path]:
    """Kinetics-like originals converted by tempo.prepare's converter to format=fast (packet index stored),
    listed `repeats` times each, two classes: (dataset.root, dataset.annotations) of a `dataset=list` set."""
    with ProcessPoolExecutor(min(videos, 8), mp_context=multiprocessing.get_context("spawn")) as pool:
        stored = list(pool.map(_encode_and_convert, [(folder, i, frames, height, width) for i in range(videos)]))
    lists = folder / "lists"
    lists.mkdir()
    lines = "".join(f"{p.name} {i % 2}\n" for _ in range(repeats) for i, p in enumerate(stored))
    for subset in ("train", "val"):
        (lists / f"{subset}.txt").write_text(lines)
    return stored[0].parent, lists


def loader_rate(model: str, root: Path, lists: Path, cache: Path, workers: int, batches: int,
                tiny: bool) -> float:
    """Clips/s of the recipe's real training loader over the prepared set, the first batch (worker
    start-up) left out."""
    cfg = compose_recipe(model, ["dataset=list", f"dataset.root={root}", f"dataset.annotations={lists}",
                                 "dataset.num_classes=2", f"dataset.num_workers={workers}",
                                 f"dataset.packet_index_dir={root.parent / 'packet_index'}",
                                 f"paths.cache_dir={cache}"], tiny)
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.setup("fit")
    batches_iter = iter(datamodule.train_dataloader())
    next(batches_iter)
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        clips += len(next(batches_iter)["label"])
    return clips / (time.perf_counter() - start)


def table(rows: list[Row], loader: dict[tuple[str, int], float], device_name: str) -> str:
    lines = [f"train clips/s on {device_name} (synthetic in-memory clips; peak = max allocated)",
             f"{'model':<10} {'setting':<20} {'batch':>5} {'clip':>9} {'clips/s':>9} {'vs fp32':>8} {'peak MiB':>9}"]
    fp32 = {r.model: r.clips_per_s for r in rows if r.setting == "fp32" and r.clips_per_s}
    for r in rows:
        if r.error:
            lines.append(f"{r.model:<10} {r.setting:<20} {r.batch:>5} {r.clip:>9}  FAILED: {r.error[:90]}")
            continue
        ratio = f"{r.clips_per_s / fp32[r.model]:7.2f}×" if r.model in fp32 else f"{'-':>8}"
        peak = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9}"
        lines.append(f"{r.model:<10} {r.setting:<20} {r.batch:>5} {r.clip:>9} {r.clips_per_s:9.1f} {ratio} {peak}")
    if loader:
        lines += ["", "data loader (format=fast, packet index stored) vs the model's fastest setting:",
                  f"{'model':<10} {'workers':>7} {'loader clips/s':>14} {'model clips/s':>13} {'loader/model':>12}"]
        for (model, workers), rate in loader.items():
            best = max((r.clips_per_s for r in rows if r.model == model and r.clips_per_s), default=None)
            ratio = f"{rate / best:11.2f}×" if best else f"{'-':>12}"
            model_rate_text = f"{best:13.1f}" if best else f"{'-':>13}"
            lines.append(f"{model:<10} {workers:>7} {rate:14.1f} {model_rate_text} {ratio}")
        lines.append("(loader/model < 1: the GPU waits for data with that many workers)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=10, help="timed train steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (autotuning, compile)")
    parser.add_argument("--workers", type=int, nargs="*", default=[8, 16], help="loader workers; none: skip")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--videos", type=int, default=8, help="distinct videos of the loader's set")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized backbones and inputs (tests)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing was run (it measures GPU training)")
        return 0
    sys.stdout.reconfigure(line_buffering=True)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|channels_last|compiling).*")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.backends.cudnn.benchmark = True
    loader = {}
    if args.workers:  # first: the loader's workers are forked before CUDA and torch.compile start
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            size = (24, 64, 96) if args.tiny else (96, 256, 340)
            root, lists = make_prepared_set(tmp / "data", args.videos, *size, repeats=64)
            for model in args.models:
                for workers in args.workers:
                    loader[model, workers] = loader_rate(model, root, lists, tmp / "cache", workers,
                                                         args.loader_batches, args.tiny)
                    print(f"  loader {model} {workers} workers: {loader[model, workers]:.1f} clips/s")
    rows = []
    for model in args.models:
        cfg = compose_recipe(model, tiny=args.tiny)
        clip = f"{cfg.dataset.num_segments}×{cfg.dataset.input_size}²"
        for setting in args.settings:
            row = Row(model, setting, cfg.dataset.batch_size, clip)
            try:
                row.clips_per_s, row.peak_mib = model_rate(cfg, setting, device, args.steps, args.warmup)
            except Exception as err:  # noqa: BLE001 (one failed setting, e.g. compile, is a row, not the end)
                row.error = f"{type(err).__name__}: {err}".splitlines()[0]
            print(f"  {model} {setting}: {row.clips_per_s or row.error}")
            rows.append(row)
    print()
    print(table(rows, loader, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
