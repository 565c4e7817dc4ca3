package intake

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/protocol"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// The credentials file is JSON, mode 0600:
//
//	{"version": 1, "devices": [{"id": "till-1", "hash": "$argon2id$v=19$m=19456,t=2,p=1$...", "created": "..."}]}
//
// hash is argon2id (written by AddDevice) or bcrypt ($2a$, $2b$, $2y$, for
// hashes made by other tools such as htpasswd -B). Secrets are never stored.

const credFileVersion = 1

// Argon2id parameters for new hashes: the OWASP minimum (19 MiB, 2 passes,
// 1 lane). A verification costs tens of milliseconds on a small gateway;
// Credentials caches successes so that this is paid once per device and
// secret, not once per CONNECT or HTTP request.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// MinSecretLen is the shortest secret AddDevice accepts from an operator.
// Generated secrets are 32 random bytes (43 characters of base64url).
const MinSecretLen = 16

// maxSlowVerifies bounds concurrent argon2id/bcrypt verifications, so that a
// flood of CONNECTs with wrong secrets costs bounded memory (19 MiB each).
const maxSlowVerifies = 2

type credFile struct {
	Version int         `json:"version"`
	Devices []credEntry `json:"devices"`
}

type credEntry struct {
	ID      string    `json:"id"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
}

// DeviceInfo describes one device in a credentials file. It never holds
// the secret or its hash.
type DeviceInfo struct {
	ID      string
	Algo    string // "argon2id" or "bcrypt"
	Created time.Time
}

// AddDevice adds device id to the credentials file at path, creating the
// file (mode 0600) when it does not exist. When secret is empty a random one
// is generated. It returns the secret, which is stored only as a hash: the
// caller (the `edge devices add` CLI) prints it once.
func AddDevice(path, id, secret string) (string, error) {
	if err := validateDevice(id); err != nil {
		return "", fmt.Errorf("add device: %w", err)
	}
	if secret == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("add device %s: %w", id, err)
		}
		secret = base64.RawURLEncoding.EncodeToString(b)
	} else if len(secret) < MinSecretLen {
		return "", fmt.Errorf("add device %s: secret is %d characters; use at least %d, or leave it empty to generate one", id, len(secret), MinSecretLen)
	}
	f, err := readCredFile(path, true)
	if err != nil {
		return "", err
	}
	if slices.ContainsFunc(f.Devices, func(e credEntry) bool { return e.ID == id }) {
		return "", fmt.Errorf("add device %s: %w (remove it first to change its secret)", id, ErrDeviceExists)
	}
	h, err := hashSecret(secret)
	if err != nil {
		return "", fmt.Errorf("add device %s: %w", id, err)
	}
	f.Devices = append(f.Devices, credEntry{ID: id, Hash: h, Created: time.Now().UTC().Truncate(time.Second)})
	slices.SortFunc(f.Devices, func(a, b credEntry) int { return strings.Compare(a.ID, b.ID) })
	if err := writeCredFile(path, f); err != nil {
		return "", err
	}
	return secret, nil
}

// ListDevices returns the devices in the credentials file at path, sorted by
// id. A missing file holds no devices.
func ListDevices(path string) ([]DeviceInfo, error) {
	f, err := readCredFile(path, true)
	if err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, 0, len(f.Devices))
	for _, e := range f.Devices {
		out = append(out, DeviceInfo{ID: e.ID, Algo: hashAlgo(e.Hash), Created: e.Created})
	}
	return out, nil
}

// RemoveDevice removes device id from the credentials file at path. A running
// edge notices the change at the device's next CONNECT or HTTP request; a
// connection already open stays open until it ends.
func RemoveDevice(path, id string) error {
	f, err := readCredFile(path, false)
	if err != nil {
		return err
	}
	n := len(f.Devices)
	f.Devices = slices.DeleteFunc(f.Devices, func(e credEntry) bool { return e.ID == id })
	if len(f.Devices) == n {
		return fmt.Errorf("remove device %s: %w", id, ErrUnknownDevice)
	}
	return writeCredFile(path, f)
}

// validateDevice checks a device id a credential may name: a valid name,
// and not protocol.EdgeDevice, under which the edge records its own events.
func validateDevice(id string) error {
	if err := protocol.ValidateName("device", id); err != nil {
		return err
	}
	if id == protocol.EdgeDevice {
		return &protocol.FieldError{Field: "device", Msg: fmt.Sprintf("%q is the edge's own name for the records it makes itself; choose another id", id)}
	}
	return nil
}

func readCredFile(path string, missingOK bool) (*credFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return &credFile{Version: credFileVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	if err := checkCredMode(path); err != nil {
		return nil, err
	}
	return parseCredFile(path, b)
}

func parseCredFile(path string, b []byte) (*credFile, error) {
	var f credFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	if f.Version != credFileVersion {
		return nil, fmt.Errorf("read credentials %s: version %d; this edge reads version %d", path, f.Version, credFileVersion)
	}
	seen := map[string]bool{}
	for i, e := range f.Devices {
		if err := validateDevice(e.ID); err != nil {
			return nil, fmt.Errorf("read credentials %s: devices[%d]: %w", path, i, err)
		}
		if seen[e.ID] {
			return nil, fmt.Errorf("read credentials %s: device %s is listed twice", path, e.ID)
		}
		seen[e.ID] = true
		if hashAlgo(e.Hash) == "" {
			return nil, fmt.Errorf("read credentials %s: device %s: hash is neither argon2id nor bcrypt", path, e.ID)
		}
	}
	return &f, nil
}

func checkCredMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read credentials %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("credentials %s has mode %04o: others may read the hashes; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}

// writeCredFile replaces the file atomically and durably
// (durable.WriteFile: a temp file written and fsynced, renamed over the
// old one, the directory fsynced; a missing directory is created, 0700),
// so that a crash or power cut leaves the old or the new file whole.
// Concurrent writers are not coordinated: the last rename wins.
func writeCredFile(path string, f *credFile) error {
	f.Version = credFileVersion
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("write credentials %s: %w", path, err)
	}
	if err := durable.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	return nil
}

func hashAlgo(h string) string {
	switch {
	case strings.HasPrefix(h, "$argon2id$"):
		return "argon2id"
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
		return "bcrypt"
	}
	return ""
}

func hashSecret(secret string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(secret), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// checkSecret verifies secret against a stored hash, in constant time for
// the hash's own work.
func checkSecret(hash, secret string) (bool, error) {
	switch hashAlgo(hash) {
	case "bcrypt":
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	case "argon2id":
		// $argon2id$v=19$m=19456,t=2,p=1$salt$key
		parts := strings.Split(hash, "$")
		if len(parts) != 6 || parts[2] != "v="+strconv.Itoa(argon2.Version) {
			return false, errors.New("argon2id hash: want $argon2id$v=19$m=..,t=..,p=..$salt$key")
		}
		var m, t uint32
		var p uint8
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
			return false, fmt.Errorf("argon2id hash parameters %q: %w", parts[3], err)
		}
		if m > 1<<20 || t > 16 || p == 0 { // at most 1 GiB and 16 passes: a hostile file must not exhaust the edge
			return false, fmt.Errorf("argon2id hash parameters %q are out of range", parts[3])
		}
		salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
		key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
		if err := errors.Join(err1, err2); err != nil || len(key) == 0 || len(key) > 128 {
			return false, fmt.Errorf("argon2id hash: bad salt or key encoding")
		}
		got := argon2.IDKey([]byte(secret), salt, t, m, p, uint32(len(key)))
		return subtle.ConstantTimeCompare(got, key) == 1, nil
	}
	return false, errors.New("hash is neither argon2id nor bcrypt")
}

// Credentials checks device secrets against a credentials file. It re-reads
// the file whenever its size, mode or modification time changes (checked
// with one stat per call), so `edge devices add|remove` takes effect without
// a restart. A missing file holds no devices. It is safe for concurrent use.
//
// Successful verifications are cached as an HMAC of the secret under a
// per-process random key, together with the stored hash they matched, so a
// device pays the argon2id or bcrypt cost once, not on every CONNECT or HTTP
// request; changing or removing the device's entry invalidates it.
type Credentials struct {
	path string
	key  [32]byte      // HMAC key for the cache; never leaves the process
	slow chan struct{} // bounds concurrent slow verifications

	mu     sync.Mutex // guards the fields below
	stamp  fileStamp
	hashes map[string]string // device id → stored hash
	cache  map[string]cacheEntry
}

// cacheEntry is the last secret that verified for a device, and the stored
// hash it verified against: an entry counts only while that hash is current.
type cacheEntry struct {
	hash string
	mac  [32]byte
}

// fileStamp identifies one version of the file. The file is replaced by
// rename on every change, so its identity (inode) changes too, even when
// size and modification time do not.
type fileStamp struct {
	fi    fs.FileInfo // nil: no file
	size  int64
	mtime time.Time
	mode  fs.FileMode
}

func (a fileStamp) same(b fileStamp) bool {
	if a.fi == nil || b.fi == nil {
		return a.fi == nil && b.fi == nil
	}
	return os.SameFile(a.fi, b.fi) && a.size == b.size && a.mtime.Equal(b.mtime) && a.mode == b.mode
}

// OpenCredentials reads the credentials file at path.
func OpenCredentials(path string) (*Credentials, error) {
	c := &Credentials{path: path, slow: make(chan struct{}, maxSlowVerifies), cache: map[string]cacheEntry{}}
	if _, err := rand.Read(c.key[:]); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refreshLocked(); err != nil {
		return nil, err
	}
	return c, nil
}

// refreshLocked re-reads the file when its stamp changed. On an error the
// previous contents stay in force (the error is returned so callers can log
// it), except that a file whose mode became group- or world-readable is
// refused outright.
func (c *Credentials) refreshLocked() error {
	fi, err := os.Stat(c.path)
	var st fileStamp
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("stat credentials %s: %w", c.path, err)
	default:
		st = fileStamp{fi: fi, size: fi.Size(), mtime: fi.ModTime(), mode: fi.Mode()}
	}
	if c.hashes != nil && st.same(c.stamp) {
		return nil
	}
	hashes := map[string]string{}
	if st.fi != nil {
		f, err := readCredFile(c.path, true)
		if err != nil {
			if c.hashes == nil || st.mode.Perm()&0o077 != 0 {
				c.hashes = map[string]string{}
			}
			return err
		}
		for _, e := range f.Devices {
			hashes[e.ID] = e.Hash
		}
	}
	c.stamp, c.hashes = st, hashes
	for id, e := range c.cache {
		if hashes[id] != e.hash {
			delete(c.cache, id)
		}
	}
	return nil
}

// Known reports whether device id is listed. A client certificate
// authenticates only a listed device, so that `edge devices remove` locks
// it out as it does a secret.
func (c *Credentials) Known(id string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.refreshLocked()
	_, ok := c.hashes[id]
	return ok, err
}

// Verify checks a device's secret. It returns nil, ErrUnknownDevice,
// ErrBadSecret, or an error reading the file.
func (c *Credentials) Verify(id, secret string) error {
	mac := c.mac(secret)
	c.mu.Lock()
	rerr := c.refreshLocked()
	hash, ok := c.hashes[id]
	cached, hit := c.cache[id]
	c.mu.Unlock()
	if !ok {
		if rerr != nil {
			return rerr
		}
		// Do the work a listed device costs, so that an unknown id does not
		// answer faster than a bad secret.
		c.slow <- struct{}{}
		checkSecret(unknownDeviceHash(), secret)
		<-c.slow
		return ErrUnknownDevice
	}
	if hit && cached.hash == hash && hmac.Equal(cached.mac[:], mac[:]) {
		return nil
	}
	c.slow <- struct{}{}
	good, err := checkSecret(hash, secret)
	<-c.slow
	if err != nil {
		return fmt.Errorf("verify device %s: %w", id, err)
	}
	if !good {
		return ErrBadSecret
	}
	c.mu.Lock()
	c.cache[id] = cacheEntry{hash: hash, mac: mac}
	c.mu.Unlock()
	return nil
}

// unknownDeviceHash is a hash of a random secret with the parameters new
// secrets get, checked against when a device is not listed.
var unknownDeviceHash = sync.OnceValue(func() string {
	var b [16]byte
	rand.Read(b[:])
	h, err := hashSecret(string(b[:]))
	if err != nil {
		panic(err)
	}
	return h
})

func (c *Credentials) mac(secret string) [32]byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(secret))
	var out [32]byte
	h.Sum(out[:0])
	return out
}
