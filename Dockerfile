# The gateway in one container. It starts with bin/serve, the script `make run`
# uses: migrate, collectstatic, then Daphne (or uvicorn with ASGI_SERVER=uvicorn)
# on $HOST:$PORT. Configuration comes from the environment: see .env.example.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# The code stays root's and read-only for the gateway, which writes only its
# collected static files and, on the embedded default, its SQLite database.
RUN mkdir -p /app/staticfiles /data \
    && chown app:app /app/staticfiles /data

ENV HOST=0.0.0.0 \
    PORT=8000 \
    PYTHON=python \
    STATIC_ROOT=/app/staticfiles \
    DATABASE_URL=sqlite:////data/db.sqlite3

USER app
EXPOSE 8000

# The slim image has no curl: ask /health with Python's standard library, with
# a Host header that ALLOWED_HOSTS accepts (its first entry), or Django answers 400.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; h = os.environ.get('ALLOWED_HOSTS', 'localhost').split(',')[0].strip().lstrip('.'); r.urlopen(r.Request('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), headers={'Host': h if h not in ('', '*') else 'localhost'}), timeout=4)"]

CMD ["bin/serve"]
