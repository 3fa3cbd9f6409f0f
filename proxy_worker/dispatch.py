"""Faster hook dispatch for mitmproxy's addon manager (same calls, same order).

mitmproxy 12.2 delivers every event by walking the whole addon chain: for each of the
~45 addons (31 defaults, the dump master's own, Gatehouse's) it enters a ``safecall``
context manager, starts an ``invoke_addon`` coroutine, walks the addon's sub-addons and
looks the hook up with ``getattr``, even though only a handful of addons implement any
given hook, and each HTTP lifecycle event is followed by an ``update`` event that walks
the chain again. On a small proxied request that is ~8 walks, about 0.35 ms of CPU: more
than all of Gatehouse's policy work (see "Proxy" in ``docs/benchmarks.md``).

:class:`CachedHookDispatch` resolves, once per event name, which chain entries implement
the hook, and then calls only those, in chain order, with the same error handling
(an exception is logged as ``Addon error`` and the next addon still runs; ``AddonHalt``
stops the event). The plan is rebuilt whenever an addon is added, registered or removed.
Chain entries with sub-addons (``addons`` attribute, e.g. the script loader) are walked
on every event exactly as mitmproxy does, since their children can change at any time.
Addons must define their hook methods on the class or at construction (true of
mitmproxy's and Gatehouse's); a hook attribute set later on a registered addon is not
seen.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager, cut_traceback

logger = logging.getLogger("mitmproxy.addonmanager")

#: One chain entry of a plan: the hook callables of a plain addon (a tuple), or a
#: composite addon (walked on every event).
_Step = tuple[Callable[..., Any], ...] | object


class CachedHookDispatch(AddonManager):
    """An :class:`~mitmproxy.addonmanager.AddonManager` that caches who handles each hook.

    Install on a master before adding addons: :func:`install`.
    """

    _plans: dict[str, list[_Step]]

    def _invalidate(self) -> None:
        self._plans = {}

    def register(self, addon):
        try:
            return super().register(addon)
        finally:
            self._invalidate()

    def add(self, *addons):
        try:
            super().add(*addons)
        finally:
            self._invalidate()

    def remove(self, addon):
        try:
            super().remove(addon)
        finally:
            self._invalidate()

    def clear(self):
        try:
            super().clear()
        finally:
            self._invalidate()

    def _plan(self, event: hooks.Hook) -> list[_Step] | None:
        """The steps for ``event`` (``None``: not cacheable, dispatch the slow way)."""
        plans = self.__dict__.get("_plans")
        if plans is None:
            plans = self._plans = {}
        plan = plans.get(event.name)
        if plan is not None:
            return plan
        plan = []
        for entry in self.chain:
            if hasattr(entry, "addons"):
                plan.append(entry)  # composite: children may change, walk every time
                continue
            func = getattr(entry, event.name, None)
            if not func:
                continue
            if not callable(func):
                # A module imported under a hook's name is skipped by mitmproxy; anything
                # else is an error it reports on every event: keep that path.
                if inspect.ismodule(func):
                    continue
                return None
            plan.append((func,))
        plans[event.name] = plan
        return plan

    async def trigger_event(self, event: hooks.Hook):
        plan = self._plan(event)
        if plan is None:
            await super().trigger_event(event)
            return
        if not plan:
            return
        args = event.args()
        for step in plan:
            try:
                if type(step) is tuple:
                    for func in step:
                        res = func(*args)
                        if res is not None and inspect.isawaitable(res):
                            await res
                else:
                    await self.invoke_addon(step, event)
            except (exceptions.AddonHalt, exceptions.OptionsError) as e:
                if isinstance(e, exceptions.AddonHalt):
                    return
                raise
            except Exception:
                # As mitmproxy.addonmanager.safecall: log and go on with the next addon.
                etype, value, tb = sys.exc_info()
                tb = cut_traceback(tb, "trigger_event")
                assert etype and value
                logger.error(f"Addon error: {value}", exc_info=(etype, value, tb))


def install(master: Any) -> None:
    """Switch ``master.addons`` to :class:`CachedHookDispatch` (call before adding addons;
    the plans are rebuilt on every later add or remove anyway)."""
    manager = master.addons
    if not isinstance(manager, CachedHookDispatch):
        manager.__class__ = CachedHookDispatch
        manager._invalidate()
