"""Render synthetic 3D-printer camera frames with exact ground-truth boxes.

A small z-buffered renderer (numpy + OpenCV, no TensorFlow) draws a printer scene seen by a
pinhole camera: a textured bed in perspective, the printer frame and X gantry, a carriage
with a fan and a hotend (heater block + nozzle, labelled ``nozzle``), parts growing layer
by layer (``print``) on rafts or skirts (``raft``), and two failures: a part knocked loose,
tilted and displaced off its spot (``adhesion``), and tangles of filament (``spaghetti``).
Camera pose, lens, lighting, bed surface, filament colour, background clutter, blur, noise
and JPEG quality vary from frame to frame.

Boxes are amodal, as in the Print Nanny labelling guide: the whole object, including the
pixels hidden behind something else; an object mostly out of the frame or hidden is not
labelled. Every box comes from the projected geometry, so it is exact.

Two modes:

- ``train``: many independent random frames (one scene each), for training and evaluation;
- ``timelapse``: one print on a fixed camera that runs healthy, then is knocked loose and
  fails into spaghetti (the bundled demo).

Each writes JPEG frames into OUT, ``ground_truth.json`` (or ``--truth``) and, unless
``--no-vott``, a VoTT 2.2.0 project of the true boxes in OUT/vott-target. Output is
deterministic for a given seed (and OpenCV build).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger("make_sample_data")

LABELS: tuple[str, ...] = ("nozzle", "raft", "print", "adhesion", "spaghetti")
Array = NDArray[np.float64]
Image = NDArray[np.uint8]
UP = np.array([0.0, 0.0, 1.0])
NEAR_MM = 5.0  # nothing nearer to the camera than this is drawn
REPO = Path(__file__).resolve().parent.parent

# Filament colours (BGR, 0..255) the random ones are jittered around.
FILAMENTS: tuple[tuple[int, int, int], ...] = (
    (235, 235, 235),  # white
    (40, 40, 40),  # black
    (140, 140, 140),  # grey
    (40, 40, 210),  # red
    (30, 140, 245),  # orange
    (40, 215, 235),  # yellow
    (60, 170, 40),  # green
    (200, 110, 30),  # blue
    (150, 60, 120),  # purple
    (190, 215, 225),  # natural
    (190, 190, 200),  # silver
    (170, 120, 240),  # pink
    (200, 200, 60),  # teal
)


# ----------------------------------------------------------------------------------- camera


@dataclass
class Camera:
    """A pinhole camera: world millimetres (x right, y away across the bed, z up) to pixels."""

    position: Array
    rotation: Array  # 3x3 world -> camera (x right, y down, z forward)
    focal_px: float
    width: int
    height: int

    @classmethod
    def look_at(
        cls, position: Array, target: Array, focal_px: float, width: int, height: int, roll_rad: float = 0.0
    ) -> Camera:
        """A camera at ``position`` looking at ``target``, rolled by ``roll_rad``."""
        forward = target - position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, UP)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c, s = math.cos(roll_rad), math.sin(roll_rad)
        right, down = c * right + s * down, -s * right + c * down
        return cls(position, np.stack([right, down, forward]), focal_px, width, height)

    def to_camera(self, points: Array) -> Array:
        """World points ``[N, 3]`` in camera coordinates ``[N, 3]`` (z = depth in mm)."""
        return (points - self.position) @ self.rotation.T

    def project(self, points: Array) -> tuple[Array, Array]:
        """World points ``[N, 3]`` to pixel coordinates ``[N, 2]`` and depths ``[N]`` (mm)."""
        cam = self.to_camera(points)
        depth = np.maximum(cam[:, 2], 1e-3)
        uv = cam[:, :2] * (self.focal_px / depth)[:, None]
        uv += np.array([self.width / 2.0, self.height / 2.0])
        return uv, depth

    def project_camera(self, cam: Array) -> Array:
        """Camera-coordinate points ``[N, 3]`` (depth > 0) to pixel coordinates ``[N, 2]``."""
        return cam[:, :2] * (self.focal_px / cam[:, 2])[:, None] + np.array(
            [self.width / 2.0, self.height / 2.0]
        )


def clip_near(cam: Array, near: float) -> Array:
    """Clip a convex polygon in camera coordinates to ``depth >= near`` (Sutherland-Hodgman)."""
    out = []
    n = len(cam)
    for i in range(n):
        a, b = cam[i], cam[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


def inverse_depth_plane(uv: Array, depth: Array) -> tuple[float, float, float] | None:
    """For a planar polygon: ``1/depth = a*u + b*v + c`` over the image (exact for planes)."""
    design = np.column_stack([uv, np.ones(len(uv))])
    coef, _, rank, _ = np.linalg.lstsq(design, 1.0 / depth, rcond=None)
    if rank < 3:
        return None
    return float(coef[0]), float(coef[1]), float(coef[2])


# ----------------------------------------------------------------------------------- geometry


@dataclass
class Solid:
    """A convex polyhedron with a flat colour; faces are vertex-index rings."""

    vertices: Array
    faces: list[list[int]]
    color: Array  # BGR 0..255
    material: str = "plastic"  # plastic | metal | matte
    stripes: dict[int, Array] = field(default_factory=dict)  # face -> [M, 2, 3] segments
    hatch: set[int] = field(default_factory=set)  # faces with a hatch pattern (raft tops)
    texture_face: int | None = None  # face drawn from the scene's bed texture
    object_id: int = 0

    def transformed(self, rotation: Array, translation: Array) -> Solid:
        """The same solid rotated (3x3) then moved (mm)."""
        stripes = {k: v @ rotation.T + translation for k, v in self.stripes.items()}
        return Solid(
            self.vertices @ rotation.T + translation,
            self.faces,
            self.color,
            self.material,
            stripes,
            self.hatch,
            self.texture_face,
            self.object_id,
        )


def regular_polygon(radius_x: float, radius_y: float, sides: int, phase: float = 0.0) -> Array:
    """A convex footprint ``[sides, 2]`` centred on the origin (mm)."""
    angles = phase + np.arange(sides) * (2.0 * math.pi / sides)
    return np.column_stack([radius_x * np.cos(angles), radius_y * np.sin(angles)])


def rectangle(width: float, depth: float) -> Array:
    """A ``width`` x ``depth`` footprint centred on the origin (mm)."""
    w, d = width / 2.0, depth / 2.0
    return np.array([[-w, -d], [w, -d], [w, d], [-w, d]])


def frustum(
    footprint: Array,
    height: float,
    color: Array,
    *,
    z0: float = 0.0,
    top_scale: float = 1.0,
    center: tuple[float, float] = (0.0, 0.0),
    material: str = "plastic",
    layer_mm: float | None = None,
    full_height: float | None = None,
) -> Solid:
    """A vertical prism or frustum on ``footprint`` from ``z0`` to ``z0 + height``.

    ``top_scale`` shrinks the top face (a frustum of a part ``full_height`` tall is cut at
    ``height``); ``layer_mm`` adds layer lines on the side faces.
    """
    k = len(footprint)
    full = full_height if full_height else height
    scale = 1.0 - (1.0 - top_scale) * min(height / full, 1.0)
    base = footprint + np.asarray(center)
    top = footprint * scale + np.asarray(center)
    verts = np.vstack(
        [np.column_stack([base, np.full(k, z0)]), np.column_stack([top, np.full(k, z0 + height)])]
    )
    faces = [list(range(k - 1, -1, -1)), list(range(k, 2 * k))]
    faces += [[i, (i + 1) % k, k + (i + 1) % k, k + i] for i in range(k)]
    solid = Solid(verts, faces, np.asarray(color, dtype=np.float64), material)
    if layer_mm and height > 2 * layer_mm:
        levels = np.arange(layer_mm, height - 0.5 * layer_mm, layer_mm) / height
        for i in range(k):
            b0, b1, t0, t1 = verts[i], verts[(i + 1) % k], verts[k + i], verts[k + (i + 1) % k]
            starts = b0 + levels[:, None] * (t0 - b0)
            ends = b1 + levels[:, None] * (t1 - b1)
            solid.stripes[2 + i] = np.stack([starts, ends], axis=1)
    return solid


def box_solid(
    center: Sequence[float], size: Sequence[float], color: Array, material: str = "plastic"
) -> Solid:
    """An axis-aligned box centred on ``center`` with edge lengths ``size`` (mm)."""
    cx, cy, cz = center
    sx, sy, sz = size
    return frustum(rectangle(sx, sy), sz, color, z0=cz - sz / 2.0, center=(cx, cy), material=material)


def rotation_matrix(axis: Array, angle_rad: float) -> Array:
    """Rodrigues rotation about a unit ``axis`` by ``angle_rad``."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def spaghetti_strands(
    rng: np.random.Generator,
    center: Array,
    radii: Array,
    count: int,
    points: int,
    step_mm: float,
    z_floor: float = 0.0,
) -> list[Array]:
    """Random smooth 3D curves confined to an ellipsoid: a tangle of loose filament (mm)."""
    strands = []
    for _ in range(count):
        p = center + rng.uniform(-0.6, 0.6, 3) * radii
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        curve = np.empty((points, 3))
        for i in range(points):
            d = d + rng.normal(scale=0.45, size=3)
            outside = (p - center) / radii
            if np.sum(outside**2) > 1.0:
                d -= 1.2 * outside / np.linalg.norm(outside)
            d /= np.linalg.norm(d)
            p = p + d * step_mm
            p[2] = max(p[2], z_floor + 0.4)
            curve[i] = p
        strands.append(curve)
    return strands


