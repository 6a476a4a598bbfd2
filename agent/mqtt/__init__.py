"""MQTT output: settings, topics and payloads, the on-disk outbox, the connection, Home Assistant.

The pipeline uses ``agent.mqtt.publisher.create_publisher(settings.mqtt)`` (None when disabled) and
calls ``publish_result`` (detections, and a kept frame with its annotation), ``publish_alert``,
``publish_stats``, ``close``.
"""
