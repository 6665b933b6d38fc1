"""The architecture sections of the model config and the strict base of every config class.

Each memory mechanism owns a frozen dataclass of its knobs (`Knobs`), defined in its
module under `longctx/models/archs/` and named by its `Arch.knobs`; the model config holds
one instance per registered architecture (`ArchKnobs`, a hashable mapping), so the keys are
`model.<arch>.<knob>` (`model.xl.mem_len`) and reads are `cfg.model.xl.mem_len`. Every
registered architecture's section is in every config, so one override list can set all of
them (a study's matched span).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar


class UnknownKeyError(AttributeError):
    """An assignment to a name the schema does not have (a typo in an experiment file), or to
    a key that moved (`message` says where)."""

    def __init__(self, section: str, key: str, known: list[str], message: str = "") -> None:
        super().__init__(message or f"unknown key '{section}.{key}' (known in {section}: "
                         f"{', '.join(known)}); check the spelling")
        self.key = f"{section}.{key}"


class _Strict:
    """Base of the config dataclasses: setting or replacing a name that is not a field
    raises UnknownKeyError, so a misspelt key in an experiment file is never silently
    ignored. `section` is how keys of the class are spelt ('model', 'model.xl')."""

    section: ClassVar[str] = "config"

    def _check_names(self, names: Any) -> None:
        known = [f.name for f in fields(self)]  # type: ignore[arg-type]
        for name in names:
            if name not in known:
                raise UnknownKeyError(self.section, name, known)

    def __setattr__(self, name: str, value: Any) -> None:
        self._check_names([name])
        object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` (e.g. `c.model = c.model.replace(n_layer=4)`)."""
        self._check_names(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class Knobs(_Strict):
    """Base of an architecture's own config section: subclass it as a frozen dataclass of
    typed fields with defaults, and give each numeric field its range in `ranges` (an
    interval such as '[1, inf)', checked by `longctx.config.validate`). Registering the
    architecture sets `section` to 'model.<name>'."""

    ranges: ClassVar[dict[str, str]] = {}


@dataclass(frozen=True)
class NoKnobs(Knobs):
    """The section of an architecture without knobs of its own."""


class ArchKnobs(Mapping):
    """An immutable, hashable mapping architecture name -> its Knobs (the model config's
    `sections`); `set` returns a changed copy."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Knobs] = ()) -> None:
        object.__setattr__(self, "_items", dict(items))

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field '{name}'")

    def __getitem__(self, name: str) -> Knobs:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArchKnobs) and self._items == other._items

    def __repr__(self) -> str:
        return f"ArchKnobs({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArchKnobs, (self._items,))

    def set(self, name: str, knobs: Knobs) -> ArchKnobs:
        return ArchKnobs({**self._items, name: knobs})


def _registry() -> Any:
    """The architecture registry (imported when first needed: it imports this package)."""
    from longctx.models.archs import registry

    return registry


def registered_names() -> tuple[str, ...]:
    """Every registered architecture's name (`longctx.models.archs.names()`)."""
    return _registry().names()


def registered_knobs() -> ArchKnobs:
    """Every registered architecture's section at its defaults."""
    reg = _registry()
    return ArchKnobs({name: reg.get(name).knobs() for name in reg.names()})


def section_default(name: str) -> Knobs | None:
    """The default section of the registered architecture `name` (None if none is)."""
    reg = _registry()
    return reg.get(name).knobs() if name in reg.names() else None


def new_keys(flat: str) -> list[str]:
    """Where the flat model key `flat` (a config saved before the sections) lives now:
    `model.<arch>.<knob>` for every registered architecture that took it over
    (`Arch.took_over`); [] when none did."""
    reg = _registry()
    return [f"model.{name}.{reg.get(name).took_over[flat]}" for name in reg.names()
            if flat in reg.get(name).took_over]


def moved_message(flat: str) -> str:
    """"'model.mem_len' is now 'model.xl.mem_len'" ('' when the key did not move)."""
    keys = new_keys(flat)
    if not keys:
        return ""
    return f"'model.{flat}' is now " + " and ".join(f"'{k}'" for k in keys)
