"""The node's camera input (parameter ``image_transport``): which message on which topic, and how one becomes
the (H, W, 3) uint8 RGB frame the pipeline takes.

* ``raw``: ``sensor_msgs/Image`` on ``image`` (:func:`mtl_perception.ros.conversions.image_to_tensor`).
* ``compressed``: ``sensor_msgs/CompressedImage`` on ``<image>/compressed``, the naming of
  compressed_image_transport: ``image`` is resolved first (remappings applied) and ``/compressed`` appended,
  so ``-r image:=/cam/image_raw`` subscribes ``/cam/image_raw/compressed``. JPEG and PNG
  (:class:`mtl_perception.compressed.FrameDecoder`); a frame whose size changes mid-stream is dropped
  unless the next one has the new size too (:class:`mtl_perception.compressed.SizeGuard`).

On Jazzy there is no Python image_transport (``image_transport_py`` starts with Kilted), hence this.
"""

from __future__ import annotations

from sensor_msgs.msg import CompressedImage, Image

from mtl_perception.compressed import FrameDecoder, SizeGuard
from mtl_perception.ros.conversions import image_to_tensor

IMAGE_TRANSPORTS = ("raw", "compressed")


class RawInput:
    """``sensor_msgs/Image`` on ``image``."""

    transport = "raw"
    msg_type = Image

    def __init__(self, device, max_pixels: int) -> None:
        self.device, self.max_pixels = device, max_pixels

    def topic(self, node) -> str:
        return "image"

    def convert(self, msg):
        """(frame, the key whose change restarts the flow history: the encoding)."""
        return image_to_tensor(msg, self.device, self.max_pixels), str(msg.encoding)

    @staticmethod
    def describe(msg) -> str:
        return f"{msg.width}x{msg.height} {msg.encoding!r}"

    def diagnostics(self) -> dict[str, str]:
        return {"image_transport": self.transport}


class CompressedInput:
    """``sensor_msgs/CompressedImage`` on ``<image>/compressed`` (JPEG, PNG)."""

    transport = "compressed"
    msg_type = CompressedImage

    def __init__(self, device, max_pixels: int) -> None:
        self.decoder = FrameDecoder(device, max_pixels=max_pixels)
        self.sizes = SizeGuard()

    def topic(self, node) -> str:
        return f"{node.resolve_topic_name('image')}/compressed"

    def convert(self, msg):
        image = self.decoder.decode(msg.data, msg.format)
        self.sizes.check(image.shape[:2])
        # decoded frames are RGB whatever the format string says: only a size change restarts the flow
        return image, "compressed"

    @staticmethod
    def describe(msg) -> str:
        return f"format {msg.format!r}, {len(msg.data)} bytes"

    def diagnostics(self) -> dict[str, str]:
        measured = " ".join(f"{name}={ms:.2f}" for name, ms in self.decoder.measured_ms.items())
        return {
            "image_transport": self.transport,
            "image_decoder": self.decoder.name,
            "image_decoder_measured_ms": measured,
        }


def make_input(transport: str, *, device, max_pixels: int) -> RawInput | CompressedInput:
    """The input for ``transport`` (one of IMAGE_TRANSPORTS; the caller has checked it)."""
    return {"raw": RawInput, "compressed": CompressedInput}[transport](device, max_pixels)
