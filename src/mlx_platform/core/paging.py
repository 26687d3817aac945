"""One page of a listing: the items and where they stand in the whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Items `(page - 1) * limit` onwards, at most `limit` of them, of `total`."""

    items: list[T]
    page: int
    limit: int
    total: int

    @property
    def has_next(self) -> bool:
        return self.page * self.limit < self.total
