"""One page of the plugin list at catalogue scale (issue 13, docs/decisions.md "Queries that
scale"): filters on indexes in the list's order, a ranked search from the search index, deep
pages by a keyset seek, totals exact up to a bound. With repositories.py, the only module that
knows SQL dialect differences.

- **Order.** Without `search`: the `sort` asked for (`SORTS`), by default creation time,
  then id; `name` is (name, id), `type` is (type, name, id), and a leading `-` reverses the
  whole order, ties included. Each order has an index, and each filter one with its column
  first (migrations 0004 and 0005). With `search`: the plugins whose name
  contains the term, then those whose description alone does; each group in registration
  order (the search key `k` of migration 0004, which numbered the plugins already stored in
  list order and counts on with each registration), the order the search index returns
  its matches in, so that a page is the first matches, not a sort of all of them. A search
  takes no `sort` (ValueError): sorting every match is what the ranking avoids.
- **Search** (case-insensitive): a term of 3 or more characters matches where it lies within
  the name or within the description. So does a shorter one: SQLite looks it up through the
  indexed trigrams it starts (every character of a stored text starts one, see migration
  0004), PostgreSQL through its GIN index of each column's 2-character sequences (a
  1-character term is a LIKE over the narrow search table).
- **Deep pages**: the page's first row is found by walking the index of the list's order
  (type, status and category have theirs, for each order) to the offset, then the page is
  read from there (a keyset seek), instead of an OFFSET over whole rows.
- **Totals** are counted up to `TOTAL_BOUND` + 1 rows, and only when the page does not tell
  them: past the bound, `total_is_estimate` is true and `total` is a lower bound (more than
  `total` plugins match).
- **Found once, reused exactly** (`Memo`): a count, and the first row of a deep page, are
  kept by the list's version (`plugin_list_version`, bumped in the transaction of every
  change a list can show, on any replica) and the filter; a first row also by the order,
  a count by the filter alone (every order counts the same plugins). The next page of a
  search is not counted again, and a deep page is walked to from the nearest first row
  already found.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import typing
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Text,
    any_,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    table,
    text,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.orm import Session

from mlx_platform.storage.tables import NodeRow, PluginInstanceRow, PluginRow, requirements_of

_T = TypeVar("_T")

# Totals are exact up to this many plugins; beyond, a lower bound marked as an estimate.
TOTAL_BOUND = 10_000
# PostgreSQL, 2-character terms: a group of at most this many matches is read through the
# bigram index and sorted; a larger one by walking the search key's index (it fills a page
# within a few rows per match), where the bigram condition is not evaluated row by row.
_SPARSE = 1_000


@dataclass(frozen=True)
class PluginFilter:
    type: str | None = None
    status: str | None = None
    category: str | None = None
    search: str | None = None


class Memo:
    """What a list found and may reuse: counts, first rows of deep pages. Each key holds the
    list version it was found at (see `_Reads`), so an entry serves only the data it was
    found on. Per process, bounded: the least recently used goes first."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


MEMO = Memo()
# first rows kept per list version and filter (deep pages of one list)
_STARTS_KEPT = 64


@dataclass(frozen=True)
class Listed:
    """One page of plugins in the list's order, and where it stands in the whole. The rows
    carry the columns a list item shows (`_SHOWN_ATTRIBUTES`), and nothing else."""

    rows: list[ListedRow]
    total: int  # exact, or (total_is_estimate) a lower bound: more than `total` match
    total_is_estimate: bool
    has_next: bool


def list_plugins(
    session: Session,
    flt: PluginFilter,
    *,
    page: int,
    limit: int,
    sort: str | None = None,
    live_since: datetime | None = None,
    bound: int | None = None,
    memo: Memo | None = MEMO,
) -> Listed:
    """Page `page` of `limit` plugins matching `flt`, in the order `sort` (one of `SORTS`;
    None: `DEFAULT_SORT`, or a search's ranking) (`memo`: None finds everything anew).

    The status filter matches the status the API shows: with `live_since`, an `active`
    plugin that no replica alive since then runs counts as `error`."""
    order = _order_for(sort, flt)
    bound = TOTAL_BOUND if bound is None else bound
    offset = (page - 1) * limit
    conds = _filter_conditions(flt, live_since)
    # what a status filter with live replicas finds changes with time: never kept
    timeless = not (flt.status in ("active", "error") and live_since is not None)
    reads = _Reads(session, memo if timeless else None, (flt.type, flt.status, flt.category))
    search = _search_for(reads, flt.search) if flt.search else None

    def count(cap: int) -> int:
        if search is not None:
            return reads.kept(("count", flt.search, cap), lambda: search.count(conds, cap))
        matching: Select[Any] = select(literal_column("1")).select_from(PluginRow).where(*conds)
        return reads.kept(("count", None, cap), lambda: _count(session, matching, cap))

    if search is not None:
        rows = search.rows(conds, offset, limit + 1)
    else:
        rows = _ordered_page(reads, order, conds, offset, limit + 1)
    has_next = len(rows) > limit
    rows = rows[:limit]
    total, estimate = _total(count, offset, limit, len(rows), has_next, bound)
    return Listed(rows, total, estimate, has_next)


