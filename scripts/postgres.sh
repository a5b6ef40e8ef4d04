#!/usr/bin/env bash
# Starts the machine's PostgreSQL (installing it if absent) and makes sure the
# `ballast` role and database the API tests use exist. Prints the URL to use.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 || pg_ctlcluster "$version" main status >&2
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 && break
    sleep 1
done
as_postgres() { su postgres -c "psql -qtAc \"$1\""; }
[ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'ballast'")" = 1 ] ||
    as_postgres "CREATE ROLE ballast LOGIN PASSWORD 'ballast' CREATEDB" >&2
[ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname = 'ballast'")" = 1 ] ||
    as_postgres "CREATE DATABASE ballast OWNER ballast" >&2
echo "postgres://ballast:ballast@127.0.0.1:5432/ballast"
