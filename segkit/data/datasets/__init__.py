"""Built-in dataset formats; importing this package registers them."""
from segkit.data.datasets import voc  # noqa: F401  (registers voc_2012_*, sbd_*)
from segkit.data.datasets import fashion_scenes  # noqa: F401  (registers fashion_scenes_*)
