"""Three-branch sparse-attention T-CNN (spec C, E11; tempo/models/tcnn_sparse.py): outputs and loss terms per
branch set, one shared T-CNN, gradients, initialisation from a T-CNN checkpoint, configs and recipes, the
attention PNG strips of `tempo.evaluate`, and tiny CLI runs (training, the branch sweep)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from tempo.analysis.visualize import GAP
from tempo.evaluate import run as evaluate
from tempo.models.blocks.sparse_attention import SparseSpatialAttention
from tempo.models.tcnn import TCNN, TCNNBackbone
from tempo.models.tcnn_sparse import TCNNSparse
from tempo.run.build import build_module
from tempo.run.losses import MultiTermLoss
from tempo.run.module import param_groups
from tempo.train import run as train
from tests.conftest import CONF_DIR, TINY, assert_counted_accuracy, compose_config, train_cli

# tiny CPU models: one intra-op thread is far faster on the shared, busy machine
pytestmark = pytest.mark.usefixtures("one_thread")

TINY_WIDTHS = [4, 8, 8, 8, 12, 12, 16]
TINY_BACKBONE = "backbone@model.network.backbone=tcnn_tiny"  # the T-CNN models' own backbone entry
TCNN_TINY = [o for o in TINY if not o.startswith("backbone=")] + [TINY_BACKBONE, "dataset.num_segments=8"]
UNTRAINED_CRM = "model.network.allow_untrained_crm=true"  # tiny runs have no T-CNN checkpoint to start from
SPARSE_TINY = [*TCNN_TINY, "model=tcnn_sparse", UNTRAINED_CRM]
BRANCH_SETS = {"O": 1, "OD": 3, "OC": 3, "CD": 3, "OCD": 4}  # CE terms of Eq. 8
NAMES = {"O": "original", "D": "discriminative", "C": "complementary"}


def tiny_model(branches: str = "OCD", heads: str = "shared", num_classes: int = 5, **kwargs) -> TCNNSparse:
    torch.manual_seed(0)
    kwargs.setdefault("allow_untrained_crm", True)
    return TCNNSparse(num_classes, TCNNBackbone(TINY_WIDTHS), branches=branches, branch_heads=heads, **kwargs)


def paper_loss() -> MultiTermLoss:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["model=tcnn_sparse"])
    return instantiate(cfg.model.loss)


@pytest.mark.parametrize("branches", sorted(BRANCH_SETS))
def test_outputs_and_loss_terms_per_branch_set(branches):
    net = tiny_model(branches)
    video, labels = torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 3])
    for mode in ("train", "eval"):
        getattr(net, mode)()
        out = net(video)
        assert out["logits"].shape == (2, 5)
        active = [NAMES[b] for b in "ODC" if b in branches]
        if branches == "O":
            assert set(out) == {"logits"}
        else:
            assert list(out["branch_logits"]) == active  # in eval too (per-branch accuracy)
            assert all(v.shape == (2, 5) for v in out["branch_logits"].values())
    terms = paper_loss()(net.train()(video), labels)
    ce_terms = [k for k in terms if k != "loss"]
    assert len(ce_terms) == BRANCH_SETS[branches], ce_terms
    torch.testing.assert_close(terms["loss"], sum(terms[k] for k in ce_terms))
    if branches == "O":
        assert net.fc_fuse is None and net.attention is None
    else:
        assert net.fc_fuse.in_features == 16 * len(branches)


def test_fusion_layer_at_paper_width():
    with torch.device("meta"):
        net = TCNNSparse(101, allow_untrained_crm=True)
    assert net.fc_fuse.in_features == 1536
    assert sum(p.numel() for p in net.fc_fuse.parameters()) == 155_237
    assert sum(p.numel() for p in net.parameters()) == 2_457_797 + 155_237 + 2  # + β1, β2


def test_shapes_of_the_zoomed_clips_at_paper_size():
    with torch.device("meta"):
        net = TCNNSparse(101, allow_untrained_crm=True).eval()
        video = torch.empty(2, 3, 16, 224, 224)
    pooled, features = net.pooled(video)
    assert tuple(features.shape) == (2, 512, 16, 14, 14)


def test_the_three_branches_share_one_tcnn_and_one_head():
    net = tiny_model("OCD").eval()
    calls = []
    net.backbone.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    video = torch.randn(2, 3, 8, 32, 32)
    out, attention = net.forward_with_attention(video)
    assert calls == [2, 4]  # V_o, then V_dis and V_com in one batched call
    assert sum(isinstance(m, TCNNBackbone) for m in net.modules()) == 1
    assert all(net.head(n) is net.fc for n in NAMES.values())
    with torch.no_grad():  # eval: dropout off, so each branch's logits are fc(GAP(T-CNN(its clip)))
        for name, clip in (("original", video), ("discriminative", attention["discriminative"]),
                           ("complementary", attention["complementary"])):
            torch.testing.assert_close(out["branch_logits"][name], net.fc(net.pooled(clip)[0]))
        pooled = [net.pooled(c)[0] for c in (video, attention["discriminative"], attention["complementary"])]
        torch.testing.assert_close(out["logits"], net.fc_fuse(torch.cat(pooled, 1)))


def test_separate_heads_start_as_copies_of_the_shared_one():
    net = tiny_model("OCD", "separate")
    assert set(net.branch_fc) == {"discriminative", "complementary"}
    assert net.head("discriminative") is not net.fc and net.head("original") is net.fc
    for head in net.branch_fc.values():
        assert torch.equal(head.weight, net.fc.weight)
    assert not tiny_model("CD", "separate").fc.weight.requires_grad  # only the CRMs read it


@pytest.mark.parametrize(("branches", "heads"), [(b, "shared") for b in BRANCH_SETS] + [("OCD", "separate"),
                                                                                        ("CD", "separate")])
def test_every_parameter_gets_a_gradient_after_one_step(branches, heads):
    net = tiny_model(branches, heads).train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    terms = paper_loss()(net(torch.randn(3, 3, 8, 32, 32)), torch.tensor([0, 1, 2]))
    terms["loss"].backward()
    dead = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not dead
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert ("attention.saliency.beta1" in trained) == ("D" in branches)
    assert ("attention.saliency.beta2" in trained) == ("C" in branches)
    opt.step()


def test_without_the_original_branch_its_pass_only_supplies_features():
    net = tiny_model("CD").train()
    outputs = []
    net.backbone.register_forward_hook(lambda m, args, out: outputs.append(out))
    out = net(torch.randn(2, 3, 8, 32, 32))
    assert not outputs[0].requires_grad and outputs[1].requires_grad  # [D15]: O under no_grad
    assert list(out["branch_logits"]) == ["discriminative", "complementary"]


def test_branch_sets_and_heads_are_checked():
    for bad in ("D", "C", "OX", "OO", ""):
        with pytest.raises(ValueError, match="branches must be one of"):
            tiny_model(bad)
    assert tiny_model("DC").branches == tiny_model("CD").branches == "DC"
    assert tiny_model("DCO").branches == "ODC"
    with pytest.raises(ValueError, match="branch_heads"):
        tiny_model("OD", "per_branch")


def test_betas_are_kept_out_of_weight_decay_by_name():
    net = tiny_model("OCD")
    names = {n for n, _ in net.named_parameters()}
    assert net.no_weight_decay() == {"attention.saliency.beta1", "attention.saliency.beta2"} <= names
    assert tiny_model("OD").no_weight_decay() == {"attention.saliency.beta1"}
    assert tiny_model("O").no_weight_decay() == set()
    # RecognitionModule's parameter groups honour it: β1, β2 get no weight decay
    groups = param_groups(net, weight_decay=4e-5)
    betas = {id(net.attention.saliency.beta1), id(net.attention.saliency.beta2)}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if ids & betas:
            assert betas <= ids and group["weight_decay"] == 0.0, group["name"]
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not decayed & betas and id(net.fc.weight) in decayed


def save_tcnn(tmp_path: Path, num_classes: int = 5, widths=TINY_WIDTHS) -> tuple[TCNN, Path]:
    torch.manual_seed(3)
    source = TCNN(num_classes, TCNNBackbone(widths))
    path = tmp_path / "tcnn.ckpt"
    torch.save({"state_dict": {f"network.{k}": v for k, v in source.state_dict().items()}}, path)
    return source, path


def test_init_from_a_tcnn_checkpoint_loads_backbone_and_classifier(tmp_path):
    source, path = save_tcnn(tmp_path)
    net = tiny_model("OCD", "separate", init_checkpoint=str(path))
    own = net.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(own[key], value), key
    assert torch.equal(net.branch_fc["discriminative"].weight, source.fc.weight)
    # another class count: backbone only
    other = tiny_model("OCD", num_classes=7, init_checkpoint=str(path), init_classifier=False)
    assert torch.equal(other.backbone.stages[6][3].pointwise.weight, source.backbone.stages[6][3].pointwise.weight)
    with pytest.raises(ValueError, match="does not fit"):
        tiny_model("OCD", num_classes=7, init_checkpoint=str(path))
    _, wide = save_tcnn(tmp_path, widths=[4, 8, 8, 8, 12, 12, 24])
    with pytest.raises(ValueError, match="does not fit"):
        tiny_model("OCD", init_checkpoint=str(wide))
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        tiny_model("OCD", init_checkpoint=str(tmp_path / "missing.ckpt"))


OPTION_OVERRIDES = [
    [], ["model.network.branches=O"], ["model.network.branches=OD"], ["model.network.branches=OC"],
    ["model.network.branches=CD"], ["model.network.branch_heads=separate"],
    ["model.network.attention.split.eval_split=extreme"], ["model.network.attention.split.eval_split=random"],
    ["model.network.attention.split.warmup_all_peaks_iters=10"],
    ["model.network.attention.peaks.entropy=normalized", "model.network.attention.peaks.delta=0.124"],
    ["model.network.attention.peaks.grid_size=21"],
    ["model.network.backbone.residual=false"],
]


@pytest.mark.parametrize("overrides", OPTION_OVERRIDES, ids=lambda o: " ".join(o) or "defaults")
def test_every_config_option_builds_and_runs(tiny_cfg, overrides):
    cfg = tiny_cfg("model=tcnn_sparse", UNTRAINED_CRM, TINY_BACKBONE, "dataset.num_segments=8", *overrides)
    module = build_module(cfg)
    net = module.network.eval()
    assert isinstance(net, TCNNSparse)
    if net.attention is not None:
        assert isinstance(net.attention, SparseSpatialAttention)
        grid = cfg.model.network.attention.peaks.grid_size
        assert net.attention.zoom.grid_size == net.attention.peaks.grid_size == grid
    with torch.no_grad():
        out = net(torch.randn(2, 3, 8, 28, 28))
    assert out["logits"].shape == (2, 8) and torch.isfinite(out["logits"]).all()


def test_default_config_matches_the_spec(tiny_cfg):
    cfg = tiny_cfg("model=tcnn_sparse")
    net, att = cfg.model.network, cfg.model.network.attention
    assert (net.branches, net.branch_heads, net.dropout, net.init_checkpoint, net.init_classifier) == (
        "OCD", "shared", 0.5, None, True)
    assert (att.peaks.grid_size, att.peaks.delta, att.peaks.entropy, att.peaks.window, att.peaks.max_peaks) == (
        31, 0.2, "raw", 3, 16)
    assert (att.split.eval_split, att.split.eval_phi, att.split.warmup_all_peaks_iters) == ("fixed", 0.5, 0)
    assert (att.saliency.beta1, att.saliency.beta2, att.saliency.base) == (0.08, 0.2, 0.09)
    assert (att.zoom.grid_size, att.zoom.pad, att.zoom.fwhm) == (31, 30, 13.0)
    loss = cfg.model.loss
    assert (loss._target_, dict(loss.weights), loss.branch_weight) == (
        "tempo.run.losses.MultiTermLoss", {"logits": 1.0}, 1.0)
    backbone = cfg.model.network.backbone
    assert backbone._target_ == "tempo.models.tcnn.TCNNBackbone" and backbone.residual and backbone.pretrained is None
    assert list(backbone.stage_strides) == [2, 2, 1, 2, 1, 2, 1] and backbone.widths[-1] == 512


RECIPES = {"tcnn_k400": ("tcnn", "k400"), "tcnn_ucf101": ("tcnn", "ucf101"), "tcnn_hmdb51": ("tcnn", "hmdb51"),
           "tcnn_sparse_ucf101": ("tcnn_sparse", "ucf101"), "tcnn_sparse_hmdb51": ("tcnn_sparse", "hmdb51"),
           "tcnn_sparse_ablation_branches": ("tcnn_sparse", "ucf101")}


def test_every_tcnn_experiment_is_tested():
    assert {p.stem for p in (Path(CONF_DIR) / "experiment").glob("tcnn_*.yaml")} == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_numbers(name, tmp_path):
    model, dataset = RECIPES[name]
    cfg = compose_config([f"experiment={name}"], tmp_path)
    assert cfg.model.network._target_ == f"tempo.models.{model}.{'TCNNSparse' if model == 'tcnn_sparse' else 'TCNN'}"
    assert cfg.model.network.backbone.widths[-1] == 512 and cfg.dataset.name == dataset
    data = cfg.dataset
    assert (data.num_segments, data.input_size, data.short_side, data.batch_size) == (16, 224, 224, 16)
    assert (data.test_views, data.test_clips) == ("10x3", 10)
    sampler = instantiate(data.datamodule.sampler)
    assert (type(sampler).__name__, sampler.clip_len, sampler.interval) == ("DenseSampler", 16, 1)
    train_t = [instantiate(t) for t in data.datamodule.train_transforms]
    assert [type(t).__name__ for t in train_t] == ["Resize", "RandomCrop", "HorizontalFlip"]
    assert train_t[0].size == (256, 342) and train_t[1].size == 224 and train_t[2].p == 0.5
    test_t = [instantiate(t) for t in data.datamodule.test_transforms]
    assert [type(t).__name__ for t in test_t] == ["ResizeShortSide", "ThreeCrop"] and test_t[0].size == 224
    opt = cfg.optimizer
    assert (opt._target_, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ("torch.optim.SGD", 0.1, 0.9,
                                                                                     False, 4e-5)
    assert cfg.module.reference_batch_size == 16 and cfg.model.network.dropout == 0.5
    assert cfg.schedule.factor._target_ == "tempo.run.schedules.Cosine"
    assert (cfg.schedule.factor.min_factor, cfg.schedule.warmup_epochs, cfg.schedule.interval) == (1e-3, 0, "step")
    assert cfg.trainer.max_epochs == 150
    start = ["model.network.init_checkpoint=null"] + ([UNTRAINED_CRM] if model == "tcnn_sparse" else [])
    module = build_module(compose_config([f"experiment={name}", "dataset=synthetic", TINY_BACKBONE, *start], tmp_path))
    assert module.network.fc.out_features == 8


def run_dir(name: str, tmp_path: Path) -> Path:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", f"paths.cache_dir={tmp_path}"],
                      return_hydra_config=True)
    return Path(cfg.hydra.run.dir)


def test_recipes_start_from_the_kinetics_tcnn(tmp_path, monkeypatch):
    """Tables 2 and 3 ("Pretraining dataset: Kinetics-400" for "T-CNN [12]" and "T-CNN + spatial"): tcnn_k400 trains
    the T-CNN on Kinetics-400 from scratch; tcnn_ucf101/hmdb51 start from its last checkpoint; the sparse recipes
    start from the same dataset's T-CNN (their classifier drives the class response maps, [D16])."""
    monkeypatch.setenv("TEMPO_PRETRAIN_DIR", str(tmp_path / "pre"))
    k400 = compose_config(["experiment=tcnn_k400"], tmp_path)
    assert (k400.dataset.name, k400.model.network._target_, k400.model.network.init_checkpoint) == (
        "k400", "tempo.models.tcnn.TCNN", None)
    assert run_dir("tcnn_k400", tmp_path) == tmp_path / "pre" / "tcnn_k400"
    for dataset in ("ucf101", "hmdb51"):
        tcnn = compose_config([f"experiment=tcnn_{dataset}"], tmp_path)
        assert Path(tcnn.model.network.init_checkpoint) == run_dir("tcnn_k400", tmp_path) / "checkpoints/last.ckpt"
        sparse = compose_config([f"experiment=tcnn_sparse_{dataset}", "dataset.split=2"], tmp_path)
        assert (sparse.model.network.init_checkpoint, sparse.model.network.allow_untrained_crm) == (
            str(tmp_path / "pre" / f"tcnn_{dataset}_split2" / "checkpoints/last.ckpt"), False)
        assert run_dir(f"tcnn_{dataset}", tmp_path) == tmp_path / "pre" / f"tcnn_{dataset}_split1"
    # without the Kinetics run, the UCF recipe fails at start-up naming the command that makes it
    with pytest.raises(Exception, match="experiment=tcnn_k400"):
        build_module(compose_config(["experiment=tcnn_ucf101", "dataset=synthetic", TINY_BACKBONE], tmp_path))


