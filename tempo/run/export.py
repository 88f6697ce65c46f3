"""Exporting a trained network for deployment, with its parity to eager PyTorch checked every time.

Three formats: `onnx` (torch's dynamo-based exporter, run by onnxruntime), `torchscript` (`torch.jit.trace`)
and `torch_export` (`torch.export`, an ExportedProgram `.pt2`). The exported graph maps the clip (B, 3, T, H, W)
— normalised, or uint8 with `include_preprocessing` — to the logits (B, classes); B is dynamic. The class names
and the input spec travel inside the file (ONNX metadata_props / TorchScript and `.pt2` extra files, key
`tempo`) and in a side JSON next to it. `check_parity` runs the file beside the eager network in eval mode on a
random clip of another batch size than the export's example (so a batch size baked into the graph fails too).
"""

from __future__ import annotations

import json
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tempo.run.config import ConfigError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2"}
METADATA_KEY = "tempo"
EXAMPLE_BATCH, PARITY_BATCH = 2, 3  # export traces batch 2; parity runs batch 3 (the batch must stay dynamic)


class ExportError(RuntimeError):
    """A network (or one of its blocks) that a format cannot export, or an export that fails its parity check."""


class ClipClassifier(nn.Module):
    """The network as deployed: clip → logits, with the normalisation inside when `include_preprocessing`."""

    def __init__(self, network: nn.Module, mean: torch.Tensor, std: torch.Tensor, include_preprocessing: bool):
        super().__init__()
        self.network = network
        self.include_preprocessing = include_preprocessing
        self.register_buffer("mean", mean.detach().clone().view(3, 1, 1, 1))
        self.register_buffer("std", std.detach().clone().view(3, 1, 1, 1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.include_preprocessing:  # uint8 → float in [0, 1] → normalised, as RecognitionModule does
            video = (video.float() / 255 - self.mean) / self.std
        return self.network(video)["logits"]


def random_clip(input_shape: list[int], include_preprocessing: bool, batch: int, seed: int = 0) -> torch.Tensor:
    """A random clip (batch, *input_shape): uint8 pixels, or a normalised clip (standard normal)."""
    generator = torch.Generator().manual_seed(seed)
    if include_preprocessing:
        return torch.randint(0, 256, (batch, *input_shape), generator=generator, dtype=torch.uint8)
    return torch.randn((batch, *input_shape), generator=generator)


def _batch_dim() -> dict:
    return {"video": {0: torch.export.Dim("batch", min=1, max=4096)}}


def _save_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["video"], output_names=["logits"],
                                dynamic_shapes=_batch_dim(), verbose=False)
    program.model.metadata_props[METADATA_KEY] = metadata
    program.save(str(path))


def _save_torchscript(model: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    with warnings.catch_warnings():  # shape checks traced as constants: the parity check runs another batch
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (example,), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: metadata})


def _save_torch_export(model: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path), extra_files={METADATA_KEY: metadata})


SAVERS = {"onnx": _save_onnx, "torchscript": _save_torchscript, "torch_export": _save_torch_export}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: choose one of {sorted(FORMATS)}")
    return fmt


