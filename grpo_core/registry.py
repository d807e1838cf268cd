"""Name -> component registries. Every swappable piece of the core is looked up here by name.

Each registered component declares the params it takes (``<kind>.params`` in the config), as a
pydantic model validated when the config is loaded (grpo_core.config.check_components):

- ``register(name, params=SomeParams)``: an explicit model (a :class:`Params` subclass: unknown
  keys rejected, defaults and range constraints on the fields);
- for registries whose components take their params as keyword arguments (rewards:
  ``fn(ctx, buffer=2, ...)``; regularisers, token weights), a model derived from the function's
  signature after its ``leading_args`` positional arguments (an explicit model must then list
  the same names and defaults as the signature);
- otherwise the registry's ``default_params`` (no params at all unless the registry says so).

Components read their params through :meth:`Registry.resolve_params` (validated, defaults filled
in from the model), so a component built from a hand-made cfg that never went through
load_config is checked the same way, and the defaults live only in the models
(grpo_core.params).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from grpo_core.errors import UserError, closest, fmt_path, validation_message

T = TypeVar("T")


class Params(BaseModel):
    """Base of every component's params model: unknown keys are errors, NaN / inf are not
    numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoParams(Params):
    """A component that takes no params."""


def params_from_signature(fn: Callable, leading_args: int, name: str) -> type[Params]:
    """A params model from ``fn``'s keyword parameters after its first ``leading_args``
    positional ones: a field per parameter, its annotation (Any without one) and default
    (required without one). ``**kwargs`` lets any further key through."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotation: validate names and defaults only
        hints = {}
    fields: dict[str, Any] = {}
    extra = "forbid"
    for p in list(sig.parameters.values())[leading_args:]:
        if p.kind is p.VAR_KEYWORD:
            extra = "allow"
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    base = Params if extra == "forbid" else _AllowParams
    return create_model(f"{name}_params", __base__=base, **fields)


class _AllowParams(Params):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


def _signature_defaults(fn: Callable, leading_args: int) -> dict[str, Any]:
    ps = list(inspect.signature(fn).parameters.values())[leading_args:]
    return {
        p.name: (... if p.default is p.empty else p.default)
        for p in ps
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


class Registry(Generic[T]):
    """A named collection of components (functions or classes) of one kind.

    ``leading_args``: for components called as ``fn(<leading_args positional>, **params)``, the
    number of positional arguments; their params model is derived from the signature.
    ``default_params``: the model of a component registered without one (and not derived)."""

    def __init__(
        self,
        kind: str,
        leading_args: int | None = None,
        default_params: type[Params] = NoParams,
    ):
        self.kind = kind
        self.leading_args = leading_args
        self.default_params = default_params
        self._items: dict[str, T] = {}
        self._params: dict[str, type[Params]] = {}

    def register(self, name: str, params: type[Params] | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            model = params
            if self.leading_args is not None and callable(obj) and not isinstance(obj, type):
                sig = _signature_defaults(obj, self.leading_args)
                if model is None:
                    model = params_from_signature(obj, self.leading_args, name)
                else:
                    declared = {
                        k: (... if f.is_required() else f.default)
                        for k, f in model.model_fields.items()
                    }
                    if declared != sig:
                        raise TypeError(
                            f"{self.kind} {name!r}: params model {model.__name__} {declared} "
                            f"does not match the signature's keyword params {sig}"
                        )
            self._items[name] = obj
            self._params[name] = model or self.default_params
            return obj

        return deco

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            loc = f" ({where})" if where else ""
            raise UserError(f"unknown {self.kind} {name!r}{loc}; {closest(name, self._items)}")
        return self._items[name]

    def params_model(self, name: str) -> type[Params]:
        """The params model of a registered component."""
        return self._params[name]

    def name_of(self, obj: Any) -> str:
        """The name ``obj`` is registered under; for a class that is not, its nearest registered
        base's."""
        for o in obj.__mro__ if isinstance(obj, type) else (obj,):
            for name, item in self._items.items():
                if item is o:
                    return name
        raise KeyError(f"{obj!r} is not a registered {self.kind}")

    def params_message(self, name: str, err: dict, loc: tuple, where: str) -> str:
        """One line for the first error ``err`` of validating component ``name``'s params, at
        key path ``loc`` (``(..., "params", key)``), set in ``where``."""
        valid = list(self._params[name].model_fields)
        if err["type"] == "extra_forbidden" and not valid:
            who = f"{self.kind} {name!r}"
            who = "" if where == who else f"{who} "
            return f"{where}: key '{fmt_path(loc)}': {who}takes no params"
        return validation_message(err, loc, where, valid)

    def resolve_params(self, name: str, raw: dict | None, where: str) -> dict[str, Any]:
        """Component ``name``'s params ``raw`` validated by its params model, every default
        filled in (the model's dump). ``where``: the config key holding them (e.g.
        ``"sampler.params"``). A bad param is a one-line UserError naming the key and what
        would be right (the closest names for an unknown key)."""
        model = self.params_model(name)
        try:
            return model.model_validate({} if raw is None else raw).model_dump()
        except ValidationError as e:
            err = e.errors()[0]
            msg = self.params_message(name, err, (where, *err["loc"]), f"{self.kind} {name!r}")
            raise UserError(msg) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
