"""The review receiver: agents' frames and pre-labels over MQTT -> VoTT 2.2.0 projects to review.

``edge-agent review --config review.yaml`` (see ``configs/review.yaml``) runs on the reviewer's
desktop or a small server. It subscribes to ``<prefix>/+/frames/+`` and
``<prefix>/+/annotations/+`` (as ``$share/<group>/...`` with ``mqtt.shared_group``) and files
every frame and annotation under ``root``::

    <root>/<device>/<batch>/frames/<frame_id>.jpg          the frames (VoTT's source folder)
    <root>/<device>/<batch>/vott/<device>-<batch>.vott      the project (VoTT's target folder),
    <root>/<device>/<batch>/vott/<asset id>-asset.json      written when the batch is closed

Asset ids and paths in the project are the ones the reviewer's VoTT computes for its own view
of the folder (``reviewer_root``, e.g. ``Z:\\review`` for a Samba share of ``root``), so VoTT
lists each frame once. Frames without detections are in the frames folder but not in the
project: VoTT lists them as not visited. Scores are kept beside the asset files in
``vott/edge-agent-scores/`` (VoTT ignores that folder).

Batches
-------
VoTT rewrites the ``.vott`` file of an open project every time the reviewer visits an asset,
so the receiver never writes into a project that may be open. New frames go into the device's
**open** batch; it is **sealed** when the UTC day changes (``batch_by: day``), when it holds
``batch_size`` frames (``batch_by: count``), or when someone asks (any mode; the only way with
``batch_by: manual``):

* ``edge-agent review --config review.yaml --close-batch [--device ID]``, or
* creating an empty file named ``CLOSE`` in the batch folder (works from the reviewer's
  machine over the share).

A sealed batch takes no new frames; it is **closed** as soon as every frame in it has its
annotation (or ``close_grace_s`` after sealing, for a part that never comes): the receiver then
writes the VoTT project and, last, a file ``CLOSED``. It never touches a closed batch again. A
frame stays in the batch where its first part (frame or annotation) arrived; an annotation that
arrives after its frame's batch was closed is dropped (``batch_closed`` in the stats).

How a reviewer works through batches
------------------------------------
1. Once, in VoTT 2.2.0: *Settings* (gear icon) -> *Security Tokens* -> *Add new token*, name it
   exactly like ``security_token`` in the receiver's config (default ``edge-agent Token``), keep
   the generated key, *Save settings*. Every project the receiver writes refers to this one
   token name, so this is a one-time step (VoTT 2.2.0 refuses to open a project whose token is
   not in its settings: "Security Token Not Found").
2. Close the batch to review, if its day or count has not closed it already:
   ``edge-agent review --config review.yaml --close-batch`` prints the ``.vott`` file of each
   closed batch (``--list`` shows every batch and its state).
3. In VoTT: *Open Local Project* -> pick ``<root>/<device>/<batch>/vott/<device>-<batch>.vott``
   (through the reviewer's own path, e.g. the share). Pre-labelled frames show their boxes;
   correct them, draw missed objects, and visit every frame you want in the training set. VoTT
   saves as you go (and encrypts the folder paths in the ``.vott`` with your token: fine).
4. Only open batches that have a ``CLOSED`` file (a batch still being written has no ``.vott``
   yet). Reopen a project with *Open Local Project*, not from VoTT's *Recent projects* list
   (VoTT keeps its own copy of recent projects).
5. Export a reviewed batch with ``edge-agent export --project <batch>/vott --source-folder
   <batch>/frames --format coco|voc|yolo|automl-csv|vott-csv --out DIR`` (``--source-folder``
   because VoTT has encrypted the folder paths in the ``.vott`` by then).

More: ``docs/review.md`` (drop reasons, memory bound, several receivers on shared storage, systemd).
Modules: ``connection`` (MQTT session) and ``guard`` (oversized packets) -> ``receiver`` (fast
refusals, the fair ``inbox`` and a flooding device's ``spool``, worker threads) -> ``checks`` /
``annotation`` (untrusted input) -> ``store`` (batches under ``locks``) -> ``closing`` (the VoTT project); ``service`` (systemd),
``cli``, ``stats``, ``presence``.
"""
