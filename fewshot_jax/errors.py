"""The project's error for unusable config values.

Builders raise :class:`ConfigError` naming the key, the value and what was
expected; ``launch.py`` shows the project's errors as one line, without a
traceback. Errors about files and data are ``data.io.DataError`` and
``models.weights_common.WeightsError``.
"""


class ConfigError(ValueError):
    """A config value that cannot be used (the message names key, value and what was expected)."""
