"""Preprocess decoders: an encoded image or raw pixels, or a vector, to the normalised record
Preprocess writes, or a ``Rejected`` naming what is wrong (``ImageDecoder``, ``VectorDecoder``)."""
from __future__ import annotations

import io
import math
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ganpipe.components import specs
from ganpipe.components.base import ComponentError
from ganpipe.components.preprocess.statistics import SourceImage, moments_from_histograms, source_facts
from ganpipe.components.sources.common import Rejected

RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}
_PIXEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # by channel count


WIDE_MODES = ("rescale", "reject")
_WIDE_MODES = {"F": "32-bit float", "I": "32-bit integer", "I;16": "16-bit", "I;16B": "16-bit",
               "I;16L": "16-bit", "I;16N": "16-bit"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageDecoder:
    """Raw image feature -> uint8 [S, S, C] (and the low-resolution copy), or ``Rejected``.

    Files are turned upright by their EXIF orientation; transparency is composited over
    ``background`` (a grey level or [R, G, B]); 16-bit and 32-bit integer images are scaled to
    8 bits (values above 65535 are refused) and float images in [0, 1] are scaled by 255 (other
    ranges refused), or all of these are refused with ``wide_modes: reject``.
    ``max_image_pixels`` refuses images that would decode to more pixels (a decompression
    bomb); ``min_image_size`` refuses images whose shorter side is smaller.
    """

    def __init__(self, image_size, channels, resize_method, center_crop, lowres_factor,
                 background=255, wide_modes="rescale", max_image_pixels=Image.MAX_IMAGE_PIXELS,
                 min_image_size=0):
        self.size = image_size
        self.mode = "L" if channels == 1 else "RGB"
        self.channels = channels
        self.resample = RESIZE_METHODS[resize_method]
        self.center_crop = center_crop
        self.lowres_size = image_size // lowres_factor if lowres_factor else 0
        try:
            self.background = specs.background_rgb(background)
        except ValueError as e:
            raise ComponentError(str(e)) from None
        if wide_modes not in WIDE_MODES:
            raise ComponentError(f"preprocess.wide_modes: {wide_modes!r} is not one of {', '.join(WIDE_MODES)}")
        self.wide_modes = wide_modes
        self.max_pixels, self.min_size = max_image_pixels, min_image_size

    def decode(self, feature) -> dict[str, bytes]:
        """Raw pixel bytes (row-major [S, S, C]) of ``image`` and optional ``image_lowres``."""
        if "image" not in feature:
            raise Rejected("bad_shape", "no image in the record")
        data = feature["image"].bytes_list.value[0]
        if "image_shape" in feature:
            image = _from_pixels(data, tuple(feature["image_shape"].int64_list.value))
        else:
            image = self._from_file(data)
        source = SourceImage(image.format or "raw", image.mode, *image.size)
        image = self._to_mode(image)
        if self.center_crop:
            image = _crop_to_square(image)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), self.resample)
        pixels = {"image": image.tobytes(), "source": source}
        if self.lowres_size:
            small = image.resize((self.lowres_size, self.lowres_size), Image.Resampling.BICUBIC)
            pixels["image_lowres"] = small.tobytes()
        return pixels

    def _from_file(self, data: bytes) -> Image.Image:
        if not data:
            raise Rejected("not_an_image", "zero-byte file")
        # Pillow refuses files over twice its own (process-wide) limit before _check_size sees them:
        # raise that limit for a larger max_image_pixels, never lower it for other code in the process.
        if self.max_pixels > (Image.MAX_IMAGE_PIXELS or math.inf):
            Image.MAX_IMAGE_PIXELS = self.max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
                image = Image.open(io.BytesIO(data))
            self._check_size(image)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of every upright image
        except UnidentifiedImageError:
            raise Rejected("not_an_image", "not an image (unrecognised format)") from None
        except Image.DecompressionBombError as e:
            raise Rejected("too_large", f"{e}; raise preprocess.max_image_pixels if the image is genuine") from None
        except (OSError, SyntaxError, ValueError, EOFError, KeyError, struct.error) as e:
            raise Rejected("undecodable", f"undecodable image: {e}") from None
        return image

    def _check_size(self, image: Image.Image) -> None:
        width, height = image.size
        if self.max_pixels and width * height > self.max_pixels:
            raise Rejected("too_large", f"{width}x{height} image: {width * height} pixels is over "
                           f"preprocess.max_image_pixels {self.max_pixels} (decompression-bomb guard)")
        if min(width, height) < self.min_size:
            raise Rejected("too_small", f"{width}x{height} image: smaller than preprocess.min_image_size "
                           f"{self.min_size}")

    def _to_mode(self, image: Image.Image) -> Image.Image:
        """``image`` in the output mode: wide modes scaled to 8 bits, transparency composited."""
        if image.mode in _WIDE_MODES:
            image = self._to_8_bits(image)
        if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            backdrop = Image.new("RGBA", rgba.size, self.background + (255,))
            image = Image.alpha_composite(backdrop, rgba).convert("RGB")
        return image if image.mode == self.mode else image.convert(self.mode)

    def _to_8_bits(self, image: Image.Image) -> Image.Image:
        if self.wide_modes == "reject":
            raise Rejected("bad_mode", f"{_WIDE_MODES[image.mode]} image (mode {image.mode}); "
                           f"set preprocess.wide_modes: rescale to scale it to 8 bits")
        values = np.asarray(image)
        if image.mode == "F":
            finite = bool(np.isfinite(values).all())
            low, high = (float(values.min()), float(values.max())) if finite else (math.nan, math.nan)
            if not 0.0 <= low <= high <= 1.0:
                raise Rejected("bad_mode", f"float image with values in [{low:.4g}, {high:.4g}]; only [0, 1] "
                               f"is scaled to 8 bits")
            return Image.fromarray(np.round(values * 255.0).astype(np.uint8))
        if values.min() < 0 or values.max() > 65535:
            raise Rejected("bad_mode", f"32-bit integer image with values in [{values.min()}, {values.max()}]; "
                           f"only 0..65535 (16-bit) is scaled to 8 bits")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8))

    def moments(self, decoded: list[dict]) -> dict:
        """Per-channel moments of a batch's pixels, from 256-bin histograms (exact, and much
        faster than float arithmetic on every pixel)."""
        pixels = np.frombuffer(b"".join(d["image"] for d in decoded), np.uint8).reshape(-1, self.channels)
        histograms = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(self.channels)])
        return {**moments_from_histograms(histograms),
                "source_images": source_facts([d["source"] for d in decoded], self.size)}

    @staticmethod
    def encode(decoded: dict) -> tuple[list, list]:
        return [(name, [data]) for name, data in decoded.items() if name != "source"], []


