package ledger

import (
	"strings"
	"testing"
	"testing/fstest"
)

// TestLoadMigrationsVariants: a version states the SQL both partitioning
// modes share once, in its plain file, and a mode's file only what that
// mode adds; a version without a plain file needs both modes.
func TestLoadMigrationsVariants(t *testing.T) {
	ms, err := loadMigrations(fstest.MapFS{
		"migrations/0001_init.sql":               {Data: []byte("CREATE TABLE a ();")},
		"migrations/0002_ledger.native.sql":      {Data: []byte("native 2")},
		"migrations/0002_ledger.timescaledb.sql": {Data: []byte("timescale 2")},
		"migrations/0003_more.sql":               {Data: []byte("common 3")},
		"migrations/0003_more.timescaledb.sql":   {Data: []byte("chunks 3")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[2].sql != "common 3" || ms[2].variants[PartitionTimescaleDB] != "chunks 3" || ms[2].variants[PartitionNative] != "" {
		t.Fatalf("loaded %+v", ms)
	}
	// The embedded history: 0009's SQL is written once.
	for _, m := range migrations {
		if m.version == 9 && (m.sql == "" || m.variants[PartitionNative] != "" || !strings.Contains(m.variants[PartitionTimescaleDB], "set_chunk_time_interval")) {
			t.Errorf("0009: plain %d bytes, variants %v", len(m.sql), m.variants)
		}
	}
	_, err = loadMigrations(fstest.MapFS{
		"migrations/0001_init.native.sql": {Data: []byte("native only")},
	})
	if err == nil || !strings.Contains(err.Error(), "0001") {
		t.Fatalf("a version with only a native file: %v", err)
	}
}
