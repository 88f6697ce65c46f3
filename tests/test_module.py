"""`RecognitionModule` on its own: per-branch metrics, multi-view reduction and chunk order,
excluded samples, extra training outputs, optimiser parameter groups."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tempo.run.losses import MultiTermLoss
from tempo.run.param_groups import param_groups
from tempo.train import run
from tests.module_fixtures import K, LogitsInVideo, batch, batches, clips, make_module, one_hot, quiet_trainer


def test_branch_top1_logged_for_any_network(tmp_path):
    labels = [0, 1, 2, 1]
    loader = batches(batch(one_hot(labels), labels))
    metrics = quiet_trainer(tmp_path).validate(make_module(), dataloaders=loader, verbose=False)[0]
    assert metrics["val/top1"] == 1.0 and metrics["val/top1_same"] == 1.0
    assert metrics["val/top1_neg"] == 0.0  # −one-hot: the arg-max is another class
    module = make_module()
    quiet_trainer(tmp_path).validate(module, dataloaders=loader, verbose=False)
    # lazily created, registered metrics: they move with the module and sync over DDP
    assert {name for name, _ in module.named_modules()} >= {"val_branches.metrics.top1_neg",
                                                           "val_branches.metrics.top1_same"}


def test_network_without_branches_logs_no_branch_metric(tmp_path):
    class Plain(LogitsInVideo):
        def forward(self, video):
            return {"logits": super().forward(video)["logits"]}

    labels = [0, 1]
    loader = batches(batch(one_hot(labels), labels))
    metrics = quiet_trainer(tmp_path).validate(make_module(network=Plain()), dataloaders=loader, verbose=False)[0]
    assert not [k for k in metrics if k.startswith("val/top1_")]


@pytest.mark.parametrize("chunk", [1, 2, 4, 10])
def test_multi_view_chunks_keep_each_sample_s_views(chunk):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, K)  # (B, V, K): every view different
    module = make_module(test_chunk=chunk, test_reduce="prob")
    reduced = module.multi_view_scores(clips(logits))
    torch.testing.assert_close(reduced["logits"], logits.softmax(-1).mean(1))
    torch.testing.assert_close(reduced["neg"], (-logits).softmax(-1).mean(1))
    module.test_reduce = "score"
    torch.testing.assert_close(module.multi_view_scores(clips(logits))["logits"], logits.mean(1))


def test_prob_and_score_reduction_differ_where_they_should(tmp_path):
    # one confident view for class 0, two mild ones for class 1: mean logits say 0, mean
    # probabilities say 1
    views = torch.tensor([[[10.0, 0, 0], [0, 3, 0], [0, 3, 0]]])
    test = {"video": clips(views), "label": torch.tensor([0]), "index": torch.tensor([0])}
    results = {}
    for reduce in ("prob", "score"):
        module = make_module(test_reduce=reduce)
        results[reduce] = quiet_trainer(tmp_path).test(module, dataloaders=batches(test), verbose=False)[0]
    assert results["score"]["test/top1"] == 1.0 and results["prob"]["test/top1"] == 0.0
    assert results["score"]["test/top1_same"] == 1.0 and results["prob"]["test/top1_same"] == 0.0


def test_invalid_samples_are_excluded_and_counted(tmp_path):
    labels = [0, 1, 2, 0]
    scores = one_hot([0, 1, 0, 1])  # the two wrong predictions are the invalid samples
    valid = [True, True, False, False]
    loader = batches(batch(scores, labels, valid), batch(one_hot([2]), [2], [False]))
    module = make_module()
    metrics = quiet_trainer(tmp_path).validate(module, dataloaders=loader, verbose=False)[0]
    assert metrics["val/excluded"] == 3.0 and module.excluded["val"] == 3
    assert metrics["val/top1"] == 1.0 and metrics["val/top1_same"] == 1.0
    module_all = make_module()
    quiet_trainer(tmp_path).validate(module_all, dataloaders=batches(batch(scores, labels)), verbose=False)
    assert module_all.excluded["val"] == 0


def test_counts_come_from_the_loader_batch():
    module = make_module()
    out = module.on_before_batch_transfer({"video": torch.zeros(2), "failures": torch.tensor([0, 2]),
                                           "valid": torch.tensor([True, False])}, 0)
    assert out["num_failures"] == 2 and out["num_invalid"] == 1


def test_training_with_aux_regularizer_and_branch_outputs(tmp_path):
    labels = torch.tensor([0, 1, 2, 1])
    train = batches(*[batch(one_hot(labels, value=1.0), labels) for _ in range(3)])
    loss = MultiTermLoss(weights={"logits": 1.0, "aux_logits": 0.5}, branch_weight=0.3,
                         regularizer_weights={"l2": 0.01})
    module = make_module(loss=loss)
    before = module.network.scale.item()
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=train)
    assert trainer.global_step == 3 and module.network.scale.item() != before
    logged = trainer.callback_metrics
    assert {"train/loss", "train/loss_ce", "train/loss_aux", "train/loss_ce_same", "train/loss_l2"} <= set(logged)


def test_parameter_groups_split_decay_norm_and_bias():
    net = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Linear(4, 2))
    net[0].bias.requires_grad_(False)  # frozen parameters are left out
    groups = {g["name"]: g for g in param_groups(net, weight_decay=1e-4, bias_lr_mult=2.0)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["decay"] == {id(net[0].weight), id(net[2].weight)}
    assert ids["norm"] == {id(net[1].weight), id(net[1].bias)}
    assert ids["bias"] == {id(net[2].bias)}
    assert groups["decay"]["weight_decay"] == 1e-4
    assert groups["norm"]["weight_decay"] == groups["bias"]["weight_decay"] == 0.0
    assert groups["bias"]["lr_mult"] == 2.0 and groups["decay"]["lr_mult"] == 1.0
    decayed = {g["name"]: g["weight_decay"] for g in param_groups(net, 1e-4, no_decay_norm_bias=False)}
    assert decayed == {"decay": 1e-4, "norm": 1e-4, "bias": 1e-4}


def test_configure_optimizers_applies_groups_and_lr(tmp_path):
    net = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4, K))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = net

        def forward(self, video):
            return {"logits": self.body(video[:, :, :1, :1, :1])}

    module = make_module(network=Net(), optimizer=partial(torch.optim.SGD, lr=0.2, momentum=0.9,
                                                           weight_decay=1e-3), bias_lr_mult=2.0)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=batches(batch(one_hot([0, 1]), [0, 1])))
    optimizer = trainer.optimizers[0]
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["decay"]["lr"] == pytest.approx(0.2) and by_name["decay"]["weight_decay"] == 1e-3
    assert by_name["bias"]["lr"] == pytest.approx(0.4) and by_name["bias"]["weight_decay"] == 0.0
    assert by_name["norm"]["weight_decay"] == 0.0 and by_name["norm"]["momentum"] == 0.9
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.network.parameters()))


class TinyBranchNet(nn.Module):
    """A real (tiny) network with two branches, for the end-to-end run."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.mean_head = nn.Linear(3, num_classes)
        self.max_head = nn.Linear(3, num_classes)

    def forward(self, video):
        by_mean = self.mean_head(video.mean((2, 3, 4)))
        by_max = self.max_head(video.amax((2, 3, 4)))
        return {"logits": by_mean + by_max, "branch_logits": {"mean": by_mean, "max": by_max}}


def test_branch_metrics_reach_summary_and_csv(tiny_cfg):
    cfg = tiny_cfg("logger=csv", "trainer.max_epochs=1")
    cfg.model.network = OmegaConf.create({"_target_": "tests.test_module.TinyBranchNet",
                                          "num_classes": cfg.dataset.num_classes})
    summary = run(cfg)
    on_disk = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    for key in ("val/top1_mean", "val/top1_max"):
        assert on_disk["final"][key] == on_disk["history"][-1][key]  # the last epoch's value
        videos = 2 * cfg.dataset.num_classes  # counted per video: a multiple of 1 / (2 per class × K)
        assert on_disk["final"][key] * videos == pytest.approx(round(on_disk["final"][key] * videos), abs=1e-4)
    assert {"test/top1_mean", "test/top1_max"} <= set(summary["test"])
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert {"val/top1_mean", "val/top1_max", "test/top1_mean", "test/top1_max"} <= set(header)
