"""segkit.data: dataset catalog, formats, transforms, mapper and loaders.

Public API::

    DatasetCatalog.get(name) -> list[dict]          MetadataCatalog.get(name) -> Metadata
    build_train_loader(cfg, start_iter=0)           build_test_loader(cfg, dataset_name, batch_size=1)
    DatasetMapper, build_transforms, DeepLabRandomScaleCrop, RandomScaleCrop, collate_batch, DataError,
    register_folder_dataset, register_semseg; class statistics in segkit.data.class_stats
    setup_datasets(cfg): what every entry point calls (register the config's datasets, check NUM_CLASSES)
    dataset_classes(cfg) -> (class names, colours, dataset name)
"""
from segkit.data.catalog import (
    DataError, DatasetCatalog, Metadata, MetadataCatalog, default_cache_dir, register_semseg, resolve_dataset_root,
)
from segkit.data import datasets  # noqa: F401  (registers the built-in datasets)
from segkit.data.transforms import DeepLabRandomScaleCrop, RandomScaleCrop, build_transform, build_transforms
from segkit.data.datasets.folder import register_folder_dataset
from segkit.data.mapper import DatasetMapper
from segkit.data.registration import check_num_classes, dataset_classes, register_datasets, setup_datasets
from segkit.data.build import (
    BadRecordLog, InferenceSampler, TrainingSampler, build_test_loader, build_train_loader, collate_batch,
    get_dataset_records,
)

__all__ = [
    "DataError", "DatasetCatalog", "Metadata", "MetadataCatalog", "default_cache_dir", "register_semseg",
    "resolve_dataset_root", "DeepLabRandomScaleCrop", "RandomScaleCrop", "register_folder_dataset",
    "build_transform", "build_transforms", "DatasetMapper", "BadRecordLog", "InferenceSampler",
    "TrainingSampler", "build_test_loader", "build_train_loader", "collate_batch", "get_dataset_records",
    "check_num_classes", "dataset_classes", "register_datasets", "setup_datasets",
]
