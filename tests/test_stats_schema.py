"""The retained ``stats`` message (docs/schema/stats.schema.json) against what the real agent
publishes: ``edge-agent run`` on the bundled sample with its default config (alerts, harvest, VoTT,
MQTT) into a real Mosquitto; every stats message a subscriber receives must validate, and its
counters must agree with each other and with the run's own summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent.stats import FrameCounts, MqttStats, OutboxStats, PipelineStats
from tests.mosquitto import MessageCollector, mosquitto  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "docs" / "schema" / "stats.schema.json").read_text())


def test_the_schema_requires_what_the_typed_stats_declare():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    required = set(SCHEMA["required"]) - {"device_id", "timestamp", "mqtt"}
    assert required == set(PipelineStats.__required_keys__)
    props = SCHEMA["properties"]
    assert set(props["frames"]["required"]) == set(FrameCounts.__required_keys__)
    assert set(props["mqtt"]["required"]) == set(MqttStats.__required_keys__)
    assert set(props["mqtt"]["properties"]["outbox"]["required"]) == set(OutboxStats.__required_keys__)


@pytest.mark.timeout(180)
def test_real_agent_stats_validate_and_add_up(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    config = yaml.safe_load((REPO / "agent" / "data" / "default.yaml").read_text())
    config["source"]["url"] = str(REPO / "agent" / "data" / "sample_timelapse")
    config["detector"]["model"] = str(REPO / "agent" / "data" / "print3d_guidance.tflite")
    config["output"] = {"dir": str(tmp_path / "data")}
    config["pipeline"] = {"stats_interval_s": 0.2}
    config["mqtt"].update({"host": broker.host, "port": broker.port, "device_id": "dev-1"})
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    with MessageCollector(broker.host, broker.port, ["edge-agent/dev-1/stats"]) as collector:
        proc = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(tmp_path / "agent.yaml")],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert collector.wait_for(
            lambda ms: any(json.loads(m.payload)["frames"]["processed"] == 90 for m in ms), 30
        ), "the final stats never arrived"
    messages = [json.loads(m.payload) for m in collector.on_topic("edge-agent/dev-1/stats")]
    for stats in messages:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(stats)]
        assert not errors, errors
    final = next(s for s in messages if s["frames"]["processed"] == 90)
    frames, harvest = final["frames"], final["harvest"]["frames"]
    assert frames["captured"] == frames["processed"] + frames["skipped"] + frames["dropped"] == 90
    assert harvest["seen"] == frames["processed"] and harvest["kept"] == frames["kept"] == 90
    assert final["vott"]["added"] == 90 and final["alerts"]["warn"] == 1 and final["alerts"]["act"] == 1
    assert final["mqtt"]["outbox"]["stored"] >= 90 * 3
    assert final["detector"]["model"] == "print3d-guidance"
