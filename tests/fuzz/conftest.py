"""Hypothesis profiles: ``ci`` (the default: the fuzz suite runs in about a minute)
and ``long`` (``pytest tests/fuzz --hypothesis-profile=long``: 25 times the examples).

Tests say how many examples they want under ``ci`` with :func:`scaled`; the
profile scales that number.
"""

from hypothesis import HealthCheck, settings

#: ``max_examples`` of the ci profile: the unit :func:`scaled` counts in.
CI_EXAMPLES = 1_000

_quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=CI_EXAMPLES, deadline=None,
                          suppress_health_check=_quiet)
settings.register_profile("long", max_examples=25 * CI_EXAMPLES, deadline=None,
                          suppress_health_check=_quiet)
settings.load_profile("ci")
