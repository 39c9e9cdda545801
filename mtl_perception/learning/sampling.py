"""Which samples a training step sees, and their augmentation, as a function of (seed, epoch) only.

Every random choice of the data pipeline is derived from the run's seed, the epoch and the sample index,
never from a generator that advances as batches are drawn. That is what makes three things hold without
saving any data-loader iterator state:

* ``--resume`` at an epoch boundary continues bit-exactly (the next epoch's order and augmentations only
  depend on the epoch number);
* the number of DataLoader workers does not change what is trained;
* N DistributedDataParallel processes with a per-process batch of B/N see, at every step, exactly the
  samples (with exactly the augmentations) that one process with batch B sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


class EpochShuffleSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` pairs: a permutation drawn from ``seed + epoch``, this rank's share.

    The permutation is the same on every rank; rank r takes positions r, r + N, r + 2N, ... (as
    ``DistributedSampler``), so with a per-rank batch of B/N the union over ranks of step k is positions
    [kB, (k+1)B) of the permutation, the batch one process with batch B takes. The epoch travels with the
    index to the dataset, so persistent DataLoader workers need no notification of a new epoch.
    ``steps`` (optional) caps an epoch at that many global batches of ``global_batch`` samples.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        steps: int | None = None,
    ) -> None:
        if num_samples < global_batch:
            raise ValueError(
                f"the training split has {num_samples} samples, fewer than one batch (--batch_size "
                f"{global_batch}); lower --batch_size or add data"
            )
        self.num_samples, self.seed, self.global_batch = num_samples, seed, global_batch
        self.rank, self.world_size = rank, world_size
        full_steps = num_samples // global_batch  # the incomplete last batch is dropped, as torchvision
        self.steps = min(full_steps, steps) if steps else full_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["num_samples"] != self.num_samples:
            raise ValueError(
                f"sampler state is for seed {state['seed']} and {state['num_samples']} samples, "
                f"this run has seed {self.seed} and {self.num_samples} samples"
            )
        self.epoch = int(state["epoch"])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)[: self.steps * self.global_batch]
        for index in order[self.rank :: self.world_size].tolist():
            yield self.epoch, index

    def __len__(self) -> int:
        return self.steps * self.global_batch // self.world_size


class SeededAugment(torch.utils.data.Dataset):
    """Wraps a ``CityscapesMultiTask`` so the augmentation of sample i in epoch e is drawn from
    ``numpy.random.default_rng([seed, e, i])``, whichever worker or process loads it.

    Indexed with the ``(epoch, index)`` pairs of ``EpochShuffleSampler``. The wrapped dataset's own
    transform is replaced by this wrapper's: its per-worker generator would make the draws depend on which
    worker got the sample.
    """

    def __init__(self, dataset, transform: Callable, *, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, int(seed)
        self._rng: np.random.Generator | None = None
        dataset.transform = self._apply

    def _apply(self, sample: dict, _worker_rng: np.random.Generator) -> dict:
        return self.transform(sample, self._rng)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        self._rng = np.random.default_rng([self.seed, epoch, index])
        return self.dataset[index]
