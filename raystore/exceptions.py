"""The errors raystore raises. Every one carries a message that says what was wrong and what to do."""

from __future__ import annotations


class RaystoreError(Exception):
    """Base class of all raystore errors."""


class InvalidTag(RaystoreError, ValueError):
    """A tag, name or version does not follow the naming rules."""


class InvalidArgument(RaystoreError, ValueError):
    """A labels, metadata, signatures or other argument is malformed."""


class NotFound(RaystoreError, LookupError):
    """The requested model or version does not exist in the store."""


class AmbiguousTag(RaystoreError, LookupError):
    """A version prefix matches more than one version."""


class FrameworkMismatch(RaystoreError, TypeError):
    """A model was saved by one framework module and requested through another."""


class StoreError(RaystoreError):
    """The store is unusable: unreadable files, a corrupt version, a failed write."""


class ConfigError(RaystoreError, ValueError):
    """The configuration file or an environment setting is invalid."""


class MissingDependency(RaystoreError, ImportError):
    """An optional package needed for this operation is not installed."""
