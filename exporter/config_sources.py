"""The settings sources `Config` is built from: a YAML file and `OCE_` environment variables.

Both are pydantic-settings' own sources (`YamlConfigSettingsSource`, `EnvSettingsSource` with
prefix `OCE_` and nested delimiter `__`), extended where the contract asks for more:

- `*_file` keys: `token_file: /run/secrets/telzino` becomes `token` holding that file's content
  (trailing newline removed), in the file and in the environment (Docker/Kubernetes secrets).
  pydantic-settings' `secrets_dir` names files after top-level fields, which cannot reach an
  account's settings, so this stays ours.
- list items addressed by index or by account name: `OCE_ACCOUNTS__0__SETTINGS__TOKEN` and
  `OCE_ACCOUNTS__TELZINO_MAIN__SETTINGS__TOKEN` (case-insensitive, `-` read as `_`) override
  one item of the file's list. pydantic-settings merges sources with `deep_update`, which merges
  mappings but replaces lists, so the environment source merges its items into the file's list
  itself and hands back the whole list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Mapping, get_origin

import yaml
from pydantic_settings import BaseSettings, EnvSettingsSource, YamlConfigSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from .config_errors import config_error, field_path

SECRET_SUFFIX = "_file"


@dataclass
class LoadContext:
    """What one `load_config` call reads, and the keys it renamed (for error messages)."""

    where: str = "(no file)"
    path: Path | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    renames: dict[tuple[str, ...], str] = field(default_factory=dict)
    #: the merged input (file, then environment over it), for account names in error paths
    data: dict[str, Any] = field(default_factory=dict)


class YamlFile(YamlConfigSettingsSource):
    """The config file: must exist and hold a mapping; `*_file` secrets resolved."""

    def __init__(self, settings_cls: type[BaseSettings], context: LoadContext) -> None:
        self.context = context
        super().__init__(settings_cls, yaml_file=context.path)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        # the base class skips a missing file silently; a named config file must exist
        return self._read_file(Path(files)) if files is not None else {}

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        where = self.context.where
        try:
            text = file_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise config_error(where, "", f"cannot read: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise config_error(where, at, f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
        if data is not None and not isinstance(data, dict):
            raise config_error(where, "", f"the top level must be a mapping of keys, not a {type(data).__name__}")
        self.context.data = resolve_secret_files(data or {}, self.context)
        return self.context.data


class Environment(EnvSettingsSource):
    """`OCE_` variables from the given mapping, merged into the file's lists item by item."""

    def __init__(self, settings_cls: type[BaseSettings], context: LoadContext, file_data: Mapping[str, Any]) -> None:
        self.context = context
        self.file_data = file_data
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self.context.environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for name in self.settings_cls.model_fields:  # top-level `X_file`, e.g. OCE_API_TOKEN_FILE
            value = self.env_vars.get(f"{self.env_prefix}{name}{SECRET_SUFFIX}".lower())
            if value is not None:
                data[name + SECRET_SUFFIX] = value
        for name, value in list(data.items()):
            field = self.settings_cls.model_fields.get(name)
            if isinstance(value, dict) and field is not None and get_origin(field.annotation) is list:
                items = self.file_data.get(name)
                data[name] = self._merge_items(name, items if isinstance(items, list) else [], value)
        data = resolve_secret_files(data, self.context)
        self.context.data = {**self.file_data, **data}
        return data

    def _merge_items(self, name: str, items: list[Any], overrides: dict[str, Any]) -> list[Any]:
        merged = json.loads(json.dumps(items, default=str))
        for head, override in overrides.items():
            index = _list_index(merged, head)
            if index is None:
                known = ", ".join(str(i.get("name", n)) for n, i in enumerate(merged) if isinstance(i, dict))
                raise config_error(
                    self.context.where,
                    f"{name}[{head}]",
                    f"{self.env_prefix.upper()}{name.upper()}__{head.upper()}__… names no item of "
                    f"{name} (by index or name: {known or 'the list is empty'})",
                )
            merged[index] = _deep_merge(merged[index], override)
        return merged


def _list_index(items: list[Any], head: str) -> int | None:
    if head.isdigit():
        return int(head) if int(head) < len(items) else None
    wanted = head.replace("-", "_").lower()
    for i, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("name", "")).replace("-", "_").lower() == wanted:
            return i
    return None


def _deep_merge(base: Any, override: Any) -> Any:
    """`override` (from the environment: strings, JSON for lists and mappings) over `base`."""
    if isinstance(override, str) and override[:1] in "[{":
        try:
            override = json.loads(override)
        except ValueError:
            pass
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    out = dict(base)
    for key, value in override.items():
        if key.endswith(SECRET_SUFFIX):  # a secret file given here replaces the value given there
            out.pop(key[: -len(SECRET_SUFFIX)], None)
        out[key] = _deep_merge(out.get(key), value)
    return out


def resolve_secret_files(data: dict[str, Any], context: LoadContext) -> dict[str, Any]:
    """Replace every `X_file: /path` by `X: <content of /path>` (trailing newline stripped)."""
    return _resolve(data, (), data, context)


def _resolve(node: Any, path: tuple[str, ...], root: Any, context: LoadContext) -> Any:
    if isinstance(node, list):
        return [_resolve(v, path + (str(i),), root, context) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        # tls_config's ca_file/cert_file/key_file are paths the TLS library reads, not secrets to inline
        inline = isinstance(key, str) and key.endswith(SECRET_SUFFIX) and path[-1:] != ("tls_config",)
        if not (inline and isinstance(value, str)):
            out[key] = _resolve(value, path + (str(key),), root, context)
            continue
        target = key[: -len(SECRET_SUFFIX)]
        where = field_path(_loc(path + (key,)), root)
        if node.get(target) is not None:
            raise config_error(context.where, where, f"give either {target} or {key}, not both")
        try:
            out[target] = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise config_error(context.where, where, f"cannot read {value}: {exc.strerror}") from None
        context.renames[path + (target,)] = key
    return out


def _loc(parts: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in parts)
