"""``edge-agent doctor``: what a user sees on this machine (no Coral, no Pi camera).

Real components throughout: the CLI in a fresh process, a folder of generated JPEGs, a fixture TFLite
model on the installed runtimes, a real Mosquitto broker (plain, password, TLS). The only fake is a
made-up /sys + /etc tree standing in for a plugged-in Coral, which this machine does not have.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from agent.config import AgentConfig
from agent.config.mqtt import MqttSettings
from agent.detect.runtime import installed_runtimes
from agent.doctor import (
    Check,
    DoctorOptions,
    Status,
    check_broker,
    check_disk,
    check_edgetpu,
    check_python_and_packages,
    check_source,
    check_writable,
    find_edgetpu_devices,
    probe_writable,
)
from agent.doctor.timing import Plan, Timing, advise
from tests.helpers import CliResult, run_cli
from tests.mosquitto import (
    CertificateAuthority,
    MosquittoBroker,
    free_port,
    mosquitto,  # noqa: F401 (fixture)
    require_mosquitto,
    write_password_file,
)

MODEL = Path(__file__).resolve().parent / "fixtures" / "models" / "yolov8_layout_int8_in2.tflite"


def make_images(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"frame_{i:03d}.jpg"), image)
    return folder


def write_config(tmp_path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "source": {"url": str(make_images(tmp_path / "images"))},
        "detector": {"model": str(MODEL)},
        "output": {"dir": str(tmp_path / "out")},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def doctor_json(config: Path, *extra: str) -> tuple[CliResult, dict[str, Any]]:
    result = run_cli("doctor", "--config", str(config), "--json", "--invokes", "3", "--timeout", "10", *extra)
    return result, json.loads(result.out)


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in document["checks"]}


def config_of(tmp_path: Path, **sections: Any) -> AgentConfig:
    return AgentConfig.model_validate(yaml.safe_load(write_config(tmp_path, **sections).read_text()))


def test_cpu_config_prints_the_table_and_passes_with_the_coral_absent_but_not_required(tmp_path):
    config = write_config(tmp_path)
    result = run_cli("doctor", "--config", str(config), "--invokes", "3")
    assert result.code == 0, result.out + result.err
    rows = {line[:26].strip(): line[26:] for line in result.out.splitlines() if line and line[0] != " "}
    assert rows["CHECK"].split()[:2] == ["STATUS", "DETAIL"]
    for name in ("config", "python", "package numpy", "package opencv", "source", "model", "fastest"):
        assert rows[name].split()[0] == "OK", (name, result.out)
    assert rows["package simplejpeg"].split()[0] == "OK", result.out  # a dependency on x86_64 / aarch64
    for name in ("edgetpu library", "edgetpu device", "edgetpu udev rule"):
        assert rows[name].split()[0] == "SKIP", (name, result.out)
        assert "not required" in rows[name]
    text = " ".join(result.out.split())  # long details wrap onto the next lines
    assert "first frame 160x120" in text
    assert "yolov8 layout" in text
    assert rows["broker"].split()[0] == "SKIP"
    assert "every required check passed" in result.out
    assert not (tmp_path / "out").exists(), "doctor must not create the output folders"


def test_json_has_a_timing_per_runtime_and_thread_count_and_names_the_fastest(tmp_path):
    result, document = doctor_json(write_config(tmp_path))
    assert result.code == 0 and document["ok"] and document["exit_code"] == 0
    timings = [c["data"] for c in document["checks"] if c["name"].startswith("timing ")]
    cores = os.cpu_count() or 1
    expected = {(rt, 1, n) for rt in installed_runtimes() for n in range(1, cores + 1)}
    if cores >= 2:  # plus the agent's default: two interpreters side by side
        expected.add((installed_runtimes()[0], 2, cores // 2))
    assert {(t["runtime"], t["interpreters"], t["threads"]) for t in timings} == expected
    assert all(t["median_ms"] > 0 and t["invokes"] == 3 for t in timings)
    fastest = by_name(document)["fastest"]["data"]
    best = max(timings, key=lambda t: t["per_second"])  # invokes/s of all interpreters together
    assert (fastest["runtime"], fastest["interpreters"], fastest["threads"]) == (
        best["runtime"], best["interpreters"], best["threads"]
    )  # fmt: skip
    runtime = fastest["recommended"]["runtime"]
    assert runtime == ("auto" if best["runtime"] == installed_runtimes()[0] else best["runtime"])
    assert fastest["recommended"]["num_threads"] == best["threads"]
    assert fastest["recommended"]["interpreters"] == best["interpreters"]
    assert document["counts"]["FAIL"] == 0


def test_edgetpu_config_flags_the_missing_coral_and_exits_1(tmp_path):
    result, document = doctor_json(write_config(tmp_path, detector={"edgetpu": "usb"}))
    assert result.code == 1 and not document["ok"]
    checks = by_name(document)
    for name in ("edgetpu library", "edgetpu device", "edgetpu delegate usb"):
        assert checks[name]["status"] == "FAIL" and checks[name]["required"], checks[name]
    assert "libedgetpu1-std" in checks["edgetpu library"]["fix"]
    assert "1a6e:089a" in checks["edgetpu device"]["detail"]
    # the model itself is fine on the CPU: only the Coral is missing
    assert checks["model"]["status"] == "OK"


def test_an_unwritable_output_folder_fails(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    result, document = doctor_json(write_config(tmp_path, output={"dir": str(blocker / "out")}))
    assert result.code == 1
    checks = by_name(document)
    for name in ("output folder", "frames folder", "vott folder"):
        assert checks[name]["status"] == "FAIL"
        assert "is a file, not a folder" in checks[name]["detail"]
        assert "output.dir" in checks[name]["fix"]


def test_a_config_error_is_printed_and_exits_2_like_run_check(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("source:\n  url: /tmp\ndetector:\n  num_thread: 2\n")
    result = run_cli("doctor", "--config", str(config))
    assert result.code == 2
    assert f"{config}:4: detector.num_thread: unknown key" in result.err
    assert "Traceback" not in result.err


def test_a_model_that_is_not_a_detector_fails(tmp_path):
    classifier = MODEL.parent / "classifier_not_detector.tflite"
    result, document = doctor_json(write_config(tmp_path, detector={"model": str(classifier)}))
    assert result.code == 1
    model = by_name(document)["model"]
    assert model["status"] == "FAIL" and "classifier_not_detector" in model["detail"]


def test_a_source_that_does_not_answer_fails_with_the_reason(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/?action=stream"
    config = config_of(tmp_path, source={"url": url, "startup_attempts": 1, "connect_timeout_s": 2})
    check, frame = check_source(config, timeout_s=10)
    assert frame is None
    assert check.status == Status.FAIL and check.required
    assert "127.0.0.1" in check.detail


def test_an_empty_watched_folder_only_warns(tmp_path):
    (tmp_path / "empty").mkdir()
    config = config_of(tmp_path, source={"url": str(tmp_path / "empty"), "watch": True})
    check, frame = check_source(config, timeout_s=1.5)
    assert frame is None and check.status == Status.WARN


def test_disk_below_the_free_space_floor_fails_and_a_quota_the_disk_cannot_hold_warns(tmp_path):
    huge_mb = 1e12  # more than any disk
    floor = check_disk(config_of(tmp_path, harvest={"min_free_mb": huge_mb}))
    assert floor.status == Status.FAIL and "no frame would be kept" in floor.detail
    quota = check_disk(config_of(tmp_path, harvest={"quota_mb": huge_mb, "min_free_mb": 0}))
    assert quota.status == Status.WARN and "lower harvest.quota_mb" in quota.fix
    fine = check_disk(config_of(tmp_path, harvest={"quota_mb": 1, "min_free_mb": 0}))
    assert fine.status == Status.OK and fine.data["quota_mb"] == 1


def test_outbox_in_an_existing_output_folder_is_checked_and_nothing_is_left_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    config = config_of(tmp_path, mqtt={"enabled": True})
    checks = {c.name: c for c in check_writable(config)}
    assert checks["output folder"].status == Status.OK and "is writable" in checks["output folder"].detail
    assert checks["outbox"].status == Status.OK and "mqtt-outbox.sqlite3" in checks["outbox"].detail
    assert list(out.iterdir()) == [], "the probe file must be removed"
    ok, detail = probe_writable(tmp_path / "missing" / "deeper")
    assert ok and "does not exist yet" in detail


# ---------------------------------------------------------------------------- a Coral, faked


def fake_coral_tree(root: Path, usb_id: tuple[str, str] | None, rule_text: str | None) -> Path:
    """A stand-in for /sys and /etc of a machine with a USB Coral (this one has none)."""
    usb = root / "sys" / "bus" / "usb" / "devices"
    hub = usb / "usb1"
    hub.mkdir(parents=True)
    (hub / "idVendor").write_text("1d6b\n")
    (hub / "idProduct").write_text("0003\n")
    if usb_id is not None:
        coral = usb / "2-1"
        coral.mkdir()
        (coral / "idVendor").write_text(usb_id[0] + "\n")
        (coral / "idProduct").write_text(usb_id[1] + "\n")
    if rule_text is not None:
        rules = root / "etc" / "udev" / "rules.d"
        rules.mkdir(parents=True)
        (rules / "65-edge-agent-coral.rules").write_text(rule_text)
    return root


def test_a_plugged_in_coral_and_its_udev_rule_are_found(tmp_path):
    rule = (Path(__file__).resolve().parent.parent / "systemd" / "65-edge-agent-coral.rules").read_text()
    root = fake_coral_tree(tmp_path, ("1a6e", "089a"), rule)
    devices = find_edgetpu_devices(root)
    assert [(d.kind, d.description.split()[0]) for d in devices] == [("usb", "1a6e:089a")]
    checks = {c.name: c for c in check_edgetpu("usb", root=root)}
    assert checks["edgetpu device"].status == Status.OK
    assert "firmware not loaded yet" in checks["edgetpu device"].detail
    assert checks["edgetpu udev rule"].status == Status.OK
    # the library is still absent on this machine, so the config cannot work yet
    assert checks["edgetpu library"].status == Status.FAIL


def test_a_udev_rule_missing_the_initialised_id_is_flagged(tmp_path):
    rule = 'SUBSYSTEM=="usb", ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", GROUP="plugdev"\n'
    root = fake_coral_tree(tmp_path, ("18d1", "9302"), rule)
    checks = {c.name: c for c in check_edgetpu("usb:0", root=root)}
    assert checks["edgetpu udev rule"].status == Status.FAIL
    assert "18d1:9302" in checks["edgetpu udev rule"].detail
    # with a CPU config the same finding is only a warning, and the unused library too
    relaxed = {c.name: c for c in check_edgetpu(None, root=root)}
    assert relaxed["edgetpu udev rule"].status == Status.WARN
    assert relaxed["edgetpu library"].status == Status.WARN


def test_a_second_usb_coral_asked_for_but_only_one_present_fails(tmp_path):
    root = fake_coral_tree(tmp_path, ("18d1", "9302"), None)
    checks = {c.name: c for c in check_edgetpu("usb:1", root=root)}
    assert checks["edgetpu device"].status == Status.FAIL
    assert "found only" in checks["edgetpu device"].detail


# ---------------------------------------------------------------------------- the broker


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require_mosquitto()
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder / "ca")
    return {
        "ca": ca.cert,
        "server": ca.issue("broker", server=True),
        "other_ca": CertificateAuthority(folder / "other", "unrelated CA").cert,
    }


def mqtt_for(broker: MosquittoBroker, **values: Any) -> MqttSettings:
    return MqttSettings.model_validate(
        {"enabled": True, "host": broker.host, "port": broker.port, "device_id": "devA", **values}
    )


def test_doctor_against_a_real_broker_passes(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    mqtt = {"enabled": True, "host": broker.host, "port": broker.port, "device_id": "devA"}
    config = write_config(tmp_path, mqtt=mqtt)
    result, document = doctor_json(config)
    assert result.code == 0, result.out
    check = by_name(document)["broker"]
    assert check["status"] == "OK" and check["data"]["reason_code"] == 0
    assert f"{broker.host}:{broker.port} accepted us" in check["detail"]
    assert by_name(document)["outbox"]["status"] == "OK"
    # its own client id, so a running agent (edge-agent-devA) is not thrown off the broker
    assert " as edge-agent-devA-doctor " in broker.log_text()


def test_a_closed_port_only_warns_because_the_outbox_keeps_the_messages():
    port = free_port()
    settings = MqttSettings(enabled=True, host="127.0.0.1", port=port)
    check = check_broker(settings, timeout_s=5)
    assert check.status == Status.WARN and not check.required
    assert f"nothing listens on 127.0.0.1:{port} (connection refused)" in check.detail
    assert "messages wait in the outbox" in check.detail
    assert "mqtt.enabled: false" in check.fix


def test_the_default_install_without_a_broker_passes(tmp_path):
    """The README's main job needs no broker: MQTT on, nothing on the port, doctor still exits 0."""
    result, document = doctor_json(
        write_config(tmp_path, mqtt={"enabled": True, "host": "127.0.0.1", "port": free_port()})
    )
    assert result.code == 0, result.out
    assert by_name(document)["broker"]["status"] == "WARN"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_password_right_and_wrong(mosquitto, tmp_path, monkeypatch, protocol):  # noqa: F811
    users = write_password_file(tmp_path / "passwd", {"devA": "right"})
    broker = mosquitto(password_file=users)
    monkeypatch.setenv("DOCTOR_TEST_PW", "right")
    good = mqtt_for(broker, username="devA", password_env="DOCTOR_TEST_PW", protocol=protocol)
    assert check_broker(good, timeout_s=5).status == Status.OK
    monkeypatch.setenv("DOCTOR_TEST_PW", "wrong")
    bad = check_broker(good, timeout_s=5)
    assert bad.status == Status.FAIL
    assert "refused the connection" in bad.detail and "reason code" in bad.detail
    assert "password" in bad.detail and "wrong" not in bad.detail
    monkeypatch.delenv("DOCTOR_TEST_PW")
    unset = check_broker(good, timeout_s=5)
    assert unset.status == Status.FAIL and "DOCTOR_TEST_PW" in unset.detail


