package flagenv_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/internal/flagenv"
)

func TestPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.conf")
	_ = os.WriteFile(cfg, []byte("# comment\na = from-file\nb = from-file\nc = from-file\n"), 0o600)
	t.Setenv("OUTPOST_B", "from-env")
	t.Setenv("OUTPOST_C", "from-env")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := fs.String("a", "def", "")
	b := fs.String("b", "def", "")
	c := fs.String("c", "def", "")
	d := fs.String("d", "def", "")
	fs.String("config", "", "")
	if err := flagenv.Parse(fs, []string{"--c=from-flag", "--config", cfg}, "OUTPOST_", "config"); err != nil {
		t.Fatal(err)
	}
	if *a != "from-file" || *b != "from-env" || *c != "from-flag" || *d != "def" {
		t.Fatalf("a=%s b=%s c=%s d=%s", *a, *b, *c, *d)
	}
	_ = os.WriteFile(cfg, []byte("nope = 1\n"), 0o600)
	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.String("config", "", "")
	if err := flagenv.Parse(fs2, []string{"--config", cfg}, "OUTPOST_", "config"); err == nil {
		t.Fatal("unknown setting accepted")
	}
}
