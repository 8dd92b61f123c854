"""Every image path goes through one loader that turns anything a user sends into safe RGB, or one
clear sentence."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from recommender.errors import ImageError
from recommender.images import MAX_PIXELS, WORKING_SIDE, load_image
from tests.helpers import SAMPLE

PHOTO = SAMPLE / "images" / "10009.jpg"


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = load_image(encode(img, "JPEG", exif=exif))
    assert out.size == (20, 40)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_on_white(mode):
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    img = img.convert(mode) if mode != "P" else img.convert("RGBA").quantize().convert("P")
    if mode == "P":
        img = Image.new("P", (10, 10), 0)
        img.putpalette([255, 0, 0] * 256)
        img.info["transparency"] = 0
    out = load_image(encode(img, "PNG"))
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 255, 255)


def test_a_transparent_margin_is_cut_as_the_photo_editor_adds_one():
    canvas = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # the editor's fixed canvas, a 24x48 photo centred
    canvas.paste(Image.new("RGBA", (24, 48), (200, 30, 30, 255)), (20, 8))
    canvas.putpixel((21, 9), (0, 0, 255, 128))  # half-transparent pixels inside the photo stay, on white
    out = load_image(encode(canvas, "PNG"))
    assert out.size == (24, 48)
    assert out.getpixel((0, 0)) == (200, 30, 30) and out.getpixel((1, 1)) == (127, 127, 255)


def test_a_large_jpeg_is_decoded_no_larger_than_needed():
    photo = Image.radial_gradient("L").resize((3000, 4000)).convert("RGB")  # a phone's portrait photo
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side, as phones do
    data = encode(photo.rotate(90, expand=True), "JPEG", exif=exif)
    assert load_image(data, max_side=None).size == (3000, 4000)
    smaller = load_image(data)  # libjpeg's 1/2 scale: the largest that keeps WORKING_SIDE
    assert smaller.size == (1500, 2000) and min(smaller.size) >= WORKING_SIDE
    assert load_image(data, max_side=400).size == (375, 500)
    assert load_image(encode(photo.resize((1500, 2000)), "PNG")).size == (1500, 2000)  # PNG: always whole
    whole = np.asarray(load_image(data, max_side=None).resize((375, 500), Image.Resampling.BOX), np.float32)
    assert np.abs(np.asarray(load_image(data, max_side=400), np.float32) - whole).mean() < 2


def test_cmyk_16bit_and_grayscale_become_rgb():
    cmyk = load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and cmyk.getpixel((4, 4))[0] > 200
    sixteen = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert load_image(encode(sixteen, "PNG")).getpixel((1, 1)) == (255, 255, 255)
    gray = load_image(encode(Image.new("L", (8, 8), 128), "PNG"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ("blue", "yellow", "green")]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = load_image(data).getpixel((8, 8))
    assert b > 200 and r < 60


def test_one_pixel_image_works():
    assert load_image(encode(Image.new("RGB", (1, 1), "black"), "PNG")).size == (1, 1)


def test_decompression_bomb_is_refused_before_decoding():
    # A PNG header declaring 20000x20000 px: refused from its size alone, no pixel is decoded.
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="megapixels"):
        load_image(bomb)
    assert 20000 * 20000 > MAX_PIXELS


def test_truncated_jpeg_is_a_clear_error():
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(PHOTO.read_bytes()[:300])


@pytest.mark.parametrize(
    "data",
    [
        b"just some text, not an image",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    ],
    ids=["text", "svg", "pdf"],
)
def test_non_images_are_a_clear_error(data):
    with pytest.raises(ImageError, match="not an image this service can read"):
        load_image(data)


def test_zip_and_empty_files_are_clear_errors():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(buffer.getvalue())
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_paths_pil_images_and_bytes_load_the_same(tmp_path):
    from_path = load_image(PHOTO)
    assert from_path.tobytes() == load_image(PHOTO.read_bytes()).tobytes() == load_image(Image.open(PHOTO)).tobytes()
    with pytest.raises(ImageError, match="No image file"):
        load_image(tmp_path / "missing.jpg")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=2048),
    st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP"]),
)
def test_fuzzed_bytes_give_an_image_or_an_image_error(tail, header):
    try:
        img = load_image(header + tail)
    except ImageError:
        return
    assert img.mode == "RGB" and img.width * img.height <= MAX_PIXELS


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(0, 2000))
def test_fuzzed_truncations_of_a_real_photo_never_crash(width, height, cut):
    data = encode(Image.open(PHOTO).resize((width, height)), "JPEG")
    try:
        assert load_image(data[: max(1, len(data) - cut)]).mode == "RGB"
    except ImageError:
        pass


def test_pad_to_aspect_centres_on_white_without_cropping():
    from recommender.images import pad_to_aspect

    tall, wide = Image.new("RGB", (30, 80), "red"), Image.new("RGB", (80, 30), "red")
    assert pad_to_aspect(tall, 0.75).size == (60, 80)
    padded = pad_to_aspect(wide, 0.75)
    assert (
        padded.size == (80, 107)
        and padded.getpixel((40, 0)) == (255, 255, 255)
        and padded.getpixel((40, 53)) == (255, 0, 0)
    )
    exact = Image.new("RGB", (60, 80))
    assert pad_to_aspect(exact, 0.75) is exact


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "EPS", "PPM", "TGA"])
def test_formats_outside_the_allow_list_are_refused_unparsed(fmt, monkeypatch):
    """Pillow reads dozens of formats (EPS runs Ghostscript); only the allowed ones' parsers ever run."""
    from PIL import EpsImagePlugin

    data = encode(Image.open(PHOTO).convert("RGB"), fmt)

    def never(self):
        raise AssertionError("the EPS parser ran")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    with pytest.raises(ImageError, match="not an image this service can read; send a JPEG, PNG, WebP, GIF, AVIF"):
        load_image(data)


def test_a_psd_file_is_refused_unparsed():
    header = b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + (80).to_bytes(4, "big") + (60).to_bytes(4, "big")
    with pytest.raises(ImageError, match="not an image this service can read"):
        load_image(header + b"\x00\x08\x00\x03" + b"\x00" * 64)


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF", "WEBP", "GIF", "PNG", "JPEG"])
def test_what_phones_and_the_web_send_is_read(fmt):
    from recommender.images import FORMATS

    if fmt not in FORMATS:
        pytest.skip(f"this Pillow has no {fmt} plugin")
    img = load_image(encode(Image.open(PHOTO).convert("RGB"), fmt))
    assert img.mode == "RGB" and img.size == (60, 80)


def test_a_16_bit_50_megapixel_png_decodes_in_bounded_memory():
    """No float64 copy of the whole photo (7000x7000 would be 392 MB); numpy's buffers are traced."""
    import tracemalloc

    ramp = np.tile(np.linspace(0, 65535, 7000, dtype=np.uint16), (7000, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    del ramp
    tracemalloc.start()
    try:
        img = load_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.mode == "RGB" and max(img.size) >= WORKING_SIDE
    assert img.getpixel((img.width - 1, 0))[0] > 250  # scaled to 8 bits, not clipped
    assert peak < 150 * 2**20, f"{peak / 2**20:.0f} MB traced"
