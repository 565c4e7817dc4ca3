//go:build !unix

package pgcluster

import (
	"errors"
	"syscall"
)

type credential struct{ Uid, Gid uint32 }

func dropRoot(string, string) (*credential, error) {
	return nil, errors.ErrUnsupported
}

func sysProcAttr(*credential, bool) *syscall.SysProcAttr { return nil }
