package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors of Connect, for callers that branch on what to fix. Messages never
// contain the password.
var (
	// ErrInvalidDSN: the DSN does not parse.
	ErrInvalidDSN = errors.New("postgres: invalid DSN")
	// ErrUnreachable: no server answered at the DSN's host and port.
	ErrUnreachable = errors.New("postgres: server unreachable")
	// ErrAuth: the server refused the user or password.
	ErrAuth = errors.New("postgres: authentication failed")
	// ErrNoDatabase: the server has no database of the DSN's name.
	ErrNoDatabase = errors.New("postgres: database does not exist")
)

// defaultConnectTimeout applies when the DSN sets no connect_timeout.
const defaultConnectTimeout = 10 * time.Second

// Connect parses dsn (a postgres:// URL or key=value pairs), opens a pool and
// checks that the server answers, so that a mistake is reported at start with
// what to fix: ErrInvalidDSN, ErrUnreachable, ErrAuth or ErrNoDatabase. Use
// it in main; New takes the pool.
func Connect(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pw := dsnPasswords(dsn)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error holds the DSN (ConnString): keep only its reason.
		reason := err.Error()
		if i := strings.Index(reason, "`: "); i >= 0 {
			reason = reason[i+3:]
		}
		return nil, fmt.Errorf("%w: %s (want postgres://user:password@host:5432/dbname?sslmode=disable, or host=... user=... dbname=...)",
			ErrInvalidDSN, redact(reason, pw))
	}
	if cfg.ConnConfig.Password != "" {
		pw = append(pw, cfg.ConnConfig.Password)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	// A multi-host DSN (host=a,b port=p,q target_session_attrs=read-write)
	// is tried host by host: name them all.
	hosts := []string{net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))}
	for _, fb := range cfg.ConnConfig.Fallbacks {
		if h := net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	where := strings.Join(hosts, ", ")
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidDSN, redact(err.Error(), pw))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, connectError(err, where, cfg.ConnConfig.User, cfg.ConnConfig.Database, pw)
	}
	return pool, nil
}

func connectError(err error, where, user, db string, pw []string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return fmt.Errorf("%w for user %q at %s: check the user and password in the DSN (server says: %s)", ErrAuth, user, where, pe.Message)
		case "3D000": // invalid_catalog_name
			return fmt.Errorf("%w: no database %q at %s: check the database name in the DSN", ErrNoDatabase, db, where)
		}
		return fmt.Errorf("postgres: connect to %s as %q: %w", where, user, pe)
	}
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &de) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: nothing answered at %s: check the host and port in the DSN and that PostgreSQL is running (%s)",
			ErrUnreachable, where, redact(err.Error(), pw))
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("postgres: connect to %s: %w", where, context.Canceled)
	}
	return fmt.Errorf("postgres: connect to %s as %q: %s", where, user, redact(err.Error(), pw))
}

var kvPasswordRE = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// dsnPasswords finds password-looking values in a DSN that may not parse, so
// that they can be cut out of messages.
func dsnPasswords(dsn string) []string {
	var pw []string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			pw = append(pw, p)
		}
	}
	// user:password@ even where the URL does not parse
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, p, ok := strings.Cut(rest[:at], ":"); ok && p != "" {
				pw = append(pw, p)
				if up, err := url.PathUnescape(p); err == nil && up != p {
					pw = append(pw, up)
				}
			}
		}
	}
	for _, m := range kvPasswordRE.FindAllStringSubmatch(dsn, -1) {
		p := strings.Trim(m[1], "'")
		if p != "" {
			pw = append(pw, p)
		}
	}
	return pw
}

// redact cuts passwords out of s, and folds it onto one line.
func redact(s string, pw []string) string {
	s = strings.Join(strings.Fields(s), " ")
	for _, p := range pw {
		if len(p) > 0 {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}
