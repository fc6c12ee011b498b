"""``segkit train`` and ``segkit eval``: detectron2's train_net.py flags over segkit.engine.

Examples::

    segkit train --config-file segkit://fashion_scenes/main.yaml SOLVER.MAX_ITER 500
    segkit train --config-file my.yaml --resume
    segkit eval --config-file my.yaml MODEL.WEIGHTS out/model_final.pth --save-predictions out/preds
"""
from __future__ import annotations

from typing import List, Optional


def main(argv: Optional[List[str]] = None, eval_only: bool = False) -> int:
    """Parse ``argv`` with :func:`segkit.engine.default_argument_parser` and launch.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
        eval_only: behave as if ``--eval-only`` was given (``segkit eval``).
    """
    from segkit.engine import default_argument_parser, launch
    from segkit.engine.defaults import main as engine_main

    prog = "segkit eval" if eval_only else "segkit train"
    parser = default_argument_parser(
        epilog=f"Example: {prog} --config-file segkit://fashion_scenes/main.yaml SOLVER.MAX_ITER 500")
    parser.prog = prog
    args = parser.parse_args(argv)
    args.eval_only = args.eval_only or eval_only
    if args.save_predictions and not args.eval_only:
        parser.error("--save-predictions is for evaluation (segkit eval, or --eval-only)")
    launch(engine_main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
    return 0
