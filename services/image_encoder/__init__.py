"""ImageEncoder: EfficientNet-Lite0 image features (ImageNet weights shipped in a package)."""

from services.image_encoder.executor import ImageEncoder, load_image

__all__ = ["ImageEncoder", "load_image"]
