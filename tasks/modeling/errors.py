"""The model layer's user-error family, shared by the recipes and the evaluate stage."""

from __future__ import annotations


class ConfigError(ValueError):
    """A run config, a model source or a checkpoint does not fit the run; the message names what to fix. Exit 2."""

    exit_code = 2
