"""A toy training run for the kill tests (run as a subprocess, killed with SIGKILL).

Usage: python engine_run_script.py OUT RESUME MAX_ITER PERIOD KEEP EVAL_PERIOD PAUSE_EVAL_AT SLOW

Goes through ``default_setup`` as ``tools/train_net.py`` does. Every finished
evaluation appends ``<iteration>`` to ``OUT/evaluations.txt``; an evaluation at
``PAUSE_EVAL_AT`` first writes ``OUT/eval_started_<it>`` and then sleeps, so the
test can kill the run inside it. With SLOW = 1 every step from iteration 30 on
sleeps a little, so the test can kill a run between checkpoints.
"""
import argparse
import os
import sys
import time

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_engine import ToyTrainer, toy_cfg  # noqa: E402

from segkit.engine.defaults import default_setup  # noqa: E402
from segkit.engine.events import get_event_storage  # noqa: E402
from segkit.engine.train_loop import HookBase  # noqa: E402


class SlowAfter(HookBase):
    def after_step(self):
        if Trainer.slow and self.trainer.iter >= 30:
            time.sleep(0.02)


class Trainer(ToyTrainer):
    pause_eval_at = -1
    slow = False

    def build_hooks(self):
        return super().build_hooks() + [SlowAfter()]

    @classmethod
    def test(cls, cfg, model, postprocess=None, pictures=False):
        it = get_event_storage().iter
        if it == cls.pause_eval_at:
            open(os.path.join(cfg.OUTPUT_DIR, f"eval_started_{it}"), "w").close()
            time.sleep(60)
        results = super().test(cfg, model, postprocess, pictures=False)
        with open(os.path.join(cfg.OUTPUT_DIR, "evaluations.txt"), "a") as f:
            f.write(f"{it}\n")
        return results


def make_cfg(out, max_iter, period, keep, eval_period):
    cfg = toy_cfg(out, MAX_ITER=int(max_iter), CHECKPOINT_PERIOD=int(period), MAX_TO_KEEP=int(keep))
    cfg.TEST.EVAL_PERIOD = int(eval_period)
    cfg.SEED = 0
    return cfg


def main():
    out, resume, max_iter, period, keep, eval_period = sys.argv[1:7]
    Trainer.pause_eval_at, Trainer.slow = int(sys.argv[7]), sys.argv[8] == "1"
    cfg = make_cfg(out, max_iter, period, keep, eval_period)
    default_setup(cfg, argparse.Namespace(resume=resume == "1", eval_only=False))
    trainer = Trainer(cfg).resume_or_load(resume == "1")
    print("START", trainer.start_iter, flush=True)
    results = trainer.train()
    print("RESULTS", bool(results), flush=True)


if __name__ == "__main__":
    main()
