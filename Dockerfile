# Multi-stage image with danmaku-ingest, danmaku-broadcast and danmaku-token.
# Issue 7 completes it (healthcheck, labels, load tester); the build steps are
# the same commands CI runs.
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libevent-dev libhiredis-dev librdkafka-dev \
      libjansson-dev libjwt-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" bins

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-pthreads-2.1-7 libhiredis0.14 librdkafka1 libjansson4 \
      libjwt0 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home danmaku
COPY --from=build /src/build/default/bin/danmaku-ingest /src/build/default/bin/danmaku-broadcast \
     /src/build/default/bin/danmaku-token /usr/local/bin/
USER danmaku
ENV DANMAKU_LISTEN_HOST=0.0.0.0
EXPOSE 8080 8081
CMD ["danmaku-ingest"]
