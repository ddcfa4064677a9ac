"""``Record``: the base of minirt's small data types (specs, limits, results).

Each subclass lists its fields in ``__slots__`` and sets them in ``__init__``;
``Record`` adds a readable ``repr``, ``==`` and ``to_dict``. Why not
``dataclasses``? Importing that module pulls in ``inspect`` and costs about
8 ms here, which every ``minirt run`` would pay before its container even
starts (bench/startup measures start-up against runc). The classes stay just
as explicit: read ``__init__`` to see every field and its default.
"""


class Record:
    __slots__ = ()

    def fields(self) -> tuple[str, ...]:
        names = []
        for cls in reversed(type(self).__mro__):
            names += [n for n in getattr(cls, "__slots__", ()) if not n.startswith("_")]
        return tuple(names)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.fields()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.fields())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(repr(v) for v in self.to_dict().values()))
