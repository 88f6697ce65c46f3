"""Released files for the zoo tests: a fixture's key list and seed written back in its source framework's
file format (with the non-tensor objects real releases carry), and the convert command's config."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR
from tests.zoo_weights import seeded_state

FIXTURES = Path(__file__).parent / "fixtures" / "zoo"
WITH_LOGITS = ["mmaction2_tsn_r50_1x1x8_k400", "mmaction2_tsm_r50_1x1x8_k400", "mmaction2_i3d_r50_32x2_k400",
               "mmaction2_slowonly_r50_8x8_k400", "mmaction2_tpn_slowonly_r50_8x8_k400", "tsm_k400_r50_8f",
               "tsm_sthv1_r50_8f"]


def fixture(entry: str) -> dict:
    return json.loads((FIXTURES / f"{entry}.json").read_text())


class _Foreign:
    """Stands for mmengine's HistoryBuffer: a class of a package the reader does not have. Unpickling it for
    real would run `__reduce__`'s call — here one that writes a marker file."""

    marker: Path | None = None

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def save_release(data: dict, path: Path, marker: Path | None = None, bn_counters: bool = True) -> Path:
    """The fixture's weights in its released file format, with the non-tensor objects real files carry."""
    state = seeded_state(data["keys"], data["seed"])
    if not bn_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if data["layout"] == "mmaction2":
        module = types.ModuleType("mmengine_standin.logging")  # importable while saving only
        _Foreign.__module__, _Foreign.marker = module.__name__, marker or path.with_suffix(".ran")
        module._Foreign = _Foreign
        sys.modules[module.__name__] = module
        try:
            content = {"meta": {"epoch": np.int64(50), "iter": np.int64(1000), "lr": np.float64(0.01)},
                       "state_dict": state, "message_hub": {"log_scalars": {"loss": _Foreign()}}}
            torch.save(content, path)
        finally:
            del sys.modules[module.__name__]
            _Foreign.__module__ = __name__
    else:
        torch.save({"epoch": 45, "arch": "resnet50", "state_dict": state, "best_prec1": 45.6}, path)
    return path


def convert_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("convert", overrides=[f"paths.output_dir={tmp_path / 'convert'}", "print_config=false",
                                             *overrides])
