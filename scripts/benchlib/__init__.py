"""The parts of ``scripts/bench.py`` that each do one job: the agent's imports (``agent_seam``), CPU
probes in the measured agent (``probes``), the overhead per frame (``overhead``), the rounds'
stability (``stability``), the Ultralytics peer (``peer``, ``peer_child``) and the issue's checks
(``checks``)."""
