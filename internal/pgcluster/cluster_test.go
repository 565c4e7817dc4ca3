package pgcluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/internal/pgcluster"
	"github.com/outpost-edge/outpost/internal/poll"
)

// mustTempDir returns a directory removed at cleanup. Not t.TempDir: as root
// the cluster runs as another user, who cannot enter t.TempDir's 0700 parent.
func mustTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "outpost-pgcluster-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func mustStart(tb testing.TB, opts pgcluster.Options) *pgcluster.Cluster {
	tb.Helper()
	opts.Logf = tb.Logf
	c, err := pgcluster.Start(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			if err := c.Stop(); err != nil {
				tb.Error(err)
			}
		}
	})
	return c
}

func TestFindBinaries(t *testing.T) {
	b, err := pgcluster.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(b.Initdb) != filepath.Dir(b.Postgres) {
		t.Errorf("initdb %s and postgres %s come from different directories", b.Initdb, b.Postgres)
	}
	if _, err := pgcluster.BinDir(t.TempDir()); !errors.Is(err, pgcluster.ErrNotFound) {
		t.Errorf("BinDir(empty dir) = %v, want ErrNotFound", err)
	}
}

func TestStartRequiresDir(t *testing.T) {
	if _, err := pgcluster.Start(context.Background(), pgcluster.Options{}); err == nil {
		t.Fatal("Start without Dir succeeded")
	}
}

// A restart on the same Dir keeps the data, as `cloud serve --dev` relies on.
func TestRestartReusesDataDir(t *testing.T) {
	ctx := context.Background()
	dir := mustTempDir(t)

	c := mustStart(t, pgcluster.Options{Dir: dir, NoFsync: true})
	if err := c.CreateDatabase(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateDatabase(ctx, "keep"); err != nil {
		t.Fatalf("CreateDatabase of an existing database: %v", err)
	}
	exec1(t, c.URL("keep"), `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')`)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid after Stop: %v", err)
	}

	c2 := mustStart(t, pgcluster.Options{Dir: dir})
	conn, err := pgx.Connect(ctx, c2.URL("keep"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "still here" {
		t.Fatalf("got %q after restart", v)
	}
}

func exec1(tb testing.TB, url, sql string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		tb.Fatal(err)
	}
}

const helperEnv = "PGCLUSTER_TEST_HELPER_DIR"

// TestHelperProcess is the child of TestPdeathsigKillsServer: it starts a
// cluster and waits to be killed, never calling Stop.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestPdeathsigKillsServer")
	}
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{Dir: dir, NoFsync: true})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("READY", c.Port())
	select {}
}

func TestPdeathsigKillsServer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux only")
	}
	dir := mustTempDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERROR") {
			t.Fatal(line)
		}
		if strings.HasPrefix(line, "READY") {
			ready = true
			break
		}
	}
	if !ready {
		t.Fatal("helper exited before its cluster was ready")
	}
	pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	if !alive(pid) {
		t.Fatalf("postgres %d not running while its owner is", pid)
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no chance to Stop
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Cleanup(func() {
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	poll.For(t, 10*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("postgres %d still running after its owner was killed", pid)
		}
		return nil
	})
}

// alive reports whether pid runs and is not a zombie (a container's init
// may be slow to reap, or not reap at all).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
