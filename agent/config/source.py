"""Typed settings of one frame source (the ``source:`` section of the config) and how the kind of
source is worked out from its URL.

``url`` names what to read: a folder of images, one image, a video file, a V4L2 device
(``/dev/video0`` or a camera index such as ``0``), an ``rtsp://`` stream, an ``http(s)://`` MJPEG
stream or snapshot URL, or ``picamera2``. ``kind: auto`` decides from the URL; HTTP URLs that say
neither ``?action=stream`` nor ``snapshot`` are probed by ``open_source`` (a multipart response is
an MJPEG stream, an image is a snapshot).

Secrets never live in the YAML: passwords and API keys come from an environment variable
(``password_env``, ``api_key_env``) or a file (``password_file``, ``api_key_file``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.config.base import StrictModel
from agent.naming import safe_name

SourceKind = Literal["auto", "folder", "video", "v4l2", "rtsp", "mjpeg", "snapshot", "picamera2"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
PICAMERA2_URL = "picamera2"
_HTTP_SCHEMES = ("http", "https")
_RTSP_SCHEMES = ("rtsp", "rtsps")
# Headers that carry secrets: they must come from api_key_env/_file or password_env/_file.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie"})

# libcamera enum controls that may be given by name (values from libcamera's control_ids).
PICAMERA2_ENUM_CONTROLS: dict[str, dict[str, int]] = {
    "AfMode": {"Manual": 0, "Auto": 1, "Continuous": 2},
    "AfRange": {"Normal": 0, "Macro": 1, "Full": 2},
    "AfSpeed": {"Normal": 0, "Fast": 1},
    "AfMetering": {"Auto": 0, "Windows": 1},
    "AfTrigger": {"Start": 0, "Cancel": 1},
    "AeMeteringMode": {"CentreWeighted": 0, "Spot": 1, "Matrix": 2, "Custom": 3},
    "AeConstraintMode": {"Normal": 0, "Highlight": 1, "Shadows": 2, "Custom": 3},
    "AeExposureMode": {"Normal": 0, "Short": 1, "Long": 2, "Custom": 3},
    "AwbMode": {
        "Auto": 0,
        "Incandescent": 1,
        "Tungsten": 2,
        "Fluorescent": 3,
        "Indoor": 4,
        "Daylight": 5,
        "Cloudy": 6,
        "Custom": 7,
    },
    "NoiseReductionMode": {"Off": 0, "Fast": 1, "HighQuality": 2, "Minimal": 3, "ZSL": 4},
}

ControlValue = StrictBool | StrictInt | StrictFloat | str | list[StrictInt | StrictFloat]


# Which keys apply to which family of source (a key not listed applies to every source). A key
# given another value than its default for another family is a mistake the config names.
SourceFamily = Literal["local", "v4l2", "rtsp", "http", "picamera2"]
FAMILY_NAMES: dict[SourceFamily, str] = {
    "local": "a folder, an image or a video file",
    "v4l2": "a V4L2/USB camera",
    "rtsp": "an RTSP stream",
    "http": "an HTTP MJPEG stream or snapshot URL",
    "picamera2": "a Raspberry Pi camera (picamera2)",
}
_LIVE: tuple[SourceFamily, ...] = ("v4l2", "rtsp", "http", "picamera2")
KEY_FAMILIES: dict[str, tuple[SourceFamily, ...]] = {
    "watch": ("local",),
    "watch_poll_s": ("local",),
    "watch_settle_s": ("local",),
    "loop": ("local",),
    "reconnect_initial_s": _LIVE,
    "reconnect_max_s": _LIVE,
    "connect_timeout_s": ("rtsp", "http"),
    "read_timeout_s": _LIVE,
    "startup_attempts": _LIVE,
    "username": ("rtsp", "http"),
    "password_env": ("rtsp", "http"),
    "password_file": ("rtsp", "http"),
    "api_key_env": ("http",),
    "api_key_file": ("http",),
    "headers": ("http",),
    "tls_verify": ("http",),
    "max_frame_mb": ("http",),
    "reduced_decode": ("local", "http"),
    "rtsp_transport": ("rtsp",),
    "v4l2": ("v4l2",),
    "picamera2": ("picamera2",),
}
_KIND_FAMILIES: dict[str, SourceFamily] = {
    "folder": "local",
    "video": "local",
    "v4l2": "v4l2",
    "rtsp": "rtsp",
    "mjpeg": "http",
    "snapshot": "http",
    "picamera2": "picamera2",
}


class V4l2Options(StrictModel):
    """What to ask a V4L2/USB camera for; ``None`` keeps the driver's choice.

    ``fourcc`` is the pixel format as four characters: ``MJPG`` lets most USB cameras deliver
    1080p at full frame rate over USB 2, ``YUYV`` is uncompressed.
    """

    width_px: int | None = Field(default=None, ge=16, le=16384)
    """Requested capture width (set with height_px)."""
    height_px: int | None = Field(default=None, ge=16, le=16384)
    """Requested capture height."""
    fourcc: str | None = Field(default=None, min_length=4, max_length=4)
    """Pixel format, e.g. MJPG for USB webcams at high resolution."""
    fps: float | None = Field(default=None, gt=0, le=1000)
    """Requested camera frame rate."""


class Picamera2Options(StrictModel):
    """Raspberry Pi camera (libcamera through picamera2) configuration.

    ``mode: video`` uses ``create_video_configuration`` (continuous capture, default main size
    1280x720); ``still`` uses ``create_still_configuration`` (full sensor resolution, slower).
    ``format`` is the main stream's pixel format; ``RGB888`` is stored B,G,R in memory, which is
    OpenCV's order, so it needs no conversion. ``controls`` are libcamera controls passed to the
    configuration, in libcamera's units: ``ExposureTime`` microseconds, ``AnalogueGain`` a factor,
    ``LensPosition`` dioptres (1 / focus distance in metres; 0 is infinity), ``FrameDurationLimits``
    microseconds. Enum controls may be given by name, e.g. for Camera Module 3
    ``{AfMode: Continuous}`` or ``{AfMode: Manual, LensPosition: 2.5}`` (focus at 40 cm).
    ``fps`` sets ``FrameDurationLimits`` to a fixed frame rate. ``tuning_file`` is a path or the
    name of a file in libcamera's tuning folder (e.g. ``imx708_noir.json``).
    """

    camera_num: int = Field(default=0, ge=0, le=16)
    """Which camera (0 for the first)."""
    mode: Literal["video", "still"] = "video"
    """Video (continuous, fast) or still (full-resolution captures)."""
    width_px: int | None = Field(default=None, ge=16, le=16384)
    """Main stream width (set with height_px); default: the sensor's mode."""
    height_px: int | None = Field(default=None, ge=16, le=16384)
    """Main stream height."""
    format: Literal["RGB888", "BGR888", "XRGB8888", "XBGR8888", "YUV420"] = "RGB888"
    """Main stream pixel format."""
    fps: float | None = Field(default=None, gt=0, le=1000)
    """Frame rate (sets FrameDurationLimits)."""
    controls: dict[str, ControlValue] = Field(default_factory=dict)
    """Libcamera controls, e.g. {AfMode: Continuous, ExposureTime: 10000}."""
    tuning_file: str | None = None
    """Camera tuning file, e.g. imx708_noir.json."""
    buffer_count: int | None = Field(default=None, ge=1, le=32)
    """Frame buffers to allocate."""

    @field_validator("controls")
    @classmethod
    def _known_enum_names(cls, controls: dict[str, Any]) -> dict[str, Any]:
        for name, value in controls.items():
            if not isinstance(value, str):
                continue
            names = PICAMERA2_ENUM_CONTROLS.get(name)
            if names is None:
                raise ValueError(
                    f"control {name}={value!r}: only enum controls take a name "
                    f"({', '.join(sorted(PICAMERA2_ENUM_CONTROLS))}); give a number"
                )
            if value not in names:
                raise ValueError(f"control {name}={value!r}: use one of {', '.join(names)} or a number")
        return controls

    @model_validator(mode="after")
    def _size_pairs(self) -> Picamera2Options:
        if (self.width_px is None) != (self.height_px is None):
            raise ValueError("set both width_px and height_px, or neither")
        return self


