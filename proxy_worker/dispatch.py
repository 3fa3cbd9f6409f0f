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
on every event exactly as mitmproxy does while they have children, since those can
change at any time; while they have none, only their own hook (if any) is called, which
is what the walk would do. Addons must define their hook methods on the class or at
construction (true of mitmproxy's and Gatehouse's); a hook attribute set later on a
registered addon is not seen.

Lifecycle events (:meth:`CachedHookDispatch.handle_lifecycle`) read the hook's
arguments from a per-class list of its dataclass field names (``Hook.args()`` calls
``dataclasses.fields`` on every call), and skip building the ``update`` event that
follows each of them when nothing would receive it (no addon of the default dump
master implements ``update``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from mitmproxy import exceptions, hooks
from mitmproxy import flow as mitm_flow
from mitmproxy.addonmanager import AddonManager, cut_traceback

logger = logging.getLogger("mitmproxy.addonmanager")


class _Composite:
    """A chain entry with sub-addons, and its own hook for the event (or ``None``)."""

    __slots__ = ("addon", "own")

    def __init__(self, addon: Any, own: Callable[..., Any] | None) -> None:
        self.addon = addon
        self.own = own


#: One chain entry of a plan: the hook callables of a plain addon (a tuple), or a
#: composite addon (walked on every event while it has children).
_Step = tuple[Callable[..., Any], ...] | _Composite

#: Hook class -> its dataclass field names, in order (what ``Hook.args()`` reads).
_ARG_NAMES: dict[type, tuple[str, ...]] = {}


def hook_args(event: hooks.Hook) -> list[Any]:
    """``event.args()`` (the hook's dataclass fields, in order) without calling
    ``dataclasses.fields`` each time. Hook classes that define their own ``args`` are
    asked directly."""
    cls = type(event)
    names = _ARG_NAMES.get(cls)
    if names is None:
        if cls.args is not hooks.Hook.args:
            return event.args()
        names = _ARG_NAMES[cls] = tuple(f.name for f in dataclasses.fields(event))  # type: ignore[arg-type]
    return [getattr(event, n) for n in names]


def _own_hook(entry: Any, name: str) -> tuple[bool, Callable[..., Any] | None]:
    """``(ok, hook)`` of one addon for hook ``name`` (``ok`` False: not cacheable)."""
    func = getattr(entry, name, None)
    if not func:
        return True, None
    if not callable(func):
        # A module imported under a hook's name is skipped by mitmproxy; anything else
        # is an error it reports on every event: keep that path.
        return inspect.ismodule(func), None
    return True, func


class CachedHookDispatch(AddonManager):
    """An :class:`~mitmproxy.addonmanager.AddonManager` that caches who handles each hook.

    Install on a master before adding addons: :func:`install`.
    """

    _plans: dict[str, list[_Step]]

    #: The ``update`` plan when it holds only composites without a hook of their own
    #: (nothing receives ``update`` while they have no children); ``None``: not known
    #: yet, or some addon implements ``update``.
    _update_composites: list[_Composite] | None = None

    def _invalidate(self) -> None:
        self._plans = {}
        self._update_composites = None

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
            ok, func = _own_hook(entry, event.name)
            if not ok:
                return None
            if hasattr(entry, "addons"):
                plan.append(_Composite(entry, func))  # children may change: check each time
            elif func is not None:
                plan.append((func,))
        plans[event.name] = plan
        return plan

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        """As :meth:`AddonManager.handle_lifecycle`: the event, then ``update`` for its
        flow (that one only when some addon could receive it)."""
        args = hook_args(event)
        await self._trigger(event, args)
        message = args[0]
        if isinstance(message, mitm_flow.Flow):
            composites = self._update_composites
            if composites is not None:
                for c in composites:
                    if c.addon.addons:
                        break
                else:
                    return  # nobody implements update: same as triggering it
            await self.trigger_event(hooks.UpdateHook([message]))
            plan = self._plans.get("update") if composites is None else None
            if plan is not None and all(type(s) is _Composite and s.own is None for s in plan):
                self._update_composites = plan  # type: ignore[assignment]

    async def trigger_event(self, event: hooks.Hook):
        await self._trigger(event, None)

    async def _trigger(self, event: hooks.Hook, args: list[Any] | None) -> None:
        plan = self._plan(event)
        if plan is None:
            await super().trigger_event(event)
            return
        if not plan:
            return
        if args is None:
            args = hook_args(event)
        for step in plan:
            try:
                if type(step) is tuple:
                    for func in step:
                        res = func(*args)
                        if res is not None and inspect.isawaitable(res):
                            await res
                elif step.addon.addons:
                    await self.invoke_addon(step.addon, event)
                elif step.own is not None:  # what the walk of a childless composite does
                    res = step.own(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
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