def _from_pixels(data: bytes, shape: tuple[int, ...]) -> Image.Image:
    """Raw uint8 pixels of shape [H, W] or [H, W, C] with C in 1, 3, 4."""
    channels = shape[2] if len(shape) == 3 else 1
    if len(shape) not in (2, 3) or channels not in _PIXEL_MODES or math.prod(shape) != len(data):
        raise Rejected("bad_shape", f"{len(data)} bytes of pixels for shape {list(shape)}; expected "
                       f"[H, W] or [H, W, C] with C = 1, 3 or 4")
    pixels = np.frombuffer(data, np.uint8).reshape(shape[:2] if channels == 1 else shape)
    return Image.fromarray(pixels, _PIXEL_MODES[channels])


def _crop_to_square(image: Image.Image) -> Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


class VectorDecoder:
    """Raw ``features`` -> float32 [D], or ``Rejected`` for a wrong length or NaN/inf values."""

    def __init__(self, feature_names: list[str]):
        self.feature_names = feature_names

    def decode(self, feature) -> dict[str, np.ndarray]:
        values = np.asarray(feature["features"].float_list.value, np.float32) if "features" in feature else None
        if values is None or len(values) != len(self.feature_names):
            got = 0 if values is None else len(values)
            raise Rejected("bad_shape", f"{got} values, expected {len(self.feature_names)}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise Rejected("bad_value", f"NaN or infinite value in column {self.feature_names[bad[0]]!r}")
        return {"features": values}

    @staticmethod
    def moments(arrays: list[dict]) -> dict:
        values = np.stack([a["features"] for a in arrays]).astype(np.float64)
        mean = values.mean(axis=0)
        return {"n": len(values), "mean": mean, "m2": ((values - mean) ** 2).sum(axis=0),
                "min": values.min(axis=0), "max": values.max(axis=0)}

    @staticmethod
    def encode(arrays: dict) -> tuple[list, list]:
        return [], [("features", arrays["features"].tolist())]
