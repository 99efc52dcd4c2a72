package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Exec is the whole main of a program: it runs f with the process's arguments,
// environment and streams under a context that SIGINT and SIGTERM cancel, and
// exits with f's exit code, printing its error as one line.
func Exec(name string, f func(ctx context.Context, args []string, env Env) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := f(ctx, os.Args[1:], Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	if code := ExitCode(err); code != 0 {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(code)
	}
}