def hanging_strands(
    rng: np.random.Generator, top: Array, bottom: Array, count: int, sway_mm: float
) -> list[Array]:
    """Strands falling from ``top`` (the nozzle) to ``bottom`` with a sideways wiggle (mm)."""
    strands = []
    for _ in range(count):
        n = 40
        t = np.linspace(0.0, 1.0, n)[:, None]
        end = bottom + rng.normal(scale=sway_mm * 0.5, size=3) * np.array([1.0, 1.0, 0.2])
        line = top + t * (end - top)
        wiggle = np.cumsum(rng.normal(scale=sway_mm * 0.08, size=(n, 3)), axis=0)
        wiggle -= t * wiggle[-1]
        wiggle[:, 2] *= 0.3
        strands.append(line + wiggle * np.sin(np.pi * t))
    return strands


# ----------------------------------------------------------------------------------- scene


@dataclass
class Part:
    """One printed object: footprint on the bed, full height, and its raft or skirt."""

    footprint: Array  # [K, 2] mm, centred on the origin
    center: Array  # (x, y) on the bed, mm
    full_height: float
    top_scale: float
    raft: str  # none | raft | skirt
    raft_margin: float
    raft_thickness: float


@dataclass
class Knock:
    """A part knocked loose: rotated (3x3) and moved (mm), height frozen at failure time."""

    rotation: Array
    translation: Array
    height: float


@dataclass
class State:
    """What the printer is doing in one frame."""

    layer_mm: float  # current print height
    nozzle_xy: Array
    knocked: dict[int, Knock] = field(default_factory=dict)
    tangles: list[list[Array]] = field(default_factory=list)  # each a list of strands (mm)


@dataclass
class Look:
    """Everything about the picture that is not geometry: colours, light, lens, artefacts."""

    filament: Array
    bed_texture: Image
    bed_edge: Array
    frame_color: Array
    carriage_color: Array
    block_color: Array
    block_material: str
    light_dir: Array
    ambient: float
    diffuse: float
    tint: Array
    background: Image
    blur_sigma: float
    motion_blur: int
    motion_angle: float
    downscale: float
    noise_sigma: float
    jpeg_quality: int
    gamma: float
    vignette: float
    glow: Array | None
    watermark: bool
    layer_line_mm: float
    strand_mm: float


@dataclass
class Printer:
    """The fixed geometry of one printer seen by one camera."""

    camera: Camera
    bed_w: float
    bed_d: float
    parts: list[Part]
    active_part: int
    gantry_kind: str  # extrusion | rods
    base_height: float  # a box under the bed (0: none), mm
    carriage_size: Array
    block_size: Array
    nozzle_len: float
    look: Look


@dataclass
class Box:
    """One ground-truth box in frame pixels."""

    label: str
    xyxy: tuple[float, float, float, float]
    object_id: int = 0  # which object of the scene (see ``compose``)

    def to_json(self) -> dict[str, Any]:
        """``{"label": ..., "xyxy": [x1, y1, x2, y2]}`` rounded to 0.01 px."""
        return {"label": self.label, "xyxy": [round(v, 2) for v in self.xyxy]}


def _jitter_color(rng: np.random.Generator, base: Sequence[int], amount: float) -> Array:
    return np.clip(np.asarray(base, dtype=np.float64) * rng.uniform(1 - amount, 1 + amount, 3), 0, 255)


