# Gatehouse: one image for every process (web, proxy, ingest, celery worker and beat).
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEHOUSE_STATIC_ROOT=/app/staticfiles GATEHOUSE_SPOOL_DIR=/var/lib/gatehouse/spool

WORKDIR /app
RUN useradd --system --home /app --uid 10001 gatehouse \
 && mkdir -p /var/lib/gatehouse/spool && chown -R gatehouse /var/lib/gatehouse

COPY pyproject.toml setup.py README.md ./
COPY controlplane ./controlplane
COPY approvals ./approvals
COPY audit ./audit
COPY proxy_worker ./proxy_worker
COPY demo ./demo
COPY templates ./templates
COPY static ./static
COPY manage.py ./
# gcc builds the masking engine's C accelerator (setup.py), then goes.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install --no-cache-dir -e ".[demo]" \
 && python -c "import proxy_worker.masking.accel as a; assert a.AVAILABLE, 'accelerator not built'" \
 && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && GATEHOUSE_SECRET_KEY=build-only python manage.py collectstatic --no-input -v 0

USER gatehouse
# 8000 web, 8080 proxy worker, 9100 worker metrics (GATEHOUSE_METRICS_PORT)
EXPOSE 8000 8080 6432 9100
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "controlplane.asgi:application"]
