# CPU image serving the bundled models: docker build -t acm-serve . && docker run -p 8080:8080 acm-serve
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY server ./server
COPY kernels ./kernels
COPY clients ./clients
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:20-bookworm-slim
# onnxruntime's Linux library reports every session to Microsoft unless this is 1 (the server
# also sets it when unset); explicit here for any other process in the image.
ENV NODE_ENV=production PORT=8080 ORT_DISABLE_TELEMETRY=1
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# The web page's HTML and CSS; its scripts are compiled into dist/clients.
COPY clients/web ./clients/web
# Bundles only: the toolchain's Python is not needed to serve.
COPY models ./models
USER node
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--max-semi-space-size=4", "dist/server/main.js"]
