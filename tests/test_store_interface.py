from __future__ import annotations

import dataclasses

import pytest

from cronmetrics.storage.interface import JobState, Recorded, Result, RuntimeRecord, new_state


def test_values_crossing_the_store_interface_cannot_be_changed_by_a_caller() -> None:
    state = new_state("backup@db1", 100.0)
    result = Result("backup@db1", "success", 100.0, 100.0)
    record = RuntimeRecord("window", "w1", {"jobs": ["backup@db1"]}, 100.0)
    for value in (state, result, record, Recorded(result, state, changed=True)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, "other")


def test_a_new_state_starts_its_deadlines_when_first_seen() -> None:
    state = new_state("backup", 50.0)
    assert (state.first_seen, state.active_since, state.version) == (50.0, 50.0, 0)
    assert dataclasses.replace(state, version=1) != state
    assert isinstance(state, JobState) and state.detached_since is None