def test_sparse_model_without_a_trained_classifier_fails_at_start_up(tmp_path):
    """With no checkpoint the class response maps come from a random classifier: fail, naming the command that
    makes the checkpoint, unless model.network.allow_untrained_crm=true; O alone reads no CRM."""
    base = [*TCNN_TINY, "model=tcnn_sparse", "dataset=synthetic"]
    with pytest.raises(Exception, match=r"experiment=tcnn_ucf101.*allow_untrained_crm=true"):
        build_module(compose_config(base, tmp_path))
    _, path = save_tcnn(tmp_path)
    with pytest.raises(Exception, match="allow_untrained_crm"):  # backbone only: the classifier is still random
        build_module(compose_config([*base, f"model.network.init_checkpoint={path}",
                                     "model.network.init_classifier=false"], tmp_path))
    assert build_module(compose_config([*base, "model.network.branches=O"], tmp_path)).network.attention is None
    assert build_module(compose_config([*base, UNTRAINED_CRM], tmp_path)).network.branches == "ODC"
    net = build_module(compose_config([*base, f"model.network.init_checkpoint={path}",
                                       "dataset.num_classes=5"], tmp_path)).network
    assert net.branches == "ODC"
    with pytest.raises(FileNotFoundError, match="experiment=tcnn_ucf101"):
        tiny_model("OCD", init_checkpoint=str(tmp_path / "missing.ckpt"), allow_untrained_crm=False)


