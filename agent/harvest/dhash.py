"""A 64-bit difference hash of a frame and Hamming distances between hashes (the duplicate veto)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray


def dhash64(image: NDArray[np.uint8]) -> int:
    """64-bit difference hash: the image shrunk to 9 x 8 grey pixels, one bit per
    horizontally adjacent pair (left brighter than right). Near-identical images differ
    in few bits; sensor noise flips bits only where neighbours are almost equal."""
    small = cv2.resize(image, (9, 8), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    bits = small[:, :-1] > small[:, 1:]
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming_distances(value: int, others: Sequence[int]) -> NDArray[np.int64]:
    """Bits differing between the 64-bit ``value`` and each of ``others``."""
    if not others:
        return np.zeros(0, dtype=np.int64)
    xor = np.bitwise_xor(np.asarray(others, dtype=np.uint64), np.uint64(value))
    return np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1, dtype=np.int64)
