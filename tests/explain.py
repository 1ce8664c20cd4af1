"""What the tests that check index use share: a listener capturing the commands a function sends to one
collection (as they can be explained), and the stages of the plan the server chose for one."""

from __future__ import annotations

from typing import Any

from pymongo import monitoring

# Fields of a sent command that `explain` does not take.
_NOT_EXPLAINABLE = {"lsid", "$db", "$clusterTime", "$readPreference", "readConcern", "txnNumber", "batchSize"}


class CapturedCommands(monitoring.CommandListener):
    """The `names` commands (find, aggregate, …) sent to `collection`, ready to explain."""

    def __init__(self, collection: str, names: tuple[str, ...] = ("find",)) -> None:
        self.collection, self.names = collection, names
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in self.names and event.command.get(event.command_name) == self.collection:
            self.commands.append({k: v for k, v in event.command.items() if k not in _NOT_EXPLAINABLE})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def plan_stages(db: Any, command: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages of the winning plan for `command` (an aggregate's: its first stage's), outermost first."""
    explained = db.command({"explain": command, "verbosity": "queryPlanner"})
    if "queryPlanner" in explained:
        plan = explained["queryPlanner"]["winningPlan"]
    else:
        plan = explained["stages"][0]["$cursor"]["queryPlanner"]["winningPlan"]
    return _walk(plan)


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in [plan.get("inputStage"), *plan.get("inputStages", [])]:
        if child:
            found += _walk(child)
    return found
