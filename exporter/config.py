"""Configuration: a YAML file, `OCE_` environment overrides and `*_file` secrets.

Environment variables override the file, nested with `__`. List items (accounts) are addressed
by index or by account name, so a secret can be injected without repeating the list:
`OCE_ACCOUNTS__0__SETTINGS__TOKEN=…` or `OCE_ACCOUNTS__TELZINO_MAIN__SETTINGS__TOKEN=…`
(names match case-insensitively with `-` read as `_`). Any key `X_file` anywhere in the config
is replaced by key `X` holding that file's content (Docker/Kubernetes secrets).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
from .httpclient import HTTPClient, HTTPClientConfig, resolve_http_clients
from .model import State
from .plugins import Registry
from .provider import CallParams, Provider, ProviderSettings

ENV_PREFIX = "OCE_"
DEFAULT_BUCKETS = [5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 7200]

PollState = Literal["queued", "dialing", "in_progress", "unknown"]


class AccountConfig(BaseModel):
    """One provider account/region/agent; `settings` is validated by the plugin's model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    provider: str
    base_url: str | None = None
    max_concurrency: int = Field(32, ge=1, le=10_000)
    #: default: the plugin's `default_max_requests_per_second` (its documented limit, else 20)
    max_requests_per_second: float | None = Field(None, gt=0, le=100_000)
    poll_interval_seconds: dict[PollState, float] = Field(default_factory=dict)
    not_found_grace_seconds: float = Field(60.0, ge=0)
    #: watch scopes: every call of an agent created from now on, every job of a batch
    watch: list[dict[str, str]] = Field(default_factory=list)
    #: authenticates this account's result webhooks (X-Webhook-Token header or ?token=)
    webhook_token: SecretStr | None = None
    #: overrides of the top-level http_client, key by key (proxies, TLS)
    http_client: HTTPClientConfig | None = None
    #: raw until the plugin's model validates it (and marks its secrets): never in a repr
    settings: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("poll_interval_seconds")
    @classmethod
    def _min_interval(cls, value: dict[str, float]) -> dict[str, float]:
        for state, seconds in value.items():
            if seconds < 0.1:
                raise ValueError(f"{state}: {seconds} is below the minimum of 0.1 seconds")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class Config(BaseSettings):
    """The whole service configuration (design.md, "Config" and "Limits")."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    listen_address: str = "0.0.0.0:9877"
    store_path: Path = Path("./data/calls.db")
    max_watch_seconds: float = Field(21600.0, gt=0)
    histogram_buckets_seconds: list[float] = Field(default_factory=lambda: list(DEFAULT_BUCKETS), min_length=1)
    api_token: SecretStr | None = None
    #: when true, the API's reads (GET /api/v1/calls...) need the api_token too
    api_token_for_reads: bool = False
    accounts: list[AccountConfig] = Field(default_factory=list)
    max_request_bytes: int = Field(1_048_576, ge=1024)
    max_batch: int = Field(1000, ge=1)
    max_watched_calls: int = Field(1_000_000, ge=1)
    request_timeout_seconds: float = Field(10.0, gt=0)
    max_response_bytes: int = Field(1_048_576, ge=1024)
    #: batch scopes watched at once (each adds a `batch` label value to outbound_call_batch_jobs)
    max_watched_batches: int = Field(100, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: how provider requests reach the providers: proxies, TLS (design.md, "Provider HTTP client")
    http_client: HTTPClientConfig = Field(default_factory=HTTPClientConfig)

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("histogram_buckets_seconds")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(value, value[1:])) or value[0] <= 0:
            raise ValueError("buckets must be positive and strictly increasing")
        return value

    @field_validator("accounts")
    @classmethod
    def _unique_names(cls, value: list[AccountConfig]) -> list[AccountConfig]:
        names = [a.name for a in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"account names must be unique; repeated: {', '.join(dupes)}")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):  # type: ignore[override]
        return (init_settings,)


def split_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class Account:
    """An account ready to poll: the plugin instance and the resolved knobs."""

    name: str
    provider: Provider
    config: AccountConfig
    cadence: Mapping[State, float]
    defaults: Mapping[str, Any]
    secret_fields: frozenset[str]
    secrets: tuple[str, ...]
    http_client: HTTPClient = field(default_factory=HTTPClient)

    @property
    def provider_name(self) -> str:
        return self.provider.name


# -- loading ---------------------------------------------------------------------------------


def load_config(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate; every failure is a `ConfigError` naming file and field."""
    environ = os.environ if environ is None else environ
    where = str(path) if path else "(no file)"
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{where}:{at} invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{where}: the top level must be a mapping")
        data = loaded or {}
    data = apply_env(data, environ)
    data = resolve_secret_files(data, where, ())
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc, data)}") from None


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Deep-merge `OCE_A__B__0__C=value` variables over the file's data."""
    merged = json.loads(json.dumps(data, default=str))
    for key in sorted(environ):
        if not key.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            continue
        _set_path(merged, parts, _env_value(environ[key]), key)
    return merged


def _env_value(raw: str) -> Any:
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw


