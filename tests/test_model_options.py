"""Every option of every model (conf/model/*.yaml) and gradient liveness per ELEMENT (issue 21, items 9-10).

Driven by the model configs: every leaf under ``model.network`` (and ``model.aux_weight``) is either an option
with a non-default value in ``OPTIONS`` — whose test builds the tiny model both ways and checks that the
non-default value changes the output, the outputs' keys or the parameters, and that the model still trains — or
is listed in ``NOT_OPTIONS`` with the reason. Liveness: after one SGD step on a tiny clip (zero-γ branches start
learning on the first), a second backward lists every parameter element whose gradient is exactly zero; the
only ones allowed are the faithful ones named in ``FAITHFUL_DEAD`` (docs/papers/*_differences.md explains them).
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import TINY, compose_config

# each case trains a step of a model: the CPU tier (make test), not the unit tier
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

GENERIC = [o for o in TINY if not o.startswith(("backbone=", "dataset.num_segments", "dataset.input_size"))]
# model → (overrides making it CPU-sized, clip (T, S)); clips big enough that no kernel tap falls off the maps
# (res5 ≥ 2×2, every temporal (3,1,1) conv sees T ≥ 2), so a dead element is the design's, not the size's
MODELS = {
    "tsn": (["backbone=resnet_tiny"], (4, 64)),
    "tsm": (["backbone=resnet_tiny"], (4, 64)),
    "tcm": (["backbone=resnet_tiny"], (4, 64)),
    "i3d": (["backbone=resnet3d_tiny"], (8, 64)),
    "tpn": (["backbone=resnet3d_tiny"], (8, 64)),
    "tdpn": (["backbone=resnet3d_tiny"], (8, 64)),
    "stmanet": (["backbone=resnet3d_stmanet_tiny"], (32, 48)),
    "tcnn": (["backbone@model.network.backbone=tcnn_tiny"], (8, 64)),
    "tcnn_sparse": (["backbone@model.network.backbone=tcnn_tiny", "model.network.allow_untrained_crm=true"],
                    (8, 64)),
}


def build(tmp_path, model: str, *overrides: str, size: tuple[int, int] | None = None):
    extra, (t, s) = MODELS[model]
    t, s = size or (t, s)
    cfg = compose_config([*GENERIC, f"model={model}", *extra, f"dataset.num_segments={t}",
                          f"dataset.input_size={s}", *overrides], tmp_path)
    return instantiate(cfg.model.network), instantiate(cfg.model.loss), cfg


def clip_for(model: str, batch: int = 4, seed: int = 7, size: tuple[int, int] | None = None) -> torch.Tensor:
    t, s = size or MODELS[model][1]
    return torch.randn(batch, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


def train_loss(net, loss_fn, video) -> torch.Tensor:
    out = net(video)
    return loss_fn(out, torch.arange(video.shape[0]) % 2)["loss"]


def dead_elements(net, loss_fn, model: str) -> dict[str, torch.Tensor]:
    """Parameter → mask of its elements whose gradient is exactly zero on each of 3 clips, after one SGD step on
    the first (zero-γ branches get their gradient from the second step on). Several clips keep a unit that one
    small random batch happens to leave below a ReLU out of the list: what remains is the design's."""
    net.train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    train_loss(net, loss_fn, clip_for(model)).backward()
    opt.step()
    total = {n: torch.zeros_like(p) for n, p in net.named_parameters() if p.requires_grad}
    for seed in (8, 9, 10):
        opt.zero_grad()
        train_loss(net, loss_fn, clip_for(model, seed=seed)).backward()
        for name, p in net.named_parameters():
            if p.requires_grad and p.grad is not None:
                total[name] += p.grad.abs()
    return {name: g == 0 for name, g in total.items() if (g == 0).any()}


def outer_taps(weight: torch.Tensor) -> torch.Tensor:
    """Mask of a (3,1,1) kernel's first and last temporal taps."""
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[:, :, 0] = mask[:, :, 2] = True
    return mask


# Faithful dead elements: TPN's bottom-up downsampling convs are (3,1,1) convs on the temporal-rate modulation's
# output, which with trm_rates=null (TPN's released configs: max-pool over the whole clip) has ONE frame: the
# outer taps only ever multiply the zero padding. TDPN inherits the pyramid (spec C4).
PYRAMID_BOTTOM_UP = {f"pyramid.bottom_up.downs.{i}.weight": outer_taps for i in range(3)}
FAITHFUL_DEAD = {"tpn": PYRAMID_BOTTOM_UP, "tdpn": PYRAMID_BOTTOM_UP}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_dead_elements_are_only_the_faithful_ones(model, tmp_path):
    torch.manual_seed(0)
    net, loss_fn, _ = build(tmp_path, model)
    dead = dead_elements(net, loss_fn, model)
    params = dict(net.named_parameters())
    expected = {name: mask(params[name]) for name, mask in FAITHFUL_DEAD.get(model, {}).items()}
    unexpected = {n: int(m.sum()) for n, m in dead.items() if n not in expected or not torch.equal(m, expected[n])}
    assert not unexpected, f"elements without gradient (parameter: count): {unexpected}"
    assert dead.keys() == expected.keys()


