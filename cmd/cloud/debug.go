package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugFlags adds --debug-listen: an opt-in pprof listener (off by
// default). It is kept out of the API's listener on purpose: profiles show
// goroutine stacks and the heap's shape, which no API token should reach.
func debugFlags(fs *flag.FlagSet, addr *string) {
	fs.StringVar(addr, "debug-listen", "", "serve Go's pprof profiles (/debug/pprof/) on this loopback address, such as 127.0.0.1:6060 (default: off; see docs/OPERATIONS.md, \"Profiling the cloud\")")
}

// checkDebugListen refuses a --debug-listen that is not a loopback
// address: profiles are for the operator on the host (or through an SSH
// tunnel), never for the network.
func checkDebugListen(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--debug-listen %q: want host:port, such as 127.0.0.1:6060 (%v)", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("--debug-listen %q: profiles are served on a loopback address only (127.0.0.1 or [::1]); to profile from elsewhere, tunnel to it (ssh -L 6060:127.0.0.1:6060 host)", addr)
}

// debugHandler is pprof on a mux of its own (net/http/pprof's init also
// registers on http.DefaultServeMux, which nothing in the cloud serves).
// There is no /debug/pprof/cmdline: the command line may hold a
// --database-url with a password.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveDebug listens on addr and serves pprof until ctx ends. It returns
// once listening (or with the listen error); the server stops with ctx.
func serveDebug(ctx context.Context, addr string, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--debug-listen %s: %w", addr, err)
	}
	// No WriteTimeout: /debug/pprof/profile?seconds=30 writes after 30 s.
	srv := &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("the pprof listener stopped", "addr", addr, "err", err)
		}
	}()
	log.Warn("serving Go profiles (--debug-listen): for diagnosis only", "addr", ln.Addr().String())
	return ln.Addr().String(), nil
}
