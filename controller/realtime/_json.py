"""Typed access to decoded JSON objects, raising RemoteProtocolError with the field's path.

JSON has no int/bool distinction in Python (`True` is an `int`), so every accessor excludes
bools explicitly. Paths use the Realtime API's own dotted form ("session.audio.input.format.type",
"item.content[0].text") so the client sees exactly which field was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from controller.errors import RemoteProtocolError

JsonObject = Mapping[str, object]

INVALID_VALUE: Final = "invalid_value"
MISSING: Final = "missing_required_parameter"


def invalid(param: str, message: str, event_id: str | None = None) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=INVALID_VALUE, param=param, event_id=event_id)


class Fields:
    """A JSON object plus its path and the client event_id, for precise errors."""

    __slots__ = ("obj", "path", "event_id")

    def __init__(self, obj: JsonObject, path: str, event_id: str | None) -> None:
        self.obj = obj
        self.path = path
        self.event_id = event_id

    def param(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.obj

    def refuse_unknown(self, known: Sequence[str]) -> None:
        """The API refuses an object with a key it does not have; a misspelt key was otherwise taken as absent.

        Raises:
            RemoteProtocolError: unknown_parameter, in the API's words, for the first key not in `known`.
        """
        for key in self.obj:
            if key not in known:
                raise RemoteProtocolError(f"Unknown parameter: '{self.param(key)}'.", code="unknown_parameter",
                                          param=self.param(key), event_id=self.event_id)

    def _bad(self, key: str, expected: str) -> RemoteProtocolError:
        value = self.obj.get(key)
        return invalid(
            self.param(key),
            f"Invalid type for '{self.param(key)}': expected {expected}, got {_json_type(value)}.",
            self.event_id,
        )

    def _missing(self, key: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"Missing required parameter: '{self.param(key)}'.",
            code=MISSING,
            param=self.param(key),
            event_id=self.event_id,
        )

    def str_(self, key: str) -> str:
        if key not in self.obj:
            raise self._missing(key)
        value = self.obj[key]
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def int_(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        if key not in self.obj:
            raise self._missing(key)
        value = self.obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        if minimum is not None and value < minimum:
            raise self._out_of_range(key, f"{value} is below the minimum of {minimum}")
        if maximum is not None and value > maximum:
            raise self._out_of_range(key, f"{value} is above the maximum of {maximum}")
        return value

    def _out_of_range(self, key: str, why: str) -> RemoteProtocolError:
        return invalid(self.param(key), f"Invalid value for '{self.param(key)}': {why}.", self.event_id)

    def opt_int(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
        if self.obj.get(key) is None:
            return None
        return self.int_(key, minimum=minimum, maximum=maximum)

    def real(self, key: str) -> float:
        """A JSON number, whatever its value (Python's json reads NaN and Infinity too): for a field whose own rule
        says which values it takes, in its own words."""
        value = self.obj.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number")
        return value  # not float(): an int past a float's range is the caller's to refuse, not an OverflowError

    def number(self, key: str, *, low: float, high: float) -> float:
        value = self.real(key)
        if not low <= value <= high:
            raise invalid(
                self.param(key),
                f"Invalid value for '{self.param(key)}': {value} is outside [{low}, {high}].",
                self.event_id,
            )
        return float(value)

    def bool_(self, key: str) -> bool:
        value = self.obj.get(key)
        if not isinstance(value, bool):
            raise self._bad(key, "a boolean")
        return value

    def obj_(self, key: str) -> Fields:
        if key not in self.obj:
            raise self._missing(key)
        value = self.obj[key]
        if not isinstance(value, Mapping):
            raise self._bad(key, "an object")
        return Fields(value, self.param(key), self.event_id)

    def opt_obj(self, key: str) -> Fields | None:
        if self.obj.get(key) is None:
            return None
        return self.obj_(key)

    def list_(self, key: str) -> Sequence[object]:
        value = self.obj.get(key)
        if not isinstance(value, list):
            raise self._bad(key, "an array")
        return value

    def item_obj(self, key: str, index: int, value: object) -> Fields:
        """Wrap element `index` of array `key`, checking that it is an object."""
        path = f"{self.param(key)}[{index}]"
        if not isinstance(value, Mapping):
            raise invalid(
                path, f"Invalid type for '{path}': expected an object, got {_json_type(value)}.", self.event_id
            )
        return Fields(value, path, self.event_id)

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        value = self.str_(key)
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            raise invalid(
                self.param(key),
                f"Invalid value for '{self.param(key)}': {value!r}. Supported values are: {options}.",
                self.event_id,
            )
        return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
