#!/usr/bin/env python
"""Train the tiny example model for a few iterations and save a segkit checkpoint.

Stands in for ``tools/train_net.py`` so the example runs anywhere in seconds: the
checkpoint has the engine's format (``{"model": state_dict, "iteration": N}``) and
loads with ``segkit.engine.checkpoint.load_model_weights``. Its predictions are
not good (a few iterations), but they are a real trained model's.

    python examples/embed_segmenter/make_demo_checkpoint.py --out /tmp/demo/model_final.pth
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "tiny_fcn.yaml")


def make_demo_checkpoint(out: str, config_file: str = DEFAULT_CONFIG, iters: int = 8, opts=()) -> str:
    """Train ``config_file`` for ``iters`` SGD steps on its training set; save to ``out``."""
    import torch

    from segkit.config import load_config
    from segkit.data import build_train_loader
    from segkit.modeling import build_model

    cfg = load_config(config_file, list(opts))
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR, momentum=0.9)
    from tqdm import tqdm

    steps = zip(range(iters), build_train_loader(cfg))
    for _, batch in tqdm(steps, total=iters, desc="demo checkpoint: training", unit="it"):
        losses = model(batch["image"], batch["sem_seg"])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({"model": model.state_dict(), "iteration": iters}, out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    print(make_demo_checkpoint(args.out, args.config_file, args.iters, args.opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