def test_tls_with_the_right_ca_passes_and_a_wrong_ca_fails(mosquitto, pki):  # noqa: F811
    cert, key = pki["server"]
    broker = mosquitto(cafile=pki["ca"], certfile=cert, keyfile=key)
    good = check_broker(mqtt_for(broker, ca_file=str(pki["ca"])), timeout_s=5)
    assert good.status == Status.OK and "TLS" in good.detail
    bad = check_broker(mqtt_for(broker, ca_file=str(pki["other_ca"])), timeout_s=5)
    assert bad.status == Status.FAIL and "certificate is not trusted" in bad.detail
    plain = check_broker(mqtt_for(broker), timeout_s=3)
    assert plain.status == Status.FAIL and "set mqtt.tls" in plain.detail


def test_mutual_tls_without_a_client_certificate_says_so(mosquitto, pki):  # noqa: F811
    cert, key = pki["server"]
    broker = mosquitto(cafile=pki["ca"], certfile=cert, keyfile=key, require_certificate=True)
    check = check_broker(mqtt_for(broker, ca_file=str(pki["ca"])), timeout_s=5)
    assert check.status == Status.FAIL and "client certificate" in check.detail, check.detail


def test_options_and_checks_are_plain_data():
    check = Check("x", Status.WARN, "d", "f", False, {"a": 1})
    assert json.loads(json.dumps(check.to_json()))["status"] == "WARN"
    assert DoctorOptions().invokes == 20