def test_branch_sweep_params():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tcnn_sparse_ablation_branches"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["model.network.branches"] == "O,OD,OC,CD,OCD"


def synthetic_sparse_run(tmp_path: Path, cache: Path, *overrides: str) -> dict:
    cfg = compose_config([*SPARSE_TINY, *overrides], tmp_path / "train", cache)
    return train(cfg)


@pytest.mark.slow
def test_evaluate_writes_attention_strips_of_decoded_clips(tmp_path, synthetic_cache, one_thread):
    summary = synthetic_sparse_run(tmp_path, synthetic_cache, "trainer.max_steps=1", "run_test=false")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            f"paths.output_dir={tmp_path / 'eval'}", f"paths.cache_dir={synthetic_cache}", *SPARSE_TINY,
            f"ckpt_path={summary['checkpoints']['last']}", "eval.save_attention=3",
            "eval.tempo_strides=[]", "eval.attention_frames=4", "eval.device=cpu"])
    assert set(evaluate(cfg)) == {"test"}  # the test protocol ran, no tempo-robustness curve
    pngs = sorted((tmp_path / "eval" / "attention").glob("*.png"))
    assert len(pngs) == 3
    size = 28  # dataset.input_size
    for png in pngs:
        image = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert image.shape == (4 * size + 3 * GAP, 3 * size + 2 * GAP, 3)  # 4 frames × 3 panels
        panels = [image[:size, c * (size + GAP):c * (size + GAP) + size] for c in range(3)]
        assert all(p.std() > 5 for p in panels)  # real frames, not blank
        # the discriminative zoom differs from the original frame (its centre is magnified)
        assert np.abs(panels[1] - panels[0]).mean() > 1
        # peaks are marked on the original frame: pure red / blue crosses
        assert ((image[..., 0] == 230) & (image[..., 1] == 30)).any()


