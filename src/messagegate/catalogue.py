"""The providers messagegate knows by name: their address, key variable, region and model names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

DEFAULT_LISTEN = "127.0.0.1:8080"
GATEWAY_KEY_VARIABLE = "MESSAGEGATE_API_KEY"


@dataclass(frozen=True, slots=True)
class KnownProvider:
    """A provider the embedded default can serve once its variables are set.

    A hosted provider joins when its key variable is set; a local server, which needs no key,
    joins when its address variable is set (its key variable is then optional).
    """

    name: str
    kind: Literal["anthropic", "openai"]
    base_url: str
    key_variable: str
    region: str | None
    zero_data_retention: bool
    patterns: tuple[str, ...] = ()
    local: bool = False

    @property
    def preset(self) -> str | None:
        return self.name if self.kind == "openai" else None

    @property
    def url_variable(self) -> str:
        return f"{self.name.upper()}_BASE_URL"

    def joins(self, environ: Mapping[str, str]) -> bool:
        return bool(environ.get(self.url_variable if self.local else self.key_variable))


# Regions and retention are what each provider states for its standard API terms; a contract
# with other terms (a zero-retention agreement, a regional endpoint) belongs in a config file.
KNOWN_PROVIDERS: tuple[KnownProvider, ...] = (
    KnownProvider(
        "anthropic",
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
        "us",
        False,
        ("claude-*",),
    ),
    KnownProvider(
        "openai",
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        "us",
        False,
        ("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "codex-*"),
    ),
    KnownProvider(
        "mistral",
        "openai",
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        "eu",
        False,
        (
            "mistral-*",
            "magistral-*",
            "codestral-*",
            "devstral-*",
            "ministral-*",
            "pixtral-*",
            "open-mistral-*",
        ),
    ),
    KnownProvider(
        "deepseek",
        "openai",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
        "cn",
        False,
        ("deepseek-*",),
    ),
    KnownProvider("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "us", False),
    KnownProvider(
        "together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "us", False
    ),
    KnownProvider("scaleway", "openai", "https://api.scaleway.ai/v1", "SCW_SECRET_KEY", "eu", True),
    # Local servers keep nothing beyond the machine they run on.
    KnownProvider(
        "ollama", "openai", "http://127.0.0.1:11434/v1", "OLLAMA_API_KEY", None, True, local=True
    ),
    KnownProvider(
        "vllm", "openai", "http://127.0.0.1:8000/v1", "VLLM_API_KEY", None, True, local=True
    ),
    KnownProvider(
        "llamacpp",
        "openai",
        "http://127.0.0.1:8080/v1",
        "LLAMACPP_API_KEY",
        None,
        True,
        local=True,
    ),
)


def no_provider_message() -> str:
    """What a gateway that serves nothing says, at start and to each request."""
    keys = ", ".join(p.key_variable for p in KNOWN_PROVIDERS if not p.local)
    urls = ", ".join(p.url_variable for p in KNOWN_PROVIDERS if p.local)
    return (
        f"no provider is configured: set one of {keys} (or, for a local server, {urls}) "
        "and restart, or start with --config FILE (`messagegate init` writes one)"
    )


# `gen_ai.provider.name` as the GenAI semantic conventions list it: the catalogue's providers
# by name, and well-known APIs by their host name (a glob). A provider found in neither is named
# by its kind (the API it speaks).
CONVENTION_NAMES = {
    "anthropic": "anthropic",
    "openai": "openai",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "groq": "groq",
}
CONVENTION_HOSTS = (
    ("api.anthropic.com", "anthropic"),
    ("api.openai.com", "openai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.deepseek.com", "deepseek"),
    ("api.groq.com", "groq"),
    ("*.openai.azure.com", "azure.ai.openai"),
    ("*.services.ai.azure.com", "azure.ai.inference"),
    ("*aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("bedrock-runtime*.amazonaws.com", "aws.bedrock"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("*.ml.cloud.ibm.com", "ibm.watsonx.ai"),
)
