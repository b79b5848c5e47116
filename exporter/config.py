"""Configuration: the models, and loading them from a YAML file and the environment.

`load_config` builds `Config` from pydantic-settings sources (`config_sources`): the YAML file,
then `OCE_` environment variables over it (nested with `__`, list items by index or account
name), with `*_file` secrets resolved. `Config(...)` in code takes only what it is given (the
demo and tests build it that way). Every failure is a `ConfigError` in one voice
(`config_errors`): file, then path, then reason.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, cast

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .config_errors import config_error, field_path, format_validation_error, reason, validation_error
from .config_sources import Environment, LoadContext, YamlFile
from .errors import ConfigError
from .httpclient import HTTPClient, HTTPClientConfig, resolve_http_clients
from .model import State
from .plugins import Registry
from .privacy import Privacy
from .provider import CallParams, Provider, ProviderSettings

__all__ = [
    "Account",
    "AccountConfig",
    "Config",
    "ScopeInvalid",
    "format_validation_error",
    "load_config",
    "param_defaults",
    "resolve_accounts",
    "secret_values",
    "split_address",
    "validate_scope",
]

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
    poll_interval_seconds: dict[PollState, Annotated[float, Field(ge=0.1)]] = Field(default_factory=dict)
    not_found_grace_seconds: float = Field(60.0, ge=0)
    #: watch scopes: every call of an agent created from now on, every job of a batch
    watch: list[dict[str, str]] = Field(default_factory=list)
    #: authenticates this account's result webhooks (X-Webhook-Token header or ?token=)
    webhook_token: SecretStr | None = None
    #: overrides of the top-level http_client, key by key (proxies, TLS)
    http_client: HTTPClientConfig | None = None
    #: raw until the plugin's model validates it (and marks its secrets): never in a repr
    settings: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class Config(BaseSettings):
    """The whole service configuration (docs/design.md, "Config" and "Limits")."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    #: where this config came from, and the keys renamed on the way (`tokn_file` -> `tokn`)
    _load: LoadContext = PrivateAttr(default_factory=LoadContext)

    listen_address: str = "0.0.0.0:9877"
    store_path: Path = Path("./data/calls.db")
    #: a PostgreSQL URL (its password a secret): N replicas share the calls (store_path unused)
    store_url: SecretStr | None = None
    max_watch_seconds: float = Field(21600.0, gt=0)
    histogram_buckets_seconds: list[float] = Field(
        default_factory=lambda: [float(b) for b in DEFAULT_BUCKETS], min_length=1
    )
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
    #: what call records keep of personal data (docs/design.md, "Privacy and access by default")
    privacy: Privacy = Field(default_factory=Privacy)
    #: accept POST/DELETE without api_token on a non-loopback listen_address (warned at start-up)
    allow_unauthenticated_writes: bool = False
    #: how provider requests reach the providers: proxies, TLS (docs/design.md, "Provider HTTP client")
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
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest priority first: what code passes, the environment, the YAML file."""
        context = _LOADING.get()
        if context is None:
            return (init_settings,)
        yaml_file = YamlFile(settings_cls, context)
        return init_settings, Environment(settings_cls, context, yaml_file.yaml_data), yaml_file


#: set by `load_config` while it builds a `Config`; otherwise `Config(...)` reads nothing else
_LOADING: ContextVar[LoadContext | None] = ContextVar("config_loading", default=None)


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
    privacy: Privacy = Privacy()
    http_client: HTTPClient = field(default_factory=HTTPClient)


# -- loading ---------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate; every failure is a `ConfigError` naming file, path and reason.

    A config without accounts is an error here (it would watch nothing); the demo builds its
    own `Config`.
    """
    context = LoadContext(
        where=str(path) if path else "(no file)",
        path=Path(path) if path else None,
        environ=os.environ if environ is None else environ,
    )
    token = _LOADING.set(context)
    try:
        config = Config()
    except ValidationError as exc:
        raise validation_error(context.where, exc, context.data, context.renames, known=_KNOWN_KEYS) from None
    finally:
        _LOADING.reset(token)
    config._load = LoadContext(where=context.where, renames=context.renames)  # not the raw data: it holds secrets
    if not config.accounts:
        raise config_error(
            context.where,
            "accounts",
            "no account configured; add at least one under accounts: "
            "with name, provider and settings (outbound-call-exporter plugins lists the providers)",
        )
    return config


