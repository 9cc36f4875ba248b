# feedrank services image: `docker compose up --build` (see docker-compose.yml), or
#   docker build -t feedrank . && docker run --rm feedrank --help
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# LightGBM's wheel needs the OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only what the package needs (the local state, virtualenv and Kafka jars stay out of the image).
COPY pyproject.toml README.md ./
COPY feedrank/ feedrank/
COPY services/ services/
COPY rankers/ rankers/
COPY features/ features/
COPY feature_repo/ feature_repo/
COPY config/ config/

# torch comes from PyPI (its build there also runs on the CPU); pass PIP_FIND_LINKS at build time
# to a folder of local CPU wheels to use those instead.
ARG PIP_FIND_LINKS=
RUN pip install .

# A non-editable install puts the code in site-packages, so point the settings whose defaults are
# relative to the source tree back at /app.
ENV FEEDRANK_STATE_DIR=/app/.feedrank \
    FEEDRANK_PIPELINE_CONFIG=/app/config/pipeline.toml \
    FEEDRANK_FEAST_REPO=/app/feature_repo

ENTRYPOINT ["feedrank"]
CMD ["--help"]
