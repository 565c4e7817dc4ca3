#!/bin/sh
# release.sh: cross-builds the edge for the gateways shops run, reproducibly
# (make release; docs/OTA.md, "Building a release"). The same commit and the
# same Go toolchain give the same bytes: -trimpath drops local paths,
# -buildvcs=false and -buildid= drop what varies between checkouts and
# builds, CGO_ENABLED=0 drops the host's C toolchain, and the version and
# commit are stamped with -ldflags. Each file is named edge-VERSION-OS-ARCH[-VARIANT],
# which `cloud release sign` reads the arch from; SHA256SUMS lists them.
#
#   VERSION  semver of the release (required by make release; no leading v)
#   COMMIT   commit stamped in (default: git rev-parse HEAD, +"-dirty" for a
#            tree with changes)
#   ARCHES   space-separated GOOS/GOARCH[/vN] (default the three below)
#   OUT      output directory (default dist/VERSION)
set -eu
GO=${GO:-go}
: "${VERSION:?set VERSION, such as make release VERSION=1.4.2}"
case "$VERSION" in v*) echo "release.sh: VERSION $VERSION: no leading v (semver, such as 1.4.2)" >&2; exit 2;; esac
if [ -z "${COMMIT:-}" ]; then
	COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
	if [ "$COMMIT" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
		COMMIT="$COMMIT-dirty"
	fi
fi
ARCHES=${ARCHES:-"linux/amd64 linux/arm64 linux/arm/v7"}
OUT=${OUT:-dist/$VERSION}
mkdir -p "$OUT"
: > "$OUT/SHA256SUMS.tmp"
for a in $ARCHES; do
	os=$(echo "$a" | cut -d/ -f1)
	arch=$(echo "$a" | cut -d/ -f2)
	variant=$(echo "$a" | cut -s -d/ -f3)
	name="edge-$VERSION-$os-$arch"
	goarm=
	if [ -n "$variant" ]; then
		name="$name-$variant"
		case "$arch" in
		arm) goarm=${variant#v} ;;
		*) echo "release.sh: $a: only arm takes a variant (v6, v7)" >&2; exit 2 ;;
		esac
	fi
	echo "building $OUT/$name ($a, version $VERSION, commit $COMMIT)"
	env CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOARM="$goarm" GOFLAGS= \
		"$GO" build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= -X main.Version=$VERSION -X main.Commit=$COMMIT" \
		-o "$OUT/$name" ./cmd/edge
	(cd "$OUT" && sha256sum "$name") >> "$OUT/SHA256SUMS.tmp"
done
mv "$OUT/SHA256SUMS.tmp" "$OUT/SHA256SUMS"
echo "sign each with: cloud release sign $OUT/edge-$VERSION-OS-ARCH --version $VERSION --channel CHANNEL"
