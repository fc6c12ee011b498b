"""Data loaders: an exact-resume infinite training stream and a finite test loader.

Training stream. Position ``p = 0, 1, 2, ...`` of the *global* stream holds
record ``perm_e[p mod n]`` with ``e = p // n`` and ``perm_e`` a permutation
drawn from ``(SEED, e)``; its augmentation is seeded from ``(SEED, p)``.
Iteration ``i`` is positions ``[i*B, (i+1)*B)`` (``B = SOLVER.IMS_PER_BATCH``) and
rank ``r`` of ``W`` takes the ``r``-th contiguous slice of ``B/W`` of them. So a
batch depends only on ``(SEED, i)``: not on the number of workers, not on
whether the run was resumed (``start_iter``), and the global batch is the same
for any world size.
"""
from __future__ import annotations

import functools
import logging
import random
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from segkit.data.catalog import DataError, DatasetCatalog
from segkit.data.mapper import DatasetMapper, rgb_pixel_mean, stream_seed
from segkit.data.registration import register_datasets

__all__ = [
    "TrainingSampler", "InferenceSampler", "collate_batch", "get_dataset_records",
    "build_train_loader", "build_test_loader", "BadRecordLog", "seed_worker",
]

logger = logging.getLogger(__name__)
# How many following records a skipped bad record may be replaced by before giving up.
_MAX_REPLACEMENTS = 16


def _dist_info() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def get_dataset_records(cfg, names: Sequence[str]) -> List[dict]:
    """Records of several datasets, each tagged with its ``dataset_name``.

    The config's datasets are registered first (:func:`segkit.data.register_datasets`, a
    no-op after the entry point's :func:`segkit.data.setup_datasets`), so that a loader
    built straight from a config works too.
    """
    register_datasets(cfg)
    records = []
    for name in names:
        records.extend(dict(r, dataset_name=name) for r in DatasetCatalog.get(name, cfg.DATASETS.ROOT))
    return records


class TrainingSampler:
    """Infinite stream of ``(record_index, augmentation_seed)`` for one rank (see module doc)."""

    def __init__(self, size: int, batch_size: int, seed: int = 0, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if size <= 0:
            raise ValueError("TrainingSampler needs at least one record.")
        self.size, self.batch_size, self.seed = size, batch_size, int(seed)
        self.start_iter, self.rank, self.world_size, self.shuffle = start_iter, rank, world_size, shuffle
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch]).permutation(self.size)
            self._epoch = epoch
        return int(self._perm[offset])

    def batches(self) -> Iterator[List[Tuple[int, int]]]:
        """Per-rank batches of ``(index, seed)`` from ``start_iter`` on, forever."""
        b, global_b = self.batch_size, self.batch_size * self.world_size
        it = self.start_iter
        while True:
            first = it * global_b + self.rank * b
            yield [(self._index(p), stream_seed(self.seed, p)) for p in range(first, first + b)]
            it += 1

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        return self.batches()


