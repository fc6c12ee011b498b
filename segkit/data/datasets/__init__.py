"""Built-in dataset formats; importing this package registers their datasets.

Registered names: ``voc_2012_{train,val,trainval,train_aug}``, ``sbd_{train,val}``,
``cityscapes_fine_{train,val,test}``, ``ade20k_sem_seg_{train,val}``,
``fashion_scenes_{train,val}``; folder datasets through
:func:`segkit.data.datasets.folder.register_folder_dataset`.
"""
from segkit.data.datasets import voc  # noqa: F401
from segkit.data.datasets import cityscapes  # noqa: F401
from segkit.data.datasets import ade20k  # noqa: F401
from segkit.data.datasets import fashion_scenes  # noqa: F401
from segkit.data.datasets.folder import register_folder_dataset  # noqa: F401
