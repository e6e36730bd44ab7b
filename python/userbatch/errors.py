"""Exceptions a user can cause.

Every error that a user's input can trigger is a :class:`UserbatchError` whose message says what to change;
the CLI prints it as one line and exits non-zero. Anything else is a bug and keeps its traceback.
"""


class UserbatchError(Exception):
    """Base class for errors caused by user input or state the user can fix."""


class InvalidName(UserbatchError):
    """A table or namespace name that is not a plain identifier (path tricks, bad characters)."""


class TableNotFound(UserbatchError):
    """No table of that name is registered in the catalog (or the user may not see it)."""


class TableExists(UserbatchError):
    """A create was asked for a table name that is already registered."""


class AccessDenied(UserbatchError):
    """The table belongs to another user or group and is not visible to the caller."""


class ColumnNotFound(UserbatchError):
    """A column named in a call is not in the table's schema."""


class BadCoordinates(UserbatchError):
    """Coordinates or region parameters out of range, NaN, or otherwise unusable."""


class VersionNotFound(UserbatchError):
    """A requested table version or timestamp does not exist in the table's history."""


class CommitConflict(UserbatchError):
    """Another writer committed first and the two changes cannot both stand; re-run the write."""


class InputFormatError(UserbatchError):
    """An input file could not be read in the declared format."""


class MissingExtra(UserbatchError, ImportError):
    """An optional part of userbatch was used without the extra that installs it (``pip install 'userbatch[ml]'``).

    Also an :class:`ImportError`, so code that probes for an optional package with ``except ImportError`` keeps
    working."""


class SchemaMismatch(UserbatchError):
    """Rows whose columns or types do not fit the table they are written to (and cannot be merged into it)."""
