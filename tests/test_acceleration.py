"""Mixed precision decided at start-up, channels_last and compile switches (CPU: config + fallback)."""

import logging

import pytest
import torch
from hydra.utils import instantiate

from tempo.models.blocks.correlation import correlation_rows
from tempo.run import acceleration
from tempo.run.acceleration import apply_model_switches, resolve_precision, to_channels_last
from tempo.run.build import build_module
from tests.conftest import compose_config


@pytest.mark.parametrize("trainer", ["gpu", "ddp", "ddp_multinode"])
def test_gpu_trainers_ask_for_auto_mixed(trainer, tmp_path):
    assert compose_config([f"trainer={trainer}"], tmp_path).trainer.precision == "auto-mixed"


def test_auto_mixed_picks_bf16_fp16_or_fp32(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto-mixed", "gpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto-mixed", "gpu") == "16-mixed"  # Lightning adds the GradScaler
    assert resolve_precision("32-true", "gpu") == "32-true"  # explicit choices are kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="tempo.run.acceleration"):
        assert resolve_precision("auto-mixed", "gpu") == "32-true"
    assert "no CUDA GPU here, training in float32" in caplog.text


def test_correlation_stays_fp32_under_bf16_autocast():
    a, b = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    reference = correlation_rows(a, b, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = correlation_rows(a, b, 5)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference)


def test_channels_last_same_outputs_and_gradients(tiny_cfg, caplog):
    cfg = tiny_cfg("model.channels_last=true")
    torch.manual_seed(0)
    plain = instantiate(cfg.model.network)
    converted = instantiate(cfg.model.network)
    converted.load_state_dict(plain.state_dict())
    with caplog.at_level(logging.WARNING, logger="tempo.run.acceleration"):
        module = build_module(cfg, network=converted)
    assert "model.channels_last=true without a CUDA GPU" in caplog.text
    four_d = [p for p in converted.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    video = torch.randn(2, 3, cfg.dataset.num_segments, cfg.dataset.input_size, cfg.dataset.input_size)
    plain.eval(), module.network.eval()  # no dropout: the same function, another memory layout
    torch.testing.assert_close(module.network(video)["logits"], plain(video)["logits"], rtol=1e-4, atol=1e-5)
    module.network.train()
    loss = module.network(video)["logits"].logsumexp(-1).sum() - module.network(video)["logits"][:, 0].sum()
    loss.backward()
    for name, p in module.network.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_channels_last_3d_weights():
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.Conv2d(4, 4, 1))
    to_channels_last(net)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert net[1].weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_switch_compiles_in_place_with_cpu_message(tiny_cfg, monkeypatch, caplog):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    cfg = tiny_cfg("model.compile=true")
    with caplog.at_level(logging.WARNING, logger="tempo.run.acceleration"):
        module = build_module(cfg)
    assert compiled == [module.network]  # in place: checkpoint keys keep their names
    assert "model.compile=true without a CUDA GPU" in caplog.text
    assert not any(k.startswith("_orig_mod") for k in module.state_dict())
    plain = torch.nn.Linear(2, 2)  # switches off: the same module back, nothing compiled
    assert apply_model_switches(plain) is plain and compiled == [module.network]
    assert apply_model_switches(plain, compile=True) is plain and compiled == [module.network, plain]
    assert acceleration.AUTO_MIXED == "auto-mixed"
