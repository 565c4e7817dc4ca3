package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNotFound means FindBinaries found no initdb and postgres pair.
var ErrNotFound = errors.New("PostgreSQL server binaries (initdb, postgres) not found")

// Binaries are the server programs of one PostgreSQL installation.
type Binaries struct {
	Initdb   string
	Postgres string
}

// searchGlobs are the installation directories looked at after PATH, in this
// order; within a glob the highest version comes first. Debian and Ubuntu put
// the server under /usr/lib/postgresql/N/bin, off PATH. Homebrew's versioned
// formulae are keg-only, so `brew install postgresql@15` does not put them on
// PATH either.
var searchGlobs = []string{
	"/usr/lib/postgresql/*/bin",
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
}

// FindBinaries looks for initdb and postgres: first on PATH, then under
// /usr/lib/postgresql/*/bin (highest version first), then in Homebrew's
// versioned prefixes. Both programs are taken from the same directory
// (after resolving symlinks), so that they belong to one installation.
// It returns an error wrapping ErrNotFound when there is no such pair.
func FindBinaries() (Binaries, error) {
	var dirs []string
	var pathPair *Binaries
	initdb, err1 := exec.LookPath("initdb")
	postgres, err2 := exec.LookPath("postgres")
	if err1 == nil {
		dirs = append(dirs, resolvedDir(initdb))
	}
	if err2 == nil {
		dirs = append(dirs, resolvedDir(postgres))
	}
	if err1 == nil && err2 == nil {
		pathPair = &Binaries{Initdb: resolve(initdb), Postgres: resolve(postgres)}
	}
	for _, g := range searchGlobs {
		dirs = append(dirs, globByVersion(g)...)
	}
	for _, d := range dirs {
		if b, ok := pairIn(d); ok {
			return b, nil
		}
	}
	// A pair from PATH whose halves live in different directories is a
	// last resort: some packagings split them, but mixing versions fails.
	if pathPair != nil {
		return *pathPair, nil
	}
	return Binaries{}, fmt.Errorf("%w on PATH or in %s", ErrNotFound, strings.Join(searchGlobs, ", "))
}

// BinDir returns the pair in dir, or an error wrapping ErrNotFound.
func BinDir(dir string) (Binaries, error) {
	if b, ok := pairIn(dir); ok {
		return b, nil
	}
	return Binaries{}, fmt.Errorf("%w in %s", ErrNotFound, dir)
}

func pairIn(dir string) (Binaries, bool) {
	b := Binaries{Initdb: filepath.Join(dir, "initdb"), Postgres: filepath.Join(dir, "postgres")}
	if isExecutable(b.Initdb) && isExecutable(b.Postgres) {
		return b, true
	}
	return Binaries{}, false
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func resolve(path string) string {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	if a, err := filepath.Abs(path); err == nil {
		path = a
	}
	return path
}

func resolvedDir(path string) string { return filepath.Dir(resolve(path)) }

// globByVersion expands pattern, whose single * is a version such as "15"
// or "9.6", highest version first.
func globByVersion(pattern string) []string {
	matches, _ := filepath.Glob(pattern)
	star := strings.Index(pattern, "*")
	prefix, suffix := pattern[:star], pattern[star+1:]
	version := func(m string) []int {
		s := strings.TrimSuffix(strings.TrimPrefix(m, prefix), suffix)
		var v []int
		for _, f := range strings.Split(s, ".") {
			n, err := strconv.Atoi(f)
			if err != nil {
				n = -1
			}
			v = append(v, n)
		}
		return v
	}
	sort.SliceStable(matches, func(i, j int) bool {
		a, b := version(matches[i]), version(matches[j])
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
	return matches
}
