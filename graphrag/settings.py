"""graphrag settings. The variable names are the platform's (see .env.example)."""

from pathlib import Path

from pydantic import Field, model_validator

from common.paths import tutorstack_home
from common.settings import ServiceSettings

MAX_TOP_K = 50


class GraphRAGSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="GRAPHRAG_HOST")
    port: int = Field(default=8002, validation_alias="GRAPHRAG_PORT")
    graph_rag_enabled: bool = True
    graph_rag_index_path: Path = Field(default_factory=lambda: tutorstack_home() / "graphrag" / "index")
    # auto: per-chunk language decides the model (see graphrag/dense.py); none | minilm-int8 | minilm | e5 |
    # hashing | st:/path name one model for everything.
    embedding_provider: str = "auto"
    vector_store_path: Path = Field(default_factory=lambda: tutorstack_home() / "graphrag" / "vectors")
    # Optional cross-encoder over the top candidates of hybrid mode (graphrag/rerank.py): none | st-cross:/path
    reranker_provider: str = ""
    # Whether hybrid requests that do not say `rerank` get the reranker (when one is configured).
    rerank_default: bool = False
    # The fitted fusion weights (default: graphrag/retrieval_weights.json, fitted on SciFact train).
    graphrag_weights_path: Path | None = None
    # How often the service looks at the index's CURRENT pointer for a new version.
    graph_rag_reload_interval_sec: float = 2.0
    # The token callers (ai_service, the health service) must present; required outside dev.
    service_token: str = Field(default="", validation_alias="GRAPHRAG_API_TOKEN")

    @model_validator(mode="after")
    def _token_outside_dev(self) -> "GraphRAGSettings":
        self.require_outside_dev("GRAPHRAG_API_TOKEN", self.service_token)
        return self
