"""Things a printer camera sees that are not a print failure, drawn into a frame.

Each ``add_*`` function draws one distractor into a BGR float32 image in place and returns the
coverage mask (float32 ``[H, W]``, 0..1) of the pixels it hid, so that the caller can drop the
ground-truth boxes of objects it mostly covered. Used by ``scripts/make_hard_negatives.py`` to
teach the guidance model that these are background: real photos (people, animals, objects)
in part of the frame or all of it, text and logo watermarks (like "created with OctoPrint"),
cooling fans, heat-sink fins, cable bundles, tape, hands and a blocked lens.
"""

from __future__ import annotations

import datetime
import math

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.float32]
Mask = NDArray[np.float32]
Rng = np.random.Generator

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SIMPLEX | cv2.FONT_ITALIC,
)
WORDS = (
    "created with", "OctoPrint", "created with OctoPrint", "Obico", "Mainsail", "Fluidd", "CAM 1",
    "Printer 1", "ender3-v2", "Prusa MK3S", "octopi.local", "LIVE", "REC", "Layer 42/180", "ETA 01:23:45",
    "T: 215/215 B: 60/60", "FPS 5", "Bambu", "Voron 2.4", "Timelapse", "80%", "Z 12.40", "webcam",
)  # fmt: skip
SKIN = ((180, 200, 235), (150, 180, 225), (120, 160, 210), (90, 125, 175), (60, 90, 140), (45, 65, 100))
TAPE = ((205, 140, 40), (40, 150, 225), (170, 200, 215), (60, 200, 90), (235, 235, 235))
ONE = (1.0,)  # the colour of a mask's drawn pixels
WIRES = ((40, 40, 200), (30, 30, 30), (235, 235, 235), (40, 200, 230), (200, 120, 40), (60, 160, 60))


