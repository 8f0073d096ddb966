"""ImageEncoder and TextEncoder in-process, with the real models from their packages."""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import numpy as np
import pytest
from PIL import Image

from meshflow import Document, DocumentArray, Executor, RuntimeArgs
from services.image_encoder import ImageEncoder
from services.shop_the_look import catalog
from services.text_encoder import TextEncoder


def make(cls: type[Executor], workspace: str, **kwargs: Any) -> Any:
    executor = cls.__new__(cls)
    executor._runtime_args = RuntimeArgs(name=cls.__name__.lower(), workspace_root=workspace)
    executor.__init__(**kwargs)  # type: ignore[misc]
    return executor


@pytest.fixture(scope="module")
def image_encoder(tmp_path_factory: pytest.TempPathFactory) -> ImageEncoder:
    encoder: ImageEncoder = make(ImageEncoder, str(tmp_path_factory.mktemp("img")))
    return encoder


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory: pytest.TempPathFactory) -> TextEncoder:
    encoder: TextEncoder = make(TextEncoder, str(tmp_path_factory.mktemp("txt")))
    return encoder


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def product(category: str, colour: str, pattern: str, seed: int) -> Image.Image:
    return catalog.render(catalog.Product("p", category, colour, pattern, seed))


def chunk_vector(doc: Document, modality: str) -> np.ndarray:
    [chunk] = [c for c in doc.chunks if c.tags.get("modality") == modality]
    assert chunk.parent_id == doc.id
    return np.asarray(chunk.embedding)


def test_image_encoder_reads_blob_uri_tensor_and_data_uri_alike(
    image_encoder: ImageEncoder, tmp_path: Any
) -> None:
    image = product("dress", "red", "dotted", 1)
    path = os.path.join(str(tmp_path), "dress.png")
    image.save(path)
    data_uri = "data:image/png;base64," + base64.b64encode(png(image)).decode()
    docs = DocumentArray(
        [
            Document(id="blob", blob=png(image)),
            Document(id="uri", uri=path),
            Document(id="file-uri", uri="file://" + path),
            Document(id="tensor", tensor=np.asarray(image)),
            Document(id="data", uri=data_uri),
            Document(id="words", text="no image here"),
        ]
    )
    image_encoder.encode(docs)
    vectors = [chunk_vector(d, "image") for d in docs[:5]]
    for v in vectors:
        assert v.shape == (1280,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
        assert float(v @ vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert not docs[5].chunks  # text only: left alone


def test_image_features_tell_shapes_apart(image_encoder: ImageEncoder) -> None:
    """Two renderings of a dress are closer to each other than to a bag (real CNN features)."""
    a, b, bag = image_encoder.embed(
        [
            product("dress", "blue", "plain", 1),
            product("dress", "blue", "plain", 2),
            product("bag", "blue", "plain", 3),
        ]
    )
    assert float(a @ b) > float(a @ bag) + 0.05


def test_image_encoder_without_modality_sets_the_embedding(tmp_path: Any) -> None:
    encoder: ImageEncoder = make(ImageEncoder, str(tmp_path), modality="", batch_size=2)
    docs = DocumentArray(Document(blob=png(product("hat", "pink", "plain", i))) for i in range(3))
    encoder.encode(docs)
    assert all(d.embedding is not None and len(d.chunks) == 0 for d in docs)


def test_unreadable_images_are_refused_by_name(image_encoder: ImageEncoder) -> None:
    for doc, message in [
        (Document(id="junk", blob=b"not an image"), "cannot read its image"),
        (Document(id="gone", uri="/no/such/file.png"), "cannot read its image"),
        (Document(id="web", uri="https://example.org/a.png"), "cannot read https: URIs"),
        (Document(id="flat", tensor=np.zeros((4, 4))), "H x W x 3"),
    ]:
        with pytest.raises(ValueError, match=message):
            image_encoder.encode(DocumentArray([doc]))


def test_text_encoder_embeds_meaning(text_encoder: TextEncoder) -> None:
    docs = DocumentArray(
        [
            Document(id="a", text="red striped t-shirt"),
            Document(id="b", text="a crimson tee with stripes"),
            Document(id="c", text="black leather boots"),
            Document(id="photo", blob=b"\x89PNG"),
        ]
    )
    text_encoder.encode(docs)
    a, b, c = (chunk_vector(d, "text") for d in docs[:3])
    assert a.shape == (384,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert float(a @ b) > float(a @ c) + 0.2
    assert not docs[3].chunks  # no text: left alone


def test_both_encoders_fill_their_own_chunk(
    image_encoder: ImageEncoder, text_encoder: TextEncoder
) -> None:
    docs = DocumentArray(
        [Document(id="p", text="pink hat", blob=png(product("hat", "pink", "plain", 1)))]
    )
    image_encoder.encode(docs)
    text_encoder.encode(docs)
    text_encoder.encode(docs)  # again: the text chunk is updated, not duplicated
    assert sorted(c.tags["modality"] for c in docs[0].chunks) == ["image", "text"]
