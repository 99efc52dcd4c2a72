// Command projector consumes events from Kafka and keeps read models (and,
// optionally, a persistent copy of the log) current, exactly once in effect.
// `projector -h` lists its flags and their EVENTLOG_* environment variables.
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
	err := cli.Projector(ctx, os.Args[1:], cli.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	if code := cli.ExitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(code)
	}
}
