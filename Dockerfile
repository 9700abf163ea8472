# syntax=docker/dockerfile:1
# The service image: `flask db upgrade`, then gunicorn with gunicorn.conf.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=5000

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Run as an unprivileged user that owns only instance/ (the SQLite default) and the
# metrics folder.
RUN useradd --create-home --uid 10001 gateway \
    && mkdir -p /app/instance /tmp/gateway-metrics \
    && chown -R gateway:gateway /app/instance /tmp/gateway-metrics
USER gateway
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/gateway-metrics

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"5000\")}/healthz', timeout=2)"

# exec: gunicorn replaces the shell as PID 1, so it receives SIGTERM itself and drains.
CMD ["sh", "-c", "flask --app app db upgrade && exec gunicorn --config gunicorn.conf.py 'app:create_app()'"]