def _total(
    count: Callable[[int], int], offset: int, limit: int, shown: int, has_next: bool, bound: int
) -> tuple[int, bool]:
    """(total, is_estimate): from the page when it tells (the last page, or a page beyond the
    bound), else counted up to `bound` + 1."""
    if not has_next and (shown or offset == 0):
        return offset + shown, False  # the last page: everything is before its end
    if has_next and offset + limit >= bound:
        return offset + limit, True  # more than this page's end, which lies past the bound
    n = count(bound + 1)
    if n <= bound:
        return n, False
    return bound, True


class _Reads:
    """One list call's session, and what it may reuse from the memo: entries keyed by the
    list version (read once, when first needed) and the filter."""

    def __init__(self, session: Session, memo: Memo | None, filter_key: Hashable) -> None:
        self.session = session
        self.memo = memo
        self.filter_key = filter_key
        self._version: tuple[str, int] | None = None

    def version(self) -> tuple[str, int]:
        if self._version is None:
            self._version = self._read_version()
        return self._version

    def rows(
        self, stmt: Any, params: dict[str, Any] | None = None, *, versioned: Any = None
    ) -> list[ListedRow]:
        """The plugins `stmt` (a select of the shown columns, `_SHOWN_COLUMNS`, in their
        order) finds. On PostgreSQL, when this call keeps what it finds and has not read the
        list version yet, the same statement reads it (`stmt` with `_WITH_VERSION`, or
        `versioned`, a textual statement's variant that does): one snapshot, and one round
        trip fewer than reading it after, as a first page's count key does (issue 13)."""
        if self._version is not None or self.memo is None or not self._postgres():
            return _listed(self.session.execute(stmt, params))
        if versioned is None:
            versioned = stmt.add_columns(*_WITH_VERSION)
        found = self.session.execute(versioned, params).all()
        if found:
            self._version = (str(found[0][-2]), int(found[0][-1]))
        return _listed(found)

    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _read_version(self) -> tuple[str, int]:
        epoch, n = self.session.execute(
            text("SELECT epoch, n FROM plugin_list_version WHERE id = 1")
        ).one()
        return str(epoch), int(n)

    def key(self, what: Hashable) -> Hashable:
        return (self.version(), self.filter_key, what)

    def still(self) -> bool:
        """Whether what this call read since the version is of that version. SQLite: its
        read transaction is one snapshot. PostgreSQL (read committed): each statement sees
        the latest commits, so the version is read again."""
        if not self._postgres():
            return True
        return self._read_version() == self._version

    def kept(self, what: Hashable, find: Callable[[], _T]) -> _T:
        """`find()`, or what it found before at this version."""
        if self.memo is None:
            return find()
        key = self.key(what)
        kept = self.memo.get(key)  # (value,): a value may be None
        if kept is None:
            kept = (find(),)
            if self.still():
                self.memo.put(key, kept)
        return typing.cast(_T, kept[0])


def _count(session: Session, matching: Select[Any], cap: int | None = None) -> int:
    """How many rows `matching` selects, counting at most `cap` when given."""
    if cap is not None:
        matching = matching.limit(cap)
    return int(session.scalar(select(func.count()).select_from(matching.subquery())) or 0)


# ---------------------------------------------------------------------------- filters


