#!/usr/bin/env python
"""Find shipped configs, load one, and extend one from a YAML file of your own.

    python examples/model_zoo/use_model_zoo.py
"""
import os

from segkit import model_zoo
from segkit.config import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> dict:
    names = model_zoo.list_configs("fashion_scenes/")          # ['fashion_scenes/main.yaml', ...]
    path = model_zoo.get_config_file("fashion_scenes/main.yaml")  # a file inside the installed package
    cfg = model_zoo.get_config("fashion_scenes/main.yaml", ["SOLVER.MAX_ITER", 200])
    mine = load_config(os.path.join(HERE, "my_config.yaml"))   # _BASE_: segkit://fashion_scenes/main.yaml
    print(f"{len(names)} FashionScenes configs; main.yaml is {path}")
    print(f"main.yaml with an override: MAX_ITER {cfg.SOLVER.MAX_ITER}; "
          f"my_config.yaml: head {mine.MODEL.HEAD.NAME}, MAX_ITER {mine.SOLVER.MAX_ITER}, LR {mine.SOLVER.BASE_LR}")
    return {"names": names, "path": path, "cfg": cfg, "mine": mine}


if __name__ == "__main__":
    main()
