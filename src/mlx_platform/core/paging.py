"""One page of a listing: the items and where they stand in the whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Items `(page - 1) * limit` onwards, at most `limit` of them, of `total`.

    A listing that stops counting (the plugin list, past storage.listing.TOTAL_BOUND) says
    `total_is_estimate` (then `total` is a lower bound: more match) and whether a next page
    holds anything (`more`); otherwise the total tells."""

    items: list[T]
    page: int
    limit: int
    total: int
    total_is_estimate: bool = False
    more: bool | None = None

    @property
    def has_next(self) -> bool:
        if self.more is not None:
            return self.more
        return self.page * self.limit < self.total
