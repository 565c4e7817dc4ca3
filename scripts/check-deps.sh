#!/usr/bin/env bash
# Checks that what `make test` needs is installed. Installs nothing: when
# something is missing it prints the command that installs it and fails.
set -euo pipefail

# The back office's browser tests (cmd/cloud TestBackOfficeInBrowser) need
# Chromium. Without it they skip, saying so; this only tells how to get it.
if [[ -n "${OUTPOST_CHROMIUM:-}" ]]; then
	echo "check-deps: browser tests use OUTPOST_CHROMIUM=$OUTPOST_CHROMIUM"
elif c=$(command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null); then
	echo "check-deps: Chromium for the browser tests at $c"
else
	echo "check-deps: Chromium not found: the back office's browser tests will be skipped. Install it with:" >&2
	if [[ "$(uname -s)" == Darwin ]]; then
		echo "    brew install --cask chromium   (then OUTPOST_CHROMIUM=/Applications/Chromium.app/Contents/MacOS/Chromium)" >&2
	else
		echo "    sudo apt-get install -y chromium" >&2
	fi
fi

# The alert rules' check (deploy TestPrometheusRules) runs promtool, from
# Debian's prometheus package; without it that check skips, saying so.
if c=$(command -v promtool 2>/dev/null); then
	echo "check-deps: promtool for the alert rules at $c"
else
	echo "check-deps: promtool not found: the alert rules' check will be skipped. Install it with:" >&2
	echo "    sudo apt-get install -y prometheus   (Debian; elsewhere, promtool from prometheus.io)" >&2
fi

# Tests that need Postgres use OUTPOST_TEST_DATABASE_URL when it is set,
# and otherwise start a private cluster from initdb and postgres. Look where
# internal/pgcluster.FindBinaries looks: PATH, /usr/lib/postgresql/*/bin
# (Debian, Ubuntu), then Homebrew's versioned prefixes (macOS).
if [[ -n "${OUTPOST_TEST_DATABASE_URL:-}" ]]; then
	echo "check-deps: Postgres tests use OUTPOST_TEST_DATABASE_URL"
	exit 0
fi

found=""
pair_in() { [[ -x "$1/initdb" && -x "$1/postgres" ]]; }
if p=$(command -v initdb 2>/dev/null) && command -v postgres >/dev/null 2>&1; then
	found="$(dirname "$(readlink -f "$p")")"
	pair_in "$found" || found="$(dirname "$p")"
fi
if [[ -z "$found" ]]; then
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r) \
		$(ls -d /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin 2>/dev/null | sort -V -r); do
		if pair_in "$d"; then found="$d"; break; fi
	done
fi

if [[ -n "$found" ]]; then
	echo "check-deps: PostgreSQL server binaries in $found"
	exit 0
fi

{
	echo "check-deps: PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin."
	echo "The tests start a private throwaway Postgres with them. Install them with:"
	case "$(uname -s)" in
	Darwin)
		echo "    brew install postgresql@15"
		;;
	*)
		if command -v apt-get >/dev/null 2>&1; then
			echo "    sudo apt-get install -y postgresql"
		else
			echo "    sudo apt-get install -y postgresql   (Debian/Ubuntu)"
			echo "    brew install postgresql@15           (macOS)"
			echo "or your system's PostgreSQL server package."
		fi
		;;
	esac
	echo "Or point the tests at a running server: OUTPOST_TEST_DATABASE_URL=postgres://user@host:5432/postgres?sslmode=disable"
} >&2
exit 1
