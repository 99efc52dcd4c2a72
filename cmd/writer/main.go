// Command writer consumes commands from Kafka, appends their events to the store,
// publishes them to Kafka and serves entities over HTTP. `writer -h` lists its
// flags and their EVENTLOG_* environment variables.
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
	err := cli.Writer(ctx, os.Args[1:], cli.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	if code := cli.ExitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(code)
	}
}
