#!/usr/bin/env python
"""Segment image files with a trained segkit model.

Writes, for every input image, ``<name>.png`` (8-bit palette PNG whose pixel
values are the class labels) and ``<name>_overlay.jpg`` (the colours blended over
the photo). Folders are searched recursively and their structure is kept.
Inputs that share a name up to the extension (``a.jpg``, ``a.png``) keep it
(``a.jpg.png``, ``a.png.png``), so no output overwrites another, and a run that
would write over one of its input files is refused before anything is written.

Example::

    python tools/predict.py --config-file configs/fashion_scenes/fcn32s_r18.yaml \\
        --weights output/model_final.pth --input photos/ street.jpg --output predictions/
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Sequence, Tuple

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(inputs: Sequence[str]) -> List[Tuple[str, str]]:
    """``(path, output stem relative to --output)`` for files and (recursively) folders.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: no images found, or two inputs map to the same output name.
    """
    found: List[Tuple[str, str]] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _dirs, files in sorted(os.walk(item)):
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_SUFFIXES):
                        path = os.path.join(root, name)
                        found.append((path, os.path.splitext(os.path.relpath(path, item))[0]))
        elif os.path.isfile(item):
            found.append((item, os.path.splitext(os.path.basename(item))[0]))
        else:
            raise FileNotFoundError(f"--input {item}: no such file or folder.")
    if not found:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {list(inputs)}.")
    stems = [stem for _, stem in found]
    # a.jpg and a.png: keep the extension in both names rather than let one overwrite the other.
    found = [(path, stem + os.path.splitext(path)[1] if stems.count(stem) > 1 else stem) for path, stem in found]
    stems = [stem for _, stem in found]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"Several inputs would write the same output name(s) {dupes}; pass them in separate runs.")
    return found


def output_paths(stem: str, output: str, overlay: bool) -> List[str]:
    """The files written for one input: ``<stem>.png`` and (``overlay``) ``<stem>_overlay.jpg``."""
    base = os.path.join(output, stem)
    return [base + ".png"] + ([base + "_overlay.jpg"] if overlay else [])


def check_no_input_overwritten(images: Sequence[Tuple[str, str]], output: str, overlay: bool) -> None:
    """Raise ValueError, naming the file, when an output would replace one of the inputs."""
    inputs = {os.path.realpath(path) for path, _ in images}
    for _path, stem in images:
        for out in output_paths(stem, output, overlay):
            if os.path.realpath(out) in inputs:
                raise ValueError(f"Writing {out} would overwrite the input image of that name; choose an --output "
                                 "folder that holds no inputs. Nothing was written.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="config of the trained model")
    p.add_argument("--weights", default=None, help="checkpoint (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--input", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--output", required=True, help="folder for label PNGs and overlays")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the colours in the overlay")
    p.add_argument("--no-overlay", action="store_true", help="write label PNGs only")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from PIL import Image
    from tqdm import tqdm

    import segkit
    from segkit.config import load_config
    from segkit.predictor import read_image
    from segkit.utils.visualize import overlay, save_label_png

    cfg = load_config(args.config_file, args.opts)
    predictor = segkit.Predictor(cfg, weights=args.weights)
    palette = predictor.metadata.palette
    images = find_images(args.input)
    check_no_input_overwritten(images, args.output, not args.no_overlay)
    for path, stem in tqdm(images, desc="predict", unit="img"):
        rgb = read_image(path, "RGB")
        labels = predictor(rgb, format="RGB").labels
        outputs = output_paths(stem, args.output, not args.no_overlay)
        os.makedirs(os.path.dirname(outputs[0]) or ".", exist_ok=True)
        save_label_png(outputs[0], labels, palette)
        if len(outputs) > 1:
            Image.fromarray(overlay(rgb, labels, palette, args.alpha)).save(outputs[1], quality=92)
    print(f"Wrote {len(images)} prediction(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
