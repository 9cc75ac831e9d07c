# syntax=docker/dockerfile:1
#
# AgentOS runtime image. One image runs any service:
#
#   docker run --rm agentos:0.1.0 service orchestrator
#
# Services: orchestrator, context-manager, specialist, memory, policy, audit, gateway.
# Configuration comes only from AGENTOS_* environment variables (see deploy/README.md).

# ---- build stage: install the project into a self-contained virtualenv ------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/agentos
ENV PATH=/opt/agentos/bin:$PATH

WORKDIR /src
# .dockerignore is an allow-list: only the files needed to build the wheel get here.
COPY . .
RUN pip install . \
    && agentos --help >/dev/null

# ---- runtime stage ------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="agentos" \
      org.opencontainers.image.description="AgentOS event-driven runtime for LLM agents (one image, any service)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

ENV PATH=/opt/agentos/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENTOS_STATE_DIR=/var/lib/agentos

# Unprivileged user with a fixed numeric id (matches runAsUser in deploy/k8s).
RUN groupadd --gid 10001 agentos \
    && useradd --uid 10001 --gid agentos --home-dir /var/lib/agentos --no-create-home \
         --shell /usr/sbin/nologin agentos \
    && install -d -o agentos -g agentos -m 0750 /var/lib/agentos

COPY --from=build /opt/agentos /opt/agentos

WORKDIR /var/lib/agentos
# Numeric UID so Kubernetes can verify runAsNonRoot without resolving /etc/passwd.
USER 10001:10001

# Only the gateway listens (HTTP 8080: /healthz, /readyz); the other services expose no port.
EXPOSE 8080

ENTRYPOINT ["agentos"]
CMD ["--help"]
