package outbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// The crash test runs the test binary again as a child that appends as fast
// as it can from many goroutines, printing each acknowledged (device, id,
// seq) only after Append returned, and kills it with SIGKILL at a random
// moment. Then it checks the file: the chain and checkpoints verify, seqs
// have no gap, every acknowledged append is there with its seq, and no
// (device, id) is stored twice. SIGKILL loses no page-cache data, so this
// tests what a process crash can do (a torn transaction, a lost ack), not a
// power cut; bbolt's fsync ordering covers the latter.
const (
	crashChildEnv = "OUTPOST_OUTBOX_CRASH_CHILD" // path of the outbox: run as the child
	crashIterEnv  = "OUTPOST_OUTBOX_CRASH_ITER"
	crashRetryEnv = "OUTPOST_OUTBOX_CRASH_RETRY" // "dev id seq;..." to append again first
	// OUTPOST_CRASH_ITERATIONS sets the number of kills (default 50), for a soak.
	crashIterationsEnv = "OUTPOST_CRASH_ITERATIONS"
)

func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("runs only as the child of TestCrashRecovery")
	}
	o, err := outbox.Open(path, outbox.Options{Edge: "edge-1", Signer: mustSigner(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Printf("BAD open: %v\n", err)
		return
	}
	var out sync.Mutex
	say := func(s string) {
		out.Lock()
		os.Stdout.WriteString(s) // one write(2) per call, well under PIPE_BUF
		out.Unlock()
	}
	// Pairs acknowledged before the last kill must still be duplicates.
	for _, f := range strings.Split(os.Getenv(crashRetryEnv), ";") {
		var dev, id string
		var seq uint64
		if _, err := fmt.Sscan(f, &dev, &id, &seq); err != nil {
			continue
		}
		res, err := o.Append(context.Background(), []outbox.Entry{entry(dev, id, "sale.completed")})
		if err != nil || !res[0].Duplicate || res[0].Seq != seq {
			say(fmt.Sprintf("BAD retry of %s %s (seq %d) after restart: %+v %v\n", dev, id, seq, res, err))
		}
	}
	iter := os.Getenv(crashIterEnv)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := fmt.Sprint("dev-", g)
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			type acked struct {
				id  string
				seq uint64
			}
			var mine []acked
			for n := 0; ; n++ {
				k := 1 + rng.IntN(5)
				es := make([]outbox.Entry, 0, k+1)
				for i := range k {
					typ := "sale.completed"
					if i%2 == 1 {
						typ = "telemetry.reading"
					}
					es = append(es, entry(dev, fmt.Sprintf("%s-%d-%d", iter, n, i), typ))
				}
				var retry *acked
				if len(mine) > 0 && rng.IntN(8) == 0 {
					retry = &mine[rng.IntN(len(mine))]
					es = append(es, entry(dev, retry.id, "sale.completed"))
				}
				res, err := o.Append(context.Background(), es)
				if err != nil {
					say(fmt.Sprintf("BAD append: %v\n", err))
					return
				}
				var sb strings.Builder
				for i, r := range res {
					switch {
					case r.Err != nil:
						fmt.Fprintf(&sb, "BAD entry %s: %v\n", es[i].Event.ID, r.Err)
					case i == k && (!r.Duplicate || r.Seq != retry.seq):
						fmt.Fprintf(&sb, "BAD retry of %s (seq %d): %+v\n", retry.id, retry.seq, r)
					default:
						fmt.Fprintf(&sb, "ack %s %s %d\n", dev, es[i].Event.ID, r.Seq)
						if i < k {
							mine = append(mine, acked{es[i].Event.ID, r.Seq})
						}
					}
				}
				say(sb.String())
			}
		}()
	}
	wg.Wait()
}

func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("this is the child")
	}
	iterations := 50
	if testing.Short() {
		iterations = 3 // -short (make test-short): a smoke run; make test does 50
	}
	if s := os.Getenv(crashIterationsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s: %v", crashIterationsEnv, err)
		}
		iterations = n
	}
	path := t.TempDir() + "/outbox.db"
	type pair struct{ dev, id string }
	stored := map[pair]uint64{} // every record ever stored
	var head uint64
	var retry []string
	totalAcks := 0
	for it := range iterations {
		acks, bad := runCrashChild(t, path, it, retry)
		if len(bad) > 0 {
			t.Fatalf("iteration %d: the child saw:\n%s", it, strings.Join(bad, "\n"))
		}
		totalAcks += len(acks)
		if rep, err := outbox.Verify(path, testPub); err != nil {
			t.Fatalf("iteration %d: %v (report %+v)", it, err, rep)
		}
		// Read what this run stored: seqs go on from the last head, and no
		// pair is stored twice.
		var buf bytes.Buffer
		if err := outbox.Export(path, head+1, 0, &buf); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			var j protocol.RecordJSON
			if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
				t.Fatal(err)
			}
			if j.Seq != head+1 {
				t.Fatalf("iteration %d: seq %d after %d", it, j.Seq, head)
			}
			head = j.Seq
			p := pair{j.Device, j.ID}
			if s, dup := stored[p]; dup {
				t.Fatalf("iteration %d: %s %s stored twice, at %d and %d", it, j.Device, j.ID, s, j.Seq)
			}
			stored[p] = j.Seq
		}
		// Every acknowledged append is stored, with the seq it was given.
		retry = retry[:0]
		for _, a := range acks {
			if s, ok := stored[pair{a.dev, a.id}]; !ok || s != a.seq {
				t.Fatalf("iteration %d: %s %s acknowledged with seq %d, stored at %d (%v)", it, a.dev, a.id, a.seq, s, ok)
			}
			if len(retry) < 5 && rand.IntN(len(acks)) < 10 {
				retry = append(retry, fmt.Sprintf("%s %s %d", a.dev, a.id, a.seq))
			}
		}
		// Trim what is verified, as the cloud's receipt would, so that each
		// round verifies only its own records.
		o, err := outbox.Open(path, outbox.Options{Edge: "edge-1", Signer: mustSigner(t), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		st := o.State()
		if st.Head != head {
			t.Fatalf("iteration %d: head %d, exported up to %d", it, st.Head, head)
		}
		err = o.Trim(protocol.Receipt{Edge: "edge-1", Epoch: st.Stream.Epoch, HWM: st.Head, Head: st.HeadHash})
		if err := errors.Join(err, o.Close()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d kills, %d records, %d acknowledged appends checked", iterations, head, totalAcks)
}

type crashAck struct {
	dev, id string
	seq     uint64
}

// runCrashChild runs the child until it has acknowledged something, lets it
// run 20-80 ms more, kills it and returns what it printed.
func runCrashChild(t *testing.T, path string, it int, retry []string) (acks []crashAck, bad []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashIterEnv+"="+strconv.Itoa(it),
		crashRetryEnv+"="+strings.Join(retry, ";"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "BAD"):
				bad = append(bad, line)
			case strings.HasPrefix(line, "ack "):
				var a crashAck
				if _, err := fmt.Sscanf(line, "ack %s %s %d", &a.dev, &a.id, &a.seq); err != nil {
					continue // a line cut by the kill
				}
				if len(acks) == 0 {
					close(first)
				}
				acks = append(acks, a)
			}
		}
	}()
	select {
	case <-first:
		time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond) // the random moment of the crash
	case <-done:
	case <-time.After(time.Minute):
		t.Error("the child acknowledged nothing within a minute")
	}
	cmd.Process.Kill()
	<-done
	cmd.Wait()
	return acks, bad
}
