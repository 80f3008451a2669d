# syntax=docker/dockerfile:1
#
# acpd in a container: a small, non-root image with tini as PID 1, so that
# signals reach the daemon and any orphan is reaped.
#
#   docker build -t acpd .
#   docker run --rm -e ACPD_TOKEN=<secret> -e ACPD_HOSTNAME=0.0.0.0 -p 4170:4170 \
#     -v "$PWD:/workspace" acpd
#
# The daemon keeps its loopback default (127.0.0.1) here on purpose: a bind
# beyond loopback needs a bearer token, and an image cannot ship one. To reach
# acpd from outside the container, pass ACPD_HOSTNAME=0.0.0.0 together with
# ACPD_TOKEN at run time (acpd refuses to start with the first alone).
# The served workspace is /workspace; mount the repository there, writable by
# uid 1000 (the "node" user), since sessions are stored in /workspace/.acpd.
# Other agents (ACPD_AGENT) must be installed in a derived image.

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.client.json ./
COPY scripts/copy-console.mjs scripts/bundle.mjs ./scripts/
COPY src ./src
RUN npm run build

FROM node:20-slim
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
RUN mkdir /workspace && chown node:node /workspace
ENV ACPD_WORKSPACE=/workspace
USER node
EXPOSE 4170
# Node's own fetch, no curl in the image. It follows ACPD_PORT, and sends the
# token when one is set, because /health is only public on a loopback bind.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "const t=(process.env.ACPD_TOKEN||'').trim();fetch('http://127.0.0.1:'+(process.env.ACPD_PORT||4170)+'/health',{headers:t?{authorization:'Bearer '+t}:{}}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/server.js"]