_KNOWN_KEYS = frozenset(Config.model_fields) | frozenset(AccountConfig.model_fields)


# -- resolving accounts against the plugins ------------------------------------------------


def resolve_accounts(config: Config, registry: Registry) -> list[Account]:
    """Instantiate each account's plugin with its validated settings."""
    names = {"accounts": [{"name": a.name} for a in config.accounts]}
    try:  # http_client: inherited key by key, files and TLS versions checked now
        clients = resolve_http_clients(
            config, [field_path(("accounts", i), names) for i in range(len(config.accounts))]
        )
    except ConfigError as exc:
        raise ConfigError(f"{config._load.where}: {exc}") from None
    return [_resolve_account(config, i, acc, registry, clients[i]) for i, acc in enumerate(config.accounts)]


def _resolve_account(config: Config, i: int, acc: AccountConfig, registry: Registry, client: HTTPClient) -> Account:
    load, names = config._load, {"accounts": [{"name": a.name} for a in config.accounts]}
    label = field_path(("accounts", i), names)
    cls = registry.providers.get(acc.provider)
    if cls is None:
        known = ", ".join(sorted(registry.providers)) or "none"
        raise config_error(load.where, f"{label}.provider", f"unknown provider {acc.provider!r} (available: {known})")
    try:
        settings = cls.Settings.model_validate(acc.settings)
    except ValidationError as exc:
        raise validation_error(
            load.where, exc, names, load.renames, base=("accounts", i, "settings"), known=cls.Settings.model_fields
        ) from None
    for j, scope in enumerate(acc.watch):
        try:
            validate_scope(cls, scope)
        except ScopeInvalid as exc:
            where = f"{label}.watch[{j}]" + (f".{exc.key}" if exc.key else "")
            raise config_error(load.where, where, exc.reason) from None
    if acc.max_requests_per_second is None:
        acc = acc.model_copy(update={"max_requests_per_second": cls.default_max_requests_per_second})
    cadence = dict(cls.cadence)
    cadence.update({State(k): v for k, v in acc.poll_interval_seconds.items()})
    return Account(
        name=acc.name,
        provider=cls(settings, acc.base_url),
        config=acc,
        cadence=cadence,
        defaults=param_defaults(settings, cls.Params),
        secret_fields=frozenset(k for k, v in settings.__dict__.items() if isinstance(v, SecretStr)),
        secrets=secret_values(settings) + client.secrets,
        privacy=config.privacy,
        http_client=client,
    )


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
    return tuple(
        v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr) and v.get_secret_value()
    )


class ScopeInvalid(ValueError):
    """A watch scope the plugin refuses; `key` is the scope key at fault, when there is one."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.reason, self.key = reason, key


def validate_scope(cls: type[Provider], value: Any) -> dict[str, str]:
    """A scope object checked against the plugin: a supported key, a value its params accept."""
    if not cls.supports("list"):
        raise ScopeInvalid(f"provider {cls.name} has no list endpoint, so it cannot watch scopes")
    if not isinstance(value, dict) or len(value) != 1:
        raise ScopeInvalid('a scope is an object with exactly one key, e.g. {"agent_id": "..."}')
    [(key, scope_value)] = value.items()
    if key not in cls.scope_keys:
        supported = ", ".join(sorted(cls.scope_keys))
        raise ScopeInvalid(f"scope key {str(key)[:32]!r} is not supported by {cls.name} (supported: {supported})")
    if not isinstance(scope_value, str):
        raise ScopeInvalid("must be a string", key)
    info = cls.Params.model_fields[key]
    # an optional param (`Uuid | None = None`) carries no metadata of its own
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    try:
        TypeAdapter(cast(Any, annotation)).validate_python(scope_value)
    except ValidationError as exc:
        raise ScopeInvalid(reason(exc.errors(include_input=False)[0], (key,), []), key) from None
    return {key: scope_value}
