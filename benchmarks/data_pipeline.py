#!/usr/bin/env python
"""Training-loader throughput: segkit (OpenCV + albumentations) vs a PIL/torchvision pipeline.

Both pipelines read the same VOC-layout folder (JPEG images, palette-PNG masks),
apply the same DeepLab augmentation (random scale in [0.5, 1.5], pad with the
mean colour / ignore label, random crop, horizontal flip), collate to uint8
images and int64 masks, with the same number of workers and batch size, in the
same run. Repeats are interleaved (segkit, PIL, segkit, PIL, ...) so that load
from other processes hits both alike; medians are reported. Each repeat also
measures the CPU time one image costs each pipeline in a single thread
(``time.process_time``), which other processes' load barely affects.

The PIL pipeline is written in the style of torchvision's reference
segmentation transforms (``references/segmentation/transforms.py``: PIL images,
``torchvision.transforms.functional`` resize/pad/crop/flip, ``PILToTensor``).

Example::

    python benchmarks/data_pipeline.py --images 200 --batches 30 --repeats 3 --json out/data_pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

MEAN = (123.675, 116.28, 103.53)
IGNORE = 255


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="VOC-layout folder to read (default: generate one in a temp dir)")
    p.add_argument("--images", type=int, default=200, help="images to generate (VOC-like 500x375 JPEGs)")
    p.add_argument("--crop", type=int, default=321, help="DeepLab crop size (321 or 513)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=30, help="timed batches per repeat")
    p.add_argument("--warmup", type=int, default=4, help="untimed batches per repeat (worker start-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="", help="write the results here")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data
def make_voc_folder(root: str, n: int, seed: int = 0) -> str:
    """VOC-like data: 500x375 (or 375x500) photographs-like JPEGs and palette-PNG masks."""
    import cv2
    from PIL import Image

    from segkit.data.datasets.voc import voc_palette

    palette = bytes(c for rgb in voc_palette(256) for c in rgb)
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    ids = []
    for i in range(n):
        h, w = (375, 500) if i % 3 else (500, 375)
        low = cv2.resize(rng.uniform(0, 255, (6, 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(low + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)  # texture: realistic JPEG size
        mask = np.zeros((h, w), np.uint8)
        for _ in range(3):
            y, x = int(rng.integers(0, h - 60)), int(rng.integers(0, w - 60))
            cv2.ellipse(mask, (x + 30, y + 30), (int(rng.integers(20, 120)), int(rng.integers(20, 120))), 0, 0, 360,
                        int(rng.integers(1, 21)), -1)
        edges = cv2.Canny(mask, 0, 0) > 0
        mask[cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = IGNORE  # VOC's void band
        name = f"2012_{i:06d}"
        cv2.imwrite(os.path.join(voc, "JPEGImages", name + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        png = Image.fromarray(mask, mode="L").convert("P")
        png.putpalette(palette)
        png.save(os.path.join(voc, "SegmentationClass", name + ".png"))
        ids.append(name)
    with open(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return voc


# --------------------------------------------------------------------------- segkit
def segkit_loader(voc: str, args):
    from segkit.config import get_cfg
    from segkit.data import DatasetCatalog, build_train_loader
    from segkit.data.catalog import register_semseg
    from segkit.data.datasets.voc import VOC_CLASSES, load_voc_semseg, voc_palette

    if "bench_voc_train" not in DatasetCatalog:
        register_semseg("bench_voc_train", lambda root: load_voc_semseg(voc, "train"), VOC_CLASSES, voc_palette(21))
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("bench_voc_train",)
    cfg.MODEL.NUM_CLASSES = 21
    cfg.MODEL.PIXEL_MEAN = list(MEAN)
    cfg.SOLVER.IMS_PER_BATCH = args.batch_size
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.INPUT.TRAIN_TRANSFORMS = [
        {"NAME": "DeepLabRandomScaleCrop", "ARGS": {"crop_size": args.crop, "scale_range": [0.5, 1.5]}},
        {"NAME": "HorizontalFlip", "ARGS": {"p": 0.5}},
    ]
    return build_train_loader(cfg)


# --------------------------------------------------------------------------- PIL baseline
class PILDeepLabTransform:
    """Scale, pad, crop, flip on PIL images, as torchvision's reference segmentation transforms do."""

    def __init__(self, crop: int) -> None:
        self.crop = crop

    def __call__(self, image, target):
        import torch
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode, RandomCrop

        s = random.uniform(0.5, 1.5)
        size = [max(1, int(image.height * s + 0.5)), max(1, int(image.width * s + 0.5))]
        image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR)
        target = F.resize(target, size, interpolation=InterpolationMode.NEAREST)
        pad_h, pad_w = max(self.crop - size[0], 0), max(self.crop - size[1], 0)
        if pad_h or pad_w:  # bottom/right, mean colour for the image, ignore for the mask
            image = F.pad(image, [0, 0, pad_w, pad_h], fill=tuple(int(round(m)) for m in MEAN))
            target = F.pad(target, [0, 0, pad_w, pad_h], fill=IGNORE)
        i, j, h, w = RandomCrop.get_params(image, (self.crop, self.crop))
        image, target = F.crop(image, i, j, h, w), F.crop(target, i, j, h, w)
        if random.random() < 0.5:
            image, target = F.hflip(image), F.hflip(target)
        return F.pil_to_tensor(image), torch.as_tensor(np.array(target), dtype=torch.int64)


