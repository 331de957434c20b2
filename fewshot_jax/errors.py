"""The project's error for unusable config values.

Builders raise :class:`ConfigError` naming the key, the value and what was
expected; ``launch.py`` shows the project's errors as one line, without a
traceback. Errors about files and data are ``data.io.DataError`` and
``models.weights.common.WeightsError``. :func:`is_count` is the one check of a whole
number (steps, sizes, counts) that every builder shares.
"""

import numbers


class ConfigError(ValueError):
    """A config value that cannot be used (the message names key, value and what was expected)."""


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is a whole number (Python or numpy, not a bool) of at least ``minimum``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
