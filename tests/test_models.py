"""The model catalog through the CLI, as a user runs it: ``models list | fetch | verify``, fetching
from a real HTTP server on loopback that serves the upstream files from ../shared, and configs
that name a model by its catalog name."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.detect.catalog import load_catalog
from agent.detect.model_store import models_dir, search_dirs
from agent.detect.runtime import installed_runtimes
from tests.helpers import REPO, CliResult, match_detections, run_cli
from tests.model_mirror import ModelMirror, Route, closed_port_url

# catalog name -> installed file name -> the upstream file in ../shared/models
SHARED_FILES = {
    "print3d": {
        "model.tflite": "print3d/print3d_2020-10-23_ssd_uint8.tflite",
        "dict.txt": "print3d/dict.txt",
        "tflite_metadata.json": "print3d/tflite_metadata.json",
    },
    "ssd-mobilenet-v1-coco": {
        "model.tflite": "ssd_mobilenet_v1_coco_quant_detect.tflite",
        "labelmap.txt": "ssd_mobilenet_v1_coco_labelmap.txt",
    },
}
FETCH_PRINT3D = "edge-agent models fetch print3d --accept-license"
RUNTIME = installed_runtimes()[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (temp files included) with its sha256."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A models folder of the test's own, and a home that is not the real one."""
    return {
        "EDGE_AGENT_MODELS_DIR": str(tmp_path / "models"),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "EDGE_AGENT_MODELS_MIRROR": "",
    }


@pytest.fixture
def mirror(shared_dir: Path) -> Iterator[ModelMirror]:
    server = ModelMirror()
    for name, files in SHARED_FILES.items():
        for file_name, upstream in files.items():
            server.routes[f"/{name}/{file_name}"] = Route((shared_dir / "models" / upstream).read_bytes())
    yield server
    server.close()


def fetch(env: dict[str, str], *args: str) -> CliResult:
    return run_cli("models", "fetch", *args, env=env, timeout=120)


def one_error_line(result: CliResult) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("edge-agent: error: "), lines[0]
    return lines[0]


# -- the catalog's data ----------------------------------------------------------------------------


def test_catalog_pins_the_upstream_files_that_shared_holds(shared_dir: Path) -> None:
    catalog = load_catalog()
    for name, files in SHARED_FILES.items():
        assert set(catalog.entries[name].files) == set(files), name
        for file_name, upstream in files.items():
            spec = catalog.entries[name].files[file_name]
            path = shared_dir / "models" / upstream
            assert (spec.size, spec.sha256) == (path.stat().st_size, sha256(path)), (name, file_name)


def test_demo_entry_pins_the_files_the_package_ships() -> None:
    demo = load_catalog().entries["print3d-demo"]
    assert demo.demo and demo.permissive
    for file_name, spec in demo.files.items():
        path = spec.packaged
        assert path is not None and path.is_file(), file_name
        actual = (path.stat().st_size, sha256(path))
        assert (spec.size, spec.sha256) == actual, (
            f"{path.name} changed (a retrained model or an edited card): set print3d-demo's {file_name} "
            f"in agent/data/model-catalog.yaml to size: {actual[0]}, sha256: {actual[1]}"
        )


def test_every_download_is_pinned_to_a_commit_or_a_storage_generation() -> None:
    for entry in load_catalog().entries.values():
        for file_name, spec in entry.files.items():
            if spec.packaged is None:
                assert re.search(r"/[0-9a-f]{40}/|[?&]generation=\d+$", spec.url), (entry.name, file_name)
                assert spec.url.startswith("https://"), spec.url


# -- fetch, then use by name -----------------------------------------------------------------------


