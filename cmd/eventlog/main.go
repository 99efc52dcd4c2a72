// Command eventlog is eventlog's front door: `eventlog dev` runs everything in
// one process with no servers; the other commands run the services on their own
// and give people at a terminal a way in (send, get, events, tail, ...).
// `eventlog -h` lists them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/eventlog/eventlog/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cli.Main(ctx, os.Args[1:], cli.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	if code := cli.ExitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "eventlog:", err)
		os.Exit(code)
	}
}
