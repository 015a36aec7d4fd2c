"""Rate strings as Celery writes them: ``10/m``, ``100/s``, ``2/h``, or ``N`` per second."""

from __future__ import annotations

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: str | float | int | None) -> float | None:
    """Tokens per second; ``None``/empty means no limit. Raises ``ValueError`` with the reason."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"rate must be positive, got {value!r}")
        return float(value)
    text = str(value).strip()
    count, _, unit = text.partition("/")
    unit = unit.strip().lower() or "s"
    if unit not in _UNITS:
        raise ValueError(f"unknown rate unit {unit!r} in {text!r} (use /s, /m or /h)")
    try:
        number = float(count)
    except ValueError:
        raise ValueError(f"invalid rate {text!r} (expected N, N/s, N/m or N/h)") from None
    if number <= 0:
        raise ValueError(f"rate must be positive, got {text!r}")
    return number / _UNITS[unit]
