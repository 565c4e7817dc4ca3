// Package durable writes the files a program needs to start again (keys,
// the edge's identity, device credentials) so that they survive a power
// cut: a temp file in the same directory, written and fsynced, renamed (or
// linked) into place, then the directory fsynced. Without the last two
// syncs a file can be 0 bytes or absent after a power cut even though the
// call that wrote it returned, as ext4 with delayed allocation shows after
// a rename that was not synced. Directories it creates are made durable
// the same way (their parent directory is fsynced).
//
// Every write goes through an FS, the operating system's by default; tests
// install a fault-injecting one (durabletest) that drops what was not
// synced at a simulated power cut.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// FS is what the package needs of a file system.
type FS interface {
	Stat(name string) (fs.FileInfo, error)
	Mkdir(name string, perm fs.FileMode) error
	// CreateTemp creates a new file in dir, as os.CreateTemp does.
	CreateTemp(dir, pattern string) (File, error)
	Rename(oldpath, newpath string) error
	// Link makes newname a hard link to oldname; it fails when newname
	// exists.
	Link(oldname, newname string) error
	Remove(name string) error
	// SyncDir fsyncs a directory, making its entries (creations, renames,
	// removals) durable.
	SyncDir(dir string) error
}

// File is an open file being written.
type File interface {
	Name() string
	Write(b []byte) (int, error)
	Chmod(mode fs.FileMode) error
	Sync() error
	Close() error
}

// OS is the operating system's file system.
type OS struct{}

func (OS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (OS) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (OS) CreateTemp(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }
func (OS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (OS) Link(oldname, newname string) error           { return os.Link(oldname, newname) }
func (OS) Remove(name string) error                     { return os.Remove(name) }
func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

var (
	mu      sync.RWMutex
	current FS = OS{}
)

// Use makes f the file system of every write until restore is called. It
// is for tests (durabletest.New calls it); tests that use it must not run
// in parallel with others that write files through this package.
func Use(f FS) (restore func()) {
	mu.Lock()
	old := current
	current = f
	mu.Unlock()
	return func() {
		mu.Lock()
		current = old
		mu.Unlock()
	}
}

func fsys() FS {
	mu.RLock()
	defer mu.RUnlock()
	return current
}

// WriteFile writes data to path durably and atomically, replacing what
// was there: after a crash or power cut at any point the file holds the
// old bytes or the new ones, whole, and once WriteFile returns nil it holds
// the new ones. The file gets mode perm; missing directories are created
// with mode 0700.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	if err := write(fsys(), path, data, perm, true); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// CreateFile is WriteFile for a file that must not be replaced, such as a
// private key: it fails with an error wrapping fs.ErrExist when path
// exists, even when another process creates it at the same moment.
func CreateFile(path string, data []byte, perm fs.FileMode) error {
	if err := write(fsys(), path, data, perm, false); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs dir, making the creations, renames and removals of its
// entries durable (for callers that rename or remove files themselves).
func SyncDir(dir string) error {
	if err := fsys().SyncDir(dir); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates dir and any missing parents with mode perm, and fsyncs
// the parent of each one it creates, so that they survive a power cut.
func MkdirAll(dir string, perm fs.FileMode) error {
	if err := mkdirAll(fsys(), filepath.Clean(dir), perm); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return nil
}

func mkdirAll(f FS, dir string, perm fs.FileMode) error {
	fi, err := f.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("%s is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(f, parent, perm); err != nil {
			return err
		}
	}
	if err := f.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return f.SyncDir(parent)
}

func write(f FS, path string, data []byte, perm fs.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	if err := mkdirAll(f, dir, 0o700); err != nil {
		return err
	}
	if !replace {
		if _, err := f.Stat(path); err == nil {
			return fs.ErrExist
		}
	}
	tmp, err := f.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	placed := false
	defer func() {
		if !placed {
			_ = f.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		if err := f.Rename(name, path); err != nil {
			return err
		}
	} else {
		// A link fails if path exists; the temp name is removed after it.
		if err := f.Link(name, path); err != nil {
			return err
		}
		if err := f.Remove(name); err != nil {
			return err
		}
	}
	placed = true
	if err := f.SyncDir(dir); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
