package firmware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// DirSource reads metadata from a local directory laid out as a TUF
// repository (a mounted share, a test's repository).
type DirSource string

// Fetch implements Source.
func (d DirSource) Fetch(_ context.Context, name string, max int64) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("metadata name %q: not a plain relative path", name)
	}
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadCapped(f, name, max)
}

// ReadCapped reads all of r if it is at most max bytes, and fails naming
// what was read otherwise, without reading more than max+1 bytes.
func ReadCapped(r io.Reader, name string, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is longer than %d bytes", ErrUntrusted, name, max)
	}
	return b, nil
}
