"""The output stages of the agent as ``build_agent`` wires them: their declared outputs are
checked before any frame, and a mistake in the order names the stage and the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import build_agent
from agent.config import load_config
from agent.flow import check_stage_order


def test_the_agents_stages_are_in_an_order_their_outputs_allow(tmp_path: Path) -> None:
    config = load_config(None)
    config = config.model_copy(
        update={
            "mqtt": config.mqtt.model_copy(update={"enabled": False}),
            "output": config.output.model_copy(update={"dir": str(tmp_path / "out")}),
        }
    )
    agent = build_agent(config)
    try:
        names = [stage.name for stage in agent.stages]
        assert names == ["alerts", "harvest", "vott", "quota", "resume"]
        check_stage_order(agent.stages)  # as the pipeline does when it is built

        vott = names.index("vott")
        swapped = [*agent.stages]
        swapped[vott - 1], swapped[vott] = swapped[vott], swapped[vott - 1]
        with pytest.raises(
            ValueError, match="stage vott needs KeepDecision, which no earlier stage produces"
        ):
            check_stage_order(swapped)
        twice = [*agent.stages, agent.stages[vott]]
        with pytest.raises(ValueError, match="stages vott and vott both produce StoredFrame"):
            check_stage_order(twice)
    finally:
        for stage in agent.stages:
            stage.close()
        agent.source.close()
