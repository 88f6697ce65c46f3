"""Using released weights: fine-tuning from a released file (`model.network.init_checkpoint`), weight files
without BatchNorm counters (`backbone.pretrained`), evaluating with another class order, the ten-crop view,
ResNet3d's pool after res2 and the shipped Kinetics-400 class names."""

from __future__ import annotations

import random

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tempo.data.transforms import TenCrop
from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.zoo import tsm_official
from tempo.models.zoo.classes import KINETICS400
from tempo.models.zoo.finetune import init_from_released
from tempo.models.zoo.reading import CheckpointError
from tempo.run.released import convert
from tempo.run.restore import ReindexedClasses, match_classes
from tempo.train import run as train
from tests.conftest import CONF_DIR, evaluate
from tests.zoo_releases import convert_cfg, fixture, save_release
from tests.zoo_weights import seeded_state


def network(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return instantiate(cfg.model.network)


@pytest.mark.slow
def test_tcm_fine_tunes_from_the_official_tsm_kinetics_release(tmp_path, caplog, one_thread):
    release = save_release(fixture("tsm_k400_r50_8f"), tmp_path / "TSM_kinetics.pth", bn_counters=False)
    source = seeded_state(fixture("tsm_k400_r50_8f")["keys"], 30)
    with caplog.at_level("INFO"):
        net = network("model=tcm", "backbone=resnet50", "dataset.num_classes=101",
                      f"model.network.init_checkpoint={release}")
    state = net.state_dict()
    assert torch.equal(state["backbone.layer1.0.conv1.weight"], source["module.base_model.layer1.0.conv1.net.weight"])
    assert torch.equal(state["backbone.layer4.2.bn3.running_var"], source["module.base_model.layer4.2.bn3.running_var"])
    assert state["fc.weight"].shape == (101, 2048)
    report = caplog.text
    assert "initialised backbone (265 tensors)" in report  # all 267 file tensors (no BN counters) but new_fc
    assert "starting fresh backbone.after_stage.2" in report and "fc (2 tensors)" in report
    # one SGD step: the fresh TCM block and classifier learn
    net.train()
    video = torch.randn(1, 3, 8, 64, 64)
    loss = torch.nn.functional.cross_entropy(net(video)["logits"], torch.tensor([3]))
    loss.backward()
    fresh = {n: p for n, p in net.named_parameters() if n.startswith(("backbone.after_stage.2.", "fc."))}
    assert fresh and all(p.grad is not None and p.grad.abs().sum() > 0 for p in fresh.values()), \
        [n for n, p in fresh.items() if p.grad is None or not p.grad.abs().sum()]


@pytest.mark.slow
@pytest.mark.parametrize("converted", [False, True])
def test_tpn_fine_tunes_its_backbone_from_a_slowonly_release(converted, tmp_path, caplog):
    """The released file itself, or its `tempo.convert` output."""
    data = fixture("mmaction2_slowonly_r50_8x8_k400")
    release = save_release(data, tmp_path / "slowonly.pth")
    if converted:
        release = convert(convert_cfg(tmp_path, "zoo=mmaction2_slowonly_r50_8x8_k400", f"checkpoint={release}",
                                      f"out={tmp_path / 'slowonly.ckpt'}"))
    with caplog.at_level("INFO"):
        net = network("model=tpn", "backbone=resnet3d50", "dataset.num_classes=51", "model.network.levels=[4,5]",
                      f"model.network.init_checkpoint={release}")
    source = seeded_state(data["keys"], data["seed"])
    assert torch.equal(net.state_dict()["backbone.layer3.5.conv1.weight"],
                       source["backbone.layer3.5.conv1.conv.weight"])
    assert "initialised backbone (265 tensors)" in caplog.text
    assert "starting fresh" in caplog.text and "pyramid.spatial_modulation" in caplog.text


def test_a_release_that_does_not_fit_the_backbone_is_an_error(tmp_path):
    release = save_release(fixture("tsm_k400_r50_8f"), tmp_path / "tsm.pth")
    with pytest.raises(Exception, match="does not fit this network's backbone: 60 shape mismatches"):  # Hydra wraps it
        network("model=tsm", "backbone=resnet_tiny", f"model.network.init_checkpoint={release}")
    net = network("model=tsm", "backbone=resnet50")
    state = seeded_state(fixture("tsm_k400_r50_8f")["keys"], 0)
    del state["module.base_model.layer2.1.conv2.weight"]
    with pytest.raises(CheckpointError, match="1 backbone tensors missing .*layer2.1.conv2.weight"):
        init_from_released(net, state, tsm_official, "tsm.pth")


@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet3d_tiny"])
def test_pretrained_files_without_bn_counters_load(backbone, tmp_path):
    """Files saved before PyTorch 0.4.1 (torchvision's classic ImageNet ResNets) have no num_batches_tracked."""
    donor = network(f"backbone={backbone}", "model=tsn" if backbone == "resnet_tiny" else "model=i3d").backbone
    path = tmp_path / "old.pth"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in donor.state_dict().items()
                if not k.endswith("num_batches_tracked")}, path)
    net = network(f"backbone={backbone}", "model=tsn" if backbone == "resnet_tiny" else "model=i3d",
                  f"backbone.pretrained={path}")
    assert torch.equal(net.backbone.conv1.weight, donor.conv1.weight + 1)
    assert int(net.backbone.bn1.num_batches_tracked) == 0


