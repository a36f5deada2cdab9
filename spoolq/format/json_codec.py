"""JSON as `json.dumps` and `json.loads` write and read it, through CPython's own C accelerator
(`_json`) without loading the `json` package (its decoder imports `re`, which with `enum` is
most of what one CLI enqueue would pay for). The output, the values and the errors are those
of the json package called with the same options (tests/test_quick_enqueue.py compares them);
where `_json` is missing, or for an input only json's own path handles (bytes in UTF-16 or
UTF-32, or with a byte-order mark), the json package does the work.

Only what spoolq calls is here: `dumps` with or without ensure_ascii, allow_nan and the compact
separators, and `loads` with or without the non-standard constants (NaN, Infinity). Anything
else (indent, sort_keys, hooks) is the json package's."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

try:
    import _json
except ImportError:  # not CPython: the json package does it all, at its own cost
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"  # what json's decoder skips around a value


def _not_serializable(o: object) -> object:
    """json.JSONEncoder.default's refusal, word for word."""
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def dumps(obj: object, *, ensure_ascii: bool = True, allow_nan: bool = True, compact: bool = False) -> str:
    """json.dumps(obj, ensure_ascii=..., allow_nan=..., separators=(",", ":") if compact)."""
    item, key = (",", ":") if compact else (", ", ": ")
    if _json is None:
        import json

        return json.dumps(obj, ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=(item, key))
    escape = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    if isinstance(obj, str):
        return escape(obj)
    encode = _json.make_encoder({}, _not_serializable, escape, None, key, item, False, False, allow_nan)
    return "".join(encode(obj, 0))


def _constant(name: str) -> float:
    """json's default for the words NaN, Infinity and -Infinity."""
    return float(name)


class _Options:
    """What _json.make_scanner reads of a json.JSONDecoder: json.loads' defaults."""

    __slots__ = ("strict", "object_hook", "object_pairs_hook", "parse_float", "parse_int", "parse_constant", "memo")

    def __init__(self, parse_constant: Callable[[str], Any]):
        self.strict, self.object_hook, self.object_pairs_hook = True, None, None
        self.parse_float, self.parse_int, self.parse_constant, self.memo = float, int, parse_constant, {}


class Decoder:
    """json.JSONDecoder(parse_constant=...).decode, and json.loads for bytes and str; made once
    (a scanner keeps no state between calls)."""

    __slots__ = ("_scan", "_parse_constant")

    def __init__(self, parse_constant: Callable[[str], Any] = _constant):
        self._parse_constant = parse_constant
        self._scan = None if _json is None else _json.make_scanner(_Options(parse_constant))

    def loads(self, data: str | bytes | bytearray) -> Any:
        """As json.loads: bytes are UTF-8 (or what json detects), a str may not start with a BOM."""
        if isinstance(data, str):
            if data.startswith("\ufeff"):
                raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
        elif isinstance(data, (bytes, bytearray)) and not data.startswith((b"\xef\xbb\xbf", b"\xff", b"\xfe")) \
                and b"\x00" not in data[:4]:
            data = data.decode("utf-8", "surrogatepass")  # what json's detect_encoding finds for these
        else:  # another encoding, a BOM, or not text at all: json's own path, and its own errors
            return self._json_decoder().decode(_json_text(data))
        return self.decode(data)

    def decode(self, text: str) -> Any:
        """As json.JSONDecoder.decode: one value, whitespace around it."""
        if self._scan is None:
            return self._json_decoder().decode(text)
        start = _skip_whitespace(text, 0)
        try:
            value, end = self._scan(text, start)
        except StopIteration as e:
            raise _error("Expecting value", text, e.value) from None
        end = _skip_whitespace(text, end)
        if end != len(text):
            raise _error("Extra data", text, end)
        return value

    def _json_decoder(self) -> Any:
        import json

        return json.JSONDecoder(parse_constant=self._parse_constant)


def _json_text(data: object) -> str:
    """What json.loads makes of what is not a plain UTF-8 text, and its refusal of what is no text."""
    import json

    if isinstance(data, (bytes, bytearray)):
        return data.decode(json.detect_encoding(data), "surrogatepass")
    raise TypeError(f"the JSON object must be str, bytes or bytearray, not {data.__class__.__name__}")


def _skip_whitespace(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WHITESPACE:
        i += 1
    return i


def _error(message: str, text: str, pos: int) -> ValueError:
    """json.JSONDecodeError (a ValueError saying line and column): the json package is loaded only
    for an error, as _json's own scanner loads it to raise one."""
    from json import JSONDecodeError

    return JSONDecodeError(message, text, pos)


def syntax_error(e: ValueError) -> str | None:
    """'<what> at line L column C' of a JSONDecodeError, else None (a huge integer, a refused NaN)."""
    lineno, colno = getattr(e, "lineno", None), getattr(e, "colno", None)
    return None if lineno is None else f"{getattr(e, 'msg', e)} at line {lineno} column {colno}"


loads = Decoder().loads  # json.loads: made once, shared; it holds nothing that changes
