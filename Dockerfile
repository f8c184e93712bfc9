# cronmetrics container image.
#
#   docker build -t cronmetrics .
#   docker run -d -p 9479:9479 \
#     -v cronmetrics-state:/var/lib/cronmetrics \
#     -v "$PWD/jobs.d:/etc/cronmetrics/jobs.d" \
#     -v "$PWD/config.yaml:/etc/cronmetrics/config.yaml:ro" \
#     -e CRONMETRICS_CONFIG=/etc/cronmetrics/config.yaml \
#     cronmetrics
#
# The server refuses to start without API tokens in its config; for a local trial only,
# append `serve --bind 0.0.0.0:9479 --no-auth` to `docker run`. Mount jobs.d read-only
# (a ConfigMap, a git-sync volume) to make the API's write calls answer 409.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so volume ownership is predictable and Kubernetes' runAsNonRoot can
# verify the numeric USER below.
RUN groupadd --system --gid 10001 cronmetrics \
 && useradd --system --uid 10001 --gid cronmetrics --no-create-home \
        --home-dir /var/lib/cronmetrics --shell /usr/sbin/nologin cronmetrics \
 && install -d -o cronmetrics -g cronmetrics -m 0750 /var/lib/cronmetrics \
 && install -d -o cronmetrics -g cronmetrics -m 0755 /etc/cronmetrics /etc/cronmetrics/jobs.d

WORKDIR /usr/src/cronmetrics
COPY pyproject.toml README.md ./
COPY cronmetrics ./cronmetrics
RUN pip install '.[redis]' \
 && cd / && rm -rf /usr/src/cronmetrics \
 && cronmetrics --version

WORKDIR /var/lib/cronmetrics
ENV CRONMETRICS_STATE_DIR=/var/lib/cronmetrics \
    CRONMETRICS_JOBS_DIR=/etc/cronmetrics/jobs.d

# uid:gid of the cronmetrics user created above.
USER 10001:10001
EXPOSE 9479
VOLUME /var/lib/cronmetrics

# Liveness only (/health); /health/deep is the readiness check for a load balancer. Plain
# HTTP on the default port: adjust both if you change --bind or enable TLS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9479/health', timeout=4)"]

# SIGTERM (docker stop) makes the server write a final snapshot; give it time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cronmetrics"]
CMD ["serve", "--bind", "0.0.0.0:9479"]
