"""MMAction2 1.x layout: ``backbone.*`` (ConvModule ``conv``/``bn`` pairs, TSM's shift wrapper ``.net``),
``neck.*`` (TPN), ``cls_head.fc_cls`` → tempo's TSN/TSM/I3D/TPN names (torchvision-style backbone, ``fc``)."""

from __future__ import annotations

from collections.abc import Collection

NAME = "mmaction2"

SSM = r"^neck\.spatial_modulation\.spatial_modulation\.(\d+)\.(\d+)"  # per level, per strided conv block
RULES = [
    # backbone: stem and blocks (ConvModule conv/bn → torchvision convN/bnN), downsample (conv/bn → 0/1)
    (r"^backbone\.conv1\.conv\.", "backbone.conv1."),
    (r"^backbone\.conv1\.bn\.", "backbone.bn1."),
    (r"^(backbone\.layer\d+\.\d+)\.conv(\d)\.conv\.(?:net\.)?", r"\1.conv\2."),
    (r"^(backbone\.layer\d+\.\d+)\.conv(\d)\.bn\.", r"\1.bn\2."),
    (r"^(backbone\.layer\d+\.\d+\.downsample)\.conv\.", r"\1.0."),
    (r"^(backbone\.layer\d+\.\d+\.downsample)\.bn\.", r"\1.1."),
    # TPN neck → tempo's TemporalPyramid (pyramid.*) and auxiliary head (aux_head.*)
    (SSM + r"\.conv\.", r"pyramid.spatial_modulation.levels.\1.\2.0."),
    (SSM + r"\.bn\.", r"pyramid.spatial_modulation.levels.\1.\2.1."),
    (r"^neck\.temporal_modulation_ops\.(\d+)\.conv\.conv\.", r"pyramid.temporal_modulation.convs.\1."),
    (r"^neck\.downsample_ops\.(\d+)\.conv\.conv\.", r"pyramid.bottom_up.downs.\1."),
    (r"^neck\.level_fusion_1\.downsamples\.(\d+)\.conv\.conv\.", r"pyramid.top_down_fusion.levels.\1.0."),
    (r"^neck\.level_fusion_1\.downsamples\.(\d+)\.conv\.bn\.", r"pyramid.top_down_fusion.levels.\1.1."),
    (r"^neck\.level_fusion_2\.downsamples\.(\d+)\.conv\.conv\.", r"pyramid.bottom_up_fusion.levels.\1.0."),
    (r"^neck\.level_fusion_2\.downsamples\.(\d+)\.conv\.bn\.", r"pyramid.bottom_up_fusion.levels.\1.1."),
    (r"^neck\.level_fusion_1\.fusion_conv\.conv\.", "pyramid.top_down_fusion.fuse.0."),
    (r"^neck\.level_fusion_1\.fusion_conv\.bn\.", "pyramid.top_down_fusion.fuse.1."),
    (r"^neck\.level_fusion_2\.fusion_conv\.conv\.", "pyramid.bottom_up_fusion.fuse.0."),
    (r"^neck\.level_fusion_2\.fusion_conv\.bn\.", "pyramid.bottom_up_fusion.fuse.1."),
    (r"^neck\.pyramid_fusion\.conv\.", "pyramid.pyramid_fusion.0."),
    (r"^neck\.pyramid_fusion\.bn\.", "pyramid.pyramid_fusion.1."),
    (r"^neck\.aux_head\.conv\.conv\.", "aux_head.conv.0."),
    (r"^neck\.aux_head\.conv\.bn\.", "aux_head.conv.1."),
    (r"^neck\.aux_head\.fc\.", "aux_head.fc."),
    # heads
    (r"^cls_head\.fc_cls\.", "fc."),
]


def matches(keys: Collection[str]) -> bool:
    return any(k.startswith("cls_head.") for k in keys) and any(k.startswith("backbone.") for k in keys)


def classifier_key(keys: Collection[str]) -> str:
    return "cls_head.fc_cls.weight"
