#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 10s).
# `go test -fuzz` takes one target in one package at a time.
set -euo pipefail

fuzztime="${FUZZTIME:-10s}"
go="${GO:-go}"
ran=0
failed=()

# Packages whose test files declare a fuzz target.
pkgs=$("$go" list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./... |
	while read -r pkg dir files; do
		[[ -n "$files" ]] || continue
		if (cd "$dir" && grep -lqE '^func Fuzz[A-Za-z0-9_]*\(' $files 2>/dev/null); then echo "$pkg"; fi
	done)

for pkg in $pkgs; do
	for target in $("$go" test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $pkg $target ($fuzztime)"
		ran=$((ran + 1))
		if ! "$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			failed+=("$pkg $target")
		fi
	done
done

if [[ $ran -eq 0 ]]; then
	echo "fuzz: no fuzz targets found"
	exit 0
fi
if [[ ${#failed[@]} -gt 0 ]]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $ran targets ran for $fuzztime each, none failed"
