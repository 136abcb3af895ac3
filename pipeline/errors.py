"""Errors a user can fix. CLIs print them as one line and exit non-zero; nothing else is caught."""


class UserError(Exception):
    """Bad input from the user: a config value, a file, a column. The message names the field or path
    and says what to do."""


class ConfigError(UserError, ValueError):
    """A recipe or override that does not fit the typed config."""
