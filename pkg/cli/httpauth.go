package cli

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/eventlog/eventlog/internal/config"
	"github.com/eventlog/eventlog/internal/httpapi"
)

// httpAuthFlags say who may use a service's HTTP API (see httpapi.Auth for
// what they cover). On a loopback address the API is open unless a token or
// users are given; beyond loopback one of them, or -http-insecure, is
// required.
type httpAuthFlags struct {
	token, tokenFile, usersFile string
	insecure                    bool
}

func (h *httpAuthFlags) register(fs *config.FlagSet) {
	fs.StringVar(&h.token, "http-token", "", "bearer token the HTTP API and console ask for (Authorization: Bearer <token>), at least 16 characters (prefer -http-token-file)")
	fs.StringVar(&h.tokenFile, "http-token-file", "", "file holding the HTTP API's bearer token")
	fs.StringVar(&h.usersFile, "http-basic-auth-file", "", "users of the HTTP API and console, with basic auth: user:bcrypt-hash lines, as htpasswd -nbB user password prints them")
	fs.BoolVar(&h.insecure, "http-insecure", false, "serve the HTTP API with no authentication on an address beyond loopback (anyone who can reach it can read every entity and send commands)")
	fs.Secret("http-token")
}

// auth returns the guard of the API served on ln. It refuses an address
// reachable beyond loopback with no token, no users and no -http-insecure.
func (h *httpAuthFlags) auth(ln net.Listener) (*httpapi.Auth, error) {
	a := &httpapi.Auth{Token: h.token}
	if h.tokenFile != "" {
		if h.token != "" {
			return nil, UsageError{errors.New("-http-token and -http-token-file are both set: give one")}
		}
		b, err := os.ReadFile(h.tokenFile)
		if err != nil {
			return nil, UsageError{fmt.Errorf("-http-token-file: %w", err)}
		}
		a.Token = strings.TrimSpace(string(b))
	}
	if err := a.Validate(); err != nil {
		return nil, UsageError{fmt.Errorf("-http-token: %w", err)}
	}
	if h.usersFile != "" {
		f, err := os.Open(h.usersFile)
		if err != nil {
			return nil, UsageError{fmt.Errorf("-http-basic-auth-file: %w", err)}
		}
		a.Users, err = httpapi.ParseUsers(f)
		f.Close()
		if err != nil {
			return nil, UsageError{fmt.Errorf("-http-basic-auth-file %s: %w", h.usersFile, err)}
		}
	}
	if a.Enabled() {
		return a, nil
	}
	if !loopback(ln.Addr()) {
		if !h.insecure {
			return nil, UsageError{fmt.Errorf("-http-addr %s is reachable beyond this machine and the HTTP API has no authentication: "+
				"set -http-token-file (or EVENTLOG_HTTP_TOKEN) or -http-basic-auth-file, or -http-insecure to serve it open", ln.Addr())}
		}
		return a, nil
	}
	// Open on loopback: only for this machine's own names, so that a web
	// page whose name resolves to 127.0.0.1 cannot read it.
	a.LoopbackOnly = true
	return a, nil
}

// loopback reports whether addr is a loopback address (127.0.0.0/8, ::1).
func loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// registerToken adds -http-token to a tool that calls the HTTP API: it
// falls back to EVENTLOG_HTTP_TOKEN, as the service's own does, so a tool
// run in the service's environment is let in.
func registerToken(fs *config.FlagSet, token *string) {
	fs.StringVar(token, "http-token", "", "bearer token of the HTTP API, if it asks for one")
	fs.Secret("http-token")
}

// setToken sends token, if any, as the request's bearer token.
func setToken(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}
