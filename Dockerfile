# Image for the worker, beat, flower and schema-init services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.txt pyproject.toml README.md celeryconfig.py ./
COPY regime_tasks ./regime_tasks
# `regime db init` runs the Alembic migrations in schema/ (store/db.py finds them beside the package).
COPY schema ./schema
RUN pip install --no-cache-dir -r requirements.txt -e .
USER nobody