def make_bed_texture(rng: np.random.Generator, size: int = 512, kind: str | None = None) -> Image:
    """A bed surface seen from above: PEI, tape, glass, aluminium or a textured sheet."""
    kind = kind or str(rng.choice(["pei_black", "blue_tape", "glass", "aluminium", "gold_pei", "white"]))
    base = {
        "pei_black": (35, 35, 38),
        "blue_tape": (190, 120, 40),
        "glass": (55, 60, 60),
        "aluminium": (175, 175, 170),
        "gold_pei": (60, 125, 175),
        "white": (205, 210, 210),
    }[str(kind)]
    tex = np.empty((size, size, 3), dtype=np.float32)
    tex[:] = _jitter_color(rng, base, 0.15)
    grain = rng.normal(0, 1, (size, size, 1)).astype(np.float32)
    if kind in ("pei_black", "gold_pei"):
        tex += grain * rng.uniform(6, 16)
    elif kind == "aluminium":
        tex += cv2.blur(grain, (31, 1))[..., None] * 25
    else:
        tex += grain * 3
    if kind == "glass":
        ramp = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
        tex += ramp * rng.uniform(10, 50)
    if kind == "blue_tape":
        strip = int(rng.integers(40, 80))
        for y in range(strip, size, strip):
            cv2.line(tex, (0, y), (size, y), (140, 90, 30), 2)
    mark = (240, 240, 240) if kind not in ("white", "aluminium") else (40, 40, 40)
    for _ in range(int(rng.integers(0, 4))):
        choice = rng.integers(0, 4)
        x, y = (int(v) for v in rng.integers(40, size - 60, 2))
        if choice == 0:
            cv2.putText(tex, "CAUTION HOT", (x - 30, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, mark, 2)
        elif choice == 1:
            tri = np.array([[x, y - 25], [x - 28, y + 22], [x + 28, y + 22]], dtype=np.int32)
            cv2.polylines(tex, [tri], True, mark, 2)
            cv2.line(tex, (x, y - 10), (x, y + 8), mark, 3)
        elif choice == 2:
            cv2.circle(tex, (x, y), int(rng.integers(15, 40)), mark, 2)
        else:
            step = int(rng.integers(30, 64))
            for g in range(0, size, step):
                cv2.line(tex, (g, 0), (g, size), mark, 1)
                cv2.line(tex, (0, g), (size, g), mark, 1)
    return np.clip(tex, 0, 255).astype(np.uint8)


def make_background(rng: np.random.Generator, width: int, height: int) -> Image:
    """A room behind the printer: a wall gradient, furniture blocks, cables, out of focus."""
    grey = rng.uniform(30, 230)
    top = np.clip(grey * rng.uniform(0.8, 1.2, 3), 0, 255)  # rooms are mostly muted
    bottom = top * rng.uniform(0.4, 1.1)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = (top * (1 - t) + bottom * t) * np.ones((1, width, 1), dtype=np.float32)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        w, h = int(rng.integers(width // 12, width // 2)), int(rng.integers(height // 10, height * 2 // 3))
        color = (
            rng.uniform(10, 250, 3)
            if rng.random() < 0.25
            else rng.uniform(10, 250) * rng.uniform(0.75, 1.25, 3)
        )
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), color.tolist(), -1)
        if rng.random() < 0.3:
            cv2.rectangle(img, (x0 + 5, y0 + 5), (x0 + w - 5, y0 + h // 3), (color * 0.6).tolist(), -1)
    for _ in range(int(rng.integers(0, 5))):
        pts = np.cumsum(rng.normal(0, 25, (12, 2)), axis=0) + rng.uniform(0, [width, height])
        cv2.polylines(
            img, [pts.astype(np.int32)], False, rng.uniform(0, 80, 3).tolist(), int(rng.integers(2, 6))
        )
    small = cv2.resize(img, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), float(rng.uniform(0.4, 1.5)))
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_look(rng: np.random.Generator, width: int, height: int) -> Look:
    """Random colours, light and camera artefacts for one scene."""
    filament = _jitter_color(rng, FILAMENTS[int(rng.integers(len(FILAMENTS)))], 0.15)
    frame_color = _jitter_color(rng, [(30, 30, 30), (170, 170, 175), (60, 60, 60)][int(rng.integers(3))], 0.2)
    carriage_choices = [
        (25, 25, 25),
        (40, 120, 230),
        (220, 220, 220),
        (90, 90, 90),
        (40, 40, 170),
        (150, 90, 40),
    ]
    carriage_color = _jitter_color(rng, carriage_choices[int(rng.integers(len(carriage_choices)))], 0.15)
    if rng.random() < 0.55:
        block_color, block_material = _jitter_color(rng, (185, 185, 190), 0.1), "metal"
    else:
        sock = [(30, 30, 200), (200, 120, 40), (230, 230, 230), (35, 35, 35), (60, 160, 60)]
        block_color, block_material = _jitter_color(rng, sock[int(rng.integers(len(sock)))], 0.1), "matte"
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-1.0, 0.3), rng.uniform(0.5, 1.5)])
    tint = rng.uniform(0.8, 1.15, 3)
    glow = None
    if rng.random() < 0.3:
        glow = np.array([rng.uniform(0, 60), rng.uniform(0, 60), rng.uniform(60, 160)])
    return Look(
        filament=filament,
        bed_texture=make_bed_texture(rng),
        bed_edge=_jitter_color(rng, (30, 30, 30), 0.3),
        frame_color=frame_color,
        carriage_color=carriage_color,
        block_color=block_color,
        block_material=block_material,
        light_dir=light / np.linalg.norm(light),
        ambient=float(rng.uniform(0.35, 0.65)),
        diffuse=float(rng.uniform(0.35, 0.7)),
        tint=tint,
        background=make_background(rng, width, height),
        blur_sigma=float(rng.uniform(0.3, 1.6)),
        motion_blur=int(rng.integers(3, 10)) if rng.random() < 0.12 else 0,
        motion_angle=float(rng.uniform(0, 180)),
        downscale=float(rng.uniform(0.35, 0.8)) if rng.random() < 0.3 else 1.0,
        noise_sigma=float(rng.uniform(1.0, 9.0)),
        jpeg_quality=int(rng.integers(30, 95)),
        gamma=float(rng.uniform(0.7, 1.4)),
        vignette=float(rng.uniform(0.0, 0.45)),
        glow=glow,
        watermark=bool(rng.random() < 0.25),
        layer_line_mm=float(rng.uniform(1.0, 3.0)),
        strand_mm=float(rng.uniform(0.35, 0.7)),
    )


def random_parts(rng: np.random.Generator, bed_w: float, bed_d: float) -> list[Part]:
    """One to three parts placed on the bed without overlapping (with their rafts)."""
    count = int(rng.choice([1, 1, 1, 2, 2, 3]))
    parts: list[Part] = []
    placed: list[tuple[Array, float]] = []
    for _ in range(count * 10):
        if len(parts) == count:
            break
        kind = rng.integers(0, 4)
        if kind == 0:
            footprint = rectangle(rng.uniform(12, 60), rng.uniform(12, 60))
            footprint = footprint @ rotation_matrix(UP, rng.uniform(0, np.pi))[:2, :2].T
        elif kind == 1:
            r = rng.uniform(6, 32)
            footprint = regular_polygon(r, r * rng.uniform(0.8, 1.0), int(rng.integers(16, 28)))
        elif kind == 2:
            r = rng.uniform(8, 30)
            footprint = regular_polygon(r, r, int(rng.integers(3, 9)), rng.uniform(0, np.pi))
        else:
            r = rng.uniform(6, 25)
            footprint = regular_polygon(r, r, 24)
        raft = str(rng.choice(["raft", "raft", "skirt", "none"]))
        margin = float(rng.uniform(3, 8) if raft == "raft" else rng.uniform(6, 15))
        radius = float(np.max(np.linalg.norm(footprint, axis=1))) + margin
        lim_x, lim_y = bed_w / 2 - radius - 5, bed_d / 2 - radius - 5
        if lim_x <= 0 or lim_y <= 0:
            continue
        center = rng.uniform([-lim_x, -lim_y], [lim_x, lim_y]) * 0.7
        if any(np.linalg.norm(center - c) < radius + r2 + 8 for c, r2 in placed):
            continue
        placed.append((center, radius))
        parts.append(
            Part(
                footprint=footprint,
                center=center,
                full_height=float(rng.uniform(12, 75)),
                top_scale=float(rng.uniform(0.35, 1.0)) if rng.random() < 0.4 else 1.0,
                raft=raft,
                raft_margin=margin,
                raft_thickness=float(rng.uniform(0.8, 2.5)),
            )
        )
    return parts


def random_printer(rng: np.random.Generator, width: int, height: int) -> Printer:
    """A random printer and part set; the camera is aimed later (``aim_camera``)."""
    bed_w, bed_d = float(rng.uniform(160, 300)), float(rng.uniform(160, 300))
    parts = random_parts(rng, bed_w, bed_d)
    placeholder = Camera.look_at(np.array([0.0, -300.0, 100.0]), np.zeros(3), 500.0, width, height)
    return Printer(
        camera=placeholder,
        bed_w=bed_w,
        bed_d=bed_d,
        parts=parts,
        active_part=int(rng.integers(len(parts))) if parts else 0,
        gantry_kind=str(rng.choice(["extrusion", "rods"])),
        base_height=float(rng.uniform(20, 70)) if rng.random() < 0.6 else 0.0,
        carriage_size=np.array([rng.uniform(34, 55), rng.uniform(20, 34), rng.uniform(30, 50)]),
        block_size=np.array([rng.uniform(16, 23), rng.uniform(10, 16), rng.uniform(7, 12)]),
        nozzle_len=float(rng.uniform(4.0, 7.0)),
        look=random_look(rng, width, height),
    )


