package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults for Options.
const (
	DefaultUser         = "outpost"
	DefaultStartTimeout = 60 * time.Second
	DefaultStopTimeout  = 30 * time.Second
)

// portAttempts bounds the retries when a picked free port is taken by
// someone else before postgres binds it.
const portAttempts = 5

// Options configure Start. The zero value of each field but Dir is usable.
type Options struct {
	// Dir holds the cluster (see the package doc). Required. It is created
	// if missing; an initialized Dir/data is reused as it is.
	Dir string
	// Port is the TCP port on 127.0.0.1. Zero picks a free port, and picks
	// another when postgres finds it taken.
	Port int
	// User is the superuser that initdb creates. Default DefaultUser. When
	// Dir/data already exists it must be the user it was created with.
	User string
	// BinDir is the directory holding initdb and postgres. Empty means
	// FindBinaries.
	BinDir string
	// RunAs is the OS user that runs initdb and postgres when this process
	// is root. Default "postgres" if that user exists, else "nobody".
	// Ignored when not root.
	RunAs string
	// NoFsync trades crash safety for speed: initdb --no-sync, and fsync,
	// synchronous_commit and full_page_writes off. For throwaway clusters.
	NoFsync bool
	// Settings are extra server settings, passed as -c name=value
	// (for example shared_preload_libraries=timescaledb).
	Settings map[string]string
	// StartTimeout bounds initdb plus waiting for the server to accept
	// connections. Default DefaultStartTimeout.
	StartTimeout time.Duration
	// StopTimeout bounds the fast shutdown in Stop before the server is
	// killed. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// Logf, when set, receives progress messages.
	Logf func(format string, args ...any)
}

// Cluster is a running postgres started by Start.
type Cluster struct {
	opts    Options
	bins    Binaries
	port    int
	cmd     *exec.Cmd
	logFile *os.File

	done    chan struct{} // closed when the postgres process has exited
	waitErr error         // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start initializes Options.Dir/data unless it is initialized already,
// starts postgres on it and returns once it accepts connections. ctx bounds
// only the start: cancelling it later does not stop the server; Stop does.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	opts.Dir = dir
	if opts.User == "" {
		opts.User = DefaultUser
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	var bins Binaries
	if opts.BinDir != "" {
		bins, err = BinDir(opts.BinDir)
	} else {
		bins, err = FindBinaries()
	}
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: create %s: %w", dir, err)
	}
	cred, err := dropRoot(opts.RunAs, dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: open server log: %w", err)
	}
	if cred != nil {
		_ = os.Chown(logPath, int(cred.Uid), int(cred.Gid))
	}
	c := &Cluster{opts: opts, bins: bins, logFile: logFile}
	ok := false
	defer func() {
		if !ok {
			logFile.Close()
		}
	}()

	if err := c.initdb(ctx, cred); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, fmt.Errorf("pgcluster: pick a free port: %w", err)
			}
		}
		err := c.start(ctx, cred, port)
		if err == nil {
			break
		}
		if errors.Is(err, errPortInUse) && opts.Port == 0 && attempt < portAttempts {
			opts.Logf("pgcluster: port %d was taken; trying another", port)
			continue
		}
		return nil, err
	}
	opts.Logf("pgcluster: postgres %s ready on 127.0.0.1:%d, data in %s", bins.Postgres, c.port, c.DataDir())
	ok = true
	return c, nil
}

// DataDir is the cluster's data directory, Options.Dir/data.
func (c *Cluster) DataDir() string { return filepath.Join(c.opts.Dir, "data") }

// LogPath is the file that receives initdb's and the server's output.
func (c *Cluster) LogPath() string { return c.logFile.Name() }

// Port is the TCP port the server listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Binaries are the programs the cluster runs.
func (c *Cluster) Binaries() Binaries { return c.bins }

// URL is a postgres:// connection string for database db as the superuser.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(c.opts.User),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Done is closed when the server process has exited, whether through Stop
// or not.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// CreateDatabase creates database name, owned by the superuser, unless it
// exists already.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err == nil && !exists {
		_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	}
	if err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	return nil
}

// Stop shuts the server down (SIGINT, fast shutdown: open sessions are
// ended), waits up to Options.StopTimeout and then kills it. It leaves
// Options.Dir in place. It returns an error if the server had already
// died or did not stop in time. Calling it again returns the same result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		defer c.logFile.Close()
		select {
		case <-c.done:
			c.stopErr = fmt.Errorf("pgcluster: postgres had exited before Stop: %v%s", c.waitErr, c.logTail())
			return
		default:
		}
		_ = c.cmd.Process.Signal(os.Interrupt)
		t := time.NewTimer(c.opts.StopTimeout)
		defer t.Stop()
		select {
		case <-c.done:
			if c.waitErr != nil {
				c.stopErr = fmt.Errorf("pgcluster: postgres shutdown: %w%s", c.waitErr, c.logTail())
			}
		case <-t.C:
			_ = c.cmd.Process.Kill()
			<-c.done
			c.stopErr = fmt.Errorf("pgcluster: postgres did not shut down within %v; killed it%s", c.opts.StopTimeout, c.logTail())
		}
	})
	return c.stopErr
}

// LogTail returns about the last n lines of the server log.
func (c *Cluster) LogTail(n int) string { return tailFile(c.LogPath(), 0, n) }