class PILSegDataset:
    def __init__(self, voc: str, crop: int) -> None:
        ids = open(os.path.join(voc, "ImageSets", "Segmentation", "train.txt")).read().split()
        self.items = [(os.path.join(voc, "JPEGImages", i + ".jpg"), os.path.join(voc, "SegmentationClass", i + ".png"))
                      for i in ids]
        self.transform = PILDeepLabTransform(crop)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        from PIL import Image

        img_path, mask_path = self.items[k]
        return self.transform(Image.open(img_path).convert("RGB"), Image.open(mask_path))


def pil_collate(batch):
    """Pad to the largest sample (ignore for masks), like the reference ``collate_fn``/``cat_list``."""
    import torch

    h = max(im.shape[1] for im, _ in batch)
    w = max(im.shape[2] for im, _ in batch)
    images = torch.zeros(len(batch), 3, h, w, dtype=torch.uint8)
    masks = torch.full((len(batch), h, w), IGNORE, dtype=torch.int64)
    for k, (im, m) in enumerate(batch):
        images[k, :, : im.shape[1], : im.shape[2]] = im
        masks[k, : m.shape[0], : m.shape[1]] = m
    return {"image": images, "sem_seg": masks}


def pil_loader(voc: str, args):
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    ds = PILSegDataset(voc, args.crop)
    sampler = RandomSampler(ds, replacement=True, num_samples=10 ** 9, generator=torch.Generator().manual_seed(0))
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      collate_fn=pil_collate, drop_last=True, prefetch_factor=4 if args.workers else None)


# --------------------------------------------------------------------------- timing
def _children_cpu_seconds() -> Dict[int, float]:
    """utime + stime of this process's live children (the loader workers), by pid (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        pids = [int(p) for t in os.listdir("/proc/self/task")
                for p in open(f"/proc/self/task/{t}/children").read().split()]
    except OSError:
        return out
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return out


def images_per_second(loader, args):
    """(images/s, worker CPU ms per image, main-process CPU ms per image) in steady state."""
    it = iter(loader)
    for _ in range(args.warmup):
        batch = next(it)
    workers0, main0 = _children_cpu_seconds(), time.process_time()
    start = time.perf_counter()
    n = 0
    for _ in range(args.batches):
        batch = next(it)
        n += batch["image"].shape[0]
    elapsed = time.perf_counter() - start
    workers1, main1 = _children_cpu_seconds(), time.process_time()
    worker_cpu = sum(workers1[p] - workers0[p] for p in workers1 if p in workers0)
    del it
    return n / elapsed, worker_cpu / n * 1e3, (main1 - main0) / n * 1e3


def cpu_ms_per_image(get_item, collate, n_images: int, batch_size: int) -> float:
    """CPU time (this process, one thread) to produce and collate one image: load-independent."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as inside DataLoader workers
    try:
        start = time.process_time()
        for b in range(0, n_images, batch_size):
            collate([get_item(k) for k in range(b, min(n_images, b + batch_size))])
        return (time.process_time() - start) / n_images * 1e3
    finally:
        torch.set_num_threads(threads)


