"""DataBottleneck: the wait fraction comes from the hooks' timestamps (a fake clock), warns once."""

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tempo.run.bottleneck import DataBottleneck
from tempo.run.build import build_callbacks
from tests.conftest import compose_config


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowDataset(Dataset):
    """Each item "takes" `cost` seconds of the fake clock."""

    def __init__(self, clock: FakeClock, cost: float, n: int = 8):
        self.clock, self.cost, self.n = clock, cost, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.clock.now += self.cost
        return {"video": torch.randn(3, 2, 4, 4), "label": torch.tensor(i % 2)}


class TinyModule(L.LightningModule):
    """A training step that "takes" `cost` seconds of the fake clock."""

    def __init__(self, clock: FakeClock, cost: float):
        super().__init__()
        self.clock, self.cost = clock, cost
        self.fc = torch.nn.Linear(96, 2)

    def training_step(self, batch, batch_idx):
        self.clock.now += self.cost
        return torch.nn.functional.cross_entropy(self.fc(batch["video"].flatten(1)), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, item_cost: float, step_cost: float, epochs: int = 2):
    clock = FakeClock()
    callback = DataBottleneck(warn_above=0.3, skip_first=1, clock=clock)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[callback])
    loader = DataLoader(SlowDataset(clock, item_cost), batch_size=2, num_workers=0)
    trainer.fit(TinyModule(clock, step_cost), loader)
    return trainer, callback


def test_starved_loader_fraction_from_hook_timestamps_and_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tempo.run.bottleneck"):
        trainer, callback = fit(tmp_path, item_cost=1.0, step_cost=0.5)
    # each step: 2 items × 1.0 s of loading, 0.5 s of compute → 2 / 2.5 waiting
    assert callback.step_fractions == pytest.approx([0.8] * 3)  # 4 steps, the first left out
    assert trainer.callback_metrics["data/wait_fraction"].item() == pytest.approx(0.8)
    assert trainer.callback_metrics["data/clips_per_s"].item() == pytest.approx(6 / 7.5)
    warnings = [r.getMessage() for r in caplog.records if "starves" in r.getMessage()]
    assert len(warnings) == 1  # two starved epochs, one warning
    assert "dataset.num_workers" in warnings[0] and "tempo.prepare" in warnings[0] and "80%" in warnings[0]


def test_fast_loader_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tempo.run.bottleneck"):
        trainer, callback = fit(tmp_path, item_cost=0.01, step_cost=1.0, epochs=1)
    assert trainer.callback_metrics["data/wait_fraction"].item() == pytest.approx(0.02 / 1.02)
    assert not [r for r in caplog.records if "starves" in r.getMessage()]


def test_on_by_default_and_checked(tmp_path):
    cfg = compose_config(["callbacks=default"], tmp_path)
    assert any(isinstance(c, DataBottleneck) for c in build_callbacks(cfg, has_logger=True))
    with pytest.raises(ValueError, match="warn_above"):
        DataBottleneck(warn_above=0)