def test_a_missing_jpeg_decoder_only_warns_with_the_fix(tmp_path, monkeypatch):
    # sys.modules[name] = None is how Python itself marks a module as unimportable
    monkeypatch.setitem(sys.modules, "simplejpeg", None)
    checks = {c.name: c for c in check_python_and_packages(config_of(tmp_path))}
    row = checks["package simplejpeg"]
    assert row.status == Status.WARN and not row.required
    assert "OpenCV decodes" in row.detail and "pip install simplejpeg" in row.fix


# ---------------------------------------------------------------------------- interleaved timings


def test_timings_are_taken_in_interleaved_rounds_and_the_fastest_row_says_how_sure(tmp_path):
    result, document = doctor_json(write_config(tmp_path), "--invokes", "6")
    assert result.code == 0, result.out
    timings = [c["data"] for c in document["checks"] if c["name"].startswith("timing ")]
    assert timings and all(len(t["round_rates"]) == 5 for t in timings)  # 6 invokes: 5 rounds of 2
    fastest = by_name(document)["fastest"]
    ratios = fastest["data"]["ratio_to_config"]
    assert len(ratios) == 5 and all(r > 0 for r in ratios)
    assert fastest["data"]["sure"] == (min(ratios) >= 1.10)
    assert bool(fastest["fix"]) == fastest["data"]["sure"]


def _timing(plan: Plan, rates: tuple[float, ...]) -> Timing:
    return Timing(plan, 1000.0 / statistics.median(rates), 10, rates)


def test_advice_against_the_config_needs_every_round_to_agree():
    config = Plan("ai_edge_litert", 1, 2)
    other = Plan("ai_edge_litert", 2, 1)
    noisy = advise([_timing(config, (100, 100, 100)), _timing(other, (130, 102, 125))], config.key)
    assert noisy.best.plan == other and not noisy.sure  # faster by the median, not in every round
    assert noisy.spread() == "1.25x (1.02-1.30x over 3 interleaved rounds)"
    clear = advise([_timing(config, (100, 90, 110)), _timing(other, (130, 120, 125))], config.key)
    assert clear.sure
    once = advise([_timing(config, (100,)), _timing(other, (200,))], config.key)
    assert not once.sure  # a single round is never enough to advise a change