class InferenceSampler:
    """Every record exactly once, split into contiguous shards across ranks."""

    def __init__(self, size: int, batch_size: int = 1, rank: int = 0, world_size: int = 1) -> None:
        per = -(-size // world_size)
        self.indices = list(range(min(size, rank * per), min(size, (rank + 1) * per)))
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[List[Tuple[int, None]]]:
        for s in range(0, len(self.indices), self.batch_size):
            yield [(i, None) for i in self.indices[s:s + self.batch_size]]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


class _MappedRecords(Dataset):
    """``(index, seed)`` -> mapped sample; bad records raise or (skip mode) are reported."""

    def __init__(self, records: List[dict], mapper: DatasetMapper, skip_bad: bool, replace_bad: bool) -> None:
        self.records, self.mapper = records, mapper
        self.skip_bad, self.replace_bad = skip_bad, replace_bad

    def __len__(self) -> int:
        return len(self.records)

    def _map(self, index: int, seed: Optional[int]) -> Dict[str, Any]:
        record = self.records[index]
        try:
            return self.mapper(record, seed)
        except DataError:
            raise
        except Exception as exc:
            # Name the file (a bare worker traceback would not). Not a DataError: a bug or
            # a bad transform config is never "skipped" as bad data.
            raise RuntimeError(f"{record.get('file_name')}: error while loading and transforming "
                               f"(mask {record.get('sem_seg_file_name')}): {exc!r}") from exc

    def __getitem__(self, item: Tuple[int, Optional[int]]) -> Dict[str, Any]:
        index, seed = item
        bad = []
        attempts = _MAX_REPLACEMENTS if self.replace_bad else 1
        for k in range(attempts):
            try:
                sample = self._map((index + k) % len(self.records), seed)
                sample["bad"] = bad
                return sample
            except DataError as exc:
                if not self.skip_bad:
                    raise
                bad.append((self.records[(index + k) % len(self.records)].get("file_name"), str(exc)))
        if self.replace_bad:
            raise DataError(f"{_MAX_REPLACEMENTS} consecutive bad records starting at record {index} "
                            f"({bad[0][0]}); last problem: {bad[-1][1]}")
        return {"bad": bad}


def _empty_batch_tensor(shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialised tensor; in a loader worker, allocated in shared memory.

    Batches leave workers through shared memory; allocating them there saves
    the copy that pickling a private tensor would make (as torch's default_collate does).
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    template = torch.empty(0, dtype=dtype)
    numel = int(np.prod(shape))
    storage = template._typed_storage()._new_shared(numel, device=template.device)
    return template.new(storage).view(shape)


def collate_batch(samples: List[Dict[str, Any]], ignore_value: int = 255,
                  pad_value: Sequence[float] = (0, 0, 0), size_divisibility: int = 0) -> Dict[str, Any]:
    """Pad samples to a common size (bottom/right) and stack.

    Returns:
        ``{"image": uint8 (N, 3, H, W), "sem_seg": int64 (N, H, W), "records": list[dict],
        "image_sizes": list[(h, w)] before padding, "bad": list[(file, problem)]}``; padded mask pixels hold ``ignore_value`` and
        padded image pixels ``pad_value`` (the pixel mean, so they normalise to ~0).
    """
    bad = [b for s in samples for b in s.get("bad", [])]
    samples = [s for s in samples if "image" in s]
    if not samples:
        return {"image": torch.zeros(0, 3, 0, 0, dtype=torch.uint8), "sem_seg": torch.zeros(0, 0, 0, dtype=torch.int64),
                "records": [], "image_sizes": [], "bad": bad}
    h = max(s["image"].shape[1] for s in samples)
    w = max(s["image"].shape[2] for s in samples)
    if size_divisibility > 1:
        h, w = (-(-h // size_divisibility) * size_divisibility, -(-w // size_divisibility) * size_divisibility)
    # numpy, not torch: small strided copies in torch's intra-op thread pool are
    # 10-20x slower on a busy machine, and collate runs once per batch.
    n = len(samples)
    # Several inputs stack their channels, several label sets their masks (DatasetMapper).
    c, lead = samples[0]["image"].shape[0], tuple(samples[0]["sem_seg"].shape[:-2])
    images_t = _empty_batch_tensor((n, c, h, w), torch.uint8)
    masks_t = _empty_batch_tensor((n,) + lead + (h, w), torch.int64)
    images, masks = images_t.numpy(), masks_t.numpy()
    for i, s in enumerate(samples):
        img, seg = s["image"].numpy(), s["sem_seg"].numpy()
        _, sh, sw = img.shape
        images[i, :, :sh, :sw] = img
        masks[i, ..., :sh, :sw] = seg
        if sh < h or sw < w:
            images[i, :, sh:, :] = np.asarray(pad_value).round().astype(np.uint8)[:, None, None]
            images[i, :, :sh, sw:] = np.asarray(pad_value).round().astype(np.uint8)[:, None, None]
            masks[i, ..., sh:, :] = ignore_value
            masks[i, ..., :sh, sw:] = ignore_value
    images, masks = images_t, masks_t
    sizes = [(int(s["image"].shape[1]), int(s["image"].shape[2])) for s in samples]
    return {"image": images, "sem_seg": masks, "records": [s["record"] for s in samples], "image_sizes": sizes, "bad": bad}


class BadRecordLog:
    """Counts and reports records skipped under ``DATASETS.SKIP_BAD_RECORDS``."""

    def __init__(self) -> None:
        self.problems: Dict[str, str] = {}
        self.counts: Counter = Counter()

    def add(self, bad: Sequence[Tuple[str, str]]) -> None:
        for file_name, problem in bad:
            if file_name not in self.problems:
                logger.warning("Skipping bad record: %s", problem)
                self.problems[file_name] = problem
            self.counts[file_name] += 1

    @property
    def num_skipped(self) -> int:
        """How many times a bad record was skipped (a record can recur every epoch)."""
        return sum(self.counts.values())

    def report(self) -> str:
        """A summary, also logged; empty string when nothing was skipped."""
        if not self.problems:
            return ""
        lines = [f"{len(self.problems)} bad record(s) skipped {self.num_skipped} time(s):"]
        lines += [f"  {p}" for p in self.problems.values()]
        text = "\n".join(lines)
        logger.warning(text)
        return text


class _Loader:
    """Iterates a DataLoader, strips the ``bad`` entries into a :class:`BadRecordLog`."""

    def __init__(self, loader: DataLoader, bad_log: BadRecordLog, finite: bool) -> None:
        self.loader, self.bad_records, self.finite = loader, bad_log, finite
        self.dataset = loader.dataset

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        iterator = iter(self.loader)
        try:
            for batch in iterator:
                self.bad_records.add(batch.pop("bad"))
                if batch["records"]:
                    yield batch
        except GeneratorExit:  # the consumer stopped early: let the workers finish politely, now
            _stop_workers(iterator, terminate=False)
            raise
        except BaseException:
            # A worker error (or Ctrl-C) ends the loader at once. Left to the garbage
            # collector, the abandoned iterator would keep its workers prefetching and
            # stall for up to 5 s per worker whenever it is finally collected.
            _stop_workers(iterator, terminate=True)
            raise
        if self.finite:
            self.bad_records.report()

    def __len__(self) -> int:
        if not self.finite:
            raise TypeError("The training loader is infinite.")
        return len(self.loader)


def _stop_workers(iterator, terminate: bool) -> None:
    """Shut down the worker processes of a DataLoader iterator (none in-process)."""
    if terminate:
        for worker in getattr(iterator, "_workers", ()):
            if worker.is_alive():
                worker.terminate()
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def seed_worker(worker_id: int, seed: int = 0, rank: int = 0) -> None:
    """Deterministic per-worker seeds from ``(seed, rank, worker_id)``.

    Samples are re-seeded from their stream position anyway; this covers user
    code running in a worker outside the mapper.
    """
    s = int(np.random.SeedSequence([seed & 0xFFFFFFFF, rank, worker_id]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _pad_value(cfg) -> List[float]:
    # Images are RGB; padding with the mean colour normalises to ~0 whatever order the weights expect.
    return rgb_pixel_mean(cfg.MODEL.PIXEL_MEAN, cfg.INPUT.FORMAT)


def _collate(cfg):
    return functools.partial(collate_batch, ignore_value=cfg.MODEL.IGNORE_VALUE, pad_value=_pad_value(cfg))


def build_train_loader(cfg, start_iter: int = 0, mapper: Optional[DatasetMapper] = None) -> _Loader:
    """Infinite loader of training batches from ``cfg.DATASETS.TRAIN``.

    Batches: ``{"image": uint8 (N, 3, H, W) RGB, "sem_seg": int64 (N, H, W)
    padded with MODEL.IGNORE_VALUE, "records": list[dict]}`` with ``N = IMS_PER_BATCH / world``.
    ``start_iter=k`` yields exactly the batches an uninterrupted stream yields from iteration k.
    """
    rank, world = _dist_info()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world} processes.")
    names = list(cfg.DATASETS.TRAIN)
    records = get_dataset_records(cfg, names)
    mapper = mapper or DatasetMapper(cfg, True, names)
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    sampler = TrainingSampler(len(records), cfg.SOLVER.IMS_PER_BATCH // world, seed, start_iter, rank, world)
    dataset = _MappedRecords(records, mapper, cfg.DATASETS.SKIP_BAD_RECORDS, replace_bad=True)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate(cfg),
                        num_workers=cfg.DATALOADER.NUM_WORKERS, worker_init_fn=functools.partial(seed_worker, seed=seed, rank=rank),
                        persistent_workers=False, prefetch_factor=4 if cfg.DATALOADER.NUM_WORKERS else None)
    return _Loader(loader, BadRecordLog(), finite=False)


def build_test_loader(cfg, dataset_name: str, batch_size: int = 1, mapper: Optional[DatasetMapper] = None) -> _Loader:
    """Finite loader over ``dataset_name`` at original size (no random transforms).

    With ``batch_size > 1`` images are padded bottom/right to the largest in the
    batch (mask padding = ignore); each record keeps its original ``height``/``width``.
    """
    rank, world = _dist_info()
    records = get_dataset_records(cfg, [dataset_name])
    mapper = mapper or DatasetMapper(cfg, False, [dataset_name])
    dataset = _MappedRecords(records, mapper, cfg.DATASETS.SKIP_BAD_RECORDS, replace_bad=False)
    sampler = InferenceSampler(len(records), batch_size, rank, world)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate(cfg),
                        num_workers=cfg.DATALOADER.NUM_WORKERS)
    return _Loader(loader, BadRecordLog(), finite=True)