def cpu_costs(voc: str, args) -> Dict[str, float]:
    from segkit.data.mapper import stream_seed

    seg = segkit_loader(voc, args)
    ds, collate = seg.dataset, seg.loader.collate_fn
    n = len(ds)
    pil = PILSegDataset(voc, args.crop)
    count = min(n, args.batches * args.batch_size)
    return {
        "segkit": cpu_ms_per_image(lambda k: ds[(k % n, stream_seed(0, k))], collate, count, args.batch_size),
        "pil_torchvision": cpu_ms_per_image(lambda k: pil[k % n], pil_collate, count, args.batch_size),
    }


def main(argv=None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = parse_args(argv)
    tmp = None
    voc = args.root
    if not voc:
        tmp = tempfile.TemporaryDirectory(prefix="segkit_bench_")
        voc = make_voc_folder(tmp.name, args.images)
    names = ("segkit", "pil_torchvision")
    results: Dict[str, List[float]] = {k: [] for k in names}
    worker_cpu: Dict[str, List[float]] = {k: [] for k in names}
    main_cpu: Dict[str, List[float]] = {k: [] for k in names}
    cpu: Dict[str, List[float]] = {k: [] for k in names}
    builders = {"segkit": segkit_loader, "pil_torchvision": pil_loader}
    for r in range(args.repeats):
        for k, v in cpu_costs(voc, args).items():
            cpu[k].append(v)
        for k in names:
            ips, wcpu, mcpu = images_per_second(builders[k](voc, args), args)
            results[k].append(ips)
            worker_cpu[k].append(wcpu)
            main_cpu[k].append(mcpu)
        print(f"repeat {r + 1}/{args.repeats}: segkit {results['segkit'][-1]:.1f} img/s, "
              f"PIL/torchvision {results['pil_torchvision'][-1]:.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    wmed = {k: statistics.median(v) for k, v in worker_cpu.items()}
    mmed = {k: statistics.median(v) for k, v in main_cpu.items()}
    ratio = med["segkit"] / med["pil_torchvision"]
    cpu_ratio = cpu_med["pil_torchvision"] / cpu_med["segkit"]
    worker_ratio = wmed["pil_torchvision"] / wmed["segkit"] if wmed["segkit"] > 0 else float("nan")
    print(f"\n{'pipeline':<18}{'img/s':>10}{'worker CPU ms/img':>19}{'main CPU ms/img':>17}{'1-thread ms/img':>17}")
    for k, label in (("segkit", "segkit"), ("pil_torchvision", "PIL/torchvision")):
        print(f"{label:<18}{med[k]:>10.1f}{wmed[k]:>19.2f}{mmed[k]:>17.2f}{cpu_med[k]:>17.2f}")
    print(f"ratio segkit / PIL: {ratio:.2f}x images/s; {worker_ratio:.2f}x less worker CPU per image; "
          f"{cpu_ratio:.2f}x less single-thread CPU per image "
          f"(batch {args.batch_size}, {args.workers} workers, crop {args.crop}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
                       "images_per_s": results, "median_images_per_s": med, "ratio": ratio,
                       "cpu_ms_per_image": cpu, "median_cpu_ms_per_image": cpu_med, "cpu_ratio": cpu_ratio,
                       "worker_cpu_ms_per_image": worker_cpu, "median_worker_cpu_ms_per_image": wmed,
                       "worker_cpu_ratio": worker_ratio, "main_cpu_ms_per_image": main_cpu},
                      f, indent=2)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
