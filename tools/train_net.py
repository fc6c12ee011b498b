#!/usr/bin/env python
"""Train or evaluate a segkit model (detectron2's train_net.py flags).

    python tools/train_net.py --config-file configs/fashion_scenes/main.yaml
    python tools/train_net.py --config-file cfg.yaml --resume            # continue after a kill
    python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file cfg.yaml --num-gpus 2        # 2 processes (gloo on CPU)
    torchrun --nproc-per-node 2 tools/train_net.py --config-file cfg.yaml

All logic lives in segkit.engine; see docs/engine.md.
"""
from segkit.engine import default_argument_parser, launch
from segkit.engine.defaults import main


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
