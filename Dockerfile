# syntax=docker/dockerfile:1
#
# outbound-call-exporter container image.
#
#   docker build -t outbound-call-exporter .
#   docker run -p 9877:9877 -v ./config.yml:/etc/outbound-call-exporter/config.yml:ro \
#       -v oce-data:/var/lib/outbound-call-exporter outbound-call-exporter
#
# Volumes: /etc/outbound-call-exporter (config.yml and *_file secrets, read-only
# is fine, but readable by uid 10001) and /var/lib/outbound-call-exporter (the
# SQLite store: the working directory, so the default store_path
# ./data/calls.db lands in it; writable by uid 10001).
#
# PYTHON_IMAGE: any image with Python >= 3.11 whose interpreter answers to
# `python` (on Debian's own images install python-is-python3 and python3-venv).
# Both stages must use the same image: the venv copied into the runtime stage
# points at its interpreter.
#
# podman: build with `--format docker`, or the OCI format drops HEALTHCHECK.
# scripts/check-image builds the image and runs its health check.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/outbound-call-exporter
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter/ exporter/
COPY plugins/ plugins/
RUN /opt/outbound-call-exporter/bin/pip install . \
 && /opt/outbound-call-exporter/bin/outbound-call-exporter --version

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="outbound-call-exporter" \
      org.opencontainers.image.description="Prometheus exporter for outbound voice-AI calls" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 oce \
 && useradd --system --uid 10001 --gid oce --no-create-home \
        --home-dir /var/lib/outbound-call-exporter --shell /usr/sbin/nologin oce \
 && mkdir -p /etc/outbound-call-exporter /var/lib/outbound-call-exporter \
 && chown oce:oce /var/lib/outbound-call-exporter

COPY --from=build /opt/outbound-call-exporter /opt/outbound-call-exporter

ENV PATH="/opt/outbound-call-exporter/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /var/lib/outbound-call-exporter
VOLUME ["/etc/outbound-call-exporter", "/var/lib/outbound-call-exporter"]
USER 10001:10001
EXPOSE 9877

# The check reads the config CMD runs with, so it follows listen_address. With
# --web.config.file, or another config path, override it:
#   docker run --health-cmd 'outbound-call-exporter healthcheck --config FILE --web.config.file WEB' ...
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["outbound-call-exporter", "healthcheck", "--config", "/etc/outbound-call-exporter/config.yml"]

ENTRYPOINT ["outbound-call-exporter"]
CMD ["run", "--config", "/etc/outbound-call-exporter/config.yml"]
