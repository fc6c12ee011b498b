"""Backbones: named feature maps with ShapeSpecs."""
from segkit.modeling.backbone.backbone import Backbone, build_backbone
from segkit.modeling.backbone.resnet import ResNet, build_resnet_backbone
from segkit.modeling.backbone.timm_backbone import TimmBackbone
from segkit.modeling.backbone.vgg import VGG, build_vgg_backbone, convert_torchvision_vgg
from segkit.modeling.backbone.weights import LoadReport, load_backbone_weights, resolve_weights_file

__all__ = [
    "Backbone",
    "build_backbone",
    "ResNet",
    "build_resnet_backbone",
    "TimmBackbone",
    "VGG",
    "build_vgg_backbone",
    "convert_torchvision_vgg",
    "LoadReport",
    "load_backbone_weights",
    "resolve_weights_file",
]
