package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/eventlog/eventlog/internal/config"
)

// SASL mechanisms of -kafka-sasl-mechanism.
const (
	saslPlain       = "PLAIN"
	saslSCRAMSHA256 = "SCRAM-SHA-256"
	saslSCRAMSHA512 = "SCRAM-SHA-512"
)

// kafkaSecurity are the transport-security flags of a command that talks to
// Kafka: TLS (server verification against a CA, optional client certificate) and
// SASL authentication. check loads the files they name; opts are then the kgo
// options every client of the command adds to its seed brokers.
type kafkaSecurity struct {
	tls          bool
	caFile       string
	certFile     string
	keyFile      string
	serverName   string
	mechanism    string
	user         string
	password     string
	passwordFile string

	opts []kgo.Opt // set by check
}

func (s *kafkaSecurity) register(fs *config.FlagSet) {
	fs.BoolVar(&s.tls, "kafka-tls", false, "connect to Kafka over TLS (implied by the other -kafka-tls-* flags)")
	fs.StringVar(&s.caFile, "kafka-tls-ca-file", "", "PEM file of the CA certificates that sign the brokers' certificates (default: the system's)")
	fs.StringVar(&s.certFile, "kafka-tls-cert-file", "", "PEM file of the client certificate, for brokers that require one (with -kafka-tls-key-file)")
	fs.StringVar(&s.keyFile, "kafka-tls-key-file", "", "PEM file of the client certificate's private key")
	fs.StringVar(&s.serverName, "kafka-tls-server-name", "", "name the brokers' certificates must carry (default: the host of each broker address)")
	fs.StringVar(&s.mechanism, "kafka-sasl-mechanism", "", "SASL authentication: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)")
	fs.StringVar(&s.user, "kafka-sasl-user", "", "SASL user name")
	fs.StringVar(&s.password, "kafka-sasl-password", "", "SASL password (prefer -kafka-sasl-password-file)")
	fs.StringVar(&s.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password")
	fs.Secret("kafka-sasl-password")
}

// check validates the flags, reads the files they name and sets s.opts. Its
// errors name flags and files, never the password.
func (s *kafkaSecurity) check() error {
	s.opts = nil
	if s.caFile != "" || s.certFile != "" || s.keyFile != "" || s.serverName != "" {
		s.tls = true
	}
	if s.tls {
		cfg, err := s.tlsConfig()
		if err != nil {
			return err
		}
		s.opts = append(s.opts, kgo.DialTLSConfig(cfg))
	}
	mech, err := s.sasl()
	if err != nil {
		return err
	}
	if mech != nil {
		s.opts = append(s.opts, kgo.SASL(mech))
	}
	return nil
}

func (s *kafkaSecurity) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.serverName}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("-kafka-tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-kafka-tls-ca-file: %s holds no PEM certificate", s.caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case s.certFile != "" && s.keyFile != "":
		cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
		if err != nil {
			// The error of LoadX509KeyPair quotes no key material.
			return nil, fmt.Errorf("-kafka-tls-cert-file/-kafka-tls-key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case s.certFile != "" || s.keyFile != "":
		return nil, errors.New("-kafka-tls-cert-file and -kafka-tls-key-file go together: give both or neither")
	}
	return cfg, nil
}

func (s *kafkaSecurity) sasl() (sasl.Mechanism, error) {
	if s.mechanism == "" {
		if s.user != "" || s.password != "" || s.passwordFile != "" {
			return nil, errors.New("-kafka-sasl-user or a password is set but -kafka-sasl-mechanism is not: choose PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil, nil
	}
	pass := s.password
	if s.passwordFile != "" {
		if s.password != "" {
			return nil, errors.New("give -kafka-sasl-password or -kafka-sasl-password-file, not both")
		}
		b, err := os.ReadFile(s.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("-kafka-sasl-password-file: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if s.user == "" || pass == "" {
		return nil, fmt.Errorf("-kafka-sasl-mechanism %s needs -kafka-sasl-user and a password (-kafka-sasl-password-file or EVENTLOG_KAFKA_SASL_PASSWORD)", s.mechanism)
	}
	switch strings.ToUpper(s.mechanism) {
	case saslPlain:
		return plain.Auth{User: s.user, Pass: pass}.AsMechanism(), nil
	case saslSCRAMSHA256:
		return scram.Auth{User: s.user, Pass: pass}.AsSha256Mechanism(), nil
	case saslSCRAMSHA512:
		return scram.Auth{User: s.user, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("-kafka-sasl-mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.mechanism)
}

// clientOptions are the connection options of every Kafka client a command
// builds: the seed brokers, the transport security and the producers'
// compression. check (or checkCompression) must have run.
func (k *kafkaFlags) clientOptions(extra ...kgo.Opt) []kgo.Opt {
	opts := append([]kgo.Opt{kgo.SeedBrokers(k.brokers...)}, k.sec.opts...)
	if k.compress != nil {
		opts = append(opts, k.compress)
	}
	return append(opts, extra...)
}

// pingTimeout bounds the start-up check of Kafka.
const pingTimeout = 15 * time.Second

// ping connects to Kafka with the command's options and asks for metadata, so
// that a wrong password or an untrusted certificate fails at start in one clear
// line rather than as retries in the log. It waits at most pingTimeout (or
// until ctx ends).
func (k *kafkaFlags) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	var watch saslWatch
	cl, err := kgo.NewClient(k.clientOptions(kgo.RequestRetries(0), kgo.WithHooks(&watch))...)
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer cl.Close()
	var (
		last     error
		firstEOF int
	)
	for {
		err := cl.Ping(ctx)
		if err == nil {
			return nil
		}
		if e := k.securityError(err); e != nil {
			return e
		}
		if watch.failed.Load() {
			// Some brokers (kfake, old Kafka) close the connection on a failed
			// authentication instead of answering SASL_AUTHENTICATION_FAILED.
			return k.saslFailed()
		}
		// A broker that closes every new connection at once is a TLS or SASL
		// mismatch, not a broker starting: give up after a few tries.
		var eof *kgo.ErrFirstReadEOF
		if errors.As(err, &eof) {
			if firstEOF++; firstEOF >= 3 {
				return fmt.Errorf("kafka: %s: %v (check -kafka-tls and -kafka-sasl-mechanism)", k.brokers, err)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("kafka: no broker at %s answered: %v (is the broker running? check -kafka-brokers)", k.brokers, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// securityError explains an error of connecting to Kafka that retrying will not
// fix: failed authentication, an untrusted certificate, TLS spoken to a
// plaintext listener (or the reverse). It returns nil for other errors.
func (k *kafkaFlags) securityError(err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		recordHdr tls.RecordHeaderError
		alert     tls.AlertError
		opErr     *net.OpError
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState):
		return k.saslFailed()
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("kafka: the brokers at %s do not offer SASL mechanism %s (check -kafka-sasl-mechanism)", k.brokers, strings.ToUpper(k.sec.mechanism))
	case errors.As(err, &unknownCA):
		return fmt.Errorf("kafka: TLS: the broker's certificate is not trusted: it is signed by an unknown authority (check -kafka-tls-ca-file): %v", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("kafka: TLS: the broker's certificate is not valid for %q (check -kafka-brokers or -kafka-tls-server-name): %v", hostname.Host, err)
	case errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("kafka: TLS: the broker's certificate is not trusted (check -kafka-tls-ca-file): %v", err)
	case errors.As(err, &recordHdr):
		return fmt.Errorf("kafka: TLS: the broker at %s does not speak TLS (drop -kafka-tls or use its TLS listener): %v", k.brokers, err)
	case errors.As(err, &alert), errors.As(err, &opErr) && opErr.Op == "remote error":
		// crypto/tls reports an alert from the peer as a net.OpError "remote error".
		return fmt.Errorf("kafka: TLS: the broker refused the connection (does it require a client certificate? -kafka-tls-cert-file, -kafka-tls-key-file): %v", err)
	}
	return nil
}

func (k *kafkaFlags) saslFailed() error {
	return fmt.Errorf("kafka: SASL authentication as %q with %s failed at %s: wrong user or password (check -kafka-sasl-user and -kafka-sasl-password-file)",
		k.sec.user, strings.ToUpper(k.sec.mechanism), k.brokers)
}

// saslWatch notes a failed read of a SASL authentication response: the broker
// rejected the credentials by closing the connection.
type saslWatch struct{ failed atomic.Bool }

// OnBrokerRead implements kgo.HookBrokerRead.
func (w *saslWatch) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && key == kmsg.SASLAuthenticate.Int16() {
		w.failed.Store(true)
	}
}
