// Package cli holds what the edge and cloud commands share: two-stage
// signal handling, the slog logger from --log-level and --log-format, and
// usage errors (exit code 2).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// UsageError is a mistake in how a command was called: the caller prints
// it and exits with code 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is (or wraps) a UsageError.
func IsUsage(err error) bool { return errors.As(err, new(UsageError)) }

// SignalContext returns a context cancelled by the first SIGINT or
// SIGTERM, which starts a graceful shutdown; a second signal exits the
// process at once with status 1. name prefixes the message.
func SignalContext(name string) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
			return
		}
		<-ch
		fmt.Fprintf(os.Stderr, "%s: second signal, exiting now\n", name)
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// NewLogger returns a logger writing to w at level (debug, info, warn,
// error) in format (text or json).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", format)
}

// ExitCode maps a command's error to its exit status, printing it to
// stderr prefixed by name: 0 for success, a cancelled context (a signal)
// or --help; 2 for a usage error; 1 for anything else.
func ExitCode(name string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, flag.ErrHelp):
		return 0
	case IsUsage(err):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	// An error that knows what an operator should do about it (the outbox's
	// sentinels) says so once, here.
	var a interface{ Advice() string }
	if errors.As(err, &a) && a.Advice() != "" {
		fmt.Fprintf(stderr, "%s: what to do: %s\n", name, a.Advice())
	}
	return 1
}

// Help handles a command line that asks for the usage text (no arguments,
// "help", "--help" or "-h"): it prints usage and returns the exit code and
// true (2 when there were no arguments at all, a mistake; 0 when asked).
func Help(args []string, usage string, stdout io.Writer) (int, bool) {
	if len(args) > 0 && args[0] != "help" && args[0] != "--help" && args[0] != "-h" {
		return 0, false
	}
	fmt.Fprint(stdout, usage)
	if len(args) == 0 {
		return 2, true
	}
	return 0, true
}

// Program is a long-running command (edge run, cloud serve, sim run): its
// flags are parsed, it runs until ctx ends, and it is closed in any case.
type Program interface {
	ParseFlags(args []string) error
	Run(ctx context.Context) error
	Close() error
}

// RunProgram parses args into p, runs it and closes it, returning the first
// error.
func RunProgram(ctx context.Context, p Program, args []string) error {
	if err := p.ParseFlags(args); err != nil {
		return err
	}
	err := p.Run(ctx)
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	return err
}
