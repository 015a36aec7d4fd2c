"""How many examples a fuzz test runs: its ci count, scaled by the loaded profile."""

from hypothesis import settings

from tests.fuzz.conftest import CI_EXAMPLES


def scaled(ci_examples: int) -> settings:
    """``@scaled(2000)``: 2000 examples under the ci profile, 50,000 under long."""
    factor = settings.default.max_examples / CI_EXAMPLES
    return settings(max_examples=max(1, int(ci_examples * factor)))
