package cli

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/pkg/service"
)

// A Program is eventlog's programs applied to a domain: a user's own main
// builds one for their domain and runs it,
//
//	func main() { cli.Run(cli.Program{Name: "bank", Domain: bank.Domain()}) }
//
// and gets `bank dev`, `bank writer`, `bank projector`, `bank send`, ...,
// with the flags, EVENTLOG_* environment, HTTP API, health checks, metrics,
// logging and shutdown of eventlog's own. Its methods are the commands, for
// mains that run one (`cli.Exec("writer", p.Writer)`).
type Program struct {
	// Name is the program's name in usage lines and messages.
	Name string
	// Domain is what the services run. Nil: the generic attribute entity,
	// its types given by the -entities flag (eventlog's own programs).
	Domain *service.Domain
}

// Eventlog returns eventlog's own program: the generic entity.
func Eventlog() Program { return Program{Name: "eventlog"} }

type command struct {
	run     func(ctx context.Context, args []string, env Env) error
	summary string
}

func (p Program) commands() map[string]command {
	return map[string]command{
		"dev":       {p.Dev, "run everything in one process with no servers: broker, store, writer, projector, HTTP"},
		"broker":    {p.Broker, "run the embedded Kafka-protocol broker alone"},
		"writer":    {p.Writer, "run the writer service"},
		"projector": {p.Projector, "run the projector service (read models, process applications, persistence policy)"},
		"migrate":   {p.Migrate, "create or upgrade the PostgreSQL schema (and the read models' tables)"},
		"rebuild":   {p.Rebuild, "rebuild a read model from the store's log while queries go on"},
		"forget":    {p.Forget, "forget an entity: delete its data key, so its events can no longer be read (crypto-shredding)"},
		"bench":     {p.Bench, "measure commands/s, relay events/s and command latency end to end"},
		"send":      {p.Send, "send a command over Kafka (and wait for its result)"},
		"get":       {p.Get, "show an entity rebuilt from its events"},
		"events":    {p.Events, "list the stored events of one entity"},
		"tail":      {p.Tail, "follow events live from Kafka"},
		"version":   {p.Version, "print the version"},
		"health":    {p.Health, "check that a running service is ready (for container health checks)"},

		"dead-letters": {p.DeadLetters, "list, show, retry or skip parked events; list and resend dead letters from Kafka"},
	}
}

// Main runs `<program> <command> [flags]`.
func (p Program) Main(ctx context.Context, args []string, env Env) error {
	cmds := p.commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		p.usage(env, cmds)
		if len(args) == 0 {
			return UsageError{errors.New("no command given")}
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		p.usage(env, cmds)
		return UsageError{fmt.Errorf("unknown command %q", args[0])}
	}
	return c.run(ctx, args[1:], env)
}

// Run is the whole main of a program: Exec of p.Main.
func Run(p Program) { Exec(p.Name, p.Main) }

// Main runs eventlog's own program: `eventlog <command> [flags]`.
func Main(ctx context.Context, args []string, env Env) error { return Eventlog().Main(ctx, args, env) }

// Writer runs eventlog's own writer service.
func Writer(ctx context.Context, args []string, env Env) error {
	return Program{Name: "writer"}.Writer(ctx, args, env)
}

// Projector runs eventlog's own projector service.
func Projector(ctx context.Context, args []string, env Env) error {
	return Program{Name: "projector"}.Projector(ctx, args, env)
}

// name returns how the program calls a command in usage lines: "eventlog
// writer", or "writer" for the program that is only a writer.
func (p Program) name(cmd string) string {
	if p.Name == "" {
		return "eventlog " + cmd
	}
	if p.Name == cmd {
		return cmd
	}
	return p.Name + " " + cmd
}

func (p Program) usage(env Env, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: event sourcing over Kafka and PostgreSQL (eventlog).\n\nUsage: %s <command> [flags]   (%s <command> -h for its flags)\n\nCommands:\n", p.Name, p.Name, p.Name)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-12s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(&b, "\nStart with: %s dev\n", p.Name)
	fmt.Fprint(env.Stderr, b.String())
}

// domain returns the program's domain: its own, or the generic entity of
// the -entities flag.
func (p Program) domain(entities []string) (*service.Domain, error) {
	if p.Domain != nil {
		return p.Domain, p.Domain.Validate()
	}
	if len(entities) == 0 {
		return nil, UsageError{errors.New("-entities is empty: name at least one entity type")}
	}
	d := service.NewDomain()
	if err := d.AddEntity(entities...); err != nil {
		return nil, UsageError{fmt.Errorf("-entities: %w", err)}
	}
	return d, d.Validate()
}

// entitiesFlag registers -entities on a program of the generic entity (a
// domain of its own fixes its types).
func (p Program) entitiesFlag(fs *config.FlagSet, usage string) *config.List {
	l := &config.List{"example"}
	if p.Domain == nil {
		fs.Var(l, "entities", usage)
	}
	return l
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
func (p Program) Version(ctx context.Context, args []string, env Env) error {
	if p.Name == "eventlog" {
		fmt.Fprintf(env.Stdout, "eventlog %s (wire contract v1)\n", VersionString())
	} else {
		fmt.Fprintf(env.Stdout, "%s, built on eventlog %s (wire contract v1)\n", p.Name, VersionString())
	}
	return nil
}
