"""The publisher against a real Mosquitto 2: plain, MQTT 3.1.1, TLS, mutual TLS, passwords, ACLs,
Home Assistant discovery, and a broker that is down at start-up.

Failing cases check what the user sees: the agent keeps running, the reason is logged once
(not on every retry) and ``stats()["last_error"]`` says the same.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config.mqtt import MqttSettings
from agent.detections import Detections
from agent.flow import EventBus, FrameSynced, Stage
from agent.frames import Frame, FrameResult
from agent.mqtt.connection import build_tls_context
from agent.mqtt.publisher import MqttPublisher
from tests.helpers import wait_until
from tests.mosquitto import (
    CertificateAuthority,
    MessageCollector,
    MosquittoBroker,
    free_port,
    mosquitto,  # noqa: F401 (fixture)
    require_mosquitto,
    write_acl_file,
    write_password_file,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a broker certificate and a client certificate for ``devA``, plus an unrelated CA."""
    require_mosquitto()
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder / "ca")
    server_cert, server_key = ca.issue("broker", server=True)
    client_cert, client_key = ca.issue("devA")
    other = CertificateAuthority(folder / "other", "unrelated CA")
    return {
        "ca": ca.cert,
        "server": (server_cert, server_key),
        "client": (client_cert, client_key),
        "other_ca": other.cert,
    }


def settings_for(broker: MosquittoBroker, tmp_path: Path, **overrides) -> MqttSettings:
    values = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "device_id": "devA",
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 0.4,
        "close_timeout_s": 2.0,
        "outbox": {"path": str(tmp_path / f"outbox-{time.monotonic_ns()}.sqlite3")},
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


def result(i: int, width: int = 160) -> FrameResult:
    image = np.full((120, width, 3), 40 + i, np.uint8)
    frame = Frame(image, "cam0", i, 1_700_000_000 + i, f"frame{i:03d}")
    dets = Detections.create([[16, 12, 80, 60]], [0.75], [1], ["person", "spaghetti"])
    return FrameResult(frame, dets, "print3d", "litert", 6.5)


# Three connection attempts take 0.6-1.2 s of backoff, but a TLS handshake and Mosquitto's log
# reaching its file take longer on a loaded machine (over 10 s once, with the whole suite running).
ATTEMPTS_WAIT_S = 30.0


def attempts(broker: MosquittoBroker) -> int:
    return broker.log_text().count("New connection from")


