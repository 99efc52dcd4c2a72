package cli

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
)

type command struct {
	run     func(ctx context.Context, args []string, env Env) error
	summary string
}

func commands() map[string]command {
	return map[string]command{
		"dev":     {Dev, "run everything in one process with no servers: broker, store, writer, projector, HTTP"},
		"broker":  {Broker, "run the embedded Kafka-protocol broker alone"},
		"writer":  {Writer, "run the writer service"},
		"migrate": {Migrate, "create or upgrade the PostgreSQL schema"},
		"send":    {Send, "send a command over Kafka (and wait for its result)"},
		"get":     {Get, "show an entity rebuilt from its events"},
		"events":  {Events, "list the stored events of one entity"},
		"tail":    {Tail, "follow events live from Kafka"},
		"version": {Version, "print the version"},
		"health":  {Health, "check that a running service is ready (for container health checks)"},
	}
}

// Register adds a command (the projector and tools defined elsewhere).
var extra = map[string]command{}

// Main runs `eventlog <command> [flags]`.
func Main(ctx context.Context, args []string, env Env) error {
	cmds := commands()
	for k, v := range extra {
		cmds[k] = v
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env, cmds)
		if len(args) == 0 {
			return UsageError{errors.New("no command given")}
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(env, cmds)
		return UsageError{fmt.Errorf("unknown command %q", args[0])}
	}
	return c.run(ctx, args[1:], env)
}

func usage(env Env, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("eventlog: event sourcing over Kafka and PostgreSQL.\n\nUsage: eventlog <command> [flags]   (eventlog <command> -h for its flags)\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-9s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nStart with: eventlog dev\n")
	fmt.Fprint(env.Stderr, b.String())
}

// BuildVersion is set at link time (-ldflags "-X ...BuildVersion=v1.2.3").
var BuildVersion = ""

// VersionString returns the version of this binary.
func VersionString() string {
	if BuildVersion != "" {
		return BuildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Version prints the version.
func Version(ctx context.Context, args []string, env Env) error {
	fmt.Fprintf(env.Stdout, "eventlog %s (wire contract v1)\n", VersionString())
	return nil
}
