"""Reading images and masks, with errors that name the file and the problem.

Images are decoded with OpenCV (libjpeg-turbo / libpng, the fastest decoders
available here); masks with Pillow, because palette PNGs (VOC) must be read as
their *indices*, which OpenCV would expand to colours.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from segkit.data.catalog import DataError

__all__ = ["read_image", "read_mask", "LABEL_MAPS", "register_label_map", "apply_label_map", "rgb_to_index",
           "INPUT_READERS", "register_input_reader", "read_input"]

# OpenCV spawns its own threads per process; the loader's workers already parallelise.
cv2.setNumThreads(1)

_JPEG_EOI = b"\xff\xd9"
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _read_bytes(path: str, what: str) -> bytes:
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} file not found.")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise DataError(f"{path}: {what} file is empty (0 bytes).")
    return data


def _jpeg_truncated(data: bytes) -> bool:
    # A complete JPEG ends with the EOI marker. OpenCV decodes a truncated
    # stream with a grey tail and only a warning, so check it ourselves; Pillow
    # arbitrates the rare valid file with trailing bytes after EOI.
    if data[:2] != b"\xff\xd8" or data.rstrip(b"\x00\r\n")[-2:] == _JPEG_EOI:
        return False
    try:
        import io

        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return False
    except OSError:
        return True


def as_rgb(image: np.ndarray, fmt: str) -> np.ndarray:
    """An ``(H, W, 3)`` array given in ``fmt`` (``"RGB"`` or ``"BGR"``) as RGB.

    The one conversion at segkit's input boundary for arrays a caller hands in (e.g.
    from ``cv2.imread``); from here on images are RGB up to the model.
    """
    if fmt not in ("RGB", "BGR"):
        raise ValueError(f"Unknown image format '{fmt}'; use 'RGB' or 'BGR'.")
    return image[:, :, ::-1] if fmt == "BGR" else image
# Markers that start a segment with a length field (SOFn, DHT, DAC, DQT, DNL, DRI, DHP, EXP, APPn, JPGn, COM).
_JPEG_SEGMENTS = frozenset([*range(0xC0, 0xD0), *range(0xDB, 0xE0), *range(0xE0, 0xF0), *range(0xF0, 0xFF)])


def _jpeg_corruption(data: bytes) -> Optional[str]:
    """Why a JPEG stream is corrupt (a stray marker inside the compressed data, restart
    markers out of order, a segment running past the end), or None.

    libjpeg only *warns* about these ("Corrupt JPEG data", on stderr, without the file
    name) and returns an image with a wrong tail, so the structure is checked here.
    """
    i, n = 2, len(data)
    restart_interval = 0
    while i < n:
        if data[i] != 0xFF:
            return f"expected a JPEG marker at byte {i}, found 0x{data[i]:02X}"
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker, i = data[i], i + 1
        if marker == 0xD9:  # end of image
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            continue
        if marker not in _JPEG_SEGMENTS and marker != 0xDA:
            return f"invalid JPEG marker 0xFF{marker:02X} at byte {i - 2}"
        length = data[i] << 8 | data[i + 1] if i + 2 <= n else 0
        if length < 2 or i + length > n:
            return f"JPEG segment 0xFF{marker:02X} at byte {i - 2} runs past the end of the file"
        if marker == 0xDD and length >= 4:  # DRI: restart markers expected every N blocks
            restart_interval = data[i + 2] << 8 | data[i + 3]
        i += length
        if marker == 0xDA:
            i, problem = _check_scan(data, i, restart_interval)
            if problem:
                return problem
    return None


def _check_scan(data: bytes, i: int, restart_interval: int):
    """Walk entropy-coded data from ``i`` to the next real marker: ``(its offset, problem or None)``."""
    n, restart = len(data), 0
    while True:
        k = data.find(b"\xff", i)
        if k < 0 or k + 1 >= n:
            return n, None  # no end marker: the truncation check reports it
        j = k + 1
        while j < n and data[j] == 0xFF:  # fill bytes may only precede a marker
            j += 1
        nxt = data[j] if j < n else 0xD9
        if nxt == 0x00:
            if j != k + 1:
                return n, f"stray byte 0xFF at byte {k} inside the compressed data"
            i = j + 1  # stuffed 0xFF data byte
        elif 0xD0 <= nxt <= 0xD7:
            if not restart_interval or nxt - 0xD0 != restart % 8:
                return n, f"unexpected restart marker 0xFF{nxt:02X} at byte {k} inside the compressed data"
            restart, i = restart + 1, j + 1
        else:
            return k, None


def read_image(path: str, fmt: str = "RGB") -> np.ndarray:
    """Decode an image file.

    Args:
        path: image file.
        fmt: ``"RGB"`` or ``"BGR"`` channel order of the result.

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        DataError: missing, empty, truncated, corrupt (see :func:`_jpeg_corruption`) or
            undecodable file.
    """
    data = _read_bytes(path, "image")
    if _jpeg_truncated(data):
        raise DataError(f"{path}: image is truncated (JPEG stream ends before its end-of-image marker).")
    problem = _jpeg_corruption(data) if data[:2] == b"\xff\xd8" else None
    if problem:
        raise DataError(f"{path}: image is corrupt ({problem}); it would decode with wrong pixels.")
    if fmt not in ("RGB", "BGR"):
        raise ValueError(f"Unknown image format '{fmt}'; use 'RGB' or 'BGR'.")
    # Decoding straight to RGB saves a full-image channel swap (OpenCV >= 4.10).
    flag = _IMREAD_RGB if fmt == "RGB" and _IMREAD_RGB is not None else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise DataError(f"{path}: image cannot be decoded (corrupt, truncated or not an image format OpenCV reads).")
    if fmt == "RGB" and flag == cv2.IMREAD_COLOR:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def read_mask(path: str) -> np.ndarray:
    """Read a label mask as stored: palette PNG indices, or grey values.

    Returns:
        (H, W) array (uint8 or a wider integer type for 16-bit masks), or
        (H, W, 3) uint8 for colour-coded RGB masks.

    Raises:
        DataError: missing, truncated or undecodable file.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: mask file not found.")
    if path.endswith(".mat"):
        return _read_mat_mask(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA"):
                im = im.convert("RGB" if im.mode == "RGBA" else "L")
            arr = np.array(im)  # writable copy (torch.from_numpy refuses read-only arrays)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: mask cannot be read ({exc}).") from exc
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return arr


def _read_mat_mask(path: str) -> np.ndarray:
    """A MATLAB label file, in the layouts of the datasets that ship them.

    * SBD ``cls/*.mat``: struct ``GTcls`` whose ``Segmentation`` field is the mask;
    * SIFT Flow ``SemanticLabels/*.mat`` and ``GeoLabels/*.mat``: array ``S`` (int;
      GeoLabels mark unlabelled pixels -1, read here as 0, the code of unlabelled in both);
    * NYUDv2 (Gupta et al.'s ``segmentation/img_*.mat``): array ``segmentation``.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a readable MATLAB label file: {exc}") from exc
    try:
        if "GTcls" in mat:
            return np.asarray(mat["GTcls"].Segmentation).astype(np.uint8, copy=False)
        if "S" in mat:
            return np.maximum(np.asarray(mat["S"]), 0).astype(np.uint8)
        if "segmentation" in mat:
            return np.asarray(mat["segmentation"]).astype(np.uint8, copy=False)
    except (ValueError, AttributeError, TypeError) as exc:
        raise DataError(f"{path}: label array cannot be read ({exc}).") from exc
    keys = sorted(k for k in mat if not k.startswith("__"))
    raise DataError(f"{path}: no label array found (expected struct GTcls.Segmentation (SBD), S (SIFT Flow) or "
                    f"segmentation (NYUDv2)); the file holds {keys}.")


# Look-up tables from on-disk label ids to training ids (255 = ignore), by name.
# Records name theirs under "label_map" so that workers need no closures.
LABEL_MAPS: Dict[str, np.ndarray] = {}


def register_label_map(name: str, lut: Sequence[int]) -> None:
    """Register a 256-entry look-up table from stored label ids to train ids."""
    lut = np.asarray(lut, dtype=np.int64)
    if lut.shape != (256,):
        raise ValueError(f"Label map '{name}' must have 256 entries, got shape {lut.shape}.")
    if name in LABEL_MAPS and not np.array_equal(LABEL_MAPS[name], lut):
        raise ValueError(f"Label map '{name}' is already registered with different values.")
    LABEL_MAPS[name] = lut


def apply_label_map(mask: np.ndarray, name: Optional[str], path: str = "") -> np.ndarray:
    """Map stored ids through ``LABEL_MAPS[name]`` (identity for ``None``)."""
    if not name:
        return mask
    if name not in LABEL_MAPS:
        raise DataError(f"{path}: record names label map '{name}', which is not registered ({sorted(LABEL_MAPS)}).")
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise DataError(f"{path}: mask values span [{mask.min()}, {mask.max()}], outside label map '{name}' (0-255).")
        mask = mask.astype(np.uint8)
    return LABEL_MAPS[name].astype(np.uint8)[mask]


def rgb_to_index(mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_label: int,
                 ignore_colors: Sequence[Sequence[int]] = (), path: str = "") -> np.ndarray:
    """Convert a colour-coded (H, W, 3) mask to (H, W) class indices.

    Raises:
        DataError: a pixel colour that is neither a class colour nor an ignore colour.
    """
    codes = (mask[..., 0].astype(np.int32) << 16) | (mask[..., 1].astype(np.int32) << 8) | mask[..., 2]
    keys = [(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in colors]
    ign = [(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in ignore_colors]
    table_keys = np.array(keys + ign, dtype=np.int64)
    table_vals = np.array(list(range(len(keys))) + [ignore_label] * len(ign), dtype=np.uint8)
    order = np.argsort(table_keys)
    pos = np.searchsorted(table_keys[order], codes)
    pos = np.clip(pos, 0, len(order) - 1)
    found = table_keys[order][pos] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        col = tuple(int(v) for v in mask[y, x])
        raise DataError(f"{path}: mask colour {col} at pixel (y={y}, x={x}) is not in the dataset palette.")
    return table_vals[order][pos]


# Readers of the model's extra inputs (``INPUT.MODALITIES``) by name: ``record -> (H, W, C) uint8``.
# Registered by the dataset modules at import time, so loader workers have them.
INPUT_READERS: Dict[str, Callable[[Mapping[str, Any]], np.ndarray]] = {}


def register_input_reader(name: str, reader: Callable[[Mapping[str, Any]], np.ndarray]) -> None:
    """Register how input ``name`` is read from a record (a second registration of ``name`` raises)."""
    if name in INPUT_READERS and INPUT_READERS[name] is not reader:
        raise ValueError(f"Input reader '{name}' is already registered ({INPUT_READERS[name].__module__}).")
    INPUT_READERS[name] = reader


def read_input(record: Mapping[str, Any], name: str) -> np.ndarray:
    """Input ``name`` of ``record`` as ``(H, W, C)`` uint8.

    ``"image"`` is ``record["file_name"]`` (RGB); another name uses its registered
    reader, else the image file at ``record["<name>_file_name"]`` (channels as stored, RGB order).
    """
    if name == "image":
        return read_image(record["file_name"], "RGB")
    if name in INPUT_READERS:
        return INPUT_READERS[name](record)
    key = f"{name}_file_name"
    if key not in record:
        raise DataError(f"{record.get('file_name')}: the config asks for input '{name}' but the record has no "
                        f"'{key}' and no reader is registered for it (registered: {sorted(INPUT_READERS)}).")
    return read_image(record[key], "RGB")