def test_tpn_outer_taps_live_when_the_pyramid_keeps_frames(tmp_path):
    """The dead taps above are the whole-clip pooling's: with trm_rates that keep 2+ frames they learn."""
    torch.manual_seed(0)
    net, loss_fn, _ = build(tmp_path, "tpn", "model.network.pyramid.trm_rates=[2,2,2,2]")
    assert not any(n.startswith("pyramid.bottom_up") for n in dead_elements(net, loss_fn, "tpn"))


# ---------------------------------------------------------------- every option changes something (item 9)

# model → {option under model.network (or model.aux_weight): a non-default value}
OPTIONS = {
    "tsn": {"dropout": "0.2", "partial_bn": "true"},
    "tsm": {"dropout": "0.2", "partial_bn": "true", "shift_fold_div": "4", "shift_every_n_blocks": "2"},
    "tcm": {"dropout": "0.2", "partial_bn": "true", "positions": "[2]", "temporal_shift": "false",
            "patch_size": "3", "reduced_channels": "32", "use_mtdm": "false", "use_tam": "false",
            "init": "identity", "shift_fold_div": "4", "shift_every_n_blocks": "2"},
    "i3d": {"dropout": "0.2"},
    "tcnn": {"dropout": "0.2"},
    "tpn": {"levels": "[3,4,5]", "dropout": "0.2", "aux_dropout": "0.2", "model.aux_weight": "0",
            "pyramid.ssm_groups": "1", "pyramid.trm_groups": "1", "pyramid.level_groups": "1",
            "pyramid.trm_rates": "[2,2,2,2]", "pyramid.flow": "parallel"},
    "tdpn": {"use_global_low": "false", "use_local_high": "false", "use_mhsa": "false", "local_variant": "light",
             "local_variant=deep": "deep", "dropout": "0.2", "global_reduction": "8", "global_zero_init": "false",
             "local_num_differences": "2", "mhsa_heads": "2", "model.aux_weight": "0", "pyramid.ssm_groups": "1",
             "pyramid.trm_groups": "1", "pyramid.level_groups": "1", "pyramid.trm_rates": "[2,2,2,2]",
             "pyramid.flow": "parallel"},
    "stmanet": {"tda.enabled": "false", "tda.reduction": "8", "tda.scaled": "false", "tda.eps_order": "conv_pool",
                "tda.delta_groups": "1", "tda.zero_init_delta": "false", "sda.enabled": "false",
                "sda.reduction": "4", "sda.kv_pool": "1", "sda.kv_pool_stages": "[]", "sda.scaled": "false",
                "fusion.mf": "false", "fusion.fuse_last_tda": "false", "fusion.literal_eq8": "true",
                "head_from_stage": "4", "dropout": "0.5", "div_reduction": "mean"},
    "tcnn_sparse": {"dropout": "0.2", "branches": "OD", "branch_heads": "separate",
                    # the untrained classifier's top-5 entropy is ≈ 1.3 nats (raw) / ≈ 1.0 (normalized): δ = 100
                    # always takes the top-1 map; with δ = 1.15 (CONTEXT) the two entropy modes disagree
                    "attention.peaks.grid_size": "21", "attention.peaks.delta": "100",
                    "attention.peaks.entropy": "normalized", "attention.peaks.window": "31",
                    "attention.peaks.max_peaks": "2", "attention.peaks.min_score": "0.5",
                    "attention.split.eval_split": "extreme", "attention.split.eval_phi": "0.99",
                    "attention.split.warmup_all_peaks_iters": "10", "attention.saliency.beta1": "0.3",
                    "attention.saliency.beta2": "0.5", "attention.saliency.base": "0.3", "attention.zoom.pad": "10",
                    "attention.zoom.fwhm": "5.0"},
}
# overrides both networks of an option's comparison share, where the default setting hides the option
CONTEXT = {"attention.peaks.entropy": ["model.network.attention.peaks.delta=1.15"]}
# options whose only effect is the initial weights: compared without copying the default network's weights
INIT_OPTIONS = {"global_zero_init", "tda.zero_init_delta", "init", "attention.saliency.beta1",
                "attention.saliency.beta2"}
