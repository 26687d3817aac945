"""The OpenAPI document's examples (`wire_examples.py`, attached to the wire models) are
answers the models read without an unknown field: response models keep unknown fields
(`extra="allow"`), so a renamed or stale field in an example would otherwise pass unseen."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

from mlx_platform import wire, wire_examples


def _examples() -> list[tuple[type[BaseModel], dict[str, Any]]]:
    found = []
    for _, cls in inspect.getmembers(wire, inspect.isclass):
        if not (issubclass(cls, BaseModel) and cls.__module__ == wire.__name__):
            continue
        extra = cls.model_config.get("json_schema_extra")
        if isinstance(extra, dict):
            found += [(cls, example) for example in extra.get("examples", [])]
    return found


def _unknown_fields(value: Any, where: str) -> list[str]:
    """Fields of `value` (a model, and the models within it) that no model declares."""
    if isinstance(value, BaseModel):
        out = [f"{where}.{k}" for k in value.model_extra or {}]
        for name in type(value).model_fields:
            out += _unknown_fields(getattr(value, name), f"{where}.{name}")
        return out
    if isinstance(value, list | tuple):
        return [u for i, v in enumerate(value) for u in _unknown_fields(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [u for k, v in value.items() for u in _unknown_fields(v, f"{where}.{k}")]
    return []


EXAMPLES = _examples()


def test_the_models_carry_examples() -> None:
    assert {cls for cls, _ in EXAMPLES} >= {wire.MetricsReport, wire.PluginDetail}


@pytest.mark.parametrize(("model", "example"), EXAMPLES, ids=[c.__name__ for c, _ in EXAMPLES])
def test_each_example_is_read_by_its_model_without_unknown_fields(
    model: type[BaseModel], example: dict[str, Any]
) -> None:
    assert _unknown_fields(model.model_validate(example), model.__name__) == []


def test_the_metrics_example_shows_every_field_of_a_series_point() -> None:
    """Its point shows the per-point quantiles and memory, not only the spec's first fields."""
    (point,) = wire_examples.METRICS_REPORT["timeseries"]
    assert set(point) == set(wire.TimeseriesPoint.model_fields)
    shown = wire.TimeseriesPoint.model_validate(point)
    assert shown.p50_execution_time_ms is not None and shown.peak_memory_mb is not None
    assert shown.p50_execution_time_ms <= shown.p95_execution_time_ms <= shown.p99_execution_time_ms  # type: ignore[operator]
    assert shown.avg_memory_mb <= shown.peak_memory_mb  # type: ignore[operator]
