"""TRANSFORM_REGISTRY: an albumentations transform applied to image and mask together."""
import albumentations as A
import numpy as np

from segkit.registry import TRANSFORM_REGISTRY


@TRANSFORM_REGISTRY.register()
class RandomPadBottom(A.DualTransform):
    """Pad 0..max_pad rows at the bottom: the image with ``fill``, the mask with ``fill_mask``.

    segkit gives ``fill_mask`` the ignore value and ``fill`` the pixel mean unless the
    YAML ``ARGS`` set them, whatever the defaults here say.

    Args:
        max_pad: the largest number of rows added.
        fill: image value of the new rows, per channel.
        fill_mask: mask value of the new rows.
    """

    def __init__(self, max_pad: int = 8, fill: tuple = (0.0, 0.0, 0.0), fill_mask: int = 0, p: float = 0.5):
        super().__init__(p=p)
        self.max_pad, self.fill, self.fill_mask = max_pad, fill, fill_mask

    def get_params_dependent_on_data(self, params, data):
        return {"rows": self.py_random.randint(0, self.max_pad)}

    def apply(self, img: np.ndarray, rows: int = 0, **params) -> np.ndarray:
        pad = np.broadcast_to(np.asarray(self.fill, img.dtype), (rows, img.shape[1], img.shape[2]))
        return np.concatenate([img, pad.astype(img.dtype)], axis=0)

    def apply_to_mask(self, mask: np.ndarray, rows: int = 0, **params) -> np.ndarray:
        return np.concatenate([mask, np.full((rows, mask.shape[1]), self.fill_mask, mask.dtype)], axis=0)

    def get_transform_init_args_names(self):
        return ("max_pad", "fill", "fill_mask")
