# dbjobs worker / beat / flower image: Python 3.11 plus the database client tools the engines call.
FROM python:3.11-slim-bookworm

# pg_dump/pg_restore/psql 15 (bookworm) match the compose file's PostgreSQL 15; mariadb-dump/mariadb for MySQL.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-client mariadb-client age \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md cli.py beat_schedule.py ./
COPY dbjobs ./dbjobs
COPY workers ./workers
RUN pip install --no-cache-dir .

# Backups are written mode 0600 by an unprivileged user; the volumes mounted here inherit its ownership.
RUN useradd --create-home --uid 1000 dbjobs && mkdir -p /backups /var/lib/dbjobs && chown dbjobs /backups /var/lib/dbjobs
USER dbjobs
ENV DBJOBS_BACKUP_DIR=/backups PYTHONUNBUFFERED=1
CMD ["dbjobs", "--help"]
