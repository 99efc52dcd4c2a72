// Package config parses the programs' flags. Every flag has an environment
// fallback named EVENTLOG_<FLAG> (upper case, '-' as '_'): a flag given on the
// command line wins, then the environment, then the default. `-h` lists every
// flag with its environment name and default. Secret flags never show their value,
// in the help or in errors. Local flags (the arguments of one invocation, such
// as an entity id or a version) have no environment fallback: a service's
// environment must not change what a tool run in it does.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// EnvName returns the environment variable of a flag.
func EnvName(flagName string) string {
	return "EVENTLOG_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// A FlagSet is a flag.FlagSet whose flags have environment fallbacks.
type FlagSet struct {
	*flag.FlagSet
	// Positional allows arguments after the flags (fs.Args()).
	Positional bool
	secret     map[string]bool
	local      map[string]bool
	out        io.Writer
	usage      func()
}

// New returns a flag set for a program or subcommand.
func New(name, summary string, out io.Writer) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), secret: make(map[string]bool), local: make(map[string]bool), out: out}
	// The flag package prints a parse error before the usage; the caller
	// prints the error once, so only -h prints here (see Parse).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.usage = func() {
		fmt.Fprintf(out, "Usage: %s [flags]\n\n%s\n\nFlags (each also read from its environment variable):\n", name, summary)
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if fs.secret[f.Name] {
				def = "(secret; not shown)"
			} else if def == "" {
				def = `""`
			}
			env := EnvName(f.Name)
			if fs.local[f.Name] {
				env = "no environment variable"
			}
			fmt.Fprintf(out, "  -%s  (%s, default %s)\n      %s\n", f.Name, env, def, f.Usage)
		})
	}
	return fs
}

// Secret marks flags whose values must never be printed.
func (fs *FlagSet) Secret(names ...string) {
	for _, n := range names {
		fs.secret[n] = true
	}
}

// PrintUsage prints what -h prints.
func (fs *FlagSet) PrintUsage() { fs.usage() }

// Local marks flags that have no environment fallback.
func (fs *FlagSet) Local(names ...string) {
	for _, n := range names {
		fs.local[n] = true
	}
}

// Parse parses args, then fills every flag not given on the command line,
// and not Local, from getenv. It returns flag.ErrHelp after printing usage
// for -h; other errors are returned, not printed, with a hint to see -h.
func (fs *FlagSet) Parse(args []string, getenv func(string) string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.usage()
			return err
		}
		cmd, _, _ := strings.Cut(fs.Name(), " <")
		return fmt.Errorf("%w (see %s -h)", err, cmd)
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || fs.local[f.Name] {
			return
		}
		v := getenv(EnvName(f.Name))
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			shown := v
			if fs.secret[f.Name] {
				shown = "(secret)"
			}
			errs = append(errs, fmt.Errorf("%s=%s: %v", EnvName(f.Name), shown, err))
		}
	})
	if fs.NArg() > 0 && !fs.Positional {
		errs = append(errs, fmt.Errorf("unexpected argument %q (flags start with '-'; see -h)", fs.Arg(0)))
	}
	return errors.Join(errs...)
}

// Names returns the names of all flags, sorted: the configuration surface.
func (fs *FlagSet) Names() []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	slices.Sort(out)
	return out
}

// List is a comma-separated flag value.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *List) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// PositiveDuration checks a duration flag.
func PositiveDuration(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("-%s must be positive, got %s", name, d)
	}
	return nil
}