func (c *Cluster) logTail() string {
	return "\n--- tail of " + c.LogPath() + " ---\n" + c.LogTail(30)
}

// initdb creates the data directory unless it holds a cluster already.
func (c *Cluster) initdb(ctx context.Context, cred *credential) error {
	data := c.DataDir()
	if v, err := os.ReadFile(filepath.Join(data, "PG_VERSION")); err == nil {
		return c.checkVersion(strings.TrimSpace(string(v)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pgcluster: %w", err)
	}
	args := []string{
		"-D", data,
		"-U", c.opts.User,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C", // byte-order collation: deterministic and fast
	}
	if c.opts.NoFsync {
		args = append(args, "--no-sync")
	}
	c.opts.Logf("pgcluster: %s %s", c.bins.Initdb, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, c.bins.Initdb, args...)
	cmd.Dir = c.opts.Dir // initdb needs a working directory it can read
	cmd.Stdout, cmd.Stderr = c.logFile, c.logFile
	cmd.SysProcAttr = sysProcAttr(cred, false)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w%s", data, err, c.logTail())
	}
	return nil
}

func (c *Cluster) checkVersion(dataVersion string) error {
	out, err := exec.Command(c.bins.Postgres, "-V").Output()
	if err != nil {
		return fmt.Errorf("pgcluster: %s -V: %w", c.bins.Postgres, err)
	}
	// "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
	fields := strings.Fields(string(out))
	if len(fields) < 3 {
		return fmt.Errorf("pgcluster: %s -V: unexpected output %q", c.bins.Postgres, out)
	}
	// PG_VERSION holds the major version: "15", or "9.6" before 10.
	if v := fields[2]; v != dataVersion && !strings.HasPrefix(v, dataVersion+".") {
		return fmt.Errorf("pgcluster: %s was made by PostgreSQL %s but %s is version %s", c.DataDir(), dataVersion, c.bins.Postgres, v)
	}
	return nil
}

var errPortInUse = errors.New("port in use")

// start runs postgres on port and waits until it accepts connections.
func (c *Cluster) start(ctx context.Context, cred *credential, port int) error {
	logStart := int64(0)
	if fi, err := c.logFile.Stat(); err == nil {
		logStart = fi.Size()
	}
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": quoteDir(c.opts.Dir),
		"unix_socket_permissions": "0700",
	}
	// A Unix socket path must fit in sockaddr_un.sun_path (104 bytes on
	// BSDs and macOS, 108 on Linux); a deep Dir gets TCP only.
	if len(c.opts.Dir)+len("/.s.PGSQL.65535.lock") >= 104 {
		settings["unix_socket_directories"] = ""
	}
	if c.opts.NoFsync {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	args := []string{"-D", c.DataDir()}
	for _, k := range names {
		args = append(args, "-c", k+"="+settings[k])
	}

	cmd := exec.Command(c.bins.Postgres, args...)
	cmd.Dir = c.opts.Dir
	cmd.Stdout, cmd.Stderr = c.logFile, c.logFile
	cmd.SysProcAttr = sysProcAttr(cred, true)
	c.cmd, c.port = cmd, port
	c.done = make(chan struct{})
	c.waitErr = nil
	if err := startOwned(cmd, c.done, &c.waitErr); err != nil {
		return fmt.Errorf("pgcluster: start %s: %w", c.bins.Postgres, err)
	}

	err := c.waitReady(ctx)
	if err == nil {
		return nil
	}
	select {
	case <-c.done:
		// It exited on its own; say why.
		tail := tailFile(c.LogPath(), logStart, 30)
		if strings.Contains(tail, "could not create any TCP/IP sockets") ||
			strings.Contains(tail, "Address already in use") {
			return fmt.Errorf("pgcluster: postgres on port %d: %w", port, errPortInUse)
		}
		return fmt.Errorf("pgcluster: postgres exited during start-up (%v)\n--- tail of %s ---\n%s", c.waitErr, c.LogPath(), tail)
	default:
		_ = cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("pgcluster: postgres on 127.0.0.1:%d not ready: %w\n--- tail of %s ---\n%s", port, err, c.LogPath(), tailFile(c.LogPath(), logStart, 30))
	}
}

// waitReady polls with a connection until one succeeds, the server exits
// or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	backoff := 5 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		t := time.NewTimer(backoff)
		select {
		case <-c.done:
			t.Stop()
			return errors.New("exited")
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// startOwned starts cmd from a goroutine locked to its OS thread, which then
// waits for it. Linux delivers Pdeathsig when the thread that forked the
// child exits, not the process (golang/go#27505), and the Go runtime may end
// an idle thread; keeping the forking thread busy in Wait for the child's
// whole life makes the signal fire only when this process dies.
func startOwned(cmd *exec.Cmd, done chan<- struct{}, waitErr *error) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		*waitErr = cmd.Wait()
		close(done)
	}()
	return <-started
}

// quoteDir quotes a directory for a comma-separated server list setting.
func quoteDir(dir string) string {
	if strings.ContainsAny(dir, `, "`) {
		return `"` + strings.ReplaceAll(dir, `"`, `""`) + `"`
	}
	return dir
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailFile returns the last n lines of path from offset from on.
func tailFile(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if from > 0 && from <= int64(len(b)) {
		b = b[from:]
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
