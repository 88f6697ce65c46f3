"""The optimiser's parameter groups: decaying weights, non-decaying norms and biases, the bias LR multiplier."""

from __future__ import annotations

from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, bias_lr_mult: float = 1.0,
                 no_decay_norm_bias: bool = True) -> list[dict]:
    """Weights of conv/linear layers decay; norm parameters and biases do not.
    Biases may get a larger LR (TSN recipes use ×2). A network may name further parameters to
    keep out of weight decay with a `no_weight_decay() -> set[str]` method (timm's convention),
    e.g. learnable attention widths; they join the "norm" group."""
    exempt = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    exempt_ids = {id(p) for n, p in model.named_parameters() if n in exempt}
    decay, norm, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, NORM_TYPES) or id(p) in exempt_ids:
                norm.append(p)
            elif name == "bias":
                bias.append(p)
            else:
                decay.append(p)
    nd = 0.0 if no_decay_norm_bias else weight_decay
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_mult": 1.0, "name": "decay"},
              {"params": norm, "weight_decay": nd, "lr_mult": 1.0, "name": "norm"},
              {"params": bias, "weight_decay": nd, "lr_mult": bias_lr_mult, "name": "bias"}]
    return [g for g in groups if g["params"]]
