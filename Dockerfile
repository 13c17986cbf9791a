# The corelane service image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /opt/corelane
COPY pyproject.toml README.md ./
COPY corelane ./corelane
COPY pipeline ./pipeline
COPY agents ./agents
COPY storage ./storage
COPY api ./api
COPY config ./config
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["corelane", "up"]
