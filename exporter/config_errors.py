"""Config errors in one voice: `<file>: <path>: <reason>`, one line per problem.

The path has one style everywhere, `accounts[0] (telzino-main).settings.token_file`, and names
each key as the user wrote it (a `tokn_file` the loader turned into `tokn` is reported as
`tokn_file`). Reasons are plain words: pydantic's `Value error, ` style prefixes are dropped and
input values are never echoed (they may be secrets).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from .errors import ConfigError
from .provider import PATH_SEGMENT_PATTERN, UUID_PATTERN

#: where a key was written under another name: data path (str parts) -> the key as written
Renames = Mapping[tuple[str, ...], str]

# pydantic's own location markers (`[key]` for a dict key, `function-after[...]` for a
# validator branch of a union) are not keys the user wrote
_MARKER = re.compile(r"^\[key\]$|^[a-z-]+\[.*\]$")
_PREFIXES = ("Value error, ", "Assertion failed, ")
_PATTERNS = {
    UUID_PATTERN: "must be a UUID (8-4-4-4-12 hexadecimal digits)",
    PATH_SEGMENT_PATTERN: "must be 1-128 characters of A-Z a-z 0-9 . _ : -",
}


def config_error(where: str, path: str, reason: str) -> ConfigError:
    """The single constructor of config errors, so every message has the same shape (a problem
    with the file as a whole has no path)."""
    return ConfigError(f"{where}: {path}: {reason}" if path else f"{where}: {reason}")


def validation_error(
    where: str,
    exc: ValidationError,
    data: Any = None,
    renames: Renames | None = None,
    base: tuple[Any, ...] = (),
    known: Iterable[str] = (),
) -> ConfigError:
    """A pydantic error as a `ConfigError`: one `<file>: <path>: <reason>` line per problem."""
    lines = [f"{where}: {path}: {reason}" for path, reason in _problems(exc, data, renames, base, known)]
    return ConfigError("\n".join(lines))


def format_validation_error(exc: ValidationError, data: Any = None) -> str:
    """Pydantic errors as `path: reason` joined by `; ` (the REST API's and web config's form)."""
    return "; ".join(f"{path}: {reason}" for path, reason in _problems(exc, data, None, (), ()))


def _problems(
    exc: ValidationError, data: Any, renames: Renames | None, base: tuple[Any, ...], known: Iterable[str]
) -> list[tuple[str, str]]:
    known = sorted(set(known))
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = base + tuple(p for p in err["loc"] if not (isinstance(p, str) and _MARKER.match(p)))
        renamed = tuple(str(p) for p in loc) in (renames or {})
        out.append((field_path(loc, data, renames), reason(err, loc, known, renamed)))
    return out


def field_path(loc: tuple[Any, ...], data: Any = None, renames: Renames | None = None) -> str:
    """`("accounts", 0, "settings", "token")` -> `accounts[0] (telzino-main).settings.token`."""
    renames = renames or {}
    text = ""
    for i, part in enumerate(loc):
        key = tuple(str(p) for p in loc[: i + 1])
        if isinstance(part, int):
            text += f"[{part}]"
            name = account_name(data, part) if loc[:i] == ("accounts",) else None
            text += f" ({name})" if name else ""
        else:
            text += ("." if text else "") + renames.get(key, str(part))
    return text or "(top level)"


def reason(err: Mapping[str, Any], loc: tuple[Any, ...], known: list[str], renamed: bool = False) -> str:
    """The error's reason in plain words, with a suggestion for a mistyped key (`tokn_file`:
    did you mean `token_file`?)."""
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]) if loc else "", known, n=1)
        suffix = "_file" if renamed else ""
        return "unknown key" + (f"; did you mean {close[0]}{suffix}?" if close else "")
    if err["type"] == "missing":
        return "required, but missing"
    if err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") in _PATTERNS:
        return _PATTERNS[err["ctx"]["pattern"]]
    message = str(err["msg"])
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return message


def account_name(data: Any, index: Any) -> str | None:
    """The name of account `index` in the raw config data, if it has one."""
    try:
        name = data["accounts"][index]["name"]
    except (KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None