def test_save_attention_needs_a_sparse_model(tmp_path, synthetic_cache, one_thread):
    summary = train(compose_config([*TCNN_TINY, "model=tcnn", "trainer.max_steps=1", "run_test=false"],
                                   tmp_path / "train", synthetic_cache))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            f"paths.output_dir={tmp_path / 'eval'}", f"paths.cache_dir={synthetic_cache}", *TCNN_TINY, "model=tcnn",
            f"ckpt_path={summary['checkpoints']['last']}", "eval.save_attention=1", "eval.tempo_strides=[]"])
    with pytest.raises(ValueError, match="model=tcnn_sparse"):
        evaluate(cfg)



@pytest.mark.slow
def test_cli_trains_the_sparse_model_and_logs_every_loss_term(tmp_path, synthetic_cache):
    run_dir = tmp_path / "run"
    res = train_cli([*SPARSE_TINY, "trainer.max_steps=2", "logger=csv",
                     "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1",
                f"paths.cache_dir={synthetic_cache}", f"hydra.run.dir={run_dir}"])
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "tempo.models.tcnn_sparse.TCNNSparse" and summary["global_step"] == 2
    assert_counted_accuracy(summary["test"], "test", videos=2 * 8)  # test = val: 2 videos × 8 classes
    with (run_dir / "csv" / "metrics.csv").open() as f:
        columns = set(next(csv.reader(f)))
    for term in ("ce", "ce_original", "ce_discriminative", "ce_complementary"):
        assert f"train/loss_{term}_step" in columns or f"train/loss_{term}_epoch" in columns, term