def _blend(img: Image, layer: Image, alpha: Mask) -> Mask:
    """``img = img * (1 - alpha) + layer * alpha`` in place; returns alpha."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += layer * a
    return alpha


def _soft(mask: Mask, sigma: float) -> Mask:
    return mask if sigma <= 0 else np.asarray(cv2.GaussianBlur(mask, (0, 0), sigma), dtype=np.float32)


def _photo_region(photo: NDArray[np.uint8], w: int, h: int, rng: Rng) -> Image:
    """``photo`` zoomed to cover ``w`` x ``h`` (random zoom, offset, mirror, colour gain)."""
    ph, pw = photo.shape[:2]
    zoom = max(w / pw, h / ph) * rng.uniform(1.0, 1.6)
    big = cv2.resize(
        photo, (max(w, round(pw * zoom)), max(h, round(ph * zoom))), interpolation=cv2.INTER_AREA
    )
    y0 = int(rng.integers(0, big.shape[0] - h + 1))
    x0 = int(rng.integers(0, big.shape[1] - w + 1))
    out = big[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.15:
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    out = out * rng.uniform(0.6, 1.2) + rng.uniform(-15, 15)
    sigma = rng.uniform(0, 1.5)
    return np.asarray(cv2.GaussianBlur(out, (0, 0), sigma), dtype=np.float32) if sigma > 0.3 else out


def add_photo(img: Image, photo: NDArray[np.uint8], rng: Rng, *, full: bool = False) -> Mask:
    """A real photo over the whole frame (``full``: the camera moved or something fills the view)
    or over part of it (a person or a pet partly in view, often entering from an edge)."""
    h, w = img.shape[:2]
    if full:
        return _blend(img, _photo_region(photo, w, h, rng), np.ones((h, w), np.float32))
    ph = int(h * rng.uniform(0.3, 0.95))
    pw = int(min(w * 0.9, ph * rng.uniform(0.5, 1.5)))
    patch = _photo_region(photo, pw, ph, rng)
    edge = rng.integers(0, 5)  # 0..3: from that edge, partly outside; 4: anywhere inside
    x = (
        int(rng.integers(-pw // 3, w - 2 * pw // 3))
        if edge in (1, 3)
        else int(rng.integers(0, max(1, w - pw)))
    )
    y = (
        int(rng.integers(-ph // 3, h - 2 * ph // 3))
        if edge in (0, 2)
        else int(rng.integers(0, max(1, h - ph)))
    )
    if edge == 0:
        x = -int(pw * rng.uniform(0, 0.5))
    elif edge == 1:
        y = h - int(ph * rng.uniform(0.5, 1.0))
    elif edge == 2:
        x = w - int(pw * rng.uniform(0.5, 1.0))
    elif edge == 3:
        y = -int(ph * rng.uniform(0, 0.5))
    shape = np.zeros((ph, pw), np.float32)
    kind = rng.integers(0, 3)
    if kind == 0:
        shape[:] = 1.0
    elif kind == 1:
        cv2.ellipse(shape, (pw // 2, ph // 2), (pw // 2, ph // 2), 0, 0, 360, ONE, -1)
    else:  # a blob: a person's or an animal's outline is rarely a rectangle
        pts = [(pw / 2 + math.cos(t) * pw / 2 * rng.uniform(0.6, 1.0),
                ph / 2 + math.sin(t) * ph / 2 * rng.uniform(0.6, 1.0)) for t in np.linspace(0, 2 * np.pi, 12)]  # fmt: skip
        cv2.fillPoly(shape, [np.array(pts, np.int32)], ONE)
    shape = _soft(shape, rng.uniform(0.5, 4.0))
    layer = np.zeros_like(img)
    alpha = np.zeros((h, w), np.float32)
    sx0, sy0, sx1, sy1 = max(0, -x), max(0, -y), min(pw, w - x), min(ph, h - y)
    if sx1 <= sx0 or sy1 <= sy0:
        return alpha
    layer[y + sy0 : y + sy1, x + sx0 : x + sx1] = patch[sy0:sy1, sx0:sx1]
    alpha[y + sy0 : y + sy1, x + sx0 : x + sx1] = shape[sy0:sy1, sx0:sx1]
    return _blend(img, layer, alpha)


def _text_lines(rng: Rng) -> list[str]:
    kind = rng.integers(0, 4)
    if kind == 0:
        return ["created with", "OctoPrint"]
    if kind == 1:
        stamp = datetime.datetime(2020, 1, 1) + datetime.timedelta(seconds=int(rng.integers(0, 10**8)))
        return [stamp.strftime(str(rng.choice(["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%H:%M:%S"])))]
    return [str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 4)))]


def add_text(img: Image, rng: Rng) -> Mask:
    """One to three lines of overlay text (a watermark, a timestamp, a printer's status) in a
    corner, along an edge or anywhere, sometimes on a dark band or with an outline."""
    h, w = img.shape[:2]
    lines = _text_lines(rng)
    font = int(FONTS[int(rng.integers(len(FONTS)))])
    scale = rng.uniform(0.35, 1.2) * h / 480
    thick = max(1, round(scale * rng.uniform(1.0, 2.5)))
    sizes = [cv2.getTextSize(t, font, scale, thick)[0] for t in lines]
    line_h = max(s[1] for s in sizes) + max(4, int(8 * scale))
    block_w, block_h = max(s[0] for s in sizes), line_h * len(lines)
    x0 = int(rng.choice([6, w - block_w - 6, rng.integers(0, max(1, w - block_w))]))
    y0 = int(rng.choice([6, h - block_h - 6, rng.integers(0, max(1, h - block_h))]))
    colour = [(255, 255, 255), (20, 20, 20), (40, 230, 240), (60, 220, 60), (60, 60, 230)][
        int(rng.integers(5))
    ]
    layer = np.zeros_like(img)
    alpha = np.zeros((h, w), np.float32)
    if rng.random() < 0.3:
        band = tuple(float(v) for v in rng.uniform(0, 60, 3))
        cv2.rectangle(layer, (x0 - 4, y0 - 4), (x0 + block_w + 4, y0 + block_h + 4), band, -1)
        cv2.rectangle(
            alpha, (x0 - 4, y0 - 4), (x0 + block_w + 4, y0 + block_h + 4), (float(rng.uniform(0.5, 0.9)),), -1
        )
    outline = rng.random() < 0.3
    for i, (text, (tw, _)) in enumerate(zip(lines, sizes, strict=True)):
        org = (x0 + (block_w - tw) // 2, y0 + (i + 1) * line_h - line_h // 4)
        if outline:
            cv2.putText(layer, text, org, font, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.putText(alpha, text, org, font, scale, ONE, thick + 2, cv2.LINE_AA)
        cv2.putText(layer, text, org, font, scale, colour, thick, cv2.LINE_AA)
        cv2.putText(alpha, text, org, font, scale, ONE, thick, cv2.LINE_AA)
    return _blend(img, layer, alpha * rng.uniform(0.7, 1.0))


def add_mascot(img: Image, rng: Rng, logo: NDArray[np.uint8] | None = None) -> Mask:
    """A small logo in a corner: a cartoon mascot (a round body with eyes and tentacles, like
    OctoPrint's) or ``logo``, with "created with" text under it."""
    h, w = img.shape[:2]
    size = int(h * rng.uniform(0.06, 0.16))
    cx = int(rng.choice([size, w - size, rng.integers(size, w - size)]))
    cy = int(rng.choice([h - size - 12, size, rng.integers(size, h - size)]))
    layer = np.zeros_like(img)
    alpha = np.zeros((h, w), np.float32)
    if logo is not None:
        patch = cv2.resize(logo, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        x0, y0 = max(0, cx - size // 2), max(0, cy - size // 2)
        part = patch[: h - y0, : w - x0]
        layer[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = part
        alpha[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = 1.0
    else:
        body = tuple(float(v) for v in rng.uniform(20, 235, 3))
        r = size // 3
        for k in range(int(rng.integers(3, 7))):  # tentacles
            angle = math.pi * (0.15 + 0.7 * k / 5)
            end = (int(cx + math.cos(angle) * size * 0.6), int(cy + r * 0.5 + math.sin(angle) * size * 0.5))
            cv2.line(layer, (cx, cy), end, body, max(2, r // 3), cv2.LINE_AA)
            cv2.line(alpha, (cx, cy), end, ONE, max(2, r // 3), cv2.LINE_AA)
        cv2.circle(layer, (cx, cy), r, body, -1, cv2.LINE_AA)
        cv2.circle(alpha, (cx, cy), r, ONE, -1, cv2.LINE_AA)
        for dx in (-r // 2, r // 2):
            cv2.circle(layer, (cx + dx, cy - r // 5), max(2, r // 3), (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(layer, (cx + dx, cy - r // 5), max(1, r // 6), (0, 0, 0), -1, cv2.LINE_AA)
    if rng.random() < 0.7:
        scale = max(0.3, size / 70)
        for i, text in enumerate(("created with", str(rng.choice(["OctoPrint", "Obico", "Mainsail"])))):
            tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
            org = (cx - tw // 2, cy + size // 2 + int((i + 1) * 14 * scale * 2))
            cv2.putText(layer, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
            cv2.putText(alpha, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, ONE, 1, cv2.LINE_AA)
    return _blend(img, layer, alpha)


def _place(img: Image, canvas: Image, mask: Mask, rng: Rng) -> Mask:
    """Warp a square drawing (``canvas``, ``mask``) by a random perspective to a random place."""
    h, w = img.shape[:2]
    s = canvas.shape[0]
    size = s * rng.uniform(0.8, 1.2)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    src = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float32)
    jitter = rng.uniform(-0.18, 0.18, (4, 2)) * size
    dst = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * size / 2 + [cx, cy] + jitter
    matrix = cv2.getPerspectiveTransform(src, np.asarray(dst, np.float32))
    layer = cv2.warpPerspective(canvas, matrix, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(mask, matrix, (w, h), flags=cv2.INTER_LINEAR)
    return _blend(img, np.asarray(layer, np.float32), np.asarray(alpha, np.float32))


def add_fan(img: Image, rng: Rng) -> Mask:
    """An axial cooling fan seen at an angle: a square frame, a round opening, blades and a hub."""
    s = int(img.shape[0] * rng.uniform(0.08, 0.4))
    canvas = np.zeros((s, s, 3), np.float32)
    mask = np.zeros((s, s), np.float32)
    frame = rng.uniform(15, 70) if rng.random() < 0.8 else rng.uniform(120, 230)
    colour = np.clip(frame * rng.uniform(0.85, 1.15, 3), 0, 255)
    cv2.rectangle(canvas, (0, 0), (s - 1, s - 1), colour.tolist(), -1)
    cv2.rectangle(mask, (0, 0), (s - 1, s - 1), ONE, -1)
    c, r = s // 2, int(s * 0.46)
    cv2.circle(canvas, (c, c), r, (colour * 0.35).tolist(), -1, cv2.LINE_AA)
    blades, spin = int(rng.integers(5, 10)), rng.uniform(0, 2 * np.pi)
    blade = (colour * rng.uniform(0.6, 1.3)).clip(0, 255).tolist()
    for k in range(blades):
        a = spin + 2 * np.pi * k / blades
        pts = [(c + math.cos(a + t * 0.5) * r * f, c + math.sin(a + t * 0.5) * r * f)
               for t, f in ((0, 0.3), (0.4, 0.95), (1.0, 0.92), (0.7, 0.3))]  # fmt: skip
        cv2.fillPoly(canvas, [np.array(pts, np.int32)], blade, cv2.LINE_AA)
    cv2.circle(canvas, (c, c), int(r * 0.32), (colour * 1.1).clip(0, 255).tolist(), -1, cv2.LINE_AA)
    if rng.random() < 0.5:  # a sticker on the hub
        cv2.circle(canvas, (c, c), int(r * 0.22), rng.uniform(0, 255, 3).tolist(), -1, cv2.LINE_AA)
    for hx, hy in ((0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)):
        cv2.circle(canvas, (int(s * hx), int(s * hy)), max(1, s // 25), (colour * 0.3).tolist(), -1)
    if rng.random() < 0.5:  # a grille
        for g in range(1, 4):
            cv2.circle(
                canvas, (c, c), int(r * g / 3.5), (colour * 1.2).clip(0, 255).tolist(), max(1, s // 60)
            )
    return _place(img, canvas, mask, rng)


def add_fins(img: Image, rng: Rng) -> Mask:
    """A heat sink: a block of parallel fins, silver or black."""
    s = int(img.shape[0] * rng.uniform(0.06, 0.25))
    metal = rng.uniform(140, 220) if rng.random() < 0.6 else rng.uniform(20, 60)
    canvas = np.full((s, s, 3), metal * 0.5, np.float32)
    mask = np.zeros((s, s), np.float32)
    cv2.rectangle(mask, (0, 0), (s - 1, s - 1), ONE, -1)
    pitch = max(3, int(s / rng.uniform(5, 12)))
    for y in range(0, s, pitch):
        cv2.rectangle(canvas, (0, y), (s - 1, y + pitch // 2), (metal, metal, metal * 0.97), -1)
    return _place(img, canvas, mask, rng)


def add_wires(img: Image, rng: Rng) -> Mask:
    """A bundle of 2-6 smooth cables, side by side, from an edge into the frame."""
    h, w = img.shape[:2]
    p0 = (
        np.array([rng.uniform(0, w), rng.choice([0.0, h])])
        if rng.random() < 0.5
        else np.array([rng.choice([0.0, w]), rng.uniform(0, h)])
    )
    p1, p2, p3 = (rng.uniform([0, 0], [w, h]) for _ in range(3))
    t = np.linspace(0, 1, 60)[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    tangent = np.gradient(curve, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) / (
        np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-6
    )
    layer = np.zeros_like(img)
    alpha = np.zeros((h, w), np.float32)
    thick = int(rng.integers(2, 6))
    for k in range(int(rng.integers(2, 7))):
        pts = (curve + normal * k * thick * 1.1).astype(np.int32)
        colour = WIRES[int(rng.integers(len(WIRES)))]
        cv2.polylines(layer, [pts], False, colour, thick, cv2.LINE_AA)
        cv2.polylines(alpha, [pts], False, ONE, thick, cv2.LINE_AA)
    return _blend(img, layer, alpha)


def add_tape(img: Image, rng: Rng) -> Mask:
    """One to three strips of tape (painter's, Kapton, masking), slightly translucent."""
    h, w = img.shape[:2]
    layer = np.zeros_like(img)
    alpha = np.zeros((h, w), np.float32)
    colour = TAPE[int(rng.integers(len(TAPE)))]
    for _ in range(int(rng.integers(1, 4))):
        centre = (float(rng.uniform(0, w)), float(rng.uniform(h * 0.3, h)))
        size = (float(rng.uniform(0.15, 0.8) * w), float(rng.uniform(0.03, 0.1) * h))
        box = cv2.boxPoints((centre, size, float(rng.uniform(-30, 30)))).astype(np.int32)
        cv2.fillPoly(layer, [box], colour)
        cv2.fillPoly(alpha, [box], (float(rng.uniform(0.55, 0.95)),))
    return _blend(img, layer, alpha)


def add_hand(img: Image, rng: Rng) -> Mask:
    """A hand and forearm reaching in from an edge: palm, fingers, thumb, a sleeve."""
    h, w = img.shape[:2]
    edge = int(rng.integers(0, 4))
    start = [(0.0, rng.uniform(0.2, 1.0) * h), (rng.uniform(0, w), float(h)), (float(w), rng.uniform(0.2, 1.0) * h),
             (rng.uniform(0, w), 0.0)][edge]  # fmt: skip
    palm_c = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    direction = palm_c - np.array(start)
    direction /= np.linalg.norm(direction) + 1e-6
    palm = h * rng.uniform(0.08, 0.2)
    skin = np.clip(np.array(SKIN[int(rng.integers(len(SKIN)))]) * rng.uniform(0.85, 1.15), 0, 255)
    alpha = np.zeros((h, w), np.float32)
    angle = math.degrees(math.atan2(direction[1], direction[0]))
    cv2.line(
        alpha, tuple(int(v) for v in start), tuple(int(v) for v in palm_c), ONE, int(palm * 0.9), cv2.LINE_AA
    )
    cv2.ellipse(
        alpha, tuple(int(v) for v in palm_c), (int(palm * 0.75), int(palm * 0.6)), angle, 0, 360, ONE, -1
    )
    side = np.array([-direction[1], direction[0]])
    curl = rng.uniform(0.3, 1.0)
    for k, spread in enumerate((-0.45, -0.15, 0.15, 0.45)):
        base = palm_c + direction * palm * 0.55 + side * spread * palm * 1.3
        length = palm * curl * (0.9 if k in (1, 2) else 0.75)
        tip = base + (direction + side * spread * 0.4) * length
        cv2.line(
            alpha,
            tuple(int(v) for v in base),
            tuple(int(v) for v in tip),
            ONE,
            max(2, int(palm * 0.28)),
            cv2.LINE_AA,
        )
    thumb = palm_c + side * palm * 0.7 * rng.choice([-1, 1])
    cv2.line(alpha, tuple(int(v) for v in palm_c), tuple(int(v) for v in thumb + direction * palm * 0.4), ONE,
             max(2, int(palm * 0.3)), cv2.LINE_AA)  # fmt: skip
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 0.75 + 0.35 * np.clip(
        ((xx - palm_c[0]) * side[0] + (yy - palm_c[1]) * side[1]) / (palm * 2) + 0.5, 0, 1
    )
    layer = skin[None, None, :].astype(np.float32) * shade[..., None]
    if rng.random() < 0.6:  # a sleeve over the arm near the edge
        sleeve = np.zeros((h, w), np.float32)
        cuff = np.array(start) + (palm_c - np.array(start)) * rng.uniform(0.3, 0.7)
        cv2.line(
            sleeve,
            tuple(int(v) for v in start),
            tuple(int(v) for v in cuff),
            ONE,
            int(palm * 1.2),
            cv2.LINE_AA,
        )
        layer = (
            layer * (1 - sleeve[..., None])
            + rng.uniform(0, 255, 3).astype(np.float32) * sleeve[..., None] * shade[..., None]
        )
        alpha = np.maximum(alpha, sleeve)
    return _blend(img, layer, _soft(alpha, rng.uniform(0.8, 3.0)))


def add_blocked(img: Image, rng: Rng) -> Mask:
    """The lens covered or the camera knocked: a dark, skin-coloured or grey blur fills the view."""
    h, w = img.shape[:2]
    base = (
        np.array(SKIN[int(rng.integers(len(SKIN)))], np.float32)
        if rng.random() < 0.5
        else np.full(3, rng.uniform(5, 120), np.float32)
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)) * rng.uniform(0.3, 1.2)
    layer = base[None, None, :] * (1.0 + ramp[..., None]) + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    keep = rng.uniform(0.0, 0.25)  # a little of the scene may show through
    return _blend(img, layer.astype(np.float32), np.full((h, w), 1.0 - keep, np.float32))
