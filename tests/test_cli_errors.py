"""Command-line mistakes as a user sees them: one line, exit 2 (usage, config) or 1 (runtime).

Every run is the real CLI in a fresh process: out-of-range values for every numeric option of
every command, a config file that is not UTF-8, an image whose header declares 20000 x 20000
pixels, ``--edgetpu usb`` without the Edge TPU library, and the runtimes' INFO chatter.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli import build_parser
from agent.detect.runtime import installed_runtimes
from agent.sources.decode import declared_size
from tests.helpers import CliResult, run_cli
from tests.test_run import MODEL


def error_lines(result: CliResult) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("edge-agent: error:")]


def one_error(result: CliResult) -> str:
    """The single error line (without its prefix); no traceback, nothing 'ignored'."""
    lines = error_lines(result)
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err and "Exception ignored" not in result.err, result.err
    return lines[0].removeprefix("edge-agent: error: ")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["detect", "--model", MODEL, "--threshold", "1.5", "x.jpg"], "--threshold: must be between 0 and 1, got 1.5"),
        (["detect", "--model", MODEL, "--iou", "2", "x.jpg"], "--iou: must be more than 0 and at most 1, got 2"),
        (["label", "--model", MODEL, "--threads", "0", "--out", "o", "x"], "--threads: must be between 1 and 64, got 0"),
        (["run", "--max-fps", "fast"], "--max-fps: must be a number, got 'fast'"),
    ],
)  # fmt: skip
def test_values_out_of_range_are_one_line_like_config_errors(args: list[str], line: str) -> None:
    result = run_cli(*args)
    assert result.code == 2
    assert one_error(result) == line


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that takes a number."""
    found = []
    top = build_parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = [("", top), *commands.choices.items()]
    for name, parser in parsers:
        for action in parser._actions:
            numeric = action.type in (int, float) or getattr(action.type, "__name__", "") in ("int", "float")
            if numeric and action.option_strings:
                found.append((name, action.option_strings[0]))
    return found


def test_every_numeric_option_refuses_a_value_out_of_range_in_one_line() -> None:
    options = numeric_options()
    assert len(options) >= 20 and ("doctor", "--invokes") in options
    for command, option in options:
        args = [option, "-99999999", command] if not command else [command, option, "-99999999"]
        result = run_cli(*[a for a in args if a])
        assert result.code == 2, (command, option, result.err)
        assert one_error(result).startswith(f"{option}: must be "), (command, option)


def test_a_config_that_is_not_utf8_names_the_file_line_and_byte(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_bytes("source:\n  url: /tmp/cam\xe9ra\n".encode("latin-1"))
    result = run_cli("run", "--config", str(config), "--check")
    assert result.code == 2
    assert (
        one_error(result)
        == f"{config}:2: not UTF-8 text: byte 0xe9 at offset 23 cannot be read; save the file as UTF-8"
    )


# ---------------------------------------------------------------------------- the pixel cap


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is changed to declare ``width`` x ``height``."""
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments to the start of frame
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_an_image_declaring_400_megapixels_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(jpeg_declaring(20000, 20000))
    result = run_cli("detect", "--model", MODEL, str(huge))
    assert result.code == 1
    assert one_error(result).startswith(f"{huge}: 20000x20000 pixels is over the cap of 50 megapixels")
    # in a folder it is skipped with a warning and the other images are detected
    images = tmp_path / "folder"
    images.mkdir()
    (images / "huge.jpg").write_bytes(huge.read_bytes())
    cv2.imwrite(str(images / "small.jpg"), np.zeros((48, 64, 3), np.uint8))
    folder = run_cli("detect", "--model", MODEL, "--json", str(images))
    assert folder.code == 0, folder.err
    assert [Path(r["image"]).name for r in folder.json_lines()] == ["small.jpg"]
    assert "skipping huge.jpg: 20000x20000 pixels is over the cap" in folder.err


def test_the_cap_is_one_setting_for_every_command(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((600, 800, 3), np.uint8))  # 0.48 megapixels
    lowered = run_cli("--max-megapixels", "0.1", "detect", "--model", MODEL, str(image))
    assert lowered.code == 1
    assert "800x600 pixels is over the cap of 0.1 megapixels" in one_error(lowered)
    from_environment = run_cli(
        "detect", "--model", MODEL, str(image), env={"EDGE_AGENT_MAX_MEGAPIXELS": "0.1"}
    )
    assert from_environment.code == 1
    assert run_cli("detect", "--model", MODEL, str(image)).code == 0


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp"])
def test_declared_size_is_read_from_the_header_of_each_format(suffix: str) -> None:
    ok, data = cv2.imencode(suffix, np.zeros((37, 53, 3), np.uint8))
    assert ok and declared_size(data.tobytes()) == (53, 37)


# ---------------------------------------------------------------------------- runtime noise


@pytest.mark.parametrize("runtime", installed_runtimes())
def test_a_missing_edge_tpu_library_is_one_line_without_a_stray_traceback(runtime: str) -> None:
    result = run_cli("detect", "--model", MODEL, "--runtime", runtime, "--edgetpu", "usb", str(MODEL))
    assert result.code == 1
    assert one_error(result).startswith("cannot open the Edge TPU (usb): ")


@pytest.mark.parametrize("runtime", installed_runtimes())
def test_the_runtimes_info_line_shows_only_at_debug(runtime: str, tmp_path: Path) -> None:
    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
    quiet = run_cli("detect", "--model", MODEL, "--runtime", runtime, str(image))
    assert quiet.code == 0, quiet.err
    assert "XNNPACK" not in quiet.err
    debug = run_cli("--log-level", "DEBUG", "detect", "--model", MODEL, "--runtime", runtime, str(image))
    assert debug.code == 0
    if runtime == "ai_edge_litert":  # the one runtime that prints it (tflite-runtime says nothing)
        assert (
            "DEBUG   agent.detect.runtime_noise: INFO: Created TensorFlow Lite XNNPACK delegate" in debug.err
        )
