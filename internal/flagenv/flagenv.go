// Package flagenv fills flags that were not given on the command line from
// OUTPOST_* environment variables and then from an optional config file.
// Precedence: command line, then environment, then config file, then the
// flag's default. A flag named mqtt-user is read from OUTPOST_MQTT_USER and
// from a config line `mqtt-user = value`.
//
// It also defines the number flags the commands share (values.go): byte
// sizes with units (BytesVar: 1GiB, 256MiB), integers and durations, each
// checked against a Range when set from any of the three sources, so that a
// bad value stops the command naming the flag, the value and what is
// accepted. Parse refuses arguments that are not flags; ParseArgs takes
// them for the commands that have some.
package flagenv

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/outpost-edge/outpost/internal/cli"
)

// EnvName returns the environment variable for a flag name.
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// Parse parses args into fs, then fills the flags not set from the
// environment (prefix such as "OUTPOST_") and from the config file named by
// the flag configFlag (if fs has it and it is set).
//
// Every error but flag.ErrHelp is a cli.UsageError (exit status 2), and
// names the flag or setting, the value and what is accepted. Commands take
// flags only: an argument that is not a flag is an error.
func Parse(fs *flag.FlagSet, args []string, prefix, configFlag string) error {
	return ParseArgs(fs, args, prefix, configFlag, 0)
}

// ParseArgs is Parse for a command that also takes up to maxArgs
// arguments after its flags (fs.Args), such as a file name.
func ParseArgs(fs *flag.FlagSet, args []string, prefix, configFlag string, maxArgs int) error {
	err := parse(fs, args, prefix, configFlag, maxArgs)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return cli.UsageError{Err: err}
}

func parse(fs *flag.FlagSet, args []string, prefix, configFlag string, maxArgs int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > maxArgs {
		if maxArgs == 0 {
			return fmt.Errorf("unexpected argument %q: %s takes flags only (--name value); see --help", fs.Arg(0), fs.Name())
		}
		return fmt.Errorf("unexpected argument %q: %s takes at most %d after its flags; see --help", fs.Arg(maxArgs), fs.Name(), maxArgs)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(prefix, f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s=%q: %w", EnvName(prefix, f.Name), v, e)
			}
			set[f.Name] = true
		}
	})
	if err != nil || configFlag == "" {
		return err
	}
	cf := fs.Lookup(configFlag)
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	return applyFile(fs, cf.Value.String(), set)
}

func applyFile(fs *flag.FlagSet, path string, set map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: want `name = value`", path, n)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		if fs.Lookup(k) == nil {
			return fmt.Errorf("%s:%d: unknown setting %q (settings are the flag names; see --help)", path, n, k)
		}
		if set[k] {
			continue
		}
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("%s:%d: %s = %q: %w", path, n, k, v, err)
		}
	}
	return sc.Err()
}

// Usage returns a usage function that lists each flag with its default and
// its environment variable.
func Usage(fs *flag.FlagSet, prefix, synopsis string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\n\nFlags (each also read from the environment variable shown):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			if k, ok := f.Value.(interface{ kind() string }); ok {
				name = k.kind()
			}
			fmt.Fprintf(w, "  --%s %s\n    \t%s", f.Name, name, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintf(w, " [$%s]\n", EnvName(prefix, f.Name))
		})
	}
}