def aim_camera(rng: np.random.Generator, printer: Printer, focus: Array) -> Camera:
    """A random camera pose looking at about ``focus`` (x, y, z mm): low or high, left or
    right, wide or close, slightly rolled, like webcams clipped to printer frames."""
    width, height = printer.camera.width, printer.camera.height
    hfov = math.radians(rng.uniform(48, 78))
    focal = width / 2.0 / math.tan(hfov / 2.0)
    target = focus + np.array([rng.normal(0, 10), rng.normal(0, 10), rng.normal(0, 6)])
    azimuth = math.radians(rng.uniform(-40, 40))
    elevation = math.radians(rng.uniform(-3, 40))
    span_mm = rng.uniform(120, 1.25 * max(printer.bed_w, printer.bed_d))  # view width at the target
    distance = span_mm / 2.0 / math.tan(hfov / 2.0)
    offset = np.array(
        [
            math.sin(azimuth) * math.cos(elevation),
            -math.cos(azimuth) * math.cos(elevation),
            math.sin(elevation),
        ]
    )
    position = target + distance * offset
    position[2] = max(position[2], 4.0)
    return Camera.look_at(position, target, focal, width, height, math.radians(rng.normal(0, 2.5)))


# ----------------------------------------------------------------------------------- composing


OBJ_BED, OBJ_FRAME = 1, 2
NOZZLE_IDS = 10


@dataclass
class Strand:
    """A filament line drawn with a width: a spaghetti strand or a skirt loop."""

    points: Array  # [M, 3] mm
    object_id: int
    width_mm: float
    color: Array  # BGR 0..255 before lighting
    closed: bool = False
    phase: float = 0.0  # where the glint pattern along the strand starts
    depth_bias_mm: float = 1.5  # drawn over surfaces up to this far in front of it (lines on the bed)


@dataclass
class Composition:
    """The solids and strands of one frame, and which object ids carry which label."""

    solids: list[Solid]
    strands: list[Strand]
    labelled: dict[int, str]  # object id -> label
    label_points: dict[int, Array]  # object id -> world points whose projection bounds the object
    pad_mm: dict[int, float]  # object id -> half line width to add around the projected points


def _nozzle_solids(printer: Printer, tip: Array) -> tuple[list[Solid], list[Solid]]:
    """The hotend (heater block, heat break, nozzle: labelled) and the carriage with its fan."""
    look = printer.look
    bx, by, bz = printer.block_size
    nl = printer.nozzle_len
    brass = np.array([60.0, 150.0, 200.0])
    nozzle = frustum(
        regular_polygon(0.7, 0.7, 8),
        nl,
        brass,
        z0=tip[2],
        top_scale=1.0,
        center=(tip[0], tip[1]),
        material="metal",
    )
    # a cone: widen the top ring of the frustum to the nozzle's hex size
    nozzle.vertices[8:, :2] = regular_polygon(3.6, 3.6, 8) + tip[:2]
    block_center = (tip[0] - bx * 0.18, tip[1], tip[2] + nl + bz / 2.0)
    block = box_solid(block_center, (bx, by, bz), look.block_color, look.block_material)
    heatbreak = frustum(
        regular_polygon(2.5, 2.5, 8),
        6.0,
        np.array([170.0, 170.0, 175.0]),
        z0=tip[2] + nl + bz,
        center=(tip[0], tip[1]),
        material="metal",
    )
    cx, cy, cz = printer.carriage_size
    c_bottom = tip[2] + nl + bz + 6.0
    carriage = box_solid((tip[0], tip[1] + cy * 0.15, c_bottom + cz / 2.0), (cx, cy, cz), look.carriage_color)
    # fan: a dark disc just in front of the carriage's front face
    front_y = tip[1] + cy * 0.15 - cy / 2.0 - 0.6
    ring = regular_polygon(min(cx, cz) * 0.36, min(cx, cz) * 0.36, 20)
    fan_pts = np.column_stack(
        [ring[:, 0] + tip[0], np.full(len(ring), front_y), ring[:, 1] + c_bottom + cz / 2.0]
    )
    fan_back = fan_pts + np.array([0.0, 0.5, 0.0])
    k = len(ring)
    fan = Solid(
        np.vstack([fan_pts, fan_back]),
        [list(range(k)), list(range(2 * k - 1, k - 1, -1))]
        + [[i, k + i, k + (i + 1) % k, (i + 1) % k] for i in range(k)],
        look.carriage_color * 0.35,
        "matte",
    )
    hub = frustum(regular_polygon(min(cx, cz) * 0.12, min(cx, cz) * 0.12, 12), 0.6, look.carriage_color * 0.8)
    hub = hub.transformed(
        rotation_matrix(np.array([1.0, 0.0, 0.0]), math.pi / 2),
        np.array([tip[0], front_y - 0.2, c_bottom + cz / 2.0]),
    )
    return [nozzle, block, heatbreak], [carriage, fan, hub]


def compose(printer: Printer, state: State) -> Composition:
    """Solids and strands for ``state``; object ids: 1 bed, 2 frame, 10 hotend, 20+ parts."""
    look = printer.look
    solids: list[Solid] = []
    labelled: dict[int, str] = {}
    points: dict[int, Array] = {}
    strands: list[Strand] = []
    pad: dict[int, float] = {}

    bed = frustum(rectangle(printer.bed_w, printer.bed_d), 6.0, look.bed_edge, z0=-6.0, material="matte")
    bed.texture_face = 1
    bed.object_id = OBJ_BED
    solids.append(bed)
    if printer.base_height > 0:
        base = box_solid(
            (0.0, 0.0, -14.0 - printer.base_height / 2.0),
            (printer.bed_w + 60.0, printer.bed_d + 20.0, printer.base_height),
            look.frame_color,
            "matte",
        )
        base.object_id = OBJ_FRAME
        solids.append(base)

    tip = np.array([state.nozzle_xy[0], state.nozzle_xy[1], state.layer_mm + 0.3])
    hotend, carriage = _nozzle_solids(printer, tip)
    for s in hotend:
        s.object_id = NOZZLE_IDS
    for s in carriage:
        s.object_id = OBJ_FRAME
    solids += hotend + carriage
    labelled[NOZZLE_IDS] = "nozzle"
    points[NOZZLE_IDS] = np.vstack([s.vertices for s in hotend])

    # gantry behind the carriage and uprights at the sides
    gy = tip[1] + printer.carriage_size[1] * 0.65 + 12.0
    gz = tip[2] + printer.nozzle_len + printer.block_size[2] + 6.0 + printer.carriage_size[2] * 0.5
    span = printer.bed_w + 110.0
    if printer.gantry_kind == "extrusion":
        frame_parts = [box_solid((0.0, gy, gz), (span, 20.0, 40.0), look.frame_color, "matte")]
    else:
        frame_parts = [
            box_solid((0.0, gy, gz - 14.0), (span, 8.0, 8.0), np.array([185.0, 185.0, 190.0]), "metal"),
            box_solid((0.0, gy, gz + 14.0), (span, 8.0, 8.0), np.array([185.0, 185.0, 190.0]), "metal"),
        ]
    for side in (-1.0, 1.0):
        frame_parts.append(
            box_solid((side * (span / 2.0 + 10.0), gy, 150.0), (20.0, 40.0, 420.0), look.frame_color, "matte")
        )
    for s in frame_parts:
        s.object_id = OBJ_FRAME
    solids += frame_parts

    for i, part in enumerate(printer.parts):
        raft_id, part_id = 20 + 2 * i, 21 + 2 * i
        knock = state.knocked.get(i)
        raft_top = 0.0
        if part.raft != "none":
            ring = _offset_polygon(part.footprint, part.raft_margin)
            if part.raft == "raft":
                raft = frustum(ring, part.raft_thickness, look.filament * 0.92, center=tuple(part.center))
                raft.hatch.add(1)
                raft_top = part.raft_thickness
                pts = raft.vertices
                raft.object_id = raft_id
                solids.append(raft)
            else:
                dense = _densify(ring + part.center, 4.0)
                pts = np.column_stack([dense, np.full(len(dense), 0.3)])
                strands.append(Strand(pts, raft_id, 1.6, look.filament, closed=True, depth_bias_mm=4.0))
                pad[raft_id] = 0.8
            labelled[raft_id] = "raft"
            points[raft_id] = pts
        height = knock.height if knock else min(state.layer_mm - raft_top, part.full_height)
        if height < 1.5:
            continue
        body = frustum(
            part.footprint,
            height,
            look.filament,
            z0=0.0 if knock else raft_top,
            top_scale=part.top_scale,
            center=(0.0, 0.0) if knock else tuple(part.center),
            layer_mm=look.layer_line_mm,
            full_height=part.full_height,
        )
        if knock:
            body = body.transformed(knock.rotation, knock.translation)
            drop = np.array([0.0, 0.0, body.vertices[:, 2].min()])
            body.vertices -= drop
            body.stripes = {k: v - drop for k, v in body.stripes.items()}
        body.object_id = part_id
        solids.append(body)
        labelled[part_id] = "adhesion" if knock else "print"
        points[part_id] = body.vertices

    for j, tangle in enumerate(state.tangles):
        tid = 60 + j
        for k, curve in enumerate(tangle):
            shade = look.filament * (0.8 + 0.4 * ((k * 7919) % 11) / 10.0)
            strands.append(Strand(curve, tid, look.strand_mm, shade, phase=float(k)))
        labelled[tid] = "spaghetti"
        points[tid] = np.vstack(tangle)
        pad[tid] = look.strand_mm / 2.0
    return Composition(solids, strands, labelled, points, pad)


