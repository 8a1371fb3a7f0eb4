"""The pure, deterministic correlation engine: the one implementation of every rule."""

from streams.engine.core import Engine, EngineStats, Output
from streams.engine.params import DAY_MS, EngineParams
from streams.engine.state import AccountState, DictStore, StateStore, SubjectState

__all__ = [
    "DAY_MS",
    "AccountState",
    "DictStore",
    "Engine",
    "EngineParams",
    "EngineStats",
    "Output",
    "StateStore",
    "SubjectState",
]