@pytest.fixture
def tiny_checkpoint(tiny_cfg, one_thread) -> str:
    return train(tiny_cfg("model=tcm", "run_test=false"))["checkpoints"]["last"]


def test_shuffled_class_order_is_reindexed_and_scored_the_same(tiny_checkpoint, tmp_path, synthetic_cache):
    reference = evaluate(tmp_path / "ref", synthetic_cache, f"ckpt_path={tiny_checkpoint}")["test"]
    saved = torch.load(tiny_checkpoint, weights_only=True)
    names = saved["tempo"]["class_names"]
    order = list(range(len(names)))
    random.Random(0).shuffle(order)
    # the same network with its classes in another order: classifier rows and names permuted alike
    for key in ("network.fc.weight", "network.fc.bias"):
        saved["state_dict"][key] = saved["state_dict"][key][order]
    saved["tempo"]["class_names"] = [names[i] for i in order]
    shuffled = tmp_path / "shuffled.ckpt"
    torch.save(saved, shuffled)
    result = evaluate(tmp_path / "shuffled", synthetic_cache, f"ckpt_path={shuffled}")["test"]
    assert result["top1"] == reference["top1"] and result["per_class"] == reference["per_class"]
    saved["tempo"]["class_names"] = ["other"] + names[1:]
    torch.save(saved, shuffled)
    with pytest.raises(Exception, match=r"1 only in the dataset \['" + names[0]):
        evaluate(tmp_path / "other", synthetic_cache, f"ckpt_path={shuffled}")


def test_reindexed_classes_permute_every_score_output():
    class Two(torch.nn.Module):
        def forward(self, video):
            return {"logits": torch.tensor([[0.0, 1.0, 2.0]]), "aux_logits": torch.tensor([[5.0, 6.0, 7.0]]),
                    "features": torch.ones(1, 4)}

    module = torch.nn.Module()
    module.network = Two()
    assert match_classes(module, ["a", "b", "c"], ["c", "a", "b"], "x") == ["c", "a", "b"]
    out = module.network(None)
    assert isinstance(module.network, ReindexedClasses)
    assert out["logits"].tolist() == [[2.0, 0.0, 1.0]] and out["aux_logits"].tolist() == [[7.0, 5.0, 6.0]]
    assert out["features"].shape == (1, 4)


def test_ten_crop_views_match_mmaction2_offsets():
    video = torch.arange(2 * 1 * 3 * 9 * 13, dtype=torch.float32).view(1, 2, 3, 9, 13)  # (V, T, C, H, W)
    views = TenCrop(5)({"video": video})["video"]
    assert views.shape == (10, 2, 3, 5, 5)
    # quarter steps (9-5)//4 = 1, (13-5)//4 = 2: corners at 0 / 4 and 0 / 8, centre at (2, 4)
    tops_lefts = [(0, 0), (0, 8), (4, 0), (4, 8), (2, 4)]
    for i, (t, l) in enumerate(tops_lefts):
        assert torch.equal(views[i], video[0, :, :, t:t + 5, l:l + 5])
        assert torch.equal(views[5 + i], video[0, :, :, t:t + 5, l:l + 5].flip(-1))


