"""GPU paths (issue 23), run by `make test-gpu` on a CUDA machine and skipped here with a reason: one
training step of every model under bf16 autocast and under fp16 + gradient scaler, torch.compile of TSM
and TCM against eager, channels_last against contiguous, the correlation on CUDA against the CPU one (and
the optional `spatial_correlation_sampler` package), a 1-GPU DDP run over NCCL with SyncBN under trainer=ddp.

Networks are the tiny configs (resnet_tiny, resnet3d_tiny, tcnn_tiny, ...): the GPU paths, not the sizes,
are under test. The training step is benchmarks/gpu_check.py's, so the check and the tests share it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from tempo.models.blocks.correlation import correlation_rows, correlation_shifted_loop
from tempo.run.acceleration import apply_model_switches, to_channels_last
from tests.conftest import TINY, compose_config
from tests.official_fixtures import make_list_set

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_check import train_step  # noqa: E402

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[1]
TCNN_TINY = ["backbone@model.network.backbone=tcnn_tiny", "dataset.num_segments=8"]
MODELS = {  # model → overrides on TINY (3D models default to their tiny backbones)
    "tsn": [], "tsm": [], "tcm": [], "tpn": [], "tdpn": [], "i3d": [], "stmanet": [],
    "tcnn": TCNN_TINY, "tcnn_sparse": TCNN_TINY,
}
CUDA = torch.device("cuda")


def build(model: str, tmp_path: Path, *extra: str):
    cfg = compose_config([*TINY, f"model={model}", *MODELS[model], *extra], tmp_path / "run")
    torch.manual_seed(0)
    network, loss = instantiate(cfg.model.network), instantiate(cfg.model.loss)
    d = cfg.dataset
    video = torch.randn(2, 3, d.num_segments, d.input_size, d.input_size)
    labels = torch.arange(2) % d.num_classes
    return network, loss, video, labels


@pytest.fixture
def no_tf32():
    """Exact float32 on both sides of a comparison (TF32 convolutions/matmuls differ by ~1e-3)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class ProcessGroupProbe(Callback):
    """Writes the process group's backend and the network's BatchNorm kinds to `path` when training starts."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        kinds = [type(m) for m in pl_module.modules()]
        Path(self.path).write_text(json.dumps({
            "backend": torch.distributed.get_backend(), "world_size": torch.distributed.get_world_size(),
            "sync_batchnorm": kinds.count(torch.nn.SyncBatchNorm),
            "batchnorm": sum(k in (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d) for k in kinds)}))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_one_training_step_under_mixed_precision(model, precision, tmp_path):
    """Eval logits under autocast agree with float32; a step (fp16: through the scaler, which may skip
    its first steps on overflow) changes the weights and leaves every gradient finite."""
    network, loss, video, labels = build(model, tmp_path)
    network, video, labels = network.to(CUDA), video.to(CUDA), labels.to(CUDA)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    network.eval()
    with torch.no_grad():
        reference = network(video)["logits"]
        with torch.autocast("cuda", dtype=dtype):
            mixed = network(video)["logits"]
    assert mixed.dtype == dtype  # autocast reached the classifier
    assert relative_error(mixed, reference) < (5e-2 if precision == "bf16" else 1e-2)
    network.train()
    before = {n: p.detach().clone() for n, p in network.named_parameters()}
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    for _ in range(10):  # the scaler halves its scale and skips the step while gradients overflow
        total = train_step(network, loss, optimizer, video, labels, dtype, scaler)
        if any(not torch.equal(p, before[n]) for n, p in network.named_parameters()):
            break
    assert torch.isfinite(total)
    changed = [n for n, p in network.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no optimiser step was taken"
    for n, p in network.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("model", ["tsm", "tcm"])
def test_compile_matches_eager(model, tmp_path, no_tf32):
    """Forward and gradients of `model.compile=true` equal eager's (train mode, dropout off)."""
    network, loss, video, labels = build(model, tmp_path, "model.network.dropout=0")
    network, video, labels = network.to(CUDA).train(), video.to(CUDA), labels.to(CUDA)
    compiled = apply_model_switches(copy.deepcopy(network), compile=True, accelerator="gpu")
    eager_out, compiled_out = network(video), compiled(video)
    loss(eager_out, labels)["loss"].backward()
    loss(compiled_out, labels)["loss"].backward()
    torch.testing.assert_close(compiled_out["logits"], eager_out["logits"], rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(network.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("model", ["tsm", "tcm", "tdpn", "stmanet"])
def test_channels_last_matches_contiguous(model, tmp_path, no_tf32):
    """`model.channels_last=true` (2-D and 3-D weights) gives the contiguous network's outputs and gradients."""
    network, loss, video, labels = build(model, tmp_path)
    network, video, labels = network.to(CUDA).eval(), video.to(CUDA), labels.to(CUDA)
    nhwc = to_channels_last(copy.deepcopy(network))
    assert any(p.dim() >= 4 and not p.is_contiguous() for p in nhwc.parameters())  # the layout did change
    reference, out = network(video), nhwc(video)
    loss(reference, labels)["loss"].backward()
    loss(out, labels)["loss"].backward()
    torch.testing.assert_close(out["logits"], reference["logits"], rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(network.named_parameters(), nhwc.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", [correlation_rows, correlation_shifted_loop])
def test_cuda_correlation_matches_cpu(method):
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 16, 9, 11, dtype=torch.float64).unbind(0)
    grad = torch.randn(3, 49, 9, 11, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        x, y = (t.to(device).requires_grad_() for t in (a, b))
        out = method(x, y, 7)
        out.backward(grad.to(device))
        results.append([t.detach().cpu() for t in (out, x.grad, y.grad)])
    for cpu, cuda in zip(*results, strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=1e-10, atol=1e-10)


def test_spatial_correlation_sampler_matches_ours():
    sampler = pytest.importorskip("spatial_correlation_sampler", reason="optional package not installed")
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 16, 9, 11, device=CUDA).unbind(0)
    theirs = sampler.SpatialCorrelationSampler(kernel_size=1, patch_size=7)(a.contiguous(), b.contiguous())
    torch.testing.assert_close(correlation_rows(a, b, 7), theirs.reshape(3, 49, 9, 11), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_one_gpu_ddp_runs_over_nccl_with_syncbn(tmp_path):
    """`trainer=ddp` on one GPU through the CLI: the process group is NCCL and every BatchNorm became
    SyncBatchNorm (recorded by ProcessGroupProbe, added as a callback, when training starts)."""
    root, lists = make_list_set(tmp_path / "data")
    probe = tmp_path / "probe.json"
    args = ["trainer=ddp", "trainer.devices=1", "dataset=list", f"dataset.root={root}",
            f"dataset.annotations={lists}", "dataset.num_classes=2", "dataset.short_side=36", "dataset.input_size=32",
            "dataset.num_segments=4", "dataset.batch_size=4", "dataset.num_workers=0", "backbone=resnet_tiny",
            "logger=none", "callbacks=none", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}", "+callbacks.probe._target_=tests.test_gpu.ProcessGroupProbe",
            f"+callbacks.probe.path={probe}"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "tempo.train", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    seen = json.loads(probe.read_text())
    assert seen["backend"] == "nccl" and seen["world_size"] == 1
    assert seen["sync_batchnorm"] > 0 and seen["batchnorm"] == 0, seen
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 2