def _filter_conditions(flt: PluginFilter, live_since: datetime | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if flt.type:
        conds.append(PluginRow.type == flt.type)
    if flt.status in ("active", "error") and live_since is not None:
        runs = (
            select(PluginInstanceRow.plugin_id)
            .join(NodeRow, NodeRow.id == PluginInstanceRow.node_id)
            .where(
                PluginInstanceRow.plugin_id == PluginRow.id,
                PluginInstanceRow.state.in_(("running", "not_started")),
                NodeRow.heartbeat_at >= live_since,
            )
            .exists()
        )
        if flt.status == "active":
            conds += [PluginRow.status == "active", runs]
        else:
            conds.append(or_(PluginRow.status == "error", (PluginRow.status == "active") & ~runs))
    elif flt.status:
        conds.append(PluginRow.status == flt.status)
    if flt.category:
        conds.append(PluginRow.category == flt.category)
    return conds


@dataclass(frozen=True)
class _Order:
    """A list order: its columns, ascending, the last one unique (id); `descending` reads
    the whole of it backwards (the same index, scanned from its end); `by`, its ORDER BY."""

    sort: str
    columns: tuple[Any, ...]
    descending: bool
    by: tuple[Any, ...]


# `sort` -> the order's columns. Each has an index (created_at, id), (name, id), (type, name,
# id), and each filter column one in front of each (migrations 0004, 0005): a page and the
# walk to a deep page's first row read one index, forwards or backwards.
_ORDERS: dict[str, tuple[Any, ...]] = {
    "created_at": (PluginRow.created_at, PluginRow.id),
    "name": (PluginRow.name, PluginRow.id),
    "type": (PluginRow.type, PluginRow.name, PluginRow.id),
}
_BY_SORT = {
    sort: order
    for key, cols in _ORDERS.items()
    for sort, order in (
        (key, _Order(key, cols, False, cols)),
        (f"-{key}", _Order(f"-{key}", cols, True, tuple(c.desc() for c in cols))),
    )
}
DEFAULT_SORT = "created_at"
SORTS: tuple[str, ...] = tuple(_BY_SORT)


def _order_for(sort: str | None, flt: PluginFilter) -> _Order:
    if sort is not None and flt.search:
        raise ValueError("a search is ranked: it takes no sort")
    order = _BY_SORT.get(DEFAULT_SORT if sort is None else sort)
    if order is None:
        raise ValueError(f"unknown sort {sort!r}: one of {', '.join(SORTS)}")
    return order


# The list version (migration 0004), as columns a page's statement can read with its rows
_LIST_VERSION = table(
    "plugin_list_version", column("id", Integer), column("epoch", String), column("n", Integer)
)
_WITH_VERSION = tuple(
    select(_LIST_VERSION.c[name]).where(_LIST_VERSION.c.id == 1).scalar_subquery().label(label)
    for name, label in (("epoch", "list_epoch"), ("n", "list_n"))
)
# What a list item shows (server/views.py plugin_summary, core/registry.py shown_status): the
# other columns, JSON documents among them, are neither read nor decoded (an access raises).
_SHOWN_ATTRIBUTES = (
    PluginRow.id,
    PluginRow.name,
    PluginRow.type,
    PluginRow.version,
    PluginRow.description,
    PluginRow.category,
    PluginRow.status,
    PluginRow.status_reason,
    PluginRow.plugin_metadata,
    PluginRow.configuration_schema,
    PluginRow.health_status,
    PluginRow.health_last_check,
    PluginRow.health_response_time_ms,
    PluginRow.health_message,
    PluginRow.created_at,
    PluginRow.updated_at,
)
_SHOWN_KEYS = frozenset(a.property.columns[0].key for a in _SHOWN_ATTRIBUTES)
# ... as the table's columns, in its order: what every page's statement selects
_SHOWN_COLUMNS = tuple(c for c in PluginRow.__table__.columns if c.key in _SHOWN_KEYS)


@dataclass(slots=True)
class ListedRow:
    """A plugin as a list page shows it: the shown columns as plain values, in the table's
    order. Not an ORM entity: building 20 of those (identity map, instance state, attribute
    events) cost ~0.75 ms of a page's ~1.4 ms on SQLite (issue 13)."""

    id: str
    name: str
    type: str
    version: str
    description: str
    category: str | None
    status: str
    status_reason: str | None
    configuration_schema: dict[str, Any]
    plugin_metadata: dict[str, Any]
    health_status: str
    health_last_check: datetime | None
    health_response_time_ms: float | None
    health_message: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def requirements(self) -> dict[str, Any]:
        return requirements_of(self.plugin_metadata)


def _check_listed_row() -> None:
    """ListedRow's fields are the shown columns' attributes, in the table's order: a change
    to one without the other fails here, at import, not as a page with shifted values."""
    attributes = [PluginRow.__mapper__.get_property_by_column(c).key for c in _SHOWN_COLUMNS]
    fields = [f.name for f in dataclasses.fields(ListedRow)]
    if attributes != fields:
        raise RuntimeError(f"ListedRow's fields {fields} are not the shown columns {attributes}")


_check_listed_row()
_WIDTH = len(_SHOWN_COLUMNS)
# built once: each page's statement starts from it (a select's columns are checked and
# coerced when it is built, ~27 calls a statement that each page no longer makes)
_SHOWN_SELECT = select(*_SHOWN_COLUMNS)


def _listed(rows: Iterable[Sequence[Any]]) -> list[ListedRow]:
    """Rows whose first columns are `_SHOWN_COLUMNS` (a page's), as ListedRows."""
    return [ListedRow(*r[:_WIDTH]) for r in rows]


def _from(order: _Order, key: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows at or after `key` (the order's columns' values) in `order`."""
    start = tuple_(
        *(
            bindparam(f"start_{c.key}", value, type_=c.type)
            for c, value in zip(order.columns, key, strict=True)
        )
    )
    at = tuple_(*order.columns)
    return at <= start if order.descending else at >= start


def _inline(n: int) -> Any:
    """A page's LIMIT written into the statement's text, not sent as a parameter.
    PostgreSQL plans a prepared statement whose LIMIT is a parameter for a tenth of the
    table, so it never takes the statement's generic plan and plans it anew at every
    execution (~0.17 ms on a pooled connection, more than the page's execution); with the
    number in the text, it keeps the generic plan after five executions (psycopg prepares
    the statement after five). A page is read by one index whatever the filter's value, so
    the generic plan is the plan. Searches keep their parameter: a LIKE's plan depends on
    its term, and must be planned for it (docs/decisions.md)."""
    return bindparam("page_rows", n, type_=Integer, literal_execute=True)


def _ordered_page(
    reads: _Reads, order: _Order, conds: list[ColumnElement[bool]], offset: int, n: int
) -> list[ListedRow]:
    """`n` plugins from `offset` on, in `order`. A deep page: the order's index (the
    filter's own when there is one) walked to the page's first row, reading only the index
    (the order's columns), from the nearest first row already found at this version (the
    previous page's, when pages are read in turn), then the page from that row on."""
    stmt = _SHOWN_SELECT.where(*conds).order_by(*order.by).limit(_inline(n))
    if offset:
        first = _first_row(reads, order, conds, offset)
        if first is None:
            return []
        stmt = stmt.where(_from(order, first))
    return reads.rows(stmt)


def _first_row(
    reads: _Reads, order: _Order, conds: list[ColumnElement[bool]], offset: int
) -> tuple[Any, ...] | None:
    known: dict[int, tuple[Any, ...]] = {}
    starts = ("starts", order.sort)
    if reads.memo is not None:
        known = reads.memo.get(reads.key(starts)) or {}
    base = max((o for o in known if o <= offset), default=0)
    if base == offset:
        return known[offset]
    walk = select(*order.columns).where(*conds).order_by(*order.by).offset(offset - base).limit(1)
    if base:
        walk = walk.where(_from(order, known[base]))
    row = reads.session.execute(walk).first()
    if row is None:
        return None
    first = tuple(row)
    if reads.memo is not None and reads.still():
        kept = {**known, offset: first}
        while len(kept) > _STARTS_KEPT:
            del kept[next(iter(kept))]  # the first found goes first
        reads.memo.put(reads.key(starts), kept)
    return first


def _rows_by_id(session: Session, ids: Sequence[str]) -> list[ListedRow]:
    if not ids:
        return []
    rows = _listed(session.execute(_SHOWN_SELECT.where(PluginRow.id.in_(ids))))
    found = {r.id: r for r in rows}
    return [found[i] for i in ids if i in found]


# ---------------------------------------------------------------------------- search


class _Group:
    """The plugins of one rank (a name match; a match in the description alone), in search
    key order: their rows from an offset, and how many there are."""

    def __init__(
        self,
        rows: Callable[[int, int], list[ListedRow]],
        count: Callable[[], int],
    ) -> None:
        self.rows = rows
        self.count = count


class _Search:
    def count(self, conds: list[ColumnElement[bool]], cap: int) -> int:
        raise NotImplementedError

    def rows(self, conds: list[ColumnElement[bool]], offset: int, n: int) -> list[ListedRow]:
        """`n` matches from `offset` on, in rank order."""
        raise NotImplementedError


def _search_for(reads: _Reads, term: str) -> _Search:
    if reads.session.get_bind().dialect.name == "postgresql":
        return _PostgresSearch(reads, term)
    return _SqliteSearch(reads, term)


# SQLite: FTS5 trigram tables whose rowid is the search key, and their term lists.
_KEYS = table("plugins_search_keys", column("k", Integer), column("plugin_id", String))
_FTS_TERMS = {
    "plugins_search": "plugins_search_terms",
    "plugins_search_name": "plugins_search_name_terms",
}


def _phrase(text_: str) -> str:
    return '"' + text_.replace('"', '""') + '"'


def _folded(term: str) -> str:
    """The term lower-cased as the trigram tokenizer folds text (one character for one)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in term)


class _SqliteSearch(_Search):
    def __init__(self, reads: _Reads, term: str) -> None:
        self.reads = reads
        self.session = reads.session
        if len(term) >= 3:
            self.name: str | None = _phrase(term)
            self.any: str | None = self.name
        else:
            self.name = reads.kept(
                ("terms", "name", term), lambda: self._starting("plugins_search_name", term)
            )
            self.any = reads.kept(
                ("terms", "any", term), lambda: self._starting("plugins_search", term)
            )

    def rows(self, conds: list[ColumnElement[bool]], offset: int, n: int) -> list[ListedRow]:
        """`n` matches from `offset` on: the groups one after the other, each read from the
        index in its order with the plugins' shown columns (statements in the process: no
        round trips; no second statement for the rows)."""
        rows: list[ListedRow] = []
        skip = offset
        for group in self.groups_for(conds):
            want = n - len(rows)
            if not want:
                break
            got = group.rows(skip, want)
            if got:
                rows += got
                skip = 0  # the next group from its start
            elif skip:
                skip = max(0, skip - group.count())  # the whole group lies before the page
        return rows

    def _starting(self, fts: str, term: str) -> str | None:
        """A MATCH of the indexed trigrams that start with the 1-2 character `term` (None:
        there are none): a stored text contains the term exactly when it holds one of them."""
        lo = _folded(term)
        terms = self.session.scalars(
            text(f"SELECT term FROM {_FTS_TERMS[fts]} WHERE term >= :lo AND term <= :hi"),
            {"lo": lo, "hi": lo + "\U0010ffff" * (3 - len(lo))},  # the last trigram after lo
        ).all()
        return " OR ".join(_phrase(t) for t in terms) or None

    def _matches(
        self, fts: str, query: str, conds: list[ColumnElement[bool]], *, shown: bool = False
    ) -> Select[Any]:
        """The plugins matching `query` in table `fts` (and `conds`), in key order: their ids
        (the index alone, the plugins' rows only for `conds`), or (`shown`) their shown
        columns, the index's rows joined to their plugins."""
        index = table(fts, column("rowid", Integer))
        found = index.join(_KEYS, _KEYS.c.k == index.c.rowid)
        if shown:
            stmt = _SHOWN_SELECT.select_from(
                found.join(PluginRow.__table__, PluginRow.id == _KEYS.c.plugin_id)
            ).where(*conds)
        else:
            stmt = select(_KEYS.c.plugin_id).select_from(found)
            if conds:
                stmt = stmt.where(exists().where(PluginRow.id == _KEYS.c.plugin_id, *conds))
        return stmt.where(text(f"{fts} MATCH :q").bindparams(q=query)).order_by(index.c.rowid)

    def _group(self, fts: str, query: str | None, conds: list[ColumnElement[bool]]) -> _Group:
        if query is None:
            return _Group(lambda _o, _n: [], lambda: 0)
        shown = self._matches(fts, query, conds, shown=True)
        return _Group(
            lambda o, n: _listed(self.session.execute(shown.offset(o).limit(n))),
            lambda: self.reads.kept(
                ("group", fts, query),
                lambda: _count(self.session, self._matches(fts, query, conds).order_by(None)),
            ),
        )

    def groups_for(self, conds: list[ColumnElement[bool]]) -> list[_Group]:
        only_description = (
            f"{{description}}: ({self.any}) NOT {{name}}: ({self.any})" if self.any else None
        )
        return [
            self._group("plugins_search_name", self.name, conds),
            self._group("plugins_search", only_description, conds),
        ]

    def count(self, conds: list[ColumnElement[bool]], cap: int) -> int:
        if self.any is None:
            return 0
        if conds:
            matches = self._matches("plugins_search", self.any, conds).order_by(None)
        else:  # the index alone
            matches = select(literal_column("1")).select_from(
                text("plugins_search WHERE plugins_search MATCH :q").bindparams(q=self.any)
            )
        return _count(self.session, matches, cap)


# PostgreSQL: the narrow table `plugins_search` (lower-cased copies of name and description).
_PG = table(
    "plugins_search",
    column("k", Integer),
    column("plugin_id", String),
    column("name", String),
    column("description", String),
)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# A source of plugins_search rows (the table, or the rows the bigram index holds for a term).
_Source = Any


class _PostgresSearch(_Search):
    def __init__(self, reads: _Reads, term: str) -> None:
        self.reads = reads
        self.session = reads.session
        self.term = term
        self.short = len(term) == 2
        # lower-cased by the database, as the stored copies were
        self.pattern = literal("%") + func.lower(literal(_escape_like(term))) + literal("%")
        self.lowered = func.lower(literal(term))

    def _in(self, source: _Source, column_name: str) -> ColumnElement[bool]:
        return typing.cast(
            ColumnElement[bool], source.c[column_name].like(self.pattern, escape="\\")
        )

    def _bigram_hits(self, *marks: str) -> _Source:
        """The rows whose marked columns (n: the name, d: the description) hold the 2-character
        term, read from the bigram index alone: a materialized CTE is planned on its own, so
        the index is read whole (exact, few rows) and mlx_search_bigrams is never evaluated
        row by row along a walk of the key (which a LIMIT makes look cheap: 5 s)."""
        wanted = cast(array([literal(m) + self.lowered for m in marks]), ARRAY(Text))
        bigrams = func.mlx_search_bigrams(_PG.c.name, _PG.c.description)
        holds = bigrams.op("@>" if len(marks) == 1 else "&&")(wanted)
        return (
            select(_PG)
            .where(holds)
            .cte(f"bigram_hits_{''.join(marks)}")
            .prefix_with("MATERIALIZED")
        )

    def _select(
        self, source: _Source, where: ColumnElement[bool], conds: list[ColumnElement[bool]]
    ) -> Select[Any]:
        stmt = select(source.c.plugin_id).where(where)
        if conds:
            stmt = stmt.where(exists().where(PluginRow.id == source.c.plugin_id, *conds))
        return stmt

    def _groups(self, conds: list[ColumnElement[bool]]) -> list[_Source | list[str]]:
        """Each rank's matches (the name matches, then the description-only matches): a
        (source, condition) to read them by, or their ids in key order.

        3+ characters: the table and its LIKE conditions (pg_trgm's estimates choose
        between its index and a walk of the key). 2 characters: read once per list version
        from the bigram index; a group of at most _SPARSE plugins is kept as its ids, a
        larger one is read by walking the key with LIKE (it fills a page within a few rows
        a match; pg_trgm cannot index 2 characters)."""
        walks: list[_Source | list[str]] = [
            (_PG, self._in(_PG, "name")),
            (_PG, self._in(_PG, "description") & not_(self._in(_PG, "name"))),
        ]
        if not self.short:
            return walks
        name_hits, description_hits = self._bigram_hits("n"), self._bigram_hits("d")
        indexed = [
            (name_hits, true()),
            (description_hits, not_(self._in(description_hits, "name"))),
        ]
        out: list[_Source | list[str]] = []
        for rank, (walk, index) in enumerate(zip(walks, indexed, strict=True)):
            ids = self.reads.kept(("ids", rank, self.term), partial(self._few, index, conds))
            out.append(walk if ids is None else ids)
        return out

    def _few(
        self, group: tuple[_Source, ColumnElement[bool]], conds: list[ColumnElement[bool]]
    ) -> list[str] | None:
        """The group's ids in key order, or None when it holds more than _SPARSE."""
        source, where = group
        stmt = self._select(source, where, conds).order_by(source.c.k).limit(_SPARSE + 1)
        ids = list(self.session.scalars(stmt))
        return ids if len(ids) <= _SPARSE else None

    def rows(self, conds: list[ColumnElement[bool]], offset: int, n: int) -> list[ListedRow]:
        """The groups one after the other: those leading with known ids sliced here, the
        rest in one statement (each group's first `offset + n` matches in key order, under
        its own LIMIT, ranked and cut to what the page still needs, joined to their rows)."""
        groups = list(zip(("name", "description"), self._groups(conds), strict=True))
        ids: list[str] = []
        while groups and isinstance(groups[0][1], list) and len(ids) < n:
            known = typing.cast(list[str], groups.pop(0)[1])
            ids += known[offset : offset + n - len(ids)]
            offset = max(0, offset - len(known))
        rows = _rows_by_id(self.session, ids)
        want = n - len(ids)
        if want and groups and not conds:
            rows += self._page_by_text(groups, offset, want)
        elif want and groups:
            branches = []
            for rank, (_, group) in enumerate(groups):
                source, where = (
                    (_PG, _PG.c.plugin_id == any_(cast(literal(group), ARRAY(String))))
                    if isinstance(group, list)
                    else group
                )
                branches.append(
                    self._select(source, where, conds)
                    .add_columns(literal(rank, Integer).label("rank"), source.c.k)
                    .order_by(source.c.k)
                    .limit(offset + want)
                )
            ranked = union_all(*branches).subquery()
            page = (
                select(ranked.c.plugin_id, ranked.c.rank, ranked.c.k)
                .order_by(ranked.c.rank, ranked.c.k)
                .offset(offset)
                .limit(want)
                .subquery()
            )
            rows += self.reads.rows(
                _SHOWN_SELECT.join(page, PluginRow.id == page.c.plugin_id).order_by(
                    page.c.rank, page.c.k
                )
            )
        return rows

    def _page_by_text(
        self, groups: list[tuple[str, _Source | list[str]]], offset: int, n: int
    ) -> list[ListedRow]:
        """`rows` without filters, the most common search, as a textual statement of a few
        shapes: it costs SQLAlchemy nothing to build and key, where the constructed one
        cost ~0.8 ms a request (PostgreSQL's own work: ~0.6 ms)."""
        shape = tuple("ids" if isinstance(g, list) else kind for kind, g in groups)
        params: dict[str, Any] = {"t": _escape_like(self.term), "m": offset + n, "o": offset}
        params["n"] = n
        for rank, (_, group) in enumerate(groups):
            if isinstance(group, list):
                params[f"ids{rank}"] = group
        return self.reads.rows(
            _page_statement(shape), params, versioned=_page_statement(shape, versioned=True)
        )

    def count(self, conds: list[ColumnElement[bool]], cap: int) -> int:
        if self.short:
            matches = self._select(self._bigram_hits("n", "d"), true(), conds)
        else:
            matches = self._select(_PG, self._in(_PG, "name") | self._in(_PG, "description"), conds)
        return _count(self.session, matches, cap)


_LIKE = "LIKE ('%' || lower(:t) || '%') ESCAPE '\\'"
_BRANCH = {
    "name": f"name {_LIKE}",
    "description": f"description {_LIKE} AND name NOT {_LIKE}",
}


@functools.cache
def _page_statement(shape: tuple[str, ...], versioned: bool = False) -> Any:
    """The page of an unfiltered PostgreSQL search whose ranks are read as `shape` says
    (`name`/`description`: by their LIKE condition; `ids`: among the ids given); `versioned`:
    each row also carries the list version (`_Reads.rows`)."""
    branches = " UNION ALL ".join(
        f"(SELECT plugin_id, {rank} AS rank, k FROM plugins_search WHERE "
        + (f"plugin_id = ANY(:ids{rank})" if kind == "ids" else _BRANCH[kind])
        + " ORDER BY k LIMIT :m)"
        for rank, kind in enumerate(shape)
    )
    columns = ", ".join(f"plugins.{c.key}" for c in _SHOWN_COLUMNS)
    typed: list[Any] = list(_SHOWN_COLUMNS)  # matched by position: read with their types
    if versioned:
        columns += "".join(
            f", (SELECT {name} FROM plugin_list_version WHERE id = 1) AS {c.name}"
            for name, c in zip(("epoch", "n"), _WITH_VERSION, strict=True)
        )
        typed += [column(c.name) for c in _WITH_VERSION]
    sql = (
        f"SELECT {columns} FROM plugins JOIN (SELECT plugin_id, rank, k FROM ({branches}) AS ranked "
        "ORDER BY rank, k OFFSET :o LIMIT :n) AS page ON plugins.id = page.plugin_id "
        "ORDER BY page.rank, page.k"
    )
    return text(sql).columns(*typed)
