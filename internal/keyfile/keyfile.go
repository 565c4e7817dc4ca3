// Package keyfile stores Ed25519 private keys on disk as PKCS#8 PEM files
// with mode 0600, readable by openssl (`openssl pkey -in FILE -pubout`).
package keyfile

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/outpost-edge/outpost/internal/durable"
)

// ErrLoosePermissions: a key file that others could read is refused.
var ErrLoosePermissions = errors.New("key file is readable by others")

// Load reads a private key.
func Load(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s has mode %04o: %w; run chmod 600 %s", path, fi.Mode().Perm(), ErrLoosePermissions, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key %s: not a PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: a %T, want an Ed25519 key", path, k)
	}
	return ek, nil
}

// LoadOrCreate reads the key at path, or makes a new one there (and its
// directory, mode 0700) when there is none. created says which.
func LoadOrCreate(path string) (key ed25519.PrivateKey, created bool, err error) {
	k, err := Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, k, err = ed25519.GenerateKey(nil)
	if err != nil {
		return nil, false, err
	}
	if err := Save(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Save writes k to path durably (durable.CreateFile: temp file, fsync,
// link, fsync of the directory) with mode 0600, creating the directory
// (0700) when needed. It refuses to overwrite an existing file.
func Save(path string, k ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	err = durable.CreateFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("key %s already exists; remove it first if you mean to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("key %s: %w", path, err)
	}
	return nil
}
