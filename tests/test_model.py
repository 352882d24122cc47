"""Durations and sizes as users write them in pipeline files."""

from __future__ import annotations

import pytest

from meshconnect.config.model import RetentionConfig, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0), (1.5, 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MB", 512 * 10**6), ("2GiB", 2 * 2**30), ("100kb", 100_000), ("10", 10), (4096, 4096)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["fast", "-1s", True])
def test_bad_durations_are_errors(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(None, "null"), ([1], "a list"), ({"a": 1}, "a mapping"), ("5 parsecs", "'5 parsecs'")],
)
def test_a_bad_duration_is_shown_as_the_yaml_has_it(bad: object, shown: str) -> None:
    """``failover_timeout: null`` said "None is not a duration"."""
    with pytest.raises(ValueError, match=rf"^{shown} is not a duration such as 200ms"):
        parse_duration(bad)


def test_retention_takes_all_three_limits() -> None:
    config = RetentionConfig.model_validate(
        {"max_age": "7d", "max_records": 10, "max_bytes": "1GB"}
    )
    assert (config.max_age, config.max_records, config.max_bytes) == (604800.0, 10, 10**9)
