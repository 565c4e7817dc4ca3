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
	"path/filepath"
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

// Save writes k to path atomically (temp file, fsync, rename) with mode 0600.
// It refuses to overwrite an existing file.
func Save(path string, k ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("key dir %s: %w", dir, err)
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("key %s already exists; remove it first if you mean to replace it", path)
	}
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil { // fails if path exists
		return fmt.Errorf("key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
