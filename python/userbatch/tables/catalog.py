"""The table catalog: named tables, where they live, how they are laid out, and who may see them.

Kept in the facility database so that the CLI, the REST API, Spark sessions and later the quota ledger all see
one truth. Entries are typed (:class:`TableEntry`); the ORM row stays private to this module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import DateTime, Float, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..config import settings
from ..errors import AccessDenied, TableExists, TableNotFound, UserbatchError
from .catalog_client import CatalogClient
from .db import Base, engine_for
from .names import parse_table_name

log = logging.getLogger(__name__)

FORMATS = ("delta", "parquet", "hats")
VISIBILITIES = ("public", "group", "private")


@dataclass(frozen=True)
class TableEntry:
    """One registered table. Spatial columns are declared here, never hard-coded by callers."""
    name: str
    location: str
    format: str = "delta"
    ra_column: str | None = "coord_ra"
    dec_column: str | None = "coord_dec"
    coord_unit: str = "deg"
    partition_order: int | None = None  # fixed order, or None for adaptive (threshold-based)
    pixel_threshold: int | None = None
    highest_order: int | None = None
    margin_radius_arcsec: float | None = None
    owner: str = ""
    group: str | None = None
    visibility: str = "public"
    description: str = ""
    properties: dict = field(default_factory=dict)  # open-ended: director parent, id column, epoch columns ...
    created_at: datetime | None = None

    def __post_init__(self):
        parse_table_name(self.name)
        if self.format not in FORMATS:
            raise UserbatchError(f"table format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.visibility not in VISIBILITIES:
            raise UserbatchError(f"visibility {self.visibility!r} is not one of {', '.join(VISIBILITIES)}")
        if self.visibility == "group" and not self.group:
            raise UserbatchError("a table with visibility 'group' needs a group")

    @property
    def namespace(self) -> str:
        return self.name.split(".")[0]

    @property
    def spatial(self) -> bool:
        return bool(self.ra_column and self.dec_column)

    @property
    def margin_location(self) -> str:
        """Margin cache: a Delta table of its own, inside the main table's directory (hidden from its readers)."""
        return str(Path(self.location) / "_margin")

    def visible_to(self, user: str, groups: tuple[str, ...]) -> bool:
        if self.visibility == "public" or self.owner == user:
            return True
        return self.visibility == "group" and self.group in groups

    def replace(self, **changes) -> "TableEntry":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """The entry as JSON (how it travels between a run and the facility's run API)."""
        values = dataclasses.asdict(self)
        values["created_at"] = self.created_at.isoformat() if self.created_at else None
        return values

    @classmethod
    def from_json(cls, doc: dict) -> "TableEntry":
        """An entry from :meth:`to_json`'s output (unknown keys are ignored; the checks of the class apply)."""
        if not isinstance(doc, dict):
            raise UserbatchError("a table entry is a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in names}
        if values.get("created_at"):
            values["created_at"] = datetime.fromisoformat(values["created_at"])
        try:
            return cls(**values)
        except TypeError as e:
            raise UserbatchError(f"not a table entry: {e}") from None


class _TableRow(Base):
    __tablename__ = "ub_tables"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    location: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    ra_column: Mapped[str | None] = mapped_column(String(128), nullable=True)
    dec_column: Mapped[str | None] = mapped_column(String(128), nullable=True)
    coord_unit: Mapped[str] = mapped_column(String(16))
    partition_order: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pixel_threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    highest_order: Mapped[int | None] = mapped_column(Integer, nullable=True)
    margin_radius_arcsec: Mapped[float | None] = mapped_column(Float, nullable=True)
    owner: Mapped[str] = mapped_column(String(128))
    group: Mapped[str | None] = mapped_column(String(128), nullable=True)
    visibility: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    properties: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_FIELDS = [f.name for f in dataclasses.fields(TableEntry)]


def _to_entry(row: _TableRow) -> TableEntry:
    values = {name: getattr(row, name) for name in _FIELDS}
    values["properties"] = json.loads(row.properties or "{}")
    return TableEntry(**values)


class Catalog:
    """Registered tables, filtered by what the calling user may see."""
    def __init__(self, db_url: str | None = None, user: str | None = None, groups: tuple[str, ...] | None = None):
        s = settings()
        self.user = user or s.user
        self.groups = tuple(groups) if groups is not None else s.groups
        self.warehouse = s.warehouse
        #: inside a facility run there is no database: the facility answers through its run API, as the owner
        self._remote = None
        if db_url is None and s.in_run:

            self._remote = CatalogClient(s.api_socket, s.run_token)
            self.db_url, self.engine = None, None
            return
        self.db_url = db_url or s.db_url
        self.engine = engine_for(self.db_url)

    def default_location(self, name: str) -> str:
        ns, table = parse_table_name(name)
        return str(self.warehouse / ns / table)

    def register(self, entry: TableEntry) -> TableEntry:
        """Add a table to the catalog (no file is written or checked).

        Parameters
        ----------
        entry : TableEntry
            The table to add; an empty ``owner`` becomes the calling user, a missing ``created_at`` now.

        Returns
        -------
        TableEntry
            The entry as stored, with its owner and creation time.
        """
        if self._remote is not None:
            return TableEntry.from_json(self._remote.register(entry.to_json()))
        entry = entry.replace(
            owner=entry.owner or self.user, created_at=entry.created_at or datetime.now(timezone.utc)
        )
        values = dataclasses.asdict(entry)
        values["properties"] = json.dumps(entry.properties, sort_keys=True)
        with Session(self.engine) as session:
            session.add(_TableRow(**values))
            try:
                session.commit()
            except IntegrityError as exc:
                raise TableExists(f"table {entry.name} already exists; choose another name or drop it first") from exc
        log.info("registered table %s at %s", entry.name, entry.location)
        return entry

    def exists(self, name: str) -> bool:
        if self._remote is not None:
            return self._remote.exists(name)
        parse_table_name(name)
        with Session(self.engine) as session:
            return session.get(_TableRow, name) is not None

    def get(self, name: str) -> TableEntry:
        """The entry of table ``name``, if the calling user may read it.

        Parameters
        ----------
        name : str
            The table name, ``namespace.table``.

        Returns
        -------
        TableEntry
            The table's entry. A table that does not exist, or that the user may not see, raises
            :class:`~userbatch.errors.TableNotFound` alike.
        """
        if self._remote is not None:
            return TableEntry.from_json(self._remote.get(name))
        parse_table_name(name)
        with Session(self.engine) as session:
            row = session.get(_TableRow, name)
            if row is None:
                raise TableNotFound(f"no table named {name}; 'userbatch tables list' shows the tables you can read")
            entry = _to_entry(row)
        if not entry.visible_to(self.user, self.groups):
            # the same answer as for a table that does not exist: naming the owner would tell who has what
            raise TableNotFound(f"no table named {name}; 'userbatch tables list' shows the tables you can read")
        return entry

    def list(self, namespace: str | None = None) -> list[TableEntry]:
        """The tables the calling user may read, sorted by name.

        Parameters
        ----------
        namespace : str, optional
            Only the tables of this namespace (``"dp1"``); by default every namespace.

        Returns
        -------
        list of TableEntry
            The readable tables' entries.
        """
        if self._remote is not None:
            return [TableEntry.from_json(d) for d in self._remote.list(namespace)]
        with Session(self.engine) as session:
            stmt = select(_TableRow).order_by(_TableRow.name)
            if namespace:
                stmt = stmt.where(_TableRow.name.startswith(namespace + ".", autoescape=True))
            entries = [_to_entry(r) for r in session.scalars(stmt)]
        return [e for e in entries if e.visible_to(self.user, self.groups)]

    def update(self, name: str, **changes) -> TableEntry:
        if self._remote is not None:
            return TableEntry.from_json(self._remote.update(name, **changes))
        entry = self.get(name)
        self._require_owner(entry, "change")
        new = entry.replace(**changes)
        with Session(self.engine) as session:
            row = session.get(_TableRow, name)
            for key, value in dataclasses.asdict(new).items():
                setattr(row, key, json.dumps(value, sort_keys=True) if key == "properties" else value)
            session.commit()
        return new

    def drop(self, name: str) -> TableEntry:
        """Unregister a table (its files are left for the operator or a vacuum to remove)."""
        if self._remote is not None:
            return TableEntry.from_json(self._remote.drop(name))
        entry = self.get(name)
        self._require_owner(entry, "drop")
        with Session(self.engine) as session:
            session.delete(session.get(_TableRow, name))
            session.commit()
        return entry

    def _require_owner(self, entry: TableEntry, action: str) -> None:
        if entry.owner != self.user:
            raise AccessDenied(f"only {entry.owner}, the owner of {entry.name}, may {action} it")