def _offset_polygon(footprint: Array, margin: float) -> Array:
    """A convex footprint grown outwards by about ``margin`` mm (scaled about its centroid)."""
    radius = np.linalg.norm(footprint, axis=1, keepdims=True)
    return footprint * (1.0 + margin / np.maximum(radius, 1e-6))


def _densify(ring: Array, step_mm: float) -> Array:
    """Points along a closed polygon's edges about ``step_mm`` apart."""
    out = []
    for i in range(len(ring)):
        a, b = ring[i], ring[(i + 1) % len(ring)]
        n = max(1, int(np.linalg.norm(b - a) / step_mm))
        out.append(a + np.linspace(0.0, 1.0, n, endpoint=False)[:, None] * (b - a))
    return np.vstack(out)


# ----------------------------------------------------------------------------------- rendering


@dataclass
class Raster:
    """The frame being drawn: colour, inverse depth and object id per pixel."""

    color: NDArray[np.float32]
    inv_depth: NDArray[np.float32]
    ids: NDArray[np.int32]


def _shade(solid: Solid, normal: Array, view: Array, look: Look) -> Array:
    lambert = max(0.0, float(normal @ look.light_dir))
    intensity = look.ambient + look.diffuse * lambert
    color = solid.color * intensity
    if solid.material == "metal":
        half = look.light_dir + view
        half /= np.linalg.norm(half)
        color = color + 160.0 * max(0.0, float(normal @ half)) ** 12
    elif solid.material == "plastic":
        half = look.light_dir + view
        half /= np.linalg.norm(half)
        color = color + 50.0 * max(0.0, float(normal @ half)) ** 20
    return np.clip(color * look.tint, 0, 255)


def draw_solid(
    raster: Raster, camera: Camera, solid: Solid, look: Look, texture: Image | None = None
) -> None:
    """Rasterise a convex solid with back-face culling and a z-buffer test per pixel."""
    centroid = solid.vertices.mean(axis=0)
    cam_all = camera.to_camera(solid.vertices)
    if np.all(cam_all[:, 2] < NEAR_MM):
        return
    h, w = raster.ids.shape
    for fi, face in enumerate(solid.faces):
        pts = solid.vertices[face]
        normal = np.cross(pts[1] - pts[0], pts[2] - pts[0])
        norm = np.linalg.norm(normal)
        if norm < 1e-9:
            normal = np.cross(pts[2] - pts[0], pts[-1] - pts[0])
            norm = np.linalg.norm(normal)
            if norm < 1e-9:
                continue
        normal /= norm
        if normal @ (pts.mean(axis=0) - centroid) < 0:
            normal = -normal
        to_cam = camera.position - pts[0]
        if normal @ to_cam <= 0:
            continue
        cam = cam_all[face]
        if np.any(cam[:, 2] < NEAR_MM):
            cam = clip_near(cam, NEAR_MM)
            if len(cam) < 3:
                continue
        uv = camera.project_camera(cam)
        x0, y0 = np.floor(uv.min(axis=0)).astype(int)
        x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        plane = inverse_depth_plane(uv, cam[:, 2])
        if plane is None:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        poly = np.round((uv - [x0, y0]) * 16).astype(np.int32)
        cv2.fillConvexPoly(mask, poly, (1,), lineType=cv2.LINE_8, shift=4)
        a, b, c = plane
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) * np.float32(a)
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) * np.float32(b) + np.float32(c)
        inv = ys[:, None] + xs[None, :]
        z_roi = raster.inv_depth[y0:y1, x0:x1]
        hit = (mask > 0) & (inv > z_roi)
        if not hit.any():
            continue
        view = to_cam / np.linalg.norm(to_cam)
        shade = _shade(solid, normal, view, look).astype(np.float32)
        if texture is not None and fi == solid.texture_face:
            light = float(look.ambient + look.diffuse * max(0.0, float(normal @ look.light_dir)))
            patch = texture[y0:y1, x0:x1].astype(np.float32) * (light * look.tint).astype(np.float32)
        else:
            patch = np.empty((y1 - y0, x1 - x0, 3), dtype=np.float32)
            patch[:] = shade
            if fi in solid.stripes and np.all(
                camera.to_camera(solid.stripes[fi].reshape(-1, 3))[:, 2] > NEAR_MM
            ):
                suv, _ = camera.project(solid.stripes[fi].reshape(-1, 3))
                segs = np.round((suv.reshape(-1, 2, 2) - [x0, y0]) * 16).astype(np.int32)
                dark = (shade * 0.72).tolist()
                for seg in segs:
                    cv2.line(patch, tuple(seg[0]), tuple(seg[1]), dark, 1, cv2.LINE_AA, shift=4)
            if fi in solid.hatch:
                step = max(3, int((x1 - x0) / 25))
                dark = (shade * 0.85).tolist()
                for off in range(-(y1 - y0), x1 - x0, step):
                    cv2.line(patch, (off, 0), (off + (y1 - y0), y1 - y0), dark, 1, cv2.LINE_AA)
        np.copyto(raster.color[y0:y1, x0:x1], patch, where=hit[..., None])
        np.copyto(z_roi, inv, where=hit)
        raster.ids[y0:y1, x0:x1][hit] = solid.object_id