@pytest.mark.slow
def test_branch_sweep_runs_end_to_end_at_tiny_scale(tmp_path, synthetic_cache):
    sweep_dir = tmp_path / "sweep"
    res = train_cli(["experiment=tcnn_sparse_ablation_branches", "dataset=synthetic", *TCNN_TINY, UNTRAINED_CRM,
                "model.network.init_checkpoint=null",
                "dataset.input_size=28", "dataset.short_side=32", "dataset.batch_size=8",
                "dataset.datamodule.train_transforms.0.height=32", "dataset.datamodule.train_transforms.0.width=40",
                "test_views=1x1", "trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                f"paths.cache_dir={synthetic_cache}", f"hydra.sweep.dir={sweep_dir}"])
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name))
    branches = []
    for job in jobs:
        summary = json.loads(job.read_text())
        assert summary["model"] == "tempo.models.tcnn_sparse.TCNNSparse" and summary["global_step"] == 1
        assert "test/top1" in summary["test"]
        overrides = yaml.safe_load((job.parent / ".hydra" / "overrides.yaml").read_text())
        branches += [o.split("=", 1)[1] for o in overrides if o.startswith("model.network.branches=")]
        resolved = yaml.safe_load(Path(summary["config"]).read_text())
        assert resolved["optimizer"]["weight_decay"] == 4e-5 and resolved["dataset"]["name"] == "synthetic"
    assert branches == ["O", "OD", "OC", "CD", "OCD"]
