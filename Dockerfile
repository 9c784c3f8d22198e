# Image for the worker, beat, flower and schema-init services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.txt pyproject.toml README.md celeryconfig.py ./
COPY regime_tasks ./regime_tasks
RUN pip install --no-cache-dir -r requirements.txt -e .
USER nobody