def draw_strands(raster: Raster, camera: Camera, strands: list[Strand], look: Look) -> dict[int, int]:
    """Draw filament strands in short chunks, each depth-tested against the z-buffer.

    Returns, per object id, how many pixels its strands cover before occlusion (so the
    caller can tell how much of a tangle is hidden).
    """
    h, w = raster.ids.shape
    chunk = 6
    covered: dict[int, NDArray[np.bool_]] = {}
    light = look.ambient + look.diffuse * 0.8
    for strand in strands:
        curve = np.vstack([strand.points, strand.points[:1]]) if strand.closed else strand.points
        uv, depth = camera.project(curve)
        for start in range(0, len(curve) - 1, chunk):
            seg_uv = uv[start : start + chunk + 1]
            seg_depths = depth[start : start + chunk + 1]
            if seg_depths.min() < NEAR_MM:
                continue
            seg_depth = float(seg_depths.mean())
            thick = max(1, round(camera.focal_px * strand.width_mm / seg_depth))
            x0, y0 = np.floor(seg_uv.min(axis=0)).astype(int) - thick - 1
            x1, y1 = np.ceil(seg_uv.max(axis=0)).astype(int) + thick + 2
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x1 <= x0 or y1 <= y0:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            pts = np.round((seg_uv - [x0, y0]) * 16).astype(np.int32)
            cv2.polylines(mask, [pts], False, (255,), thick, cv2.LINE_AA, shift=4)
            cover = mask > 127
            if strand.object_id not in covered:
                covered[strand.object_id] = np.zeros((h, w), dtype=bool)
            covered[strand.object_id][y0:y1, x0:x1] |= cover
            front = (
                np.float32(1.0 / max(seg_depth - strand.depth_bias_mm, 1.0)) > raster.inv_depth[y0:y1, x0:x1]
            )
            alpha = (mask.astype(np.float32) / 255.0) * front
            if not front.any():
                continue
            glint = 0.8 + 0.4 * math.sin(start * 0.9 + strand.phase)
            color = np.clip(strand.color * light * glint * look.tint, 0, 255).astype(np.float32)
            roi = raster.color[y0:y1, x0:x1]
            roi += alpha[..., None] * (color - roi)
            raster.ids[y0:y1, x0:x1][cover & front] = strand.object_id
    return {object_id: int(np.count_nonzero(mask)) for object_id, mask in covered.items()}