# leaves of model.network that are not options of the network's behaviour, and why
NOT_OPTIONS = {
    "_target_": "the class", "num_classes": "the dataset's", "num_segments": "the dataset's clip length",
    "input_size": "the dataset's crop (sizes TDPN's MHSA tables)", "aux_weight": "= model.aux_weight (tested there)",
    "init_checkpoint": "a file to start from (tests/test_*: init_from_checkpoint)",
    "local_pretrained": "= backbone.pretrained (ImageNet download; tests/test_tdpn_blocks)",
    "pyramid._target_": "the class", "pyramid._partial_": "Hydra", "attention._target_": "the class",
    "attention.peaks._target_": "the class", "attention.split._target_": "the class",
    "attention.saliency._target_": "the class", "attention.zoom._target_": "the class",
    "attention.zoom.grid_size": "= attention.peaks.grid_size",
    "init_classifier": "only with init_checkpoint (tests/test_tcnn_sparse)",
    "allow_untrained_crm": "a start-up guard (tests/test_tcnn_sparse)",
}
SMALL = {"tsn": (4, 32), "tsm": (4, 32), "tcm": (4, 32), "i3d": (8, 32), "tpn": (8, 32), "tdpn": (8, 32),
         "stmanet": (16, 32), "tcnn": (8, 32), "tcnn_sparse": (4, 64)}


def network_leaves(node, prefix: str = "") -> list[str]:
    leaves = []
    for key, value in node.items():
        if key == "backbone":
            continue
        if OmegaConf.is_dict(value):
            leaves += network_leaves(value, f"{prefix}{key}.")
        else:
            leaves.append(f"{prefix}{key}")
    return leaves


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_config_leaf_is_an_option_here_or_named_as_not_one(model, tmp_path):
    cfg = compose_config([f"model={model}"], tmp_path)
    leaves = set(network_leaves(cfg.model.network))
    options = {k.split("=")[0] for k in OPTIONS[model]} - {"model.aux_weight"}
    assert leaves - set(NOT_OPTIONS) == options, "a model option without a test that it changes something"
    assert ("aux_weight" in cfg.model) == ("model.aux_weight" in OPTIONS[model])


def flat_outputs(out, prefix: str = "") -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in out.items():
        flat.update(flat_outputs(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def run_both_modes(net, video) -> dict[str, torch.Tensor]:
    outs = {}
    for mode in (True, False):
        net.train(mode)
        torch.manual_seed(1)  # the same dropout masks and random splits for both networks
        with torch.no_grad():
            outs.update({f"{mode}:{k}": v for k, v in flat_outputs(net(video)).items()})
    return outs


def differs(a: dict, b: dict) -> bool:
    return a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a)


CASES = [(m, o) for m in sorted(OPTIONS) for o in OPTIONS[m]]


@pytest.mark.parametrize("model, option", CASES, ids=[f"{m}-{o}" for m, o in CASES])
def test_option_changes_the_network_and_still_trains(model, option, tmp_path):
    key = option.split("=")[0]
    override = f"{key}={OPTIONS[model][option]}" if key.startswith("model.") else \
        f"model.network.{key}={OPTIONS[model][option]}"
    size = SMALL[model]
    context = CONTEXT.get(key, [])
    torch.manual_seed(0)
    default, _, _ = build(tmp_path, model, *context, size=size)
    torch.manual_seed(0)
    variant, loss_fn, _ = build(tmp_path, model, *context, override, size=size)
    video = clip_for(model, batch=2, size=size)
    shapes = {k: v.shape for k, v in default.state_dict().items()}
    same_structure = shapes == {k: v.shape for k, v in variant.state_dict().items()}
    if same_structure and key not in INIT_OPTIONS:
        with torch.no_grad():  # zero-initialised branches (γ = 0) as after training, in both networks alike
            for net in (default, variant):
                for p in net.parameters():
                    if not p.any():
                        p.fill_(0.5)
        variant.load_state_dict(default.state_dict())  # only the option differs, not the random init
    changed_outputs = differs(run_both_modes(default, video), run_both_modes(variant, video))
    assert not same_structure or changed_outputs, f"{override} changes neither the parameters nor the output"
    # still trains: a finite loss, finite gradients, and one SGD step lowers the loss on that clip
    variant.train()
    opt = torch.optim.SGD([p for p in variant.parameters() if p.requires_grad], lr=0.01)
    torch.manual_seed(2)
    before = train_loss(variant, loss_fn, video)
    before.backward()
    assert torch.isfinite(before) and all(torch.isfinite(p.grad).all() for p in variant.parameters()
                                          if p.grad is not None)
    opt.step()
    torch.manual_seed(2)
    with torch.no_grad():
        after = train_loss(variant, loss_fn, video)
    assert after != before
