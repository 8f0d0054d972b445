"""The YAML config file, parsed once into frozen objects with errors that name the key path.

`schema.py` is the file's shape (msgspec structs), `loading.py` reads it, `resolve*.py` build the
objects of `objects.py` and check what spans sections. A leaf: it imports nothing else of
messagegate (import-linter holds it to that).
"""

from messagegate.config.environment import (
    CONFIG_PATH_VARIABLE,
    LOG_LEVEL_VARIABLE,
    METRICS_DIR_VARIABLE,
    default_database_path,
    environment_proxy,
    metrics_directory,
)
from messagegate.config.loading import load_config, parse_config
from messagegate.config.objects import (
    DEFAULT_MAX_BODY_BYTES,
    ApiKey,
    BreakerPolicy,
    Capabilities,
    Config,
    FailoverPolicy,
    Limits,
    MetricsSettings,
    Model,
    OtelSettings,
    Price,
    PrivacySettings,
    Provider,
    RequestDefaults,
    Route,
    RoutingDefaults,
    Scenario,
    ScenarioConditions,
    Secret,
    Timeouts,
    TlsSettings,
    is_pattern,
)
from messagegate.config.problems import ConfigError

__all__ = [
    "CONFIG_PATH_VARIABLE",
    "DEFAULT_MAX_BODY_BYTES",
    "LOG_LEVEL_VARIABLE",
    "METRICS_DIR_VARIABLE",
    "ApiKey",
    "BreakerPolicy",
    "Capabilities",
    "Config",
    "ConfigError",
    "FailoverPolicy",
    "Limits",
    "MetricsSettings",
    "Model",
    "OtelSettings",
    "Price",
    "PrivacySettings",
    "Provider",
    "RequestDefaults",
    "Route",
    "RoutingDefaults",
    "Scenario",
    "ScenarioConditions",
    "Secret",
    "Timeouts",
    "TlsSettings",
    "default_database_path",
    "environment_proxy",
    "is_pattern",
    "load_config",
    "metrics_directory",
    "parse_config",
]
