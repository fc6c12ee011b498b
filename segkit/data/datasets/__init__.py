"""Built-in dataset formats; importing this package registers their datasets.

Registered names: ``voc_2012_{train,val,trainval,train_aug}``, ``sbd_{train,val}``,
``cityscapes_fine_{train,val,test}``, ``ade20k_sem_seg_{train,val}``,
``fashion_scenes_{train,val}``, ``nyudv2_40_{train,val,trainval,test}``,
``sift_flow_{trainval,test}``, ``pascal_context_59_{train,val}``; folder datasets through
:func:`segkit.data.datasets.folder.register_folder_dataset`.
"""
from segkit.data.datasets import voc  # noqa: F401
from segkit.data.datasets import cityscapes  # noqa: F401
from segkit.data.datasets import ade20k  # noqa: F401
from segkit.data.datasets import fashion_scenes  # noqa: F401
from segkit.data.datasets import nyudv2  # noqa: F401
from segkit.data.datasets import sift_flow  # noqa: F401
from segkit.data.datasets import pascal_context  # noqa: F401
from segkit.data.datasets.folder import register_folder_dataset  # noqa: F401
