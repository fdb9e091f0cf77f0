"""Code every tutorstack service shares: settings base, OpenAI-shaped errors,
JSON logging with request ids, Prometheus metrics and the service app factory."""
