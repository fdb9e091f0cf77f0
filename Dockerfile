# One image for every tutorstack Python service (gateway, ai_service, llm_server control API,
# graphrag). vLLM itself runs from the vllm/vllm-openai image (see docker-compose.yml).
#   docker build -t tutorstack:latest .
FROM python:3.11-slim

# CPU wheels for torch: the services never use a GPU (vLLM does), and the CUDA wheels are GBs.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    TUTORSTACK_HOME=/data/tutorstack \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app

# Dependencies first (from pyproject.toml's [project].dependencies) so code edits keep this layer.
COPY pyproject.toml ./
RUN pip install --index-url "$TORCH_INDEX_URL" torch \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself (packages listed in pyproject's [tool.setuptools.packages.find]).
COPY . .
RUN pip install --no-deps . \
 && useradd --uid 10001 --user-group --create-home --home-dir /home/app app \
 && mkdir -p /data/tutorstack /data/graphrag /adapters \
 && chown -R app:app /data /adapters

USER app

# Each compose service / k8s Deployment sets its own command, e.g. `python -m gateway serve`.
CMD ["python", "-m", "gateway", "serve"]
