#!/usr/bin/env bash
# The local Redis (127.0.0.1:6379) and Postgres (127.0.0.1:5432, trust auth, database `test`)
# that tests/integration/test_redis_actions.py and test_postgres_actions.py act on. Both come
# with the machine; this starts whichever is not answering, with the machine's own commands,
# and waits until it answers. Idempotent.
set -euo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

wait_for() {
  local name=$1 check=$2
  for _ in $(seq 1 100); do
    if "$check"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not answer within 10s" >&2
  return 1
}

if ! redis_up; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis redis_up

if ! postgres_up; then
  # One cluster per installed major version: start the `main` cluster of each.
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  done
fi
wait_for postgres postgres_up

echo "redis: $(redis-cli -h 127.0.0.1 -p 6379 ping); postgres: $(pg_isready -h 127.0.0.1 -p 5432)"
