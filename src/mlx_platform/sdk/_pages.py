"""The pages a listing returns (`SyncPage`, `AsyncPage`): one page of items, which iterates
on through the following pages, fetched as the loop reaches them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator  # noqa: F401 (Awaitable: in a base class string)
from typing import Generic, TypeVar

from mlx_platform.wire import Pagination

T = TypeVar("T")


F = TypeVar("F")  # what fetching a page number gives: a page, or an awaitable of one


class _Page(Generic[T, F]):
    """What both kinds of page hold: this page's items, the server's figures, and how to
    fetch another page by number. `pagination.total` counts the items, unless
    `pagination.total_is_estimate`: then more than `total` match (the plugin list stops
    counting at 10,000); `has_next` is exact either way, and ends the iteration."""

    def __init__(self, data: list[T], pagination: Pagination, fetch: Callable[[int], F]) -> None:
        self.data = data
        self.pagination = pagination
        self._fetch = fetch

    def has_next_page(self) -> bool:
        # An empty page ends the walk even if the server says more follow: no endless loop.
        return self.pagination.has_next and bool(self.data)

    def __repr__(self) -> str:
        p = self.pagination
        # past the service's counting bound, total is a lower bound (more than it match)
        total = f">{p.total}" if p.total_is_estimate else str(p.total)
        return (
            f"{type(self).__name__}(page={p.page}, items={len(self.data)}, "
            f"total={total}, has_next={p.has_next})"
        )


class SyncPage(_Page[T, "SyncPage[T]"]):
    """One page of a listing, which iterates past its end.

    `page.data` holds this page's items and `page.pagination` the server's figures.
    Iterating the page yields its items, then those of every following page, fetched as
    the loop reaches them: ``for plugin in client.plugins.list(): ...`` sees every plugin.
    """

    def next_page(self) -> SyncPage[T] | None:
        """The following page, fetched now; None on the last page."""
        if not self.has_next_page():
            return None
        return self._fetch(self.pagination.page + 1)

    def iter_pages(self) -> Iterator[SyncPage[T]]:
        """This page, then each following page."""
        page: SyncPage[T] | None = self
        while page is not None:
            yield page
            page = page.next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data


class AsyncPage(_Page[T, "Awaitable[AsyncPage[T]]"]):
    """One page of a listing, which iterates past its end with ``async for``.

    `page.data` holds this page's items and `page.pagination` the server's figures;
    ``async for plugin in await client.plugins.list(): ...`` sees every plugin.
    """

    async def next_page(self) -> AsyncPage[T] | None:
        """The following page, fetched now; None on the last page."""
        if not self.has_next_page():
            return None
        return await self._fetch(self.pagination.page + 1)

    async def iter_pages(self) -> AsyncIterator[AsyncPage[T]]:
        """This page, then each following page."""
        page: AsyncPage[T] | None = self
        while page is not None:
            yield page
            page = await page.next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.data:
                yield item
