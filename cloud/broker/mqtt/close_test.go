package mqtt_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/protocol"
)

// Close returns while edges disconnect, and with a connection that never
// finishes its CONNECT: mochi's own Close can deadlock in the first case
// (mochi-mqtt/server#488: it takes the clients' read lock twice, and a
// disconnect's write lock in between waits for the first and blocks the
// second) and waits on the second.
func TestCloseWhileEdgesDisconnect(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", ConnectTimeout: time.Second,
		Keys: func(_ context.Context, edge string) (protocol.Keys, error) {
			if !strings.HasPrefix(edge, "edge-") {
				return nil, errors.New("unknown edge")
			}
			return protocol.NewKeyMap(signer(edge).Public()), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.Write([]byte{0x10, 13, 0, 4}) // half a CONNECT

	const n = 64
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		edge := fmt.Sprintf("edge-%d", i)
		c.Write(connectPacket(broker.EdgeClientPrefix+edge, edge, token(signer(edge), edge), nil))
		ack := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("edge %d: CONNACK % x, %v", i, ack, err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range conns { // the edges go away while the broker closes
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close()
		}()
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(time.Minute): // a hang guard, not a measurement
		t.Error("Close did not return while edges were disconnecting")
	}
	wg.Wait()
}
