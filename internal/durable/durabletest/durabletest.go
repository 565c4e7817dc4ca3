// Package durabletest is a fault-injecting file system for tests of code
// that writes files through internal/durable: PowerCut puts the directories
// it tracks back to what a power cut would leave, dropping every write,
// creation, rename and removal that was not fsynced.
//
// The model is strict, as a file system may be: a file's bytes are durable
// as of its last fsync (a file never fsynced is left empty, as ext4 leaves
// a file renamed before its delayed allocation), and a directory's entries
// as of its last fsync. Anything in a tracked directory that did not go
// through the FS (a plain os.WriteFile, say) counts as never synced, so a
// test fails for code that bypasses internal/durable too.
package durabletest

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/internal/durable"
)

// FS wraps the operating system's file system and records what is durable.
type FS struct {
	mu      sync.Mutex
	live    map[string]map[string]*inode // tracked directories' entries now
	durable map[string]map[string]*inode // ... as of their last fsync
}

type inode struct {
	dir     bool
	mode    fs.FileMode
	data    []byte // the bytes written
	synced  []byte // the bytes as of the last fsync
	written bool   // written before this FS saw it, or fsynced since
}

// New installs a fault-injecting FS for every write through internal/durable
// until the test ends, and tracks dirs (which must exist): their state now
// counts as durable. Tests that use it must not run in parallel.
func New(t testing.TB, dirs ...string) *FS {
	t.Helper()
	f := &FS{live: map[string]map[string]*inode{}, durable: map[string]map[string]*inode{}}
	for _, d := range dirs {
		if err := f.track(filepath.Clean(d)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(durable.Use(f))
	return f
}

// track snapshots a directory as durable: its files' current bytes.
func (f *FS) track(dir string) error {
	if _, ok := f.live[dir]; ok {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("durabletest: track %s: %w", dir, err)
	}
	m := map[string]*inode{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			m[e.Name()] = &inode{dir: true, mode: fi.Mode().Perm()}
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m[e.Name()] = &inode{mode: fi.Mode().Perm(), data: b, synced: b, written: true}
	}
	f.live[dir], f.durable[dir] = m, maps.Clone(m)
	return nil
}

func split(p string) (string, string) {
	p = filepath.Clean(p)
	return filepath.Dir(p), filepath.Base(p)
}

func (f *FS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }

func (f *FS) Mkdir(name string, perm fs.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base := split(name)
	if err := f.track(dir); err != nil {
		return err
	}
	if err := os.Mkdir(name, perm); err != nil {
		return err
	}
	f.live[dir][base] = &inode{dir: true, mode: perm}
	f.live[filepath.Clean(name)], f.durable[filepath.Clean(name)] = map[string]*inode{}, map[string]*inode{}
	return nil
}

func (f *FS) CreateTemp(dir, pattern string) (durable.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := f.track(dir); err != nil {
		return nil, err
	}
	osf, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	n := &inode{mode: 0o600}
	f.live[dir][filepath.Base(osf.Name())] = n
	return &file{f: f, osf: osf, n: n}, nil
}

func (f *FS) entry(p string) (*inode, error) {
	dir, base := split(p)
	if err := f.track(dir); err != nil {
		return nil, err
	}
	n := f.live[dir][base]
	if n == nil {
		return nil, fmt.Errorf("durabletest: %s was not made through the FS", p)
	}
	return n, nil
}

func (f *FS) Rename(oldpath, newpath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.entry(oldpath)
	if err != nil {
		return err
	}
	nd, nb := split(newpath)
	if err := f.track(nd); err != nil {
		return err
	}
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	od, ob := split(oldpath)
	delete(f.live[od], ob)
	f.live[nd][nb] = n
	return nil
}

func (f *FS) Link(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.entry(oldname)
	if err != nil {
		return err
	}
	nd, nb := split(newname)
	if err := f.track(nd); err != nil {
		return err
	}
	if err := os.Link(oldname, newname); err != nil {
		return err
	}
	f.live[nd][nb] = n
	return nil
}

func (f *FS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base := split(name)
	if err := f.track(dir); err != nil {
		return err
	}
	if err := os.Remove(name); err != nil {
		return err
	}
	delete(f.live[dir], base)
	return nil
}

func (f *FS) SyncDir(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := f.track(dir); err != nil {
		return err
	}
	if err := durable.OS.SyncDir(durable.OS{}, dir); err != nil {
		return err
	}
	f.durable[dir] = maps.Clone(f.live[dir])
	return nil
}

type file struct {
	f   *FS
	osf *os.File
	n   *inode
}

func (w *file) Name() string { return w.osf.Name() }
func (w *file) Write(b []byte) (int, error) {
	k, err := w.osf.Write(b)
	w.f.mu.Lock()
	w.n.data = append(w.n.data, b[:k]...)
	w.f.mu.Unlock()
	return k, err
}
func (w *file) Chmod(mode fs.FileMode) error {
	if err := w.osf.Chmod(mode); err != nil {
		return err
	}
	w.f.mu.Lock()
	w.n.mode = mode
	w.f.mu.Unlock()
	return nil
}
func (w *file) Sync() error {
	if err := w.osf.Sync(); err != nil {
		return err
	}
	w.f.mu.Lock()
	w.n.synced, w.n.written = append([]byte(nil), w.n.data...), true
	w.f.mu.Unlock()
	return nil
}
func (w *file) Close() error { return w.osf.Close() }

// PowerCut rewrites every tracked directory to what survives a power cut:
// the entries as of its last fsync, each file with its bytes as of its last
// fsync (empty if it never had one). Entries that were never durable are
// removed, directories with everything in them. The FS then starts over,
// treating what is left as durable.
func (f *FS) PowerCut() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dirs := make([]string, 0, len(f.durable))
	for d := range f.durable {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs) // parents first
	gone := map[string]bool{}
	for _, d := range dirs {
		if gone[d] {
			continue
		}
		keep := f.durable[d]
		ents, err := os.ReadDir(d)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if _, ok := keep[e.Name()]; ok {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			for _, sub := range dirs {
				if sub == p || len(sub) > len(p) && sub[:len(p)+1] == p+string(filepath.Separator) {
					gone[sub] = true
				}
			}
		}
		for name, n := range keep {
			p := filepath.Join(d, name)
			if n.dir {
				if err := os.MkdirAll(p, n.mode|0o700); err != nil {
					return err
				}
				continue
			}
			b := n.synced
			if !n.written {
				b = nil
			}
			if err := os.WriteFile(p, b, n.mode); err != nil {
				return err
			}
			if err := os.Chmod(p, n.mode); err != nil {
				return err
			}
		}
	}
	tracked := dirs
	f.live, f.durable = map[string]map[string]*inode{}, map[string]map[string]*inode{}
	for _, d := range tracked {
		if _, err := os.Stat(d); err == nil {
			if err := f.track(d); err != nil {
				return err
			}
		}
	}
	return nil
}