def render(
    printer: Printer, state: State, *, effects: bool = True, omit: set[int] | None = None, seed: int = 0
) -> tuple[Image, list[Box]]:
    """Draw one frame; returns the BGR image and its ground-truth boxes.

    ``omit`` leaves out objects by id (for tests of box exactness); ``effects`` turns the
    camera artefacts (glow, vignette, blur, noise, watermark) on or off. JPEG compression
    is applied when the frame is encoded, not here.
    """
    camera, look = printer.camera, printer.look
    comp = compose(printer, state)
    w, h = camera.width, camera.height
    raster = Raster(
        look.background.astype(np.float32),
        np.zeros((h, w), dtype=np.float32),
        np.zeros((h, w), dtype=np.int32),
    )
    omit = omit or set()
    texture = bed_texture_image(printer)
    for solid in comp.solids:
        if solid.object_id not in omit:
            draw_solid(raster, camera, solid, look, texture)
    drawn = draw_strands(raster, camera, [s for s in comp.strands if s.object_id not in omit], look)
    boxes = ground_truth(camera, comp, raster, omit, drawn)
    img = raster.color
    if effects:
        img = apply_effects(img, look, camera, state, np.random.default_rng(seed))
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def bed_texture_image(printer: Printer) -> Image | None:
    """The bed texture warped into the frame (valid inside the bed's visible top face)."""
    camera, look = printer.camera, printer.look
    # any four bed points in front of the camera fix the plane-to-image homography
    ahead = camera.position + camera.rotation[2] * 200.0
    cx = float(np.clip(ahead[0], -printer.bed_w / 2, printer.bed_w / 2))
    cy = float(np.clip(ahead[1], -printer.bed_d / 2, printer.bed_d / 2))
    quad = np.array(
        [[cx - 10, cy - 10, 0], [cx + 10, cy - 10, 0], [cx + 10, cy + 10, 0], [cx - 10, cy + 10, 0]]
    )
    if np.any(camera.to_camera(quad)[:, 2] < NEAR_MM):
        return None
    uv, _ = camera.project(quad)
    size = look.bed_texture.shape[0]
    tex = np.column_stack(
        [(quad[:, 0] / printer.bed_w + 0.5) * size, (0.5 - quad[:, 1] / printer.bed_d) * size]
    ).astype(np.float32)
    homography = cv2.getPerspectiveTransform(tex, uv.astype(np.float32))
    warped = cv2.warpPerspective(
        look.bed_texture,
        homography,
        (camera.width, camera.height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    return np.asarray(warped, dtype=np.uint8)


def ground_truth(
    camera: Camera, comp: Composition, raster: Raster, omit: set[int], strand_pixels: dict[int, int]
) -> list[Box]:
    """Amodal boxes of the labelled objects that are at least half in the frame and at least a
    quarter visible (``strand_pixels``: pixels each strand object covers before occlusion)."""
    w, h = camera.width, camera.height
    visible = np.bincount(raster.ids.ravel(), minlength=128)
    boxes = []
    for object_id, label in sorted(comp.labelled.items()):
        if object_id in omit:
            continue
        pts = comp.label_points[object_id]
        if np.any(camera.to_camera(pts)[:, 2] < NEAR_MM):
            continue
        uv, depth = camera.project(pts)
        x1, y1 = uv.min(axis=0)
        x2, y2 = uv.max(axis=0)
        if object_id in comp.pad_mm:
            # half the drawn line width (at least one pixel) plus its anti-aliased fringe
            pad = max(1, round(camera.focal_px * 2 * comp.pad_mm[object_id] / float(depth.min()))) / 2 + 1.0
            x1, y1, x2, y2 = x1 - pad, y1 - pad, x2 + pad, y2 + pad
            unoccluded = float(strand_pixels.get(object_id, 0))
        else:
            unoccluded = float(cv2.contourArea(cv2.convexHull(uv.astype(np.float32))))
        full = (x2 - x1) * (y2 - y1)
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        if cx2 - cx1 < 4 or cy2 - cy1 < 3 or full <= 0:
            continue
        inside = (cx2 - cx1) * (cy2 - cy1) / full
        seen = float(visible[object_id]) / max(1.0, unoccluded)
        if inside < 0.45 or seen < 0.25:
            continue
        boxes.append(Box(label, (float(cx1), float(cy1), float(cx2), float(cy2)), object_id))
    return boxes


def apply_effects(
    img: NDArray[np.float32], look: Look, camera: Camera, state: State, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Camera artefacts: LED glow, vignette, gamma, blur, resolution loss, noise, watermark."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if look.glow is not None:
        tip = np.array([[state.nozzle_xy[0], state.nozzle_xy[1], state.layer_mm + 15.0]])
        uv, _ = camera.project(tip)
        u, v = float(uv[0, 0]), float(uv[0, 1])
        radius = 0.35 * w
        fall = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * radius**2))
        img = img + fall[..., None] * look.glow.astype(np.float32)
    if look.vignette > 0:
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        img = img * (1.0 - look.vignette * r2)[..., None]
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** look.gamma
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), look.blur_sigma), dtype=np.float32)
    if look.motion_blur:
        k = np.zeros((look.motion_blur, look.motion_blur), dtype=np.float32)
        k[look.motion_blur // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(
            (look.motion_blur / 2 - 0.5, look.motion_blur / 2 - 0.5), look.motion_angle, 1.0
        )
        k = np.asarray(cv2.warpAffine(k, rot, k.shape[::-1]), dtype=np.float32)
        img = np.asarray(cv2.filter2D(img, -1, k / max(k.sum(), 1e-6)), dtype=np.float32)
    if look.downscale < 1.0:
        small = cv2.resize(
            img,
            (max(8, int(w * look.downscale)), max(8, int(h * look.downscale))),
            interpolation=cv2.INTER_AREA,
        )
        img = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    img = img + rng.standard_normal((*img.shape[:2], 1), dtype=np.float32) * np.float32(look.noise_sigma)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(look.noise_sigma * 0.5)
    if look.watermark:
        cv2.putText(
            img,
            "created with OctoPrint",
            (12, h - 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return img


# ----------------------------------------------------------------------------------- states


def _knock(rng: np.random.Generator, printer: Printer, index: int, height: float) -> Knock:
    """A part tipped 25..95 degrees about a horizontal axis and pushed 10..60 mm away."""
    part = printer.parts[index]
    axis_angle = rng.uniform(0, 2 * np.pi)
    axis = np.array([math.cos(axis_angle), math.sin(axis_angle), 0.0])
    tilt = rotation_matrix(axis, math.radians(rng.uniform(25, 95)))
    spin = rotation_matrix(UP, rng.uniform(0, 2 * np.pi))
    push_angle = rng.uniform(0, 2 * np.pi)
    reach = np.max(np.linalg.norm(part.footprint, axis=1))
    push = part.center + (reach + rng.uniform(10, 60)) * np.array(
        [math.cos(push_angle), math.sin(push_angle)]
    )
    return Knock(spin @ tilt, np.array([push[0], push[1], 0.0]), height)


def _tangle(rng: np.random.Generator, tip: Array, floor_center: Array, amount: float) -> list[Array]:
    """Spaghetti: a nest around the nozzle and/or a pile below it, ``amount`` in (0, 1]."""
    strands: list[Array] = []
    kind = rng.integers(0, 3)  # 0 pile, 1 nest, 2 both
    n = max(3, int(amount * rng.uniform(14, 40)))
    if kind in (0, 2):
        radii = np.array([rng.uniform(8, 35), rng.uniform(8, 35), rng.uniform(3, 14)]) * (0.5 + 0.5 * amount)
        center = np.array([floor_center[0], floor_center[1], floor_center[2] + radii[2] * 0.6])
        strands += spaghetti_strands(rng, center, radii, n, int(rng.integers(60, 140)), 1.6, floor_center[2])
        strands += hanging_strands(rng, tip, center, int(rng.integers(1, 5)), float(radii[0]))
    if kind in (1, 2):
        radii = np.array([rng.uniform(5, 16), rng.uniform(5, 16), rng.uniform(4, 12)]) * (0.5 + 0.5 * amount)
        center = tip + np.array([0.0, 0.0, -radii[2] * 0.5])
        strands += spaghetti_strands(rng, center, radii, max(3, n // 2), int(rng.integers(40, 90)), 1.2, 0.0)
    return strands


def random_state(rng: np.random.Generator, printer: Printer) -> State:
    """A random moment of a print: early, healthy, spaghetti, knocked loose, or an empty bed."""
    stage = rng.choice(
        ["early", "healthy", "healthy", "healthy", "spaghetti", "spaghetti", "adhesion", "adhesion", "empty"]
    )
    if not printer.parts:
        stage = "empty"
    if stage == "empty":
        printer.parts = []
        xy = rng.uniform([-printer.bed_w / 3, -printer.bed_d / 3], [printer.bed_w / 3, printer.bed_d / 3])
        return State(float(rng.uniform(0.3, 60)), xy)
    active = printer.parts[printer.active_part]
    tallest = max(p.full_height for p in printer.parts)
    layer = float(rng.uniform(0.3, 4.0)) if stage == "early" else float(rng.uniform(4.0, tallest + 10.0))
    xy = active.center + active.footprint[int(rng.integers(len(active.footprint)))] * rng.uniform(0, 1)
    state = State(layer, xy)
    if stage == "adhesion":
        victim = int(rng.integers(len(printer.parts)))
        part = printer.parts[victim]
        fail_h = float(np.clip(rng.uniform(6, part.full_height), 6, part.full_height))
        state.knocked[victim] = _knock(rng, printer, victim, fail_h)
        state.layer_mm = max(state.layer_mm, fail_h + 1.0)
    if stage == "spaghetti" or (stage == "adhesion" and rng.random() < 0.5):
        tip = np.array([xy[0], xy[1], state.layer_mm + 0.3])
        part_top = (
            min(state.layer_mm, active.full_height) if printer.active_part not in state.knocked else 0.0
        )
        floor = np.array([xy[0], xy[1], part_top if part_top >= 1.5 else 0.0])
        state.tangles.append(_tangle(rng, tip, floor, float(rng.uniform(0.25, 1.0))))
    return state


# ----------------------------------------------------------------------------------- outputs


@dataclass
class Frame:
    """One generated frame: file name, pixel size, phase and true boxes."""

    name: str
    width: int
    height: int
    boxes: list[Box]
    phase: str = ""

    def to_json(self) -> dict[str, Any]:
        """The frame's ground-truth record."""
        record: dict[str, Any] = {"image": self.name, "width": self.width, "height": self.height}
        if self.phase:
            record["phase"] = self.phase
        record["boxes"] = [b.to_json() for b in self.boxes]
        return record


def encode_jpeg(image: Image, quality: int) -> bytes:
    """JPEG bytes of a BGR image at ``quality`` (1..100)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def train_scene(seed: int, index: int, width: int, height: int) -> tuple[Printer, State, int]:
    """The random scene of frame ``index`` of a training set: printer, state and the seed of
    its camera noise."""
    rng = np.random.default_rng([seed, index])
    printer = random_printer(rng, width, height)
    state = random_state(rng, printer)
    focus_z = rng.uniform(0.15, 0.85) * (state.layer_mm + 20.0)
    printer.camera = aim_camera(rng, printer, np.array([state.nozzle_xy[0], state.nozzle_xy[1], focus_z]))
    return printer, state, int(rng.integers(2**31))


def train_frame(seed: int, index: int, width: int, height: int) -> tuple[Image, list[Box], int]:
    """Frame ``index`` of a training set: its own random scene. Returns image, boxes, JPEG quality."""
    printer, state, noise_seed = train_scene(seed, index, width, height)
    image, boxes = render(printer, state, seed=noise_seed)
    return image, boxes, printer.look.jpeg_quality


def generate_train(
    out: Path,
    count: int,
    seed: int,
    sizes: Sequence[tuple[int, int]],
    workers: int = 1,
    make: Callable[[tuple[int, int, int, int, str]], Frame] | None = None,
) -> list[Frame]:
    """Write ``count`` random frames to ``out``; sizes are picked per frame from ``sizes``.
    ``make`` writes one frame from ``(seed, index, width, height, out)`` (default: a training frame)."""
    out.mkdir(parents=True, exist_ok=True)
    make = make or _train_job
    jobs = []
    for i in range(count):
        w, h = sizes[int(np.random.default_rng([seed, i, 7]).integers(len(sizes)))]
        jobs.append((seed, i, w, h, str(out)))
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:  # forked: module state is inherited
            frames = pool.map(make, jobs, chunksize=8)
    else:
        frames = [make(job) for job in jobs]
    return frames


def _train_job(job: tuple[int, int, int, int, str]) -> Frame:
    seed, i, w, h, out = job
    image, boxes, quality = train_frame(seed, i, w, h)
    name = f"synth_{seed}_{i:06d}.jpg"
    Path(out, name).write_bytes(encode_jpeg(image, quality))
    return Frame(name, w, h, boxes)


@dataclass
class Timelapse:
    """A timelapse plan: frames, the index where failure starts, and per-frame states."""

    printer: Printer
    states: list[State]
    phases: list[str]
    failure_index: int


def plan_timelapse(seed: int, frames: int, width: int, height: int) -> Timelapse:
    """One print on a fixed camera: healthy for about half the frames, then knocked loose
    and failing into a growing tangle of spaghetti."""
    rng = np.random.default_rng([seed, 424242])
    while True:
        printer = random_printer(rng, width, height)
        if not printer.parts:
            continue
        # a clear demo: one part, a raft, a mid-elevation camera that frames it
        part = printer.parts[printer.active_part]
        part.raft, part.raft_margin = "raft", 5.0
        part.footprint = regular_polygon(17.0, 17.0, 24)
        part.full_height = 60.0
        part.top_scale = 0.8
        printer.parts = [part]
        printer.active_part = 0
        look = printer.look
        look.motion_blur, look.downscale, look.watermark = 0, 1.0, False
        look.jpeg_quality = 80
        look.blur_sigma = 0.7
        look.noise_sigma = 3.0
        look.filament = np.array([40.0, 140.0, 245.0])  # orange: readable on any bed
        look.glow = None
        look.bed_texture = make_bed_texture(rng, kind="pei_black")
        focal = width / 2.0 / math.tan(math.radians(60.0) / 2.0)
        pos = np.array([part.center[0] + 30, part.center[1] - 175, 80.0])
        target = np.array([part.center[0], part.center[1], 24.0])
        printer.camera = Camera.look_at(pos, target, focal, width, height)
        break
    fail = frames // 2 + 2
    states, phases = [], []
    part = printer.parts[0]
    fail_height = part.full_height * 0.55
    knock = _knock(np.random.default_rng([seed, 5]), printer, 0, fail_height)
    knock.translation = np.array([part.center[0] + 55.0, part.center[1] - 25.0, 0.0])
    tangle_rng = np.random.default_rng([seed, 6])
    pile_center = np.array([part.center[0], part.center[1], 14.0])
    pile = spaghetti_strands(tangle_rng, pile_center, np.array([30.0, 24.0, 12.0]), 40, 120, 1.7, 0.0)
    for t in range(frames):
        frng = np.random.default_rng([seed, 1000 + t])
        if t < fail:
            layer = 1.0 + (fail_height + 0.5) * t / (fail - 1)
            phase = "healthy"
        else:
            layer = fail_height + 0.5 + 0.45 * (t - fail)
            phase = "failed"
        xy = part.center + part.footprint[int(frng.integers(len(part.footprint)))] * frng.uniform(0.2, 1.0)
        state = State(layer, xy)
        if t >= fail:
            state.knocked[0] = knock
            grown = min(len(pile), 8 + 3 * (t - fail))
            tip = np.array([xy[0], xy[1], layer + 0.3])
            strands = pile[:grown] + hanging_strands(frng, tip, pile_center, 3, 15.0)
            state.tangles.append(strands)
        states.append(state)
        phases.append(phase)
    return Timelapse(printer, states, phases, fail)


def generate_timelapse(out: Path, frames: int, seed: int, width: int, height: int) -> tuple[list[Frame], int]:
    """Write the timelapse frames to ``out``; returns the frames and the failure index."""
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_timelapse(seed, frames, width, height)
    records = []
    for t, (state, phase) in enumerate(zip(plan.states, plan.phases, strict=True)):
        image, boxes = render(plan.printer, state, seed=seed * 100003 + t)
        name = f"frame_{t + 1:06d}.jpg"
        (out / name).write_bytes(encode_jpeg(image, plan.printer.look.jpeg_quality))
        records.append(Frame(name, width, height, boxes, phase))
    return records, plan.failure_index


def write_truth(path: Path, frames: list[Frame], meta: dict[str, Any]) -> None:
    """Write the ground truth JSON: labels, generator settings and one record per frame."""
    doc = {"labels": list(LABELS), **meta, "frames": [f.to_json() for f in frames]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_truth(path: Path) -> dict[str, Any]:
    """Read a ground truth JSON written by ``write_truth``."""
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def write_vott(frames_dir: Path, target: Path, frames: list[Frame], name: str) -> bool:
    """Write a VoTT 2.2.0 project of the true boxes with ``agent.vott`` when it is importable."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # run from a checkout without installing the package
    try:
        from agent.detections import Detections
        from agent.vott import VottProject
    except ImportError as exc:
        log.warning("no VoTT project written (%s); the ground truth JSON holds the same boxes", exc)
        return False
    project = VottProject(target, frames_dir, name=name, tags=LABELS, flush_every=0, fsync=False)
    for frame in frames:
        xyxy = np.array([b.xyxy for b in frame.boxes], dtype=np.float32).reshape(-1, 4)
        classes = np.array([LABELS.index(b.label) for b in frame.boxes], dtype=np.int32)
        dets = Detections.create(xyxy, np.ones(len(classes)), classes, LABELS)
        project.add_frame(frames_dir / frame.name, frame.width, frame.height, dets, record_scores=False)
    project.save()
    return True


def iter_sizes(spec: str) -> Iterator[tuple[int, int]]:
    """Parse ``640x480,640x360`` into pixel sizes."""
    for item in spec.split(","):
        w, h = item.lower().split("x")
        yield int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``train OUT --count N`` or ``timelapse OUT --frames N``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["train", "timelapse"])
    parser.add_argument("out", type=Path, help="folder for the JPEG frames")
    parser.add_argument("--count", type=int, default=200, help="train: number of frames (default 200)")
    parser.add_argument("--frames", type=int, default=90, help="timelapse: number of frames (default 90)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sizes", default="640x480,640x480,640x360", help="train: frame sizes, picked at random"
    )
    parser.add_argument("--workers", type=int, default=1, help="train: processes rendering in parallel")
    parser.add_argument("--truth", type=Path, help="ground truth JSON (default OUT/ground_truth.json)")
    parser.add_argument("--no-vott", action="store_true", help="do not write the VoTT project")
    parser.add_argument("--vott-target", type=Path, help="VoTT target folder (default OUT/vott-target)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out: Path = args.out
    if args.mode == "train":
        frames = generate_train(out, args.count, args.seed, list(iter_sizes(args.sizes)), args.workers)
        meta: dict[str, Any] = {"mode": "train", "seed": args.seed}
    else:
        frames, failure = generate_timelapse(out, args.frames, args.seed, 640, 480)
        meta = {"mode": "timelapse", "seed": args.seed, "failure_index": failure}
    truth = args.truth or out / "ground_truth.json"
    write_truth(truth, frames, meta)
    if not args.no_vott:
        write_vott(
            out.resolve(),
            (args.vott_target or out / "vott-target").resolve(),
            frames,
            out.name or "synthetic",
        )
    counts: dict[str, int] = {}
    for f in frames:
        for b in f.boxes:
            counts[b.label] = counts.get(b.label, 0) + 1
    print(f"wrote {len(frames)} frames to {out}; boxes per label: {counts}; truth: {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
