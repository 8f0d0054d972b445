"""Running a scenario's user function (`python:`) within its time limit.

A plain function runs in a daemon thread of its own, so that one stuck in a loop can't hold the
event loop or the process's exit; an `async def` one is awaited on the loop. A thread that
outlived its time limit can't be stopped: at most `max_running` may run at once, and a call
beyond that fails at once instead of starting another.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_RUNNING = 16


class FunctionBusy(Exception):
    """Too many earlier calls are still running."""


class FunctionRunner:
    __slots__ = ("_slots",)

    def __init__(self, max_running: int = DEFAULT_MAX_RUNNING) -> None:
        self._slots = threading.BoundedSemaphore(max_running)

    async def call(self, function: Callable[..., Any], argument: object, limit: float) -> object:
        """`function(argument)` within `limit` seconds; else its exception, TimeoutError or
        FunctionBusy."""
        if inspect.iscoroutinefunction(function):
            return await asyncio.wait_for(function(argument), limit)
        if not self._slots.acquire(blocking=False):
            raise FunctionBusy
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        thread = threading.Thread(
            target=self._run,
            args=(loop, future, function, argument),
            name="messagegate-scenario",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:
            self._slots.release()
            raise
        return await asyncio.wait_for(future, limit)

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[object],
        function: Callable[..., Any],
        argument: object,
    ) -> None:
        try:
            result: object = function(argument)
            failure: BaseException | None = None
        except Exception as exc:  # the user's code may raise anything: the caller reports it
            result, failure = None, exc
        finally:
            self._slots.release()
        # The loop may have closed meanwhile: then nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, result, failure)


def _settle(future: asyncio.Future[object], result: object, failure: BaseException | None) -> None:
    if future.done():  # timed out and cancelled
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(result)