class SourceSettings(StrictModel):
    """One frame source. Every key has a default that works; intervals are seconds.

    Frame pacing: ``interval_s`` (at least this many seconds between frames, e.g. 10 for a
    printer webcam) and ``max_fps`` (at most this many frames per second); when both are set the
    longer interval wins, when neither is set frames come as fast as the source gives them
    (snapshot URLs are then polled once per second). Video files are sampled by their own clock
    (a frame every ``interval_s`` of video), everything else by the wall clock.
    """

    # Validation errors must not echo a URL that holds a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = "/dev/video0"
    """What to read: a folder of images, a video or image file, /dev/videoN or a camera index, rtsp://, an http(s) MJPEG stream or snapshot URL, or picamera2."""
    kind: SourceKind = "auto"
    """The kind of source; auto guesses it from url (an HTTP URL that does not say is probed once)."""
    id: str | None = Field(default=None, min_length=1, max_length=64)
    """Source id used in frame ids and file names; default derived from url."""

    max_fps: float | None = Field(default=None, gt=0, le=1000)
    """At most this many frames per second."""
    interval_s: float | None = Field(default=None, ge=0, le=86400)
    """At least this many seconds between frames (video files: seconds of video), e.g. 10 for a printer."""

    # folder and video files
    watch: bool = False
    """Folder: keep waiting for new files (a timelapse still being written)."""
    watch_poll_s: float = Field(default=1.0, gt=0, le=3600)
    """Folder watch: how often to look for new files."""
    watch_settle_s: float = Field(default=1.0, ge=0, le=3600)
    """Folder watch: a new file is read once its size has not changed for this long."""
    loop: bool = False
    """Folder or video: start again at the end (demos, soak tests)."""

    # live sources: connecting and reconnecting
    reconnect_initial_s: float = Field(default=1.0, gt=0, le=3600)
    """First wait before reconnecting a dropped stream or camera (doubles each failure, with jitter)."""
    reconnect_max_s: float = Field(default=30.0, gt=0, le=86400)
    """Longest wait between reconnect attempts."""
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """Give up on one connection attempt after this long."""
    read_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    """A stream that sends nothing for this long is reconnected."""
    startup_attempts: int = Field(default=3, ge=1, le=10000)
    """Failed first connections before start-up fails with an error (later drops reconnect forever)."""

    # HTTP (MJPEG, snapshot) and RTSP credentials
    username: str | None = None
    """User for HTTP basic auth or RTSP."""
    password_env: str | None = None
    """Environment variable holding the password (never put it in the YAML)."""
    password_file: str | None = None
    """File whose first line is the password."""
    api_key_env: str | None = None
    """Environment variable holding an API key sent as X-Api-Key (OctoPrint)."""
    api_key_file: str | None = None
    """File whose first line is that API key."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP request headers (no secrets: those come from *_env/*_file)."""
    tls_verify: bool = True
    """Verify the HTTPS server's certificate."""
    max_frame_mb: float = Field(default=16.0, gt=0, le=512)
    """A stream part or snapshot larger than this is refused."""
    reduced_decode: bool = True
    """Decode JPEGs (folders, MJPEG, snapshots) at 1/2, 1/4 or 1/8 size when that still covers the
    model input: faster, less memory; boxes, VoTT and MQTT keep the full frame's pixels."""

    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    """RTSP over tcp (reliable) or udp."""
    v4l2: V4l2Options = Field(default_factory=V4l2Options)
    picamera2: Picamera2Options = Field(default_factory=Picamera2Options)

    @field_validator("url", mode="before")
    @classmethod
    def _url_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # `url: 0` in YAML means camera index 0
        if isinstance(value, Path):
            return str(value)
        return value

    @field_validator("url")
    @classmethod
    def _url_well_formed(cls, url: str) -> str:
        url = url.strip()
        if not url:
            raise ValueError("empty; give a folder, video file, /dev/videoN, rtsp:// or http:// URL")
        scheme = _scheme(url)
        if scheme is None:
            return url
        if scheme not in _HTTP_SCHEMES + _RTSP_SCHEMES:
            raise ValueError(
                f"unsupported URL scheme {scheme!r}; use http://, https://, rtsp:// or rtsps:// "
                "(or a file path, /dev/videoN, a camera index, or 'picamera2')"
            )
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{redact_url(url)} has an invalid port number") from None
        if not parts.hostname:
            raise ValueError(f"{redact_url(url)} has no host name, e.g. http://octopi.local/webcam/")
        if port == 0:
            raise ValueError(f"{redact_url(url)} has port 0")
        if parts.password is not None:
            raise ValueError(
                "the URL holds a password; secrets do not belong in the config: put the user in "
                "`username` and the password in an environment variable named by `password_env` "
                "(or a file named by `password_file`)"
            )
        return url

    @field_validator("id")
    @classmethod
    def _id_file_safe(cls, value: str | None) -> str | None:
        if value is not None and safe_name(value) != value:
            raise ValueError(
                f"{value!r} must use only letters, digits, '.', '_' and '-', e.g. {safe_name(value)!r}"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.strip().lower() in _SECRET_HEADERS:
                raise ValueError(
                    f"header {name!r} carries a secret and does not belong in the config; use "
                    "api_key_env/api_key_file (X-Api-Key) or username with password_env/password_file"
                )
        return headers

    @field_validator(*KEY_FAMILIES)
    @classmethod
    def _fits_the_kind(cls, value: Any, info: ValidationInfo) -> Any:
        url, kind = info.data.get("url"), info.data.get("kind", "auto")
        key = str(info.field_name)
        if url is None or value == cls.model_fields[key].get_default(call_default_factory=True):
            return value
        family = source_family(url, kind)
        families = KEY_FAMILIES[key]
        if family not in families:
            raise ValueError(
                f"only for {' or '.join(FAMILY_NAMES[f] for f in families)}, not for {redact_url(url)} "
                f"({FAMILY_NAMES[family]}); remove it"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SourceSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below reconnect_initial_s "
                f"({self.reconnect_initial_s})"
            )
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        if self.api_key_env and self.api_key_file:
            raise ValueError("set api_key_env or api_key_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("password_env/password_file need `username` too")
        v4l2 = self.v4l2
        if (v4l2.width_px is None) != (v4l2.height_px is None):
            raise ValueError("v4l2: set both width_px and height_px, or neither")
        return self

    @property
    def frame_interval_s(self) -> float:
        """Minimum seconds between frames from ``interval_s`` and ``max_fps``; 0 means no limit."""
        interval = self.interval_s or 0.0
        if self.max_fps:
            interval = max(interval, 1.0 / self.max_fps)
        return interval

    @property
    def redacted_url(self) -> str:
        """``url`` safe to log: user names and query values that look like keys are masked."""
        return redact_url(self.url)

    @property
    def source_id(self) -> str:
        """``id`` when set, else a file-safe id derived from the URL (never from credentials)."""
        return self.id or default_source_id(self.url, self.picamera2.camera_num)


def source_family(url: str, kind: SourceKind = "auto") -> SourceFamily:
    """Which family of source ``url`` is (``kind`` when it is not auto), from the URL's form
    alone: nothing is opened or probed (``printer:`` URLs name the printer's webcam, HTTP)."""
    if kind != "auto":
        return _KIND_FAMILIES[kind]
    if url == PICAMERA2_URL:
        return "picamera2"
    if is_camera_index(url) or url.startswith("/dev/"):
        return "v4l2"
    scheme = _scheme(url)
    if scheme in _RTSP_SCHEMES:
        return "rtsp"
    if scheme in _HTTP_SCHEMES or url.startswith("printer:"):
        return "http"
    return "local"


def _scheme(url: str) -> str | None:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return match.group(1).lower() if match else None


_SECRET_QUERY = re.compile(r"(?i)([?&](?:api_?key|apikey|key|token|password|pass|pwd|auth)=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` without user info and with secret-looking query values replaced by ``***``."""
    if _scheme(url) is None:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    redacted = parts._replace(netloc=netloc).geturl()
    return _SECRET_QUERY.sub(r"\1***", redacted)


def is_camera_index(url: str) -> bool:
    """True when ``url`` is a bare camera index such as ``0``."""
    return url.isdigit() and len(url) <= 3


def v4l2_device_path(url: str) -> str:
    """``/dev/videoN`` for a camera index, ``url`` itself for a device path."""
    return f"/dev/video{int(url)}" if is_camera_index(url) else url


def guess_kind(url: str) -> SourceKind | None:
    """The source kind the URL alone tells, or None for an HTTP URL that must be probed.

    Raises ``FileNotFoundError`` for a local path that does not exist.
    """
    family = source_family(url)
    if family in ("picamera2", "v4l2", "rtsp"):
        return family  # these families are kinds of their own
    if family == "http":
        parts = urlsplit(url)
        action = [value.lower() for value in parse_qs(parts.query).get("action", [])]
        if "snapshot" in action or "snapshot" in parts.path.lower():
            return "snapshot"
        if "stream" in action:
            return "mjpeg"
        return None
    path = Path(url).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "folder" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
    raise FileNotFoundError(url)


def default_source_id(url: str, camera_num: int = 0) -> str:
    """A short file-safe id for ``url``: folder or file stem, ``video0``, ``host_path``..."""
    if url == PICAMERA2_URL:
        return PICAMERA2_URL if camera_num == 0 else f"{PICAMERA2_URL}-{camera_num}"
    if is_camera_index(url):
        return f"video{int(url)}"
    if url.startswith("/dev/"):
        return safe_name(Path(url).name, max_len=64)
    if _scheme(url) is not None:
        parts = urlsplit(url)
        host = parts.hostname or "stream"
        port = f"_{parts.port}" if parts.port else ""
        url_path = parts.path.strip("/")
        text = f"{host}{port}_{url_path}" if url_path else f"{host}{port}"
        return safe_name(text, max_len=64).strip("_-")
    path = Path(url).expanduser()
    name = path.name if path.is_dir() else path.stem
    return safe_name(name or path.resolve().name or "source", max_len=64)
