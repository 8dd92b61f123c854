"""Decoding on the model's device (a GPU build's decoder): the Preprocessor's results as tensor
operations, and a whole build with it giving the CPU build's index. Runs on the CPU here (the same torch
code; nvJPEG is the one part only a GPU runs), and on the GPU too where there is one."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from recommender import artifacts
from recommender.build import precompute
from recommender.build.gpu_decode import TensorPreprocessor, gpu_decodable, thumbnail_size
from recommender.catalog import CatalogSource
from recommender.images import load_image
from tests.helpers import ROOT, SAMPLE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def jpeg(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def photos() -> list[bytes]:
    """The sample catalog's 60x80 photos, larger real photos, and a product small on a wide canvas."""
    catalog = [p.read_bytes() for p in sorted((SAMPLE / "images").glob("*.jpg"))[:40]]
    hires = [p.read_bytes() for p in sorted((ROOT / "data" / "hires").rglob("*.jpg"))[:8]]
    canvas = Image.new("RGB", (400, 300), (250, 250, 250))
    canvas.paste(load_image(catalog[0]), (170, 110))
    return catalog + hires + [jpeg(canvas)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("detail_side", [80, None])
def test_device_preprocessing_is_the_preprocessors(real_embedder, device, detail_side):
    """Same mask and colour histogram; pixels within the resamplers' rounding (the catalog's photos,
    with the shipped weights' bilinear resize: at most 1 level, mean 0.1; larger photos, which Pillow
    shrinks by box reduction first: mean < 1)."""
    embedder = real_embedder
    embedder.detail_side = detail_side
    try:
        data = photos()
        made = TensorPreprocessor(embedder.preprocessor, torch.device(device))(data)
        for one, (pixels, colour) in zip(data, made):
            reference, reference_colour = embedder.preprocess(load_image(one))
            assert pixels.device.type == device and pixels.shape == reference.shape
            difference = np.abs(pixels.cpu().numpy().astype(int) - reference)
            small = max(load_image(one).size) <= 128
            assert difference.mean() < (0.25 if small else 1.0), difference.mean()
            if small:
                assert difference.max() <= (1 if device == "cpu" else 8)  # nvJPEG's IDCT rounds otherwise
                np.testing.assert_allclose(colour, reference_colour, atol=1e-6)
            else:  # the mask is found on a 128-px copy: resampled a little differently
                assert np.abs(colour - reference_colour).max() < 0.05
    finally:
        embedder.detail_side = None


def test_only_what_the_cpu_loader_would_read_alike_goes_to_the_device():
    photo = load_image((sorted((SAMPLE / "images").glob("*.jpg")))[0])
    assert gpu_decodable(jpeg(photo)) == photo.size
    assert gpu_decodable(jpeg(photo.convert("L"))) == photo.size
    rotated = Image.Exif()
    rotated[0x0112] = 6
    assert gpu_decodable(jpeg(photo, exif=rotated)) is None  # the loader turns it upright
    assert gpu_decodable(jpeg(photo.convert("CMYK"))) is None
    png = io.BytesIO()
    photo.save(png, "PNG")
    assert gpu_decodable(png.getvalue()) is None
    assert gpu_decodable(jpeg(photo)[:-10]) == photo.size  # the header reads; the decode then refuses it
    assert gpu_decodable(b"") is None and gpu_decodable(None) is None


def test_thumbnail_sizes_are_pillows():
    for width, height in [(60, 80), (1024, 1), (1, 1024), (333, 500), (129, 128), (4000, 3000), (100, 100)]:
        for side in (80, 128, 1024):
            image = Image.new("1", (width, height))
            image.thumbnail((side, side))
            assert thumbnail_size(width, height, side) == image.size


def test_a_build_decoding_on_the_device_is_the_cpu_builds(text_encoder, catalog_dir, tmp_path, embedder):
    """The same ids, metadata, thumbnails and skipped rows, and descriptors within the preprocessing's
    rounding, with a PNG (decoded by the CPU processes), a truncated JPEG (refused by both decoders)
    and a grayscale JPEG in the catalog."""
    images = sorted(catalog_dir.glob("images/*.jpg"))
    load_image(images[1]).save(images[1].with_suffix(".png"))
    images[1].unlink()
    images[2].write_bytes(images[2].read_bytes()[:-10])
    images[3].write_bytes(jpeg(load_image(images[3]).convert("L")))

    def build(out, decode_on_device):
        source = CatalogSource(str(catalog_dir))
        return precompute(
            source, out, embedder, text_encoder, progress=False, batch_size=8, decode_on_device=decode_on_device
        )

    on_cpu, on_device = build(tmp_path / "cpu", False), build(tmp_path / "device", True)
    assert on_cpu["build"]["decode"] == "cpu" and on_device["build"]["decode"] == "device"
    assert on_device["count"] == on_cpu["count"] and on_device["skipped"] == on_cpu["skipped"]
    assert on_cpu["skipped"]["counts"]["image that cannot be decoded"] == 1
    cpu_manifest, device_manifest = (artifacts.read_manifest(tmp_path / n) for n in ("cpu", "device"))
    assert device_manifest["thumbnails"] == cpu_manifest["thumbnails"]
    assert (tmp_path / "device" / "metadata.json").read_text() == (tmp_path / "cpu" / "metadata.json").read_text()
    a, b = (np.load(tmp_path / n / "features.npy") for n in ("cpu", "device"))
    assert ((a * b).sum(axis=1) / 3).min() > 0.99  # three unit parts: deep, mid, colour
