# wakeproxy's image. Build it with `make images` (or scripts/build-images.sh): the Python packages are
# installed on the build host into build/image-site (no network needed inside the build), then copied.
# BASE defaults to python:3.11-slim for real deployments; here it is the local debootstrap base.
ARG BASE=python:3.11-slim
FROM ${BASE}
COPY build/image-site /opt/wakeproxy/site
ENV PYTHONPATH=/opt/wakeproxy/site PYTHONUNBUFFERED=1 PATH=/opt/wakeproxy/site/bin:$PATH
EXPOSE 8000 8008
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8008/healthz', timeout=2)"]
ENTRYPOINT ["python3", "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "wakeproxy"]
CMD ["--listen", "tcp:8000", "--api-listen", "tcp:8008:interface=127.0.0.1"]