def errors_containing(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def stats_when_turned_away(broker: MosquittoBroker, settings: MqttSettings) -> dict:
    """Start a publisher the broker turns away; its stats after three more connection attempts."""
    publisher = MqttPublisher(settings)
    publisher.start()
    before = attempts(broker)
    assert wait_until(lambda: attempts(broker) >= before + 3, timeout_s=ATTEMPTS_WAIT_S)
    stats = publisher.stats()
    publisher.close()
    return stats


def test_plain_publishes_detections_frames_annotations_and_status(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    synced: list[str] = []

    class SyncedListener(Stage):
        listens = (FrameSynced,)

        def on_event(self, event: object) -> None:
            assert isinstance(event, FrameSynced)
            synced.append(event.frame_id)

    events, listener = EventBus(), SyncedListener()
    with MessageCollector(broker.host, broker.port, ["edge-agent/devA/#"]) as collector:
        publisher = MqttPublisher(settings_for(broker, tmp_path), events=events)
        publisher.start()
        for i in range(3):
            publisher.publish_detections(result(i))
            publisher.publish_frame(result(i))
        publisher.publish_alert({"level": "warn", "score": 0.8, "frame_id": "cam0_frame002"})
        assert wait_until(lambda: publisher.stats()["outbox"]["messages"] == 0)
        assert wait_until(lambda: events.deliver([listener]) >= 0 and len(synced) == 3), (
            "a FrameSynced event comes when a frame is acknowledged"
        )
        stats = publisher.stats()
        publisher.close()
        assert collector.wait_for(lambda ms: any(m.payload == b"stopped" for m in ms))

    assert stats["connected"] and stats["acked"] == 10 and stats["outbox"]["dropped_total"] == 0
    assert synced == ["cam0_frame000", "cam0_frame001", "cam0_frame002"]
    (first, *_rest) = collector.on_topic("edge-agent/devA/detections")
    body = json.loads(first.payload)
    assert body["frame_id"] == "cam0_frame000" and body["device_id"] == "devA"
    assert body["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert body["model"] == "print3d" and body["runtime"] == "litert" and body["inference_ms"] == 6.5
    assert (body["width"], body["height"]) == (160, 120)
    (det,) = body["detections"]
    assert det["label"] == "spaghetti" and det["score"] == 0.75
    assert det["box_xyxy"] == [16.0, 12.0, 80.0, 60.0]
    assert det["box_xyxy_norm"] == [0.1, 0.1, 0.5, 0.5]
    assert first.properties["ContentType"] == "application/json"

    frame = collector.on_topic("edge-agent/devA/frames/cam0_frame001")[0]
    assert frame.properties["ContentType"] == "image/jpeg"
    assert 0 < frame.properties["MessageExpiryInterval"] <= 86400
    assert frame.properties["UserProperty"]["width"] == "160"
    assert cv2.imdecode(np.frombuffer(frame.payload, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
    note = collector.on_topic("edge-agent/devA/annotations/cam0_frame001")[0]
    record = json.loads(note.payload)
    assert record["schema"] == "edge-agent.detections/1" and record["frame_id"] == "cam0_frame001"
    assert (
        record["detections"]
        == json.loads(collector.on_topic("edge-agent/devA/detections")[1].payload)["detections"]
    )
    alert = json.loads(collector.on_topic("edge-agent/devA/alerts")[0].payload)
    assert alert["level"] == "warn" and alert["device_id"] == "devA" and alert["timestamp"].endswith("Z")
    assert [m.payload for m in collector.on_topic("edge-agent/devA/status")] == [b"online", b"stopped"]


def test_mqtt_3_1_1_works_without_properties(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    with MessageCollector(broker.host, broker.port, ["edge-agent/devA/#"]) as collector:
        publisher = MqttPublisher(settings_for(broker, tmp_path, protocol="3.1.1"))
        publisher.start()
        publisher.publish_detections(result(1))
        assert collector.wait_for(lambda _: bool(collector.on_topic("edge-agent/devA/detections")))
        publisher.close()
    assert "(p2," in broker.log_text(), "the broker saw an MQTT 3.1.1 client"


def test_broker_down_at_start_up_is_not_an_error_and_the_outbox_drains_when_it_comes(tmp_path):
    port = free_port()
    broker = MosquittoBroker(tmp_path / "broker", port=port)
    publisher = MqttPublisher(settings_for(broker, tmp_path))
    publisher.start()
    for i in range(5):
        publisher.publish_detections(result(i))
    assert wait_until(lambda: publisher.stats()["last_error"] is not None)
    assert publisher.stats()["outbox"]["messages"] == 5
    with broker, MessageCollector(broker.host, port, ["edge-agent/devA/detections"]) as collector:
        assert collector.wait_for(lambda ms: len(ms) == 5, 15)
        assert wait_until(lambda: publisher.stats()["outbox"]["messages"] == 0)
        publisher.close()
    ids = [json.loads(m.payload)["frame_id"] for m in collector.messages]
    assert ids == [f"cam0_frame{i:03d}" for i in range(5)], "drained in order"


def test_tls_with_the_right_ca_connects(mosquitto, pki, tmp_path):  # noqa: F811
    broker = mosquitto(certfile=pki["server"][0], keyfile=pki["server"][1])
    settings = settings_for(broker, tmp_path, ca_file=str(pki["ca"]))
    tls = build_tls_context(settings)
    with (
        MessageCollector(broker.host, broker.port, ["edge-agent/devA/#"], tls_context=tls) as collector,
        MqttPublisher(settings) as publisher,
    ):
        publisher.publish_detections(result(0))
        assert collector.wait_for(lambda _: bool(collector.on_topic("edge-agent/devA/detections")))


def test_tls_with_a_wrong_ca_fails_clearly_once(mosquitto, pki, tmp_path, caplog):  # noqa: F811
    broker = mosquitto(certfile=pki["server"][0], keyfile=pki["server"][1])
    publisher = MqttPublisher(settings_for(broker, tmp_path, ca_file=str(pki["other_ca"])))
    publisher.start()
    publisher.publish_detections(result(0))
    assert wait_until(lambda: attempts(broker) >= 3, timeout_s=ATTEMPTS_WAIT_S)
    stats = publisher.stats()
    publisher.close()
    assert not stats["connected"] and stats["outbox"]["messages"] == 1
    (record,) = errors_containing(caplog, "certificate is not trusted")
    assert "certificate verify failed" in record.getMessage() and "mqtt.ca_file" in record.getMessage()
    assert "not trusted" in stats["last_error"]


def test_mutual_tls_needs_the_client_certificate(mosquitto, pki, tmp_path, caplog):  # noqa: F811
    acl = write_acl_file(tmp_path / "acl", ["pattern write edge-agent/%u/#", "pattern read edge-agent/%u/#"])
    broker = mosquitto(
        cafile=pki["ca"],
        certfile=pki["server"][0],
        keyfile=pki["server"][1],
        require_certificate=True,
        use_identity_as_username=True,
        acl_file=acl,
    )
    cert, key = pki["client"]
    good = settings_for(broker, tmp_path, ca_file=str(pki["ca"]), cert_file=str(cert), key_file=str(key))
    with (
        MessageCollector(
            broker.host, broker.port, ["edge-agent/devA/#"], tls_context=build_tls_context(good)
        ) as collector,
        MqttPublisher(good) as publisher,
    ):
        publisher.publish_detections(result(0))
        assert collector.wait_for(lambda _: bool(collector.on_topic("edge-agent/devA/detections")))
    assert "u'devA'" in broker.log_text(), "the certificate's CN became the user name"

    stats = stats_when_turned_away(broker, settings_for(broker, tmp_path, ca_file=str(pki["ca"])))
    assert not stats["connected"]
    (record,) = errors_containing(caplog, "requires a client certificate")
    assert "mqtt.cert_file" in record.getMessage()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_password_right_and_wrong(mosquitto, tmp_path, caplog, monkeypatch, protocol):  # noqa: F811
    users = {"devA": "correct horse", "reviewer": "review-pw"}
    broker = mosquitto(password_file=write_password_file(tmp_path / "passwd", users))
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("correct horse\n")
    monkeypatch.setenv("EDGE_AGENT_TEST_MQTT_PW", "wrong horse")

    good = settings_for(broker, tmp_path, protocol=protocol, username="devA", password_file=str(secret_file))
    with (
        MessageCollector(
            broker.host, broker.port, ["edge-agent/devA/#"], username="reviewer", password="review-pw"
        ) as collector,
        MqttPublisher(good) as publisher,
    ):
        publisher.publish_detections(result(0))
        assert collector.wait_for(lambda _: bool(collector.on_topic("edge-agent/devA/detections")))

    bad = settings_for(
        broker, tmp_path, protocol=protocol, username="devA", password_env="EDGE_AGENT_TEST_MQTT_PW"
    )
    stats = stats_when_turned_away(broker, bad)
    assert not stats["connected"]
    (record,) = errors_containing(caplog, "refused the connection")
    assert (
        "reason code 135" in record.getMessage() and "mqtt.username and the password" in record.getMessage()
    )
    assert "wrong horse" not in caplog.text and "correct horse" not in caplog.text, "secrets never logged"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_acl_stops_one_device_from_publishing_as_another(mosquitto, tmp_path, caplog, protocol):  # noqa: F811
    users = {"devA": "pw-a", "reviewer": "review-pw"}
    acl = write_acl_file(
        tmp_path / "acl", ["user reviewer", "topic read edge-agent/#", "pattern write edge-agent/%u/#"]
    )
    broker = mosquitto(password_file=write_password_file(tmp_path / "passwd", users), acl_file=acl)
    os.environ["EDGE_AGENT_TEST_PW_A"] = "pw-a"
    try:
        with MessageCollector(
            broker.host, broker.port, ["edge-agent/#"], username="reviewer", password="review-pw"
        ) as collector:
            common = {"protocol": protocol, "username": "devA", "password_env": "EDGE_AGENT_TEST_PW_A"}
            with MqttPublisher(settings_for(broker, tmp_path, device_id="devB", **common)) as impostor:
                impostor.publish_detections(result(0))
                impostor.publish_alert({"level": "act"})
                assert wait_until(lambda: impostor.stats()["outbox"]["messages"] == 0)
                impostor_stats = impostor.stats()
            with MqttPublisher(settings_for(broker, tmp_path, device_id="devA", **common)) as honest:
                honest.publish_detections(result(1))
                # The broker acknowledged the impostor's messages before the honest client connected,
                # and one subscriber gets messages in the order the broker routed them: had any of
                # them been delivered, it would be here before this one.
                assert collector.wait_for(lambda _: bool(collector.on_topic("edge-agent/devA/detections")))
    finally:
        del os.environ["EDGE_AGENT_TEST_PW_A"]
    assert collector.on_topic("edge-agent/devB/#") == [], "nothing arrives under the other device's topics"
    if protocol == "5":
        # MQTT 5 tells the publisher: PUBACK 0x87, dropped and counted, logged once with a hint.
        assert impostor_stats["refused"] == 2
        assert impostor_stats["outbox"]["dropped"]["refused"] == {
            "alert": 1,
            "detection": 1,
            "annotation": 0,
            "frame": 0,
        }
        (record,) = errors_containing(caplog, "refused a message")
        assert "pattern write edge-agent/%u/#" in record.getMessage()


# The ACL suggested in the README: devices write only under their own user name.
README_ACL = [
    "pattern write edge-agent/%u/#",
    "pattern write homeassistant/+/%u/#",
    "pattern read homeassistant/status",
    "user reviewer",
    "topic read edge-agent/#",
    "user homeassistant",
    "topic read edge-agent/#",
    "topic readwrite homeassistant/#",
]


def test_home_assistant_discovery_image_and_failure_state(mosquitto, tmp_path, monkeypatch):  # noqa: F811
    users = {"devA": "pw-a", "homeassistant": "pw-ha"}
    broker = mosquitto(
        password_file=write_password_file(tmp_path / "passwd", users),
        acl_file=write_acl_file(tmp_path / "acl", README_ACL),
    )
    monkeypatch.setenv("EDGE_AGENT_TEST_PW_A", "pw-a")
    settings = settings_for(
        broker,
        tmp_path,
        username="devA",
        password_env="EDGE_AGENT_TEST_PW_A",
        home_assistant={"enabled": True, "name": "Printer cam"},
    )
    topics = ["homeassistant/#", "edge-agent/devA/#"]
    with (
        MessageCollector(
            broker.host, broker.port, topics, username="homeassistant", password="pw-ha"
        ) as collector,
        MqttPublisher(settings) as publisher,
    ):
        publisher.publish_frame(result(3, width=320))
        publisher.publish_alert({"level": "warn", "active": True, "score": 0.7})
        publisher.publish_stats({"fps": 2.5, "inference_ms": 41.0})
        publisher.publish_view({"level": "obstructed", "blocked": True, "samples": 3})
        assert collector.wait_for(
            lambda _: (
                bool(collector.on_topic("edge-agent/devA/image"))
                and bool(collector.on_topic("edge-agent/devA/failure"))
                and bool(collector.on_topic("edge-agent/devA/stats"))
                and bool(collector.on_topic("edge-agent/devA/view"))
                and len(collector.on_topic("homeassistant/+/+/+/config")) == 7
            )
        )
        # Home Assistant restarted: it announces itself and gets the configs again.
        collector.client.publish("homeassistant/status", "online", qos=1)
        assert collector.wait_for(lambda _: len(collector.on_topic("homeassistant/+/+/+/config")) == 14)
        publisher.set_failure(False)
        assert collector.wait_for(
            lambda _: collector.on_topic("edge-agent/devA/failure")[-1].payload == b"OFF"
        )
        assert publisher.stats()["refused"] == 0

    configs = {m.topic: json.loads(m.payload) for m in collector.on_topic("homeassistant/+/+/+/config")}
    image = configs["homeassistant/image/devA/latest_frame/config"]
    assert image["image_topic"] == "edge-agent/devA/image" and image["content_type"] == "image/jpeg"
    failure = configs["homeassistant/binary_sensor/devA/failure/config"]
    assert failure["state_topic"] == "edge-agent/devA/failure" and failure["device_class"] == "problem"
    assert failure["availability"][0]["topic"] == "edge-agent/devA/status"
    assert failure["device"]["name"] == "Printer cam"
    assert len({c["unique_id"] for c in configs.values()}) == 7
    view = json.loads(collector.on_topic("edge-agent/devA/view")[-1].payload)
    assert view["level"] == "obstructed" and view["blocked"] is True and view["device_id"] == "devA"
    alerts = [json.loads(m.payload) for m in collector.on_topic("edge-agent/devA/alerts")]
    assert [a["level"] for a in alerts] == ["warn", "obstructed"], "view events go out with the alerts"

    jpeg = collector.on_topic("edge-agent/devA/image")[-1].payload
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (120, 320, 3)
    assert collector.on_topic("edge-agent/devA/failure")[0].payload == b"ON", "an active alert sets it"
    stats = json.loads(collector.on_topic("edge-agent/devA/stats")[-1].payload)
    assert stats["fps"] == 2.5 and stats["device_id"] == "devA" and "outbox" in stats["mqtt"]


def test_a_frame_over_the_packet_limit_is_dropped_not_resent(mosquitto, tmp_path, caplog):  # noqa: F811
    broker = mosquitto(extra_config=["max_packet_size 4096"])
    noisy = result(0, width=640)
    noisy.frame.image[:] = np.random.default_rng(0).integers(0, 255, noisy.frame.image.shape, np.uint8)
    with (
        MessageCollector(broker.host, broker.port, ["edge-agent/devA/#"]) as collector,
        MqttPublisher(settings_for(broker, tmp_path)) as publisher,
    ):
        publisher.publish_frame(noisy)
        publisher.publish_detections(noisy)
        assert collector.wait_for(lambda _: bool(collector.on_topic("edge-agent/devA/detections")))
        stats = publisher.stats()
    assert stats["connects"] == 1 and stats["outbox"]["dropped"]["refused"]["frame"] == 1
    assert collector.on_topic("edge-agent/devA/frames/+") == []
    (record,) = errors_containing(caplog, "maximum packet size")
    assert "frame_max_width_px" in record.getMessage()
