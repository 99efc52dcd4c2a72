package httpapi

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Auth guards the HTTP API with a bearer token, HTTP basic auth, or both
// (either is accepted). It covers every route but the open ones: /healthz
// and /readyz (probes), /metrics (scrapers; counters and names, no entity
// data), and the console's static files under /ui/ (the same files every
// binary holds: everything they show comes from the API, with the
// credentials the person gives the console). The zero Auth lets everyone
// in.
//
// Whatever the credentials, Wrap refuses the state-changing requests
// (POST: commands, retries, skips) that a browser sends from a page of
// another site (http.CrossOriginProtection), and with LoopbackOnly the
// requests that name a host that is not this machine's loopback (a page
// whose name an attacker points at 127.0.0.1 cannot read the open API).
type Auth struct {
	// Token, if set, is accepted as "Authorization: Bearer <Token>".
	Token string
	// Users, if set, are accepted with HTTP basic auth: each user's bcrypt
	// hash of the password (see ParseUsers).
	Users map[string][]byte
	// LoopbackOnly serves only requests whose Host is localhost or a
	// loopback address: for an API open on loopback.
	LoopbackOnly bool

	once  sync.Once
	token [sha256.Size]byte
	mu    sync.Mutex
	// verified remembers credentials that matched, by a hash of user,
	// password and stored hash: bcrypt is meant to be slow, and the console
	// asks several times a second.
	verified map[[sha256.Size]byte]struct{}
}

// MinTokenLength is the shortest bearer token accepted.
const MinTokenLength = 16

// Enabled reports whether a says who may come in.
func (a *Auth) Enabled() bool { return a != nil && (a.Token != "" || len(a.Users) > 0) }

// Validate reports a token too short to be a secret.
func (a *Auth) Validate() error {
	if a.Token != "" && len(a.Token) < MinTokenLength {
		return fmt.Errorf("the HTTP token is %d characters, fewer than %d: make one with: openssl rand -hex 32", len(a.Token), MinTokenLength)
	}
	return nil
}

// open reports whether a path is served without credentials.
func open(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics", "/", "/ui":
		return true
	}
	return strings.HasPrefix(path, "/ui/")
}

// Wrap returns h behind a.
func (a *Auth) Wrap(h http.Handler) http.Handler {
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "a request from a page of another site (Origin %q) may not change anything here", r.Header.Get("Origin"))
	}))
	h = csrf.Handler(h)
	if a.LoopbackOnly {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !loopbackHost(r.Host) {
				writeError(w, http.StatusForbidden, "this API is open on loopback only: ask for it as localhost or 127.0.0.1, not %q", r.Host)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	if !a.Enabled() {
		return h
	}
	a.once.Do(func() {
		a.token = sha256.Sum256([]byte(a.Token))
		a.verified = make(map[[sha256.Size]byte]struct{})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open(r.URL.Path) || a.allows(r) {
			h.ServeHTTP(w, r)
			return
		}
		// A browser asks for a password itself on a Basic challenge; the
		// console asks in its own form, and says so.
		if len(a.Users) > 0 && r.Header.Get("X-Requested-With") == "" {
			w.Header().Add("WWW-Authenticate", `Basic realm="eventlog", charset="UTF-8"`)
		}
		if a.Token != "" || r.Header.Get("X-Requested-With") != "" {
			w.Header().Add("WWW-Authenticate", `Bearer realm="eventlog"`)
		}
		what := "a bearer token (Authorization: Bearer <token>)"
		switch {
		case a.Token != "" && len(a.Users) > 0:
			what = "a bearer token or a user and password (basic auth)"
		case a.Token == "":
			what = "a user and password (basic auth)"
		}
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "this API needs " + what, "auth": a.schemes()})
	})
}

// loopbackHost reports whether a Host header names this machine's
// loopback: localhost or a loopback address, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// schemes names the accepted schemes, for the console.
func (a *Auth) schemes() []string {
	var out []string
	if a.Token != "" {
		out = append(out, "bearer")
	}
	if len(a.Users) > 0 {
		out = append(out, "basic")
	}
	return out
}

func (a *Auth) allows(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer") && a.Token != "":
		got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
		return subtle.ConstantTimeCompare(got[:], a.token[:]) == 1
	case strings.EqualFold(scheme, "Basic") && len(a.Users) > 0:
		user, pass, ok := r.BasicAuth()
		if !ok {
			return false
		}
		hash, known := a.Users[user]
		if !known {
			return false
		}
		key := sha256.Sum256([]byte(user + "\x00" + pass + "\x00" + string(hash)))
		a.mu.Lock()
		_, seen := a.verified[key]
		a.mu.Unlock()
		if seen {
			return true
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
			return false
		}
		a.mu.Lock()
		if len(a.verified) >= 1024 {
			clear(a.verified)
		}
		a.verified[key] = struct{}{}
		a.mu.Unlock()
		return true
	}
	return false
}

// ErrUsersFile reports a mistake in a users file.
var ErrUsersFile = errors.New("basic auth file")

// ParseUsers reads users for basic auth: one "user:hash" a line, the hash a
// bcrypt hash as `htpasswd -nbB user password` prints it; blank lines and
// lines starting with # are skipped.
func ParseUsers(r io.Reader) (map[string][]byte, error) {
	users := make(map[string][]byte)
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%w: line %d is not user:hash", ErrUsersFile, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%w: line %d: the password of %q is not a bcrypt hash (make one with: htpasswd -nbB %s 'password')", ErrUsersFile, n, user, user)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("%w: line %d: user %q again", ErrUsersFile, n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsersFile, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%w: no user in it", ErrUsersFile)
	}
	return users, nil
}