def load_exported(path: str | Path, fmt: str, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A CPU runner of the exported file: clip tensor → logits tensor (ONNX through onnxruntime, with `threads`
    intra-op threads when given; the PyTorch formats use torch's own setting)."""
    path = str(path)
    if check_format(fmt) == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda video: torch.from_numpy(session.run(None, {name: video.numpy()})[0])
    module = torch.jit.load(path, map_location="cpu") if fmt == "torchscript" else torch.export.load(path).module()
    return lambda video: module(video)


def read_metadata(path: str | Path, fmt: str) -> dict:
    """The metadata stored inside an exported file (class names, input spec, model)."""
    path = str(path)
    if check_format(fmt) == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    files = {METADATA_KEY: ""}
    if fmt == "torchscript":
        torch.jit.load(path, map_location="cpu", _extra_files=files)
    else:
        torch.export.load(path, extra_files=files)
    return json.loads(files[METADATA_KEY])


def relative_difference(exported: torch.Tensor, reference: torch.Tensor) -> float:
    """max |exported − reference| / max |reference|: the largest logit error relative to the largest logit."""
    scale = reference.abs().max().clamp_min(torch.finfo(reference.dtype).tiny)
    return float((exported.float() - reference).abs().max() / scale)


def check_parity(model: ClipClassifier, path: str | Path, fmt: str, clip: torch.Tensor, tolerance: float) -> float:
    """The relative difference of the exported file's logits to the eager model's on `clip`; above
    `tolerance` an ExportError."""
    with torch.no_grad():
        reference = model.eval()(clip)
        exported = load_exported(path, fmt)(clip)
    if exported.shape != reference.shape:
        raise ExportError(f"format={fmt}: {path} returns logits of shape {tuple(exported.shape)} for a clip of "
                          f"batch {clip.shape[0]}, eager PyTorch {tuple(reference.shape)}")
    difference = relative_difference(exported, reference)
    if not difference <= tolerance:  # also fails on NaN
        raise ExportError(f"format={fmt}: {path} differs from eager PyTorch by {difference:.3g} (relative, max "
                          f"|Δlogit| / max |logit|) on a random clip, above parity_tolerance={tolerance:g}")
    return difference


def failing_block(model: nn.Module, err: BaseException) -> str | None:
    """'name (Class)' of the innermost submodule of `model` whose forward was running when `err` was raised
    (the exception and the ones it chains are searched: exporters wrap the original)."""
    names = {id(m): n for n, m in model.named_modules()}
    found = None
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        for frame, _ in traceback.walk_tb(err.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and names.get(id(owner)):
                found = f"{names[id(owner)]} ({type(owner).__name__})"
        err = err.__cause__ or err.__context__
    return found


def export_and_check(model: ClipClassifier, fmt: str, path: str | Path, metadata: dict, tolerance: float,
                     input_shape: list[int], name_working: bool = True) -> float:
    """Write `model` to `path` in `fmt` and check its parity; returns the relative difference. An exporter
    failure becomes an ExportError naming the block that failed and (`name_working`: found by trying them) the
    formats that do export it."""
    model = model.eval()
    example = random_clip(input_shape, model.include_preprocessing, EXAMPLE_BATCH)
    clip = random_clip(input_shape, model.include_preprocessing, PARITY_BATCH, seed=1)
    try:
        with torch.no_grad():
            SAVERS[check_format(fmt)](model, example, Path(path), json.dumps(metadata))
        return check_parity(model, path, fmt, clip, tolerance)
    except ExportError:
        raise
    except Exception as err:
        block = failing_block(model.network, err) or f"the network ({type(model.network).__name__})"
        working = [other for other in FORMATS
                   if name_working and other != fmt and _exports(model, other, input_shape, tolerance)]
        hint = (f"format={' or format='.join(working)} exports it" if working
                else "no other format exports it either" if name_working else "")
        raise ExportError(f"format={fmt} cannot export {block}: {type(err).__name__}: {str(err)[:800]}\n"
                          f"{hint}".rstrip() + ".") from err


def _exports(model: ClipClassifier, fmt: str, input_shape: list[int], tolerance: float) -> bool:
    """Whether `fmt` exports `model` with parity (tried in a temporary folder; used to name what works)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            export_and_check(model, fmt, Path(folder) / f"model{FORMATS[fmt]}", {}, tolerance, input_shape,
                             name_working=False)
        except ExportError:
            return False
    return True


def export_checkpoint(cfg, overrides: list[str]) -> dict:
    """`python -m tempo.export`: the checkpoint's network (`tempo.run.restore`) to `cfg.out` in `cfg.format`,
    parity checked; returns {"path", "metadata", "parity"}. `cfg` holds ckpt_path, format, out,
    include_preprocessing, parity_tolerance and paths.output_dir (the default folder)."""
    from hydra.utils import instantiate

    from tempo.run.restore import load_evaluated

    fmt = check_format(str(cfg.format))
    tolerance = float(cfg.parity_tolerance)
    if not tolerance >= 0:
        raise ConfigError(f"parity_tolerance={cfg.parity_tolerance}: a relative difference, ≥ 0 (default 1e-4)")
    config, class_names, module = load_evaluated(cfg, overrides)
    network = module.network
    if getattr(network, "_compiled_call_impl", None) is not None:
        network._compiled_call_impl = None  # a model.compile=true run: export the plain module, not dynamo's wrapper
    names = [str(n) for n in class_names] if class_names else [str(i) for i in range(int(config.dataset.num_classes))]
    frames = int(instantiate(config.dataset.datamodule.sampler).clip_frames)
    size = int(config.dataset.input_size)
    input_shape = [3, frames, size, size]
    preprocessing = bool(cfg.include_preprocessing)
    model = ClipClassifier(network, module.mean, module.std, preprocessing)
    out = Path(str(cfg.out)) if cfg.get("out") else Path(cfg.paths.output_dir) / f"model{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    metadata = {
        "format": fmt, "model": str(config.model.network._target_), "checkpoint": str(cfg.ckpt_path),
        "class_names": names,
        "input": {"name": "video", "shape": ["batch", *input_shape], "layout": "B, C=RGB, T, H, W",
                  "dtype": "uint8" if preprocessing else "float32",
                  "normalisation": ("inside the graph: (x / 255 - mean) / std" if preprocessing
                                    else "done by the caller: (x / 255 - mean) / std"),
                  "mean": module.mean.flatten().tolist(), "std": module.std.flatten().tolist(),
                  "sampler": OmegaConf.to_container(config.dataset.datamodule.sampler, resolve=True),
                  "transforms": OmegaConf.to_container(config.dataset.datamodule.val_transforms, resolve=True)},
        "output": {"name": "logits", "shape": ["batch", len(names)]},
    }
    difference = export_and_check(model, fmt, out, metadata, tolerance, input_shape)
    print(f"parity: {fmt} vs eager PyTorch (eval) on a random clip of batch {PARITY_BATCH}: relative difference "
          f"{difference:.2e} (tolerance {tolerance:g})")
    side = out.with_name(out.name + ".json")
    side.write_text(json.dumps({**metadata, "parity": {"relative_difference": difference, "tolerance": tolerance,
                                                       "batch": PARITY_BATCH}}, indent=2))
    print(f"exported {out} (metadata: {side})")
    return {"path": str(out), "metadata": str(side), "parity": difference}
