"""Home Assistant MQTT discovery: one device per agent with its entities.

Published retained to ``<discovery_prefix>/<component>/<device_id>/<object_id>/config`` on every
connect and again whenever Home Assistant announces itself (``<discovery_prefix>/status`` =
``online``). Entities:

- ``binary_sensor`` *Failure* (device class ``problem``) from the retained ``failure`` topic (ON/OFF);
- ``binary_sensor`` *Camera view blocked* (``problem``) from the retained ``view`` topic: ON after a
  ``view_changed`` or ``obstructed`` event, OFF after ``view_restored`` (the event's JSON as attributes);
- ``sensor`` *Top score* from ``detections`` (``top_score`` of the latest processed frame);
- ``sensor`` *FPS* and *Inference time* from ``stats`` (``fps``, ``inference_ms``);
- ``sensor`` *Outbox messages* (diagnostic) from ``stats`` (``mqtt.outbox.messages``);
- ``image`` *Latest frame* from the retained ``image`` topic (JPEG with the boxes drawn).

Every entity is available only while the agent's ``status`` topic says ``online``
(``offline`` from the last will and ``stopped`` after a clean exit both mean unavailable).
"""

from __future__ import annotations

import re
from typing import Any

from agent import __version__
from agent.config.mqtt import MqttSettings
from agent.mqtt.topics import JPEG_TYPE, ONLINE, Topics, json_bytes

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_id(device_id: str) -> str:
    """The discovery node id of a device: its id with only ``[A-Za-z0-9_-]`` (Home Assistant's rule).

    It is a whole topic level on its own, so a broker ACL can say
    ``pattern write homeassistant/+/%u/#`` (Mosquitto substitutes ``%u`` only as a full level)."""
    return _ID_UNSAFE.sub("_", device_id)


def birth_topic(settings: MqttSettings) -> str:
    """Where Home Assistant announces ``online`` after it (re)starts."""
    return f"{settings.home_assistant.discovery_prefix}/status"


def discovery_messages(settings: MqttSettings, topics: Topics) -> list[tuple[str, bytes]]:
    """``(topic, JSON payload)`` of every discovery config for this device (publish retained)."""
    node = node_id(topics.device_id)
    ident = f"edge_agent_{node}"
    name = settings.home_assistant.name or f"edge-agent {topics.device_id}"
    common: dict[str, Any] = {
        "availability": [
            {
                "topic": topics.status,
                # `stopped` (clean exit) must read as unavailable too, not as an unknown payload.
                "value_template": f"{{{{ 'online' if value == '{ONLINE}' else 'offline' }}}}",
            }
        ],
        "device": {
            "identifiers": [ident],
            "name": name,
            "manufacturer": "edge-agent",
            "model": "edge-agent",
            "sw_version": __version__,
        },
        "origin": {"name": "edge-agent", "sw_version": __version__},
    }
    entities: list[tuple[str, str, dict[str, Any]]] = [
        (
            "binary_sensor",
            "failure",
            {
                "name": "Failure",
                "state_topic": topics.failure,
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "problem",
            },
        ),
        (
            "binary_sensor",
            "camera_view",
            {
                "name": "Camera view blocked",
                "state_topic": topics.view,
                "value_template": "{{ 'ON' if value_json.blocked else 'OFF' }}",
                "json_attributes_topic": topics.view,
                "device_class": "problem",
                "icon": "mdi:cctv-off",
            },
        ),
        (
            "sensor",
            "top_score",
            {
                "name": "Top score",
                "state_topic": topics.detections,
                "value_template": "{{ value_json.top_score }}",
                "state_class": "measurement",
                "suggested_display_precision": 2,
                "icon": "mdi:target",
            },
        ),
        (
            "sensor",
            "fps",
            {
                "name": "FPS",
                "state_topic": topics.stats,
                "value_template": "{{ value_json.fps }}",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "suggested_display_precision": 1,
                "icon": "mdi:speedometer",
            },
        ),
        (
            "sensor",
            "inference_ms",
            {
                "name": "Inference time",
                "state_topic": topics.stats,
                "value_template": "{{ value_json.inference_ms }}",
                "unit_of_measurement": "ms",
                "device_class": "duration",
                "state_class": "measurement",
                "suggested_display_precision": 1,
            },
        ),
        (
            "sensor",
            "outbox_messages",
            {
                "name": "Outbox messages",
                "state_topic": topics.stats,
                "value_template": "{{ value_json.mqtt.outbox.messages }}",
                "state_class": "measurement",
                "entity_category": "diagnostic",
                "icon": "mdi:tray-full",
            },
        ),
        (
            "image",
            "latest_frame",
            {"name": "Latest frame", "image_topic": topics.image, "content_type": JPEG_TYPE},
        ),
    ]
    prefix = settings.home_assistant.discovery_prefix
    messages = []
    for component, object_id, config in entities:
        payload = {**config, "unique_id": f"{ident}_{object_id}", **common}
        messages.append((f"{prefix}/{component}/{node}/{object_id}/config", json_bytes(payload)))
    return messages
