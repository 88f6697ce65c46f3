"""Training-loop overhead: one Lightning epoch vs a bare PyTorch loop, same model, same data.

Both run the same steps (forward, cross-entropy, backward, SGD step) over the same in-memory
batches; the Lightning side is a plain LightningModule on `lightning.Trainer` with the logging
and checkpointing switched off that would otherwise do I/O, and tempo's DataBottleneck callback
(on by default in tempo) attached. Prints the median epoch time of each and the ratio
(target ≤ 1.05×). `python benchmarks/bench_loop.py [--steps 40] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tempo.bottleneck import DataBottleneck


def make_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


class Plain(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.network = make_network()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.network(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def bare_epoch(loader) -> float:
    network = make_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    network.train()
    start = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def lightning_epoch(loader) -> float:
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[DataBottleneck()])
    module = Plain()
    timer = {}

    class EpochTimer(L.Callback):  # the epoch itself, not Trainer construction / setup
        def on_train_epoch_start(self, *args):
            timer["start"] = time.perf_counter()

        def on_train_epoch_end(self, *args):
            timer["end"] = time.perf_counter()

    trainer.callbacks.append(EpochTimer())
    trainer.fit(module, loader)
    return timer["end"] - timer["start"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = TensorDataset(torch.randn(args.steps * 16, 3, 32, 32), torch.randint(0, 10, (args.steps * 16,)))
    loader = DataLoader(data, batch_size=16, shuffle=False)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    bare, lightning = [], []
    for r in range(args.repeats):  # interleaved: the busy machine's load drifts alike for both
        for run, times in ((bare_epoch, bare), (lightning_epoch, lightning))[:: 1 if r % 2 == 0 else -1]:
            times.append(run(loader))
    b, lt = statistics.median(bare), statistics.median(lightning)
    print(f"{args.steps} steps of batch 16: bare PyTorch {b * 1e3:.0f} ms, Lightning {lt * 1e3:.0f} ms per epoch "
          f"(median of {args.repeats}); Lightning/bare = {lt / b:.3f}× (target ≤ 1.05×)")


if __name__ == "__main__":
    main()
