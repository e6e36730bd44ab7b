"""Table names: ``namespace.name``, each part a lower-case identifier.

Names become directory names and SQL identifiers, so anything that could escape the warehouse (``..``, ``/``,
quotes) or clash with SQL quoting is refused here, once, before a name reaches a path or a query.
"""

from __future__ import annotations

import re

from ..errors import InvalidName

_PART = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def parse_table_name(name: str) -> tuple[str, str]:
    """Split and validate ``namespace.name``; raises InvalidName with the rule it broke."""
    if not isinstance(name, str) or name.count(".") != 1:
        raise InvalidName(f"table name {name!r} must look like 'namespace.name' (exactly one dot)")
    ns, table = name.split(".")
    for part in (ns, table):
        if not _PART.match(part):
            raise InvalidName(
                f"table name {name!r}: {part!r} must start with a lower-case letter and hold only a-z, 0-9 and _ "
                "(at most 63 characters)"
            )
    return ns, table
