"""edge-agent: an edge inference agent for Raspberry Pi and Coral.

Frames in, detections out, VoTT pre-labels on disk, MQTT to a central reviewer.
"""

__version__ = "0.1.0"
