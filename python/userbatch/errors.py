"""Exceptions a user can cause.

Every error that a user's input can trigger is a :class:`UserbatchError` whose message says what to change;
the CLI prints it as one line and exits non-zero. Anything else is a bug and keeps its traceback.

A message that tells the user to change a parameter names it as the Python API does (``ra_column``,
``on_bad_coords='quarantine'``) and lists those spellings in ``params``; a front end whose names differ (the CLI's
``--ra-column``, ``--bad-coords``) says its own with :meth:`UserbatchError.renamed`, from one mapping of its own.
"""

from __future__ import annotations

import re


class UserbatchError(Exception):
    """Base class for errors caused by user input or state the user can fix.

    Parameters
    ----------
    *args
        The message (and any further arguments, as for :class:`Exception`).
    params : tuple of str
        The spellings of Python parameters the message names (``"ra_column"``, or a whole setting such as
        ``"ra_column=None, dec_column=None"``), for :meth:`renamed`.
    """

    def __init__(self, *args, params: tuple[str, ...] = ()):
        super().__init__(*args)
        self.params = tuple(params)

    def renamed(self, names: dict[str, str]) -> UserbatchError:
        """The same error with each of its ``params`` that ``names`` knows written as ``names`` spells it.

        Parameters
        ----------
        names : dict of str to str
            A front end's spelling of each parameter (``{"ra_column": "--ra-column"}``).

        Returns
        -------
        UserbatchError
            A new error of the same class (``self`` when nothing was renamed); its ``params`` are the new names.
        """
        known = sorted((p for p in self.params if p in names), key=len, reverse=True)  # whole settings first
        if not known:
            return self
        pattern = re.compile("|".join(rf"(?<![\w-]){re.escape(p)}(?!\w)" for p in known))
        message = pattern.sub(lambda m: names[m.group(0)], str(self))
        return type(self)(message, params=tuple(names[p] for p in known))


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
