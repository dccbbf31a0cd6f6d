# danmaku: one image with both nodes, the load tester and the token tool.
#
#   docker build -t danmaku:dev .
#   docker run --rm -p 8080:8080 danmaku:dev danmaku-ingest --kafka-brokers kafka:9092 ...
#   docker run --rm -p 8081:8081 danmaku:dev danmaku-broadcast --kafka-brokers kafka:9092 ...
#
# The build stage runs the commands CI runs: deploy/install-deps.sh (its
# `build` group: the compiler and the -dev packages) and `make bins`. The
# runtime stage has only the shared libraries the binaries link (checked by
# tests/deploy/test_dockerfile.py against the binaries' own NEEDED entries).

ARG DEBIAN_IMAGE=debian:12-slim

FROM ${DEBIAN_IMAGE} AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN deploy/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make -j"$(nproc)" bins \
 && install -d /out \
 && install -m 0755 build/default/bin/danmaku-ingest build/default/bin/danmaku-broadcast \
      build/default/bin/danmaku-loadtest build/default/bin/danmaku-token /out/

FROM ${DEBIAN_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="danmaku" \
      org.opencontainers.image.description="Danmaku (live comment) broadcast system: ingest and broadcast nodes, load tester, token tool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${DEBIAN_IMAGE}"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-pthreads-2.1-7 libhiredis0.14 librdkafka1 libjansson4 \
      libjwt0 libssl3 ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin danmaku
COPY --from=build /out/ /usr/local/bin/
COPY deploy/docker/healthcheck /usr/local/bin/danmaku-healthcheck
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001
ENV DANMAKU_LISTEN_HOST=0.0.0.0
# 8080: ingest HTTP API; 8081: broadcast WebSocket (and the demo page).
EXPOSE 8080 8081
# Both nodes drain on SIGTERM (drain_timeout_ms): give `docker stop` a
# longer --time than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["danmaku-healthcheck"]
CMD ["danmaku-ingest"]
