"""Test predictions under DDP: each process's share gathered, uneven shares included, in dataset order."""

from types import SimpleNamespace

import torch

from tempo.run.predictions import PredictionCollector, gather_uneven


def two_ranks(*peers: torch.Tensor):
    """A stand-in for `LightningModule.all_gather` on rank 0 of two processes whose rank 1 holds
    `peers` (one per gathered tensor, in call order): each gather is a count, then the padded data."""
    calls = []

    def all_gather(x):
        peer = peers[len(calls) // 2]
        if len(calls) % 2 == 0:
            other = torch.tensor([peer.shape[0]])
        else:
            other = torch.cat([peer, peer.new_zeros((x.shape[0] - peer.shape[0], *peer.shape[1:]))])
        calls.append(x)
        return torch.stack([x, other])

    return all_gather


def test_gather_uneven_keeps_each_share_once():
    mine, theirs = torch.arange(6.0).view(3, 2), torch.tensor([[9.0, 8.0]])
    torch.testing.assert_close(gather_uneven(mine, two_ranks(theirs)), torch.cat([mine, theirs]))
    torch.testing.assert_close(gather_uneven(theirs, two_ranks(mine)), torch.cat([theirs, mine]))


def test_collector_holds_every_process_share_in_dataset_order():
    collector = PredictionCollector()
    # rank 0 tested videos 0, 2, 4; rank 1 videos 1, 3 (an unrepeated sampler: no padded duplicate)
    scores = torch.eye(5)[[0, 2, 4]]
    batch = {"label": torch.tensor([0, 2, 4]), "index": torch.tensor([0, 2, 4]),
             "valid": torch.tensor([True, False, True])}
    collector.on_test_batch_end(None, None, {"scores": scores}, batch, 0)
    peers = (torch.eye(5)[[1, 3]], torch.tensor([1, 0]), torch.tensor([1, 3]), torch.tensor([1, 1], dtype=torch.uint8))
    module = SimpleNamespace(device=torch.device("cpu"), all_gather=two_ranks(*peers))
    collector.on_test_epoch_end(SimpleNamespace(world_size=2), module)
    result = collector.result()
    assert result["indices"].tolist() == [0, 1, 2, 3, 4]
    assert result["labels"].tolist() == [0, 1, 2, 0, 4]
    assert result["valid"].tolist() == [True, True, False, True, True]
    assert result["scores"].argmax(1).tolist() == [0, 1, 2, 3, 4]


def test_single_process_result_is_untouched():
    collector = PredictionCollector()
    batch = {"label": torch.tensor([1, 0]), "index": torch.tensor([5, 3])}
    collector.on_test_batch_end(None, None, {"scores": torch.eye(2)}, batch, 0)
    collector.on_test_epoch_end(SimpleNamespace(world_size=1), None)
    assert collector.result()["indices"].tolist() == [5, 3]


def test_a_process_without_test_videos_still_joins_the_gather():
    collector = PredictionCollector()
    peers = (torch.eye(3)[[2]], torch.tensor([2]), torch.tensor([0]), torch.tensor([1], dtype=torch.uint8))
    module = SimpleNamespace(device=torch.device("cpu"), all_gather=two_ranks(*peers), num_classes=3)
    collector.on_test_epoch_end(SimpleNamespace(world_size=2), module)
    result = collector.result()
    assert result["labels"].tolist() == [2] and result["scores"].shape == (1, 3)
