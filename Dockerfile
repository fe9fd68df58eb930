# cpn control plane image: multi-stage, non-root, production dependencies only.
#   docker build -t cpn:0.1.0 .
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY bin ./bin
COPY proto ./proto
COPY simulations ./simulations
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["node", "/app/bin/cpn.js"]
CMD ["serve", "--host", "0.0.0.0"]
