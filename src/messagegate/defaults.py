"""The embedded default config, made from the environment, and the starter file ``init`` writes.

Both are the same YAML tree holding only ``${VAR}`` references: the default is parsed like any
config file, and ``init`` writes that tree out with comments, never a secret's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from messagegate.catalogue import (
    DEFAULT_LISTEN,
    GATEWAY_KEY_VARIABLE,
    KNOWN_PROVIDERS,
    KnownProvider,
)
from messagegate.config import Config, parse_config

EMBEDDED_SOURCE = "<embedded default>"


def default_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    """The config tree for the providers whose variables are set."""
    found = [p for p in KNOWN_PROVIDERS if p.joins(environ)]
    tree: dict[str, Any] = {"listen": DEFAULT_LISTEN}
    if environ.get(GATEWAY_KEY_VARIABLE):
        tree["keys"] = [{"key": f"${{{GATEWAY_KEY_VARIABLE}}}", "name": "default"}]
    tree["providers"] = {p.name: _provider_tree(p, environ) for p in found}
    tree["models"] = {
        pattern: {"routes": [{"provider": p.name}]} for p in found for pattern in p.patterns
    }
    return tree


def default_config(environ: Mapping[str, str]) -> Config:
    return parse_config(default_tree(environ), source=EMBEDDED_SOURCE, environ=environ)


def _provider_tree(provider: KnownProvider, environ: Mapping[str, str]) -> dict[str, Any]:
    url = environ.get(provider.url_variable)
    tree: dict[str, Any] = {
        "kind": provider.kind,
        "base_url": f"${{{provider.url_variable}}}" if url else provider.base_url,
    }
    if provider.preset is not None:
        tree["preset"] = provider.preset
    if environ.get(provider.key_variable):
        tree["api_key"] = f"${{{provider.key_variable}}}"
    if provider.region is not None:
        tree["region"] = provider.region
    tree["zero_data_retention"] = provider.zero_data_retention
    return tree


_HEADER = """\
# messagegate config, written by `messagegate init` for the providers found in the environment.
# Secrets stay in the environment: ${VAR} is replaced from it when the gateway starts.
# Start it with: messagegate serve --config {path}
"""

_PROVIDERS_NOTE = """\
# region and zero_data_retention are what each provider states for its standard terms: the
# routing fields eu_native and allow_zero_data_retention filter on them. Adjust them to your
# contract.
"""

_MODELS_NOTE = """\
# A model name may be a glob pattern; a pattern's routes send the name the client asked for
# unless a route gives `model:`. Exact names win over patterns, longer patterns over shorter.
# Any configured provider also serves `provider/model` names (explicit_provider_models: false
# turns that off). Add exact models with prices, limits and fallbacks, e.g.:
#   claude-sonnet-4-5:
#     routes:
#       - provider: anthropic
#         model: claude-sonnet-4-5-20250929
#         price: {input: 3, output: 15, cache_read: 0.3}
"""

_NOTHING_FOUND = """\
# No provider variable was set when this file was written; add providers here, e.g.:
#   anthropic:
#     kind: anthropic
#     base_url: https://api.anthropic.com
#     api_key: ${ANTHROPIC_API_KEY}
"""


def starter_file(environ: Mapping[str, str], path: str) -> str:
    """The commented YAML ``messagegate init`` writes."""
    tree = default_tree(environ)
    parts = [_HEADER.replace("{path}", path), _dump({"listen": tree["listen"]})]
    if "keys" in tree:
        parts.append(_dump({"keys": tree["keys"]}))
    else:
        parts.append(
            "# keys:                 # required from clients once set; omit for none (loopback)\n"
            f"#   - key: ${{{GATEWAY_KEY_VARIABLE}}}\n#     name: default\n"
        )
    parts.append(_PROVIDERS_NOTE)
    parts.append(_dump({"providers": tree["providers"]}))
    if not tree["providers"]:
        parts.append(_NOTHING_FOUND)
    parts.append(_MODELS_NOTE)
    parts.append(_dump({"models": tree["models"]}))
    return "\n".join(parts)


def _dump(tree: dict[str, Any]) -> str:
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=100)