def test_print3d_needs_the_license_accepted_then_installs_with_its_card(
    shared_dir: Path, mirror: ModelMirror, env: dict[str, str], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    refused = fetch(env, "print3d", "--mirror", mirror.url)
    assert refused.code == 2
    line = one_error_line(refused)
    assert "AGPL-3.0" in line and FETCH_PRINT3D in line
    assert "license: AGPL-3.0" in refused.out  # shown before anything is fetched
    assert snapshot(models) == {} and mirror.requests == {}

    result = fetch(env, "print3d", "--accept-license", "--mirror", mirror.url)
    assert result.code == 0, result.err
    installed = snapshot(models)
    assert set(installed) == {f"print3d/{f}" for f in (*SHARED_FILES["print3d"], "model.yaml")}
    for file_name, upstream in SHARED_FILES["print3d"].items():
        assert installed[f"print3d/{file_name}"] == sha256(shared_dir / "models" / upstream)
    listing = json.loads(run_cli("models", "list", "--json", env=env).out)
    row = next(m for m in listing["models"] if m["name"] == "print3d")
    assert row["installed"] and row["where"] == str(models / "print3d" / "model.tflite")


@pytest.fixture
def print3d(mirror: ModelMirror, env: dict[str, str]) -> ModelMirror:
    """print3d installed from the mirror; the mirror, to count its requests."""
    result = fetch(env, "print3d", "--accept-license", "--mirror", mirror.url)
    assert result.code == 0, result.err
    return mirror


def test_print3d_by_name_reproduces_the_reference_detections(
    shared_dir: Path, print3d: ModelMirror, env: dict[str, str]
) -> None:
    ref = json.loads((shared_dir / f"models/print3d/reference/reference_print3d.{RUNTIME}.json").read_text())
    images = [str(shared_dir / "models/print3d/images" / e["image"]) for e in ref["images"]]
    detect = run_cli(
        "detect", "--json", "--runtime", RUNTIME, "--threshold", "0", "--model", "print3d", *images, env=env
    )
    assert detect.code == 0, detect.err
    for line, entry in zip(detect.json_lines(), ref["images"], strict=True):
        assert line["model"] == "print3d"  # the card the catalog wrote
        assert not match_detections(line["detections"], entry["detections"]), entry["image"]


def test_an_installed_model_verifies_and_is_not_fetched_again(
    print3d: ModelMirror, env: dict[str, str], tmp_path: Path
) -> None:
    verify = run_cli("models", "verify", "print3d", "--json", env=env)
    assert verify.code == 0 and json.loads(verify.out)["ok"], verify.out
    requests = dict(print3d.requests)
    again = fetch(env, "print3d", "--accept-license", "--mirror", print3d.url)
    assert again.code == 0 and "matches the catalog" in again.out
    assert print3d.requests == requests
    card = tmp_path / "models/print3d/model.yaml"  # a user's tuning is a note, not damage
    card.write_text(card.read_text().replace("score_threshold: 0.5", "score_threshold: 0.6"))
    edited = run_cli("models", "verify", "print3d", env=env)
    assert edited.code == 0 and "note: model.yaml differs from the catalog's card" in edited.out


def test_the_printer_configs_run_print3d_once_it_is_installed(
    print3d: ModelMirror, env: dict[str, str]
) -> None:
    """The printer configs name the catalog's print3d: with it installed, their detector and alert
    settings run (``replay``: no printer host or API key needed, unlike ``run --check``)."""
    sample = REPO / "agent" / "data" / "sample_timelapse"
    for name in ("printer-octoprint.yaml", "printer-moonraker.yaml"):
        config = REPO / "configs" / name
        replay = run_cli(
            "replay", "--config", str(config), "--max-frames", "12", "--json", str(sample), env=env
        )
        assert replay.code == 0, replay.err
        summary = json.loads(replay.out.splitlines()[-1])["summary"]
        assert summary["model"] == "print3d" and summary["frames"] == 12, summary


@pytest.mark.parametrize("name", ["printer-octoprint.yaml", "printer-moonraker.yaml"])
def test_the_printer_configs_check_reaches_for_the_printer(
    print3d: ModelMirror, env: dict[str, str], name: str
) -> None:
    """With print3d installed, ``run --check`` gets past the model to the printer's key and host,
    which are not on this machine, and says so in one line naming what to fix."""
    config = REPO / "configs" / name
    result = run_cli("run", "--config", str(config), "--check", env=env)
    line = one_error_line(result)
    if name == "printer-octoprint.yaml":  # its key file is only on the Pi
        assert result.code == 2 and "printer.api_key_file" in line and "/etc/edge-agent/octoprint.key" in line
    else:  # mainsailos.local does not resolve here, or nothing answers
        assert result.code == 1 and "printer: nothing answers at http://mainsailos.local:7125" in line


def test_coco_model_needs_no_license_flag_and_its_card_maps_the_labels(
    shared_dir: Path, mirror: ModelMirror, env: dict[str, str]
) -> None:
    result = fetch(env, "ssd-mobilenet-v1-coco", "--mirror", mirror.url)
    assert result.code == 0, result.err
    ref = json.loads(
        (shared_dir / f"models/reference/reference_ssd_mobilenet_v1_coco_quant.{RUNTIME}.json").read_text()
    )
    images = [str(shared_dir / "models/images" / e["image"]) for e in ref["images"]]
    detect = run_cli(
        "detect", "--json", "--runtime", RUNTIME, "--threshold", "0", "--model", "ssd-mobilenet-v1-coco",
        *images, env=env,
    )  # fmt: skip
    assert detect.code == 0, detect.err
    for line, entry in zip(detect.json_lines(), ref["images"], strict=True):
        assert not match_detections(line["detections"], entry["detections"]), entry["image"]


def test_a_mirror_folder_from_the_environment_works_offline(
    shared_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    offline = tmp_path / "usb-stick"
    for file_name, upstream in SHARED_FILES["print3d"].items():
        (offline / "print3d").mkdir(parents=True, exist_ok=True)
        (offline / "print3d" / file_name).symlink_to(shared_dir / "models" / upstream)
    result = fetch({**env, "EDGE_AGENT_MODELS_MIRROR": str(offline)}, "print3d", "--accept-license")
    assert result.code == 0, result.err
    assert (tmp_path / "models/print3d/model.tflite").is_file()


# -- failures: one line, an exit code, nothing half-written, the old model kept --------------------

FAILURES = {
    # mode: (how the mirror misbehaves, what the error line says)
    "bad sha256": ("corrupt", "sha256 is"),
    "HTTP 404": ("404", "answered HTTP 404"),
    "404 on the last file": ("404-last", "answered HTTP 404"),
    "refused connection": ("refused", "connection refused"),
    "cut half-way": ("cut", "stopped after 1367560 of 2735121 bytes"),
    "slow server": ("stall", "sent nothing for 1 s"),
}


def break_mirror(mirror: ModelMirror, how: str) -> str:
    """Make the mirror fail ``how``; returns the mirror URL to fetch from."""
    model = mirror.routes["/print3d/model.tflite"]
    if how == "corrupt":  # same size, a few bytes changed
        body = bytearray(model.body)
        body[1000:1004] = bytes(255 - b for b in body[1000:1004])
        mirror.routes["/print3d/model.tflite"] = Route(bytes(body))
    elif how == "404":
        del mirror.routes["/print3d/model.tflite"]
    elif how == "404-last":
        del mirror.routes["/print3d/tflite_metadata.json"]
    elif how == "cut":
        mirror.routes["/print3d/model.tflite"] = Route(model.body, mode="cut")
    elif how == "stall":
        mirror.routes["/print3d/model.tflite"] = Route(model.body, mode="stall")
    return closed_port_url() if how == "refused" else mirror.url


@pytest.mark.parametrize("installed_before", [False, True], ids=["first install", "replacing"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_fetch_says_why_in_one_line_and_changes_nothing(
    mirror: ModelMirror, env: dict[str, str], tmp_path: Path, failure: str, installed_before: bool
) -> None:
    models = tmp_path / "models"
    if installed_before:
        assert fetch(env, "print3d", "--accept-license", "--mirror", mirror.url).code == 0
    before = snapshot(models)
    how, says = FAILURES[failure]
    url = break_mirror(mirror, how)
    result = fetch(env, "print3d", "--accept-license", "--force", "--mirror", url, "--timeout-s", "1")
    assert result.code == 1, result.err
    line = one_error_line(result)
    assert line.startswith("edge-agent: error: fetch print3d: ") and says in line, line
    kept = f"{models / 'print3d'} is unchanged" if installed_before else "nothing was installed"
    assert f"; {kept} (try again, or use --mirror)" in line, line
    assert snapshot(models) == before  # no temp file, no half-written file, the old model whole


def test_without_the_license_accepted_an_installed_model_is_kept(
    mirror: ModelMirror, env: dict[str, str], tmp_path: Path
) -> None:
    assert fetch(env, "print3d", "--accept-license", "--mirror", mirror.url).code == 0
    before = snapshot(tmp_path / "models")
    result = fetch(env, "print3d", "--force", "--mirror", mirror.url)
    assert result.code == 2 and "--accept-license" in one_error_line(result)
    assert snapshot(tmp_path / "models") == before


# -- configs that name a model; the DEMO model ----------------------------------------------------


def test_a_model_that_is_not_installed_is_a_config_error_with_the_fetch_command(
    env: dict[str, str], tmp_path: Path
) -> None:
    image = str(REPO / "agent/data/sample_timelapse/frame_000001.jpg")
    detect = run_cli("detect", "--model", "print3d", image, env=env)
    assert detect.code == 2 and FETCH_PRINT3D in one_error_line(detect)
    key = tmp_path / "printer.key"
    key.write_text("0123456789abcdef\n")
    for name in ("printer-octoprint.yaml", "printer-moonraker.yaml"):
        # the installed layout: the API key file exists (run --check reads secrets before the model)
        config = tmp_path / name
        config.write_text(
            (REPO / "configs" / name).read_text().replace("/etc/edge-agent/octoprint.key", str(key))
        )
        check = run_cli("run", "--config", str(config), "--check", env=env)
        assert check.code == 2 and FETCH_PRINT3D in one_error_line(check), name
    unknown = run_cli("detect", "--model", "print4d", image, env=env)
    assert unknown.code == 2 and "print3d-demo" in one_error_line(unknown)  # names the known ones


def test_fallback_model_runs_the_demo_with_a_warning_while_print3d_is_missing(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "printer.yaml"
    config.write_text(
        "source: {url: '{bundled}/sample_timelapse'}\n"
        "detector: {model: print3d, fallback_model: print3d-demo}\n"
        f"output: {{dir: '{tmp_path / 'out'}'}}\n"
        "mqtt: {enabled: false}\n"
    )
    result = run_cli("run", "--config", str(config), "--max-frames", "3", env=env)
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "running the fallback model" in line]
    assert len(warnings) == 1 and FETCH_PRINT3D in warnings[0], result.err
    assert "print3d-guidance [DEMO model" in result.err  # the start-up line
    assert "processed 3 frames" in result.err


def test_the_default_run_and_the_doctor_name_the_demo_model(tmp_path: Path, env: dict[str, str]) -> None:
    run = run_cli("run", "--max-frames", "2", "--no-mqtt", cwd=tmp_path, env=env)
    assert run.code == 0, run.err
    start = next(line for line in run.err.splitlines() if "agent.app" in line and " on " in line)
    assert "DEMO model" in start and "edge-agent models fetch print3d --accept-license" in start
    doctor = run_cli("doctor", "--json", "--invokes", "2", "--timeout", "10", cwd=tmp_path, env=env)
    row = next(c for c in json.loads(doctor.out)["checks"] if c["name"] == "model")
    assert row["status"] == "WARN" and "DEMO model" in row["detail"], row  # (the broker row fails here)
    assert "edge-agent models fetch print3d --accept-license" in row["detail"]


def test_verify_finds_a_damaged_copy_and_fetch_repairs_it(env: dict[str, str], tmp_path: Path) -> None:
    assert fetch(env, "print3d-demo").code == 0  # copied from the package: no network, no license flag
    model = tmp_path / "models/print3d-demo/model.tflite"
    data = bytearray(model.read_bytes())
    data[5000] ^= 0xFF
    model.write_bytes(bytes(data))
    verify = run_cli("models", "verify", env=env)
    assert verify.code == 1
    assert f"FAIL print3d-demo  {model}: model.tflite has the wrong sha256" in verify.out, verify.out
    assert re.search(r"^OK +print3d-demo .*agent/data/print3d_guidance\.tflite", verify.out, re.M)
    repaired = fetch(env, "print3d-demo")
    assert repaired.code == 0 and "repaired print3d-demo" in repaired.out
    assert run_cli("models", "verify", "print3d-demo", env=env).code == 0
    missing = run_cli("models", "verify", "print3d", env=env)
    assert missing.code == 1 and "fetch it with: " + FETCH_PRINT3D in one_error_line(missing)


def test_fetch_list_and_verify_take_a_folder(env: dict[str, str], tmp_path: Path) -> None:
    image_dir = tmp_path / "image-build/var/lib/edge-agent/models"  # as install-pi.sh --model does
    assert fetch(env, "print3d-demo", "--dir", str(image_dir)).code == 0
    listing = json.loads(run_cli("models", "list", "--dir", str(image_dir), "--json", env=env).out)
    row = next(m for m in listing["models"] if m["name"] == "print3d-demo")
    assert row["where"] == str(image_dir / "print3d-demo/model.tflite") and not row["bundled"]
    verify = json.loads(run_cli("models", "verify", "--dir", str(image_dir), "--json", env=env).out)
    assert [(c["where"], c["ok"]) for c in verify["copies"] if not c["bundled"]] == [(row["where"], True)]
    assert not (tmp_path / "models").exists()  # the models folder was left alone


def test_the_models_folder_rule(tmp_path: Path) -> None:
    state = tmp_path / "var/lib/edge-agent"
    env = {"HOME": str(tmp_path / "home")}
    assert models_dir(env, state) == tmp_path / "home/.local/share/edge-agent/models"  # a user install
    env["XDG_DATA_HOME"] = "relative/ignored"
    assert models_dir(env, state) == tmp_path / "home/.local/share/edge-agent/models"
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    user = tmp_path / "xdg/edge-agent/models"
    assert models_dir(env, state) == user and search_dirs(env, state) == [user]
    state.mkdir(parents=True)  # the service's state folder, and we may write to it
    user.mkdir(parents=True)
    assert models_dir(env, state) == state / "models"
    assert search_dirs(env, state) == [state / "models", user]
    if os.geteuid() != 0:  # root may write anywhere
        state.chmod(0o555)
        assert models_dir(env, state) == user
        state.chmod(0o755)
    env["EDGE_AGENT_MODELS_DIR"] = str(tmp_path / "mine")
    assert search_dirs(env, state) == [models_dir(env, state)] == [tmp_path / "mine"]
