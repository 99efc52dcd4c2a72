package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/eventlog/eventlog/internal/config"
)

// Health asks a running service whether it is ready: exit 0 if so, 1 if not. It
// is the health check of container images that have no shell or curl.
func (p Program) Health(ctx context.Context, args []string, env Env) error {
	fs := config.New(p.name("health"), "Check that a running service is ready (GET /readyz).", env.Stderr)
	var (
		addr string
		live bool
	)
	fs.StringVar(&addr, "http-addr", "127.0.0.1:8080", "the service's HTTP address")
	fs.BoolVar(&live, "live", false, "check /healthz (the process answers) instead of /readyz")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	path := "/readyz"
	if live {
		path = "/healthz"
	}
	var out map[string]string
	if err := apiGet(ctx, addr, "", path, &out); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, out["status"])
	return nil
}
