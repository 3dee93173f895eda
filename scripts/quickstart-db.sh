#!/usr/bin/env bash
# Creates the quickstart's target on a local PostgreSQL: role "app" with the
# password in $SHOP_DB_PASSWORD and database "shop" with a small table.
# Connects as a superuser (default: postgres on 127.0.0.1:5432; override
# with the usual PGHOST/PGPORT/PGUSER variables).
set -euo pipefail
: "${SHOP_DB_PASSWORD:?export SHOP_DB_PASSWORD first: the gateway reads the target password from it}"
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
psql -X -q -v ON_ERROR_STOP=1 -v pw="$SHOP_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE app LOGIN PASSWORD %L', :'pw') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') \gexec
SELECT format('ALTER ROLE app PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE shop OWNER app' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shop') \gexec
SQL
PGDATABASE=shop PGUSER=app PGPASSWORD=$SHOP_DB_PASSWORD psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL);
INSERT INTO orders (item, qty) SELECT 'item' || g, g FROM generate_series(1, 10) g WHERE NOT EXISTS (SELECT FROM orders);
SQL
echo "shop is ready: role app, database shop, table orders"