def _set_path(node: Any, parts: list[str], value: Any, key: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        index = _list_index(node, head)
        if index is None:
            raise ConfigError(f"environment variable {key}: no list item {head!r}")
        if not rest:
            node[index] = value
        else:
            _set_path(node[index], rest, value, key)
        return
    if not isinstance(node, dict):
        raise ConfigError(f"environment variable {key}: {head!r} is not inside a mapping")
    if not rest:
        node[head] = value
        return
    node.setdefault(head, [] if head == "accounts" else {})
    _set_path(node[head], rest, value, key)


def _list_index(items: list[Any], head: str) -> int | None:
    if head.isdigit():
        return int(head) if int(head) < len(items) else None
    wanted = head.replace("-", "_").lower()
    for i, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("name", "")).replace("-", "_").lower() == wanted:
            return i
    return None


def resolve_secret_files(node: Any, where: str, path: tuple[str, ...]) -> Any:
    """Replace every `X_file: /path` by `X: <content of /path>` (trailing newline stripped)."""
    if isinstance(node, list):
        return [resolve_secret_files(v, where, path + (str(i),)) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        # tls_config's ca_file/cert_file/key_file are paths the TLS library reads, not secrets to inline
        if isinstance(key, str) and key.endswith("_file") and isinstance(value, str) and path[-1:] != ("tls_config",):
            target = key[: -len("_file")]
            field = ".".join(path + (target,))
            if node.get(target) is not None:
                raise ConfigError(f"{where}: {field}: give either {target} or {key}, not both")
            try:
                out[target] = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{where}: {field}_file: cannot read {value}: {exc.strerror}") from None
        else:
            out[key] = resolve_secret_files(value, where, path + (str(key),))
    return out


def format_validation_error(exc: ValidationError, data: Any = None) -> str:
    """Pydantic errors as `field.path: message` lines, without echoing input values."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if data is not None and err["loc"][:1] == ("accounts",) and len(err["loc"]) > 1:
            name = _account_name(data, err["loc"][1])
            if name:
                loc = loc.replace(f"accounts.{err['loc'][1]}", f"accounts[{err['loc'][1]}] ({name})", 1)
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def _account_name(data: Any, index: Any) -> str | None:
    try:
        return str(data["accounts"][index]["name"])
    except (KeyError, IndexError, TypeError):
        return None


# -- resolving accounts against the plugins ------------------------------------------------


def resolve_accounts(config: Config, registry: Registry) -> list[Account]:
    """Instantiate each account's plugin with its validated settings."""
    accounts = []
    clients = resolve_http_clients(config, [f"accounts[{i}] ({acc.name})" for i, acc in enumerate(config.accounts)])
    for i, acc in enumerate(config.accounts):
        label = f"accounts[{i}] ({acc.name})"
        cls = registry.providers.get(acc.provider)
        if cls is None:
            known = ", ".join(sorted(registry.providers)) or "none"
            raise ConfigError(f"{label}.provider: unknown provider {acc.provider!r} (available: {known})")
        try:
            settings = cls.Settings.model_validate(acc.settings)
        except ValidationError as exc:
            raise ConfigError(f"{label}.settings: {format_validation_error(exc)}") from None
        provider = cls(settings, acc.base_url)
        for j, scope in enumerate(acc.watch):
            try:
                validate_scope(cls, scope)
            except ValueError as exc:
                raise ConfigError(f"{label}.watch[{j}]: {exc}") from None
        if acc.max_requests_per_second is None:
            acc = acc.model_copy(update={"max_requests_per_second": cls.default_max_requests_per_second})
        cadence = dict(cls.cadence)
        cadence.update({State(k): v for k, v in acc.poll_interval_seconds.items()})
        accounts.append(Account(
            name=acc.name, provider=provider, config=acc, cadence=cadence,
            defaults=param_defaults(settings, cls.Params),
            secret_fields=frozenset(k for k, v in settings.__dict__.items() if isinstance(v, SecretStr)),
            secrets=secret_values(settings) + clients[i].secrets, http_client=clients[i],
        ))
    return accounts


def param_defaults(settings: ProviderSettings, params: type[CallParams]) -> dict[str, Any]:
    """Settings that double as per-call param defaults (same field name, not secret, set)."""
    out = {}
    for name in params.model_fields:
        value = getattr(settings, name, None)
        if name != "call_id" and value is not None and not isinstance(value, SecretStr):
            out[name] = value
    return out


def secret_values(settings: ProviderSettings) -> tuple[str, ...]:
    """The plain values of every secret field, so the host can scrub them from extras."""
    return tuple(v.get_secret_value() for v in settings.__dict__.values()
                 if isinstance(v, SecretStr) and v.get_secret_value())


def validate_scope(cls: type[Provider], value: Any) -> dict[str, str]:
    """A scope object checked against the plugin: a supported key, a value its params accept."""
    from pydantic import TypeAdapter

    if not cls.supports("list"):
        raise ValueError(f"provider {cls.name} has no list endpoint, so it cannot watch scopes")
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError("a scope is an object with exactly one key, e.g. {\"agent_id\": \"...\"}")
    [(key, scope_value)] = value.items()
    if key not in cls.scope_keys:
        supported = ", ".join(sorted(cls.scope_keys))
        raise ValueError(f"scope key {str(key)[:32]!r} is not supported by {cls.name} (supported: {supported})")
    info = cls.Params.model_fields[key]
    try:
        TypeAdapter(Annotated[info.annotation, *info.metadata]).validate_python(scope_value)
    except ValidationError as exc:
        raise ValueError(f"{key}: {exc.errors(include_input=False)[0]['msg']}") from None
    return {key: scope_value}
