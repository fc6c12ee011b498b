#!/usr/bin/env python
"""Grid-search the dense CRF's w1, theta_alpha, theta_beta on validation images.

As DeepLab v2 (sec. 4.1): w2 = 3 and theta_gamma = 3 stay fixed, and w1, theta_alpha,
theta_beta are picked by mIoU on a subset of val (DeepLab: 100 images), coarse
grid first (w1 3..6, theta_alpha 30..100 step 10, theta_beta 3..6), optionally refined
at half the step around the best (--refine). The network runs once per image; its
softmax (after the configured TEST.AUG / TEST.SLIDING_WINDOW inference) is reused for
every setting. The best setting is written as a YAML config fragment that turns the
CRF on; use it with ``_BASE_: [your_model.yaml, crf.yaml]`` or pass it to
``load_config``.

Example::

    python tools/crf_search.py --config-file configs/voc/deeplab_v2_r101.yaml \\
        --weights output/model_final.pth --num-images 100 --output output/crf.yaml \\
        MODEL.DEVICE cuda
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="config of the trained model")
    p.add_argument("--weights", default=None, help="checkpoint (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--dataset", default=None, help="dataset to search on (default: DATASETS.TEST[0])")
    p.add_argument("--num-images", type=int, default=100, help="first N images of the dataset (DeepLab: 100)")
    p.add_argument("--w1", type=_floats, default=None, help='bilateral weights, e.g. "3 4 5 6" (DeepLab grid)')
    p.add_argument("--theta-alpha", type=_floats, default=None, help='bilateral spatial stds, e.g. "30 40 ... 100"')
    p.add_argument("--theta-beta", type=_floats, default=None, help='bilateral colour stds, e.g. "3 4 5 6"')
    p.add_argument("--refine", action="store_true", help="second round at half the step around the best")
    p.add_argument("--output", required=True, help="YAML fragment to write (a .json with all results goes beside it)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def collect(cfg, pipeline, dataset: str, num_images: int):
    """Run the pipeline's inference (no post-processing) once over the first images.

    Returns lists of RGB images, probabilities and labels, on the probabilities' device.
    """
    from tqdm import tqdm

    from segkit.data import build_test_loader

    images, probs, labels = [], [], []
    with tqdm(desc="network", unit="img", total=num_images) as bar:
        for batch in build_test_loader(cfg, dataset, batch_size=1):
            for i, record in enumerate(batch["records"]):
                h, w = int(record["height"]), int(record["width"])
                image = batch["image"][i : i + 1, :, :h, :w]
                prob = pipeline.inference(image)[0]
                images.append(image[0].to(prob.device))
                probs.append(prob)
                labels.append(batch["sem_seg"][i, :h, :w].to(prob.device))
                bar.update(1)
                if len(images) >= num_images:
                    return images, probs, labels
    if not images:
        raise SystemExit(f"crf_search: dataset '{dataset}' has no images")
    return images, probs, labels


def main(argv=None) -> int:
    args = parse_args(argv)
    from segkit.config import load_config
    from segkit.engine.inference_pipeline import build_inference_pipeline
    from segkit.postprocess.crf_search import crf_config_fragment, crf_grid_search

    cfg = load_config(args.config_file, args.opts)
    weights = args.weights or cfg.MODEL.WEIGHTS
    if not weights:
        raise SystemExit("crf_search: give --weights (or MODEL.WEIGHTS): searching CRF parameters needs a trained model")
    pipeline = build_inference_pipeline(cfg, weights, who="crf_search")  # registers datasets, checks classes
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    images, probs, labels = collect(cfg, pipeline, dataset, args.num_images)
    grid = {k: v for k, v in (("w1", args.w1), ("theta_alpha", args.theta_alpha), ("theta_beta", args.theta_beta)) if v}
    crf = cfg.POSTPROCESS.CRF

    from tqdm import tqdm

    from segkit.postprocess.crf_search import DEEPLAB_GRID

    sizes = [len(grid.get(k) or DEEPLAB_GRID[k]) for k in ("w1", "theta_alpha", "theta_beta")]
    # In CRF runs (images x settings), updated after each image: the search is image-major, so
    # a bar in settings would stand still until the last image. The refinement round adds
    # settings around the best: its count is not known up front.
    runs = len(images) * sizes[0] * sizes[1] * sizes[2]
    bar = tqdm(total=None if args.refine else runs, desc="CRF search", unit="run")

    def show(r):
        p = r.params
        bar.write(f"w1={p.w1:g} theta_alpha={p.theta_alpha:g} theta_beta={p.theta_beta:g}: mIoU {100 * r.miou:.2f}")

    best, results, baseline = crf_grid_search(
        images, probs, labels, cfg.MODEL.NUM_CLASSES, cfg.MODEL.IGNORE_VALUE, grid=grid, w2=crf.W2,
        theta_gamma=crf.THETA_GAMMA, iterations=crf.ITERATIONS, refine=args.refine, backend=crf.BACKEND,
        num_workers=crf.NUM_WORKERS, progress=show, on_runs=bar.update,
    )
    bar.close()
    p = best.params
    note = (f"Dense CRF parameters from tools/crf_search.py on the first {len(images)} images of {dataset}\n"
            f"mIoU without CRF {100 * baseline:.2f}, with CRF {100 * best.miou:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(crf_config_fragment(best, backend=crf.BACKEND, comment=note))
    with open(os.path.splitext(args.output)[0] + "_results.json", "w", encoding="utf-8") as f:
        json.dump({"dataset": dataset, "num_images": len(images), "baseline_miou": baseline,
                   "results": [{**vars(r.params), "miou": r.miou} for r in results]}, f, indent=2)
    print(f"mIoU without CRF {100 * baseline:.2f}; best w1={p.w1:g} theta_alpha={p.theta_alpha:g} "
          f"theta_beta={p.theta_beta:g}: {100 * best.miou:.2f}. Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
