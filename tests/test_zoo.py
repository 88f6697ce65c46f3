"""Released weights: converting MMAction2 1.x and official TSM/TCM checkpoints (`python -m tempo.convert`), the
converted network's logits against the source network's (fixtures made once by tests/fixtures/make_zoo_fixtures.py
with the real source code), safe reading of foreign pickles, wrong files, and fine-tuning from released files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from tempo.demo import run as demo
from tempo.models.zoo.classes import KINETICS400
from tempo.models.zoo.reading import CheckpointError, read_tensors
from tempo.run.released import convert
from tempo.run.restore import load_evaluated
from tests.conftest import CONF_DIR
from tests.zoo_releases import FIXTURES, WITH_LOGITS, convert_cfg, fixture, save_release
from tests.zoo_weights import seeded_input, seeded_state


def load_converted_module(tmp_path: Path, ckpt: Path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}"])
    return load_evaluated(cfg, [f"ckpt_path={ckpt}"])


@pytest.mark.slow  # full-size R50 source networks
@pytest.mark.parametrize("entry", WITH_LOGITS)
def test_converted_network_gives_the_source_networks_logits(entry, tmp_path, one_thread):
    data = fixture(entry)
    release = save_release(data, tmp_path / f"{entry}.pth", bn_counters=entry != "tsm_k400_r50_8f")
    out = convert(convert_cfg(tmp_path, f"zoo={entry}", f"checkpoint={release}", f"out={tmp_path / 'c.ckpt'}"))
    config, names, module = load_converted_module(tmp_path, out)
    with torch.no_grad():
        logits = module.network(seeded_input(data["input_shape"], data["input_seed"]))["logits"]
    expected = torch.tensor(data["logits"]).view_as(logits)
    assert torch.allclose(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max()), \
        (logits - expected).abs().max()
    assert int(config.dataset.num_classes) == expected.shape[-1]
    assert (names is not None) == (expected.shape[-1] == 400)  # Kinetics entries name their classes
    assert not release.with_suffix(".ran").exists()  # the foreign object's code never ran


def test_official_tcm_tensors_land_in_the_tempo_tcm(tmp_path):
    data = fixture("tcm_sthv1_r50_8f")
    release = save_release(data, tmp_path / "sthv1_8f_best.pth")
    source = seeded_state(data["keys"], data["seed"])
    out = convert(convert_cfg(tmp_path, "zoo=tcm_sthv1_r50_8f", f"checkpoint={release}", f"out={tmp_path / 'c.ckpt'}"))
    saved = torch.load(out, weights_only=True)
    state = saved["state_dict"]
    # the release's class index is the sorted rank of the name (the dataset must read it so)
    assert saved["tempo"]["config"]["dataset"]["label_order"] == "sorted"
    tcm = "module.base_model.tcm_layer."
    pairs = {"network.fc.weight": source["module.new_fc.weight"].squeeze(-1),
             "network.backbone.layer3.5.conv2.weight": source["module.base_model.layer3.5.conv2.weight"],
             "network.backbone.after_stage.2.mtdm.reduce.0.weight": source[f"{tcm}mtdm.chnl_reduction.0.weight"],
             "network.backbone.after_stage.2.tam.stage1.2.1.running_var": source[f"{tcm}tam.conv1.7.running_var"],
             "network.backbone.after_stage.2.tam.stage4.1.0.weight": source[f"{tcm}tam.conv4.3.weight"],
             "network.backbone.after_stage.2.tam.eca.conv.weight": source[f"{tcm}tam.ETA.conv.weight"]}
    for key, value in pairs.items():
        assert torch.equal(state[key], value), key
    net_keys = {k for k in state if k.startswith("network.") and not k.endswith("num_batches_tracked")}
    assert len(net_keys) == len([k for k, _ in data["keys"] if not k.endswith("num_batches_tracked")])


def test_foreign_objects_are_read_inertly(tmp_path):
    marker = tmp_path / "ran.txt"
    path = save_release(fixture("mmaction2_tsm_r50_1x1x8_k400"), tmp_path / "tsm.pth", marker=marker)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
        torch.load(path, weights_only=True)  # what a plain reader faces
    state = read_tensors(path)
    assert len(state) == 320 and "cls_head.fc_cls.weight" in state
    assert not marker.exists()
    # PyTorch < 1.6's legacy (non-zip) format, as the 2019 official TSM files, with a numpy scalar
    legacy = tmp_path / "legacy.pth"
    torch.save({"epoch": 45, "arch": "resnet50", "best_prec1": np.float64(45.6),
                "state_dict": {"module.new_fc.weight": torch.ones(3, 4)}}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_tensors(legacy)["module.new_fc.weight"], torch.ones(3, 4))


def test_wrong_files_give_one_clear_error(tmp_path):
    tsm = save_release(fixture("mmaction2_tsm_r50_1x1x8_k400"), tmp_path / "tsm.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tsm.read_bytes()[:5000])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    official = save_release(fixture("tsm_k400_r50_8f"), tmp_path / "official.pth")
    cases = [(truncated, "mmaction2_tsm_r50_1x1x8_k400", "not a readable PyTorch checkpoint"),
             (text, "mmaction2_tsm_r50_1x1x8_k400", "not a readable PyTorch checkpoint"),
             (official, "mmaction2_tsm_r50_1x1x8_k400", "is a tsm_official checkpoint but the zoo entry expects"),
             (tsm, "mmaction2_i3d_r50_32x2_k400", r"does not fit the configured tempo network I3D: 53 mismatched")]
    for path, entry, message in cases:
        with pytest.raises(CheckpointError, match=message):
            convert(convert_cfg(tmp_path, f"zoo={entry}", f"checkpoint={path}"))
    unknown = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, unknown)
    with pytest.raises(CheckpointError, match="match none of the known layouts"):
        convert(convert_cfg(tmp_path, "model=tsm", "backbone=resnet50", f"checkpoint={unknown}"))


def test_layout_detected_without_zoo_entry(tmp_path, one_thread):
    data = fixture("tsm_sthv1_r50_8f")
    release = save_release(data, tmp_path / "tsm.pth")
    out = convert(convert_cfg(tmp_path, "model=tsm", "backbone=resnet50", "dataset.num_segments=8",
                              f"checkpoint={release}"))
    assert out == tmp_path / "convert" / "tsm.ckpt"
    saved = torch.load(out, weights_only=True)
    assert saved["zoo"]["layout"] == "tsm_official" and saved["tempo"]["config"]["dataset"]["num_classes"] == 174


@pytest.mark.slow  # ResNet-50 on 80 views of 224² on the CPU
def test_demo_of_a_converted_checkpoint_predicts_what_mmaction2_predicts(tmp_path, one_thread):
    """End to end: MMAction2's own inference (its TSM K400 test pipeline: the 8 segments' centre frames, short
    side 256, ten crops of 224, softmax averaged) on the committed clip vs `tempo.demo views=test` with the
    converted checkpoint (zoo entry: test_views=1x10)."""
    data = fixture("mmaction2_tsm_r50_1x1x8_k400")
    release = save_release(data, tmp_path / "tsm.pth")
    out = convert(convert_cfg(tmp_path, "zoo=mmaction2_tsm_r50_1x1x8_k400", f"checkpoint={release}",
                              f"out={tmp_path / 'tsm.ckpt'}"))
    overrides = [f"ckpt_path={out}", f"video={FIXTURES / data['demo']['clip']}", "views=test", "device=cpu"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tmp_path / 'demo'}", *overrides])
    top = demo(cfg, overrides=overrides)["top"]
    assert [t["index"] for t in top] == data["demo"]["top5"]
    assert [t["class"] for t in top][0] == KINETICS400[data["demo"]["top5"][0]]
    assert np.allclose([t["score"] for t in top], data["demo"]["scores"], atol=2e-3), \
        ([t["score"] for t in top], data["demo"]["scores"])
