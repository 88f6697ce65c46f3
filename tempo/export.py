"""`python -m tempo.export ckpt_path=<ckpt> format=onnx|torchscript|torch_export [out=<file>]`: a trained
checkpoint as a deployable file, its parity to eager PyTorch checked (`tempo.run.export`, docs/export.md).

The graph takes the normalised clip (B, 3, T, H, W), or the uint8 clip with `include_preprocessing=true`, and
returns the logits; the batch size is dynamic. Class names and the input spec travel inside the file and in
`<out>.json`. The export fails when the exported model's logits differ from PyTorch's by more than
`parity_tolerance` (relative) on a random clip.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from tempo import CONF_DIR
from tempo.run.checkpoint import task_overrides
from tempo.run.export import export_checkpoint
from tempo.run.frontdoor import user_errors


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
@user_errors
def main(cfg: DictConfig) -> None:
    export_checkpoint(cfg, task_overrides())


if __name__ == "__main__":
    main()
