"""Which frames to keep for labelling, and the disk they may use.

Rooms, one job each:

- ``harvester``: the facade the pipeline uses (``Harvester``: decide, record_kept, confirm_evicted,
  maintain, mark_synced, stats, summary);
- ``decision``: what comes back (``KeepDecision``, ``Trigger``, ``Eviction``);
- ``policy``: the keep policies, reasons and vetoes, and what they remember per source;
- ``reasons``: the score-band reasons (``detection``, ``uncertainty``) judged on every detection;
- ``dhash``: the 64-bit difference hash behind the ``duplicate`` veto;
- ``store``: the index of kept frames on disk (SQLite): quota, retention, eviction order;
- ``journal``: reading the JSONL index of older versions (imported once);
- ``floor``: the free-space floor;
- ``summary``: counters, their typed shape, the log line and harvest.json.

The settings are the ``harvest`` config section (``agent.config.harvest``).
"""

from agent.harvest.decision import Eviction, KeepDecision, Trigger
from agent.harvest.dhash import dhash64, hamming_distances
from agent.harvest.harvester import Harvester
from agent.harvest.store import HarvestStore, KeptFrame

__all__ = [
    "Eviction",
    "HarvestStore",
    "Harvester",
    "KeepDecision",
    "KeptFrame",
    "Trigger",
    "dhash64",
    "hamming_distances",
]
