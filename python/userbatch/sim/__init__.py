"""Deterministic survey simulation (Object, Visit, ForcedSource, Gaia) for tests, demos and benchmarks."""

from userbatch.sim.survey import (
    SurveyConfig,
    iter_object_chunks,
    simulate_forced_sources,
    simulate_gaia,
    simulate_objects,
    simulate_survey,
    simulate_visits,
    write_survey,
)

__all__ = [
    "SurveyConfig",
    "iter_object_chunks",
    "simulate_forced_sources",
    "simulate_gaia",
    "simulate_objects",
    "simulate_survey",
    "simulate_visits",
    "write_survey",
]
