#!/usr/bin/env bash
# The real peers of tests/e2e: Prometheus and Alertmanager from Debian's packages.
# Idempotent and quiet: installs only what is missing, runs `apt-get update` at most once.
set -euo pipefail

missing=()
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # The packages' maintainer scripts start their services under systemd or init; a CI container
  # has neither, and the tests run their own instances on free loopback ports anyway.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  trap 'if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi' EXIT
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

/usr/bin/prometheus --version 2>&1 | head -n 1
/usr/bin/prometheus-alertmanager --version 2>&1 | head -n 1