def test_pool_after_res2_halves_time_from_res3_on():
    x = torch.randn(1, 3, 8, 32, 32)
    kw = dict(layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], stem={"width": 8})
    plain, pooled = ResNet3d(**kw), ResNet3d(**kw, pool_after_res2=True)
    pooled.load_state_dict(plain.state_dict())
    assert [s.shape[2] for s in plain.forward_stages(x)] == [8, 8, 8, 8]
    assert [s.shape[2] for s in pooled.forward_stages(x)] == [4, 4, 4, 4]
    res2 = plain.layer1(plain.stem(x))
    assert torch.allclose(pooled.forward_stages(x)[1], plain.layer2(torch.nn.functional.max_pool3d(res2, (2, 1, 1))))


def test_kinetics400_names_are_the_400_sorted_categories():
    assert len(KINETICS400) == 400 == len(set(KINETICS400))
    assert list(KINETICS400) == sorted(KINETICS400)  # the order tempo's k400 reader gives the train CSV's names
    assert KINETICS400[0] == "abseiling" and KINETICS400[399] == "zumba"
    assert KINETICS400[208] == "passing American football (in game)"


def test_demo_test_views_read_the_protocols_views(tmp_path):
    from tempo.demo import read_clip
    from tests.video_files import moving_square

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = compose("train", overrides=["test_views=1x10", "dataset.input_size=32"])
    clip = moving_square(tmp_path / "clip.mp4", size=48)
    val, test = read_clip(config, str(clip)), read_clip(config, str(clip), "test")
    assert test.shape[0] == 10 and test.shape[1:] == val.shape  # ten crops of the validation clip's size
    assert torch.equal(test[5], test[0].flip(-1))  # top-left crop, flipped
    with pytest.raises(Exception, match="views must be one of"):
        read_clip(config, str(clip), "all")


@pytest.mark.slow
def test_tdpn_fine_tunes_its_trunk_from_a_slowonly_release(tmp_path, caplog, one_thread):
    """TDPN's res5 spatial convs are MHSA (with fresh BNs): the release's res5 3×3 kernels and BNs are not used,
    every other trunk tensor is; the TDPN modules start fresh and learn."""
    data = fixture("mmaction2_slowonly_r50_8x8_k400")
    release = save_release(data, tmp_path / "slowonly.pth")
    with caplog.at_level("INFO"):
        net = network("model=tdpn", "backbone=resnet3d50", "dataset.num_classes=51", "dataset.input_size=64",
                      "model.network.local_variant=light", f"model.network.init_checkpoint={release}")
    source = seeded_state(data["keys"], data["seed"])
    state = net.state_dict()
    assert torch.equal(state["backbone.layer3.5.conv1.weight"], source["backbone.layer3.5.conv1.conv.weight"])
    assert torch.equal(state["backbone.layer4.0.conv3.weight"], source["backbone.layer4.0.conv3.conv.weight"])
    assert not torch.equal(state["backbone.layer4.0.bn2.running_var"], source["backbone.layer4.0.conv2.bn.running_var"])
    assert "not used backbone" in caplog.text and "starting fresh" in caplog.text and "pyramid" in caplog.text
    # one step: the fresh MHSA of res5 and the classifier receive gradient
    net.train()
    logits = net(torch.randn(1, 3, 8, 64, 64))["logits"]
    torch.nn.functional.cross_entropy(logits, torch.tensor([3])).backward()
    fresh = {n: p for n, p in net.named_parameters() if n.startswith(("backbone.layer4.0.conv2.", "fc."))}
    assert fresh and all(p.grad is not None and p.grad.abs().sum() > 0 for p in fresh.values()), \
        [n for n, p in fresh.items() if p.grad is None or not p.grad.abs().sum()]
