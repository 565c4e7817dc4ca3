//go:build unix

package pgcluster

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// credential is who the children run as.
type credential = syscall.Credential

// dropRoot returns the credentials to run postgres with, or nil when this
// process is not root. Postgres refuses to run as root, so as root it picks
// runAs (default "postgres", else "nobody"), chowns dir to that user and
// checks that the user can reach dir.
func dropRoot(runAs, dir string) (*credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	if runAs != "" {
		u, err = user.Lookup(runAs)
	} else if u, err = user.Lookup("postgres"); err != nil {
		u, err = user.Lookup("nobody")
	}
	if err != nil {
		return nil, fmt.Errorf("running as root, and no user to run postgres as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s has a non-numeric uid or gid", u.Username)
	}
	err = filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(uid), int(gid))
	})
	if err != nil {
		return nil, fmt.Errorf("chown %s to %s: %w", dir, u.Username, err)
	}
	// Every ancestor must be searchable by that user, or initdb fails with
	// a far less clear message.
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		searchable := perm&0o001 != 0 ||
			ok && uint64(st.Uid) == uid && perm&0o100 != 0 ||
			ok && uint64(st.Gid) == gid && perm&0o010 != 0
		if !searchable {
			return nil, fmt.Errorf("running as root, so postgres runs as user %s, who cannot reach %s through %s (mode %v): choose a directory it can reach", u.Username, dir, d, fi.Mode())
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// sysProcAttr runs the child as cred (when not nil) in its own process
// group, so that a terminal's Ctrl-C reaches only its owner, which decides
// when to stop it. A server also gets the parent-death signal where the
// system has one.
func sysProcAttr(cred *credential, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if server {
		setPdeathsig(a)
	}
	return a
}
