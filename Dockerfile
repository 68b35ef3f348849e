# microfetch: the daemon and the web server in one container.

# Build the same wheel users install with pip (it carries the worker pipeline).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY nextflow ./nextflow
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MICROFETCH_CSV=/var/lib/microfetch/registry/microfetch.csv \
    MICROFETCH_DATA_DIR=/var/lib/microfetch/data \
    MICROFETCH_LOG_DIR=/var/log/microfetch \
    MICROFETCH_BIND=0.0.0.0:8000

# rsync and ssh bring data home; tini forwards SIGTERM to microfetch and reaps children.
# Debian's security updates replace exact versions, so packages are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends rsync openssh-client tini \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --gid 10001 microfetch \
    && useradd --create-home --uid 10001 --gid 10001 microfetch \
    && mkdir -p /var/lib/microfetch/registry /var/lib/microfetch/data /var/log/microfetch \
    && chown -R microfetch:microfetch /var/lib/microfetch /var/log/microfetch

USER 10001:10001
# The registry is a folder, not a single file: its lock and temporary files live beside it.
VOLUME ["/var/lib/microfetch/registry", "/var/lib/microfetch/data", "/var/log/microfetch"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["microfetch", "healthcheck"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["microfetch", "serve"]
