"""One pixel cap for every image this process decodes: a 34 KB JPEG can declare 20000 x 20000
pixels (1.2 GB as BGR, 2.4 GB of RSS for ``detect`` to decode it), enough to kill the agent on a Pi.

The cap is ``DEFAULT_MAX_MEGAPIXELS`` unless ``$EDGE_AGENT_MAX_MEGAPIXELS`` or ``edge-agent
--max-megapixels MP`` (``set_max_pixels``) says otherwise. Image headers are read against it in
``agent.sources.decode`` (every source, ``detect``, ``label``, ``run``, ``replay``), video frame sizes
in ``agent.sources.video``, and the dataset images of ``export``.
"""

from __future__ import annotations

import os

# 50 MP: a 48 MP phone photo (8000 x 6000) passes and takes 144 MB as BGR, which a Pi with 1 GB
# can hold; 20000 x 20000 (1.2 GB) cannot.
DEFAULT_MAX_MEGAPIXELS = 50.0
MAX_MEGAPIXELS_ENV = "EDGE_AGENT_MAX_MEGAPIXELS"
_max_pixels: int | None = None  # set_max_pixels(); None: from the environment, else the default


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the cap; the message says how to raise it."""


def set_max_pixels(megapixels: float | None) -> None:
    """Set the pixel cap of this process in megapixels (None: back to the environment / default)."""
    global _max_pixels
    _max_pixels = None if megapixels is None else int(megapixels * 1_000_000)


def max_pixels() -> int:
    """The pixel cap in pixels: ``set_max_pixels``, else ``$EDGE_AGENT_MAX_MEGAPIXELS``, else 50 MP."""
    if _max_pixels is not None:
        return _max_pixels
    text = os.environ.get(MAX_MEGAPIXELS_ENV, "")
    try:
        value = float(text)
    except ValueError:
        value = DEFAULT_MAX_MEGAPIXELS  # unset or not a number (the CLI refuses a bad value up front)
    return int((value if value > 0 else DEFAULT_MAX_MEGAPIXELS) * 1_000_000)


def check_size(width: int, height: int) -> None:
    """Raise ``ImageTooLarge`` when ``width`` x ``height`` pixels is more than ``max_pixels()``."""
    if width * height > max_pixels():
        raise ImageTooLarge(
            f"{width}x{height} pixels is over the cap of {max_pixels() / 1e6:g} megapixels "
            f"(raise it with edge-agent --max-megapixels or ${MAX_MEGAPIXELS_ENV} if this machine has the memory)"
        )
