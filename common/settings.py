"""The settings base every service's own pydantic-settings class extends."""

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    app_env: Literal["dev", "test", "prod"] = "dev"
    log_level: str = "INFO"
    redis_url: str = "redis://localhost:6379/0"

    @property
    def is_prod(self) -> bool:
        return self.app_env == "prod"

    def require_outside_dev(self, env_name: str, value: str) -> None:
        """A credential that only a developer's own machine may leave empty (call from a model validator)."""
        if self.app_env != "dev" and not value:
            raise ValueError(f"{env_name} is required when APP_ENV={self.app_env} (only dev may run without it)")
