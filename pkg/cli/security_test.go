package cli_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventlog/eventlog/internal/pgtest"
	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/cli"
	"github.com/eventlog/eventlog/pkg/store/postgres"
)

// testPKI is a CA made for one test, and files of its certificates.
type testPKI struct {
	dir       string
	ca        *x509.Certificate
	caKey     *ecdsa.PrivateKey
	caFile    string
	serverTLS *tls.Config // the broker's: a certificate for 127.0.0.1 and localhost
	certFile  string      // a client certificate signed by the CA
	keyFile   string
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	var err error
	p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)

	serverCert := p.issue(t, 2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "broker"}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.serverTLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}

	clientCert := p.issue(t, 3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "eventlog"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.certFile = p.write(t, "client.pem", "CERTIFICATE", clientCert.Certificate[0])
	keyDER, err := x509.MarshalPKCS8PrivateKey(clientCert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	p.keyFile = p.write(t, "client-key.pem", "PRIVATE KEY", keyDER)
	return p
}

func (p *testPKI) issue(t *testing.T, serial int64, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// secureCluster starts kfake with TLS and SASL: users alice (PLAIN), bob
// (SCRAM-SHA-256) and carol (SCRAM-SHA-512).
func secureCluster(t *testing.T, tlsCfg *tls.Config) string {
	t.Helper()
	opts := []kfake.Opt{
		kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2), kfake.SeedTopics(2, "eventlog.commands"),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "alice", "alice-secret"),
		kfake.Superuser("SCRAM-SHA-256", "bob", "bob-secret"),
		kfake.Superuser("SCRAM-SHA-512", "carol", "carol-secret"),
	}
	if tlsCfg != nil {
		opts = append(opts, kfake.TLS(tlsCfg))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// runEnv runs a command with an environment.
func runEnv(t *testing.T, env map[string]string, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	var out, errOut testutil.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := cli.Main(ctx, args, cli.Env{Getenv: func(k string) string { return env[k] }, Stdout: &out, Stderr: &errOut})
	return out.String() + errOut.String(), err
}

// startWriter runs the writer service until the test ends or stop is called;
// it returns once the writer says it started, with its HTTP address.
func startWriter(t *testing.T, env map[string]string, args ...string) (httpAddr string, stop func(), log *testutil.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errOut := &testutil.Buffer{}
	done := make(chan error, 1)
	args = append([]string{"writer", "-sqlite-path", filepath.Join(t.TempDir(), "w.db"), "-http-addr", "127.0.0.1:0", "-partitions", "2"}, args...)
	go func() {
		done <- cli.Main(ctx, args, cli.Env{Getenv: func(k string) string { return env[k] }, Stdout: errOut, Stderr: errOut})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("writer: %v\n%s", err, errOut)
				}
			case <-time.After(40 * time.Second):
				t.Error("writer did not stop within 40s")
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.After(30 * time.Second)
	for {
		if m := startedRE.FindStringSubmatch(errOut.String()); m != nil {
			return m[1], stop, errOut
		}
		select {
		case err := <-done:
			t.Fatalf("writer stopped: %v\n%s", err, errOut)
		case <-deadline:
			t.Fatalf("writer did not start within 30s:\n%s", errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var startedRE = regexp.MustCompile(`writer started"? http=(\S+)`)

// The writer and the CLI reach a broker that requires TLS and SASL: a command
// goes in, its result and its event come back, with each SASL mechanism.
func TestKafkaTLSAndSASLAccepted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a writer")
	}
	pki := newTestPKI(t, "accept")
	broker := secureCluster(t, pki.serverTLS)
	tlsArgs := []string{"-kafka-brokers", broker, "-kafka-tls-ca-file", pki.caFile}
	// The writer authenticates with SCRAM-SHA-512, its password from a file.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("carol-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _ = startWriter(t, nil, append(tlsArgs, "-kafka-sasl-mechanism", "SCRAM-SHA-512", "-kafka-sasl-user", "carol", "-kafka-sasl-password-file", pwFile)...)

	for _, c := range []struct{ mech, user, pass string }{
		{"PLAIN", "alice", "alice-secret"},
		{"SCRAM-SHA-256", "bob", "bob-secret"},
		{"scram-sha-512", "carol", "carol-secret"},
	} {
		t.Run(c.mech, func(t *testing.T) {
			// The password comes from the environment, as in a container.
			env := map[string]string{"EVENTLOG_KAFKA_SASL_PASSWORD": c.pass}
			args := append([]string{"send"}, tlsArgs...)
			args = append(args, "-kafka-sasl-mechanism", c.mech, "-kafka-sasl-user", c.user, "--attr", "who="+c.user, "--json")
			out, err := runEnv(t, env, 30*time.Second, args...)
			if err != nil {
				t.Fatalf("send: %v\n%s", err, out)
			}
			var res struct{ Status, EntityID string }
			if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != "accepted" {
				t.Fatalf("send result %q: %v", out, err)
			}
			if strings.Contains(out, c.pass) {
				t.Errorf("output shows the password: %s", out)
			}
		})
	}
	// tail reads the events back over TLS and SASL.
	args := append([]string{"tail"}, tlsArgs...)
	args = append(args, "-kafka-sasl-mechanism", "PLAIN", "-kafka-sasl-user", "alice", "-kafka-sasl-password", "alice-secret", "-from-start", "-n", "3", "-json")
	out, err := runEnv(t, nil, 30*time.Second, args...)
	if err != nil || strings.Count(out, `"topic":"example.Created"`) != 3 {
		t.Fatalf("tail: %v\n%s", err, out)
	}
}

// A broker that requires a client certificate accepts one signed by its CA.
func TestKafkaMutualTLS(t *testing.T) {
	pki := newTestPKI(t, "mtls")
	srv := pki.serverTLS.Clone()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = x509.NewCertPool()
	srv.ClientCAs.AddCert(pki.ca)
	broker := secureCluster(t, srv)
	base := []string{"send", "-kafka-brokers", broker, "-kafka-tls-ca-file", pki.caFile,
		"-kafka-sasl-mechanism", "PLAIN", "-kafka-sasl-user", "alice", "-kafka-sasl-password", "alice-secret", "-wait=false"}

	if out, err := run(t, append(base, "-kafka-tls-cert-file", pki.certFile, "-kafka-tls-key-file", pki.keyFile)...); err != nil {
		t.Fatalf("send with a client certificate: %v\n%s", err, out)
	}
	out, err := run(t, append(base, "-timeout", "10s")...)
	if err == nil || !strings.Contains(err.Error(), "TLS") || strings.Count(err.Error(), "\n") > 0 {
		t.Fatalf("send without a client certificate: %v\n%s; want one line naming TLS", err, out)
	}
}

// A wrong password, an unknown user, an untrusted certificate, a certificate
// for another name, and plaintext to a TLS listener each fail at start, fast,
// with one line that says what to fix, and never show the password.
func TestKafkaTLSAndSASLRejected(t *testing.T) {
	pki := newTestPKI(t, "reject")
	other := newTestPKI(t, "other")
	broker := secureCluster(t, pki.serverTLS)
	_, port, _ := net.SplitHostPort(broker)
	sasl := func(mech, user, pass string) []string {
		return []string{"-kafka-sasl-mechanism", mech, "-kafka-sasl-user", user, "-kafka-sasl-password", pass}
	}
	trusted := []string{"-kafka-brokers", broker, "-kafka-tls-ca-file", pki.caFile}
	good := sasl("SCRAM-SHA-256", "bob", "bob-secret")
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"wrong SCRAM password", append(append([]string{}, trusted...), sasl("SCRAM-SHA-256", "bob", "not-bobs-password")...), []string{"SASL authentication", `"bob"`, "SCRAM-SHA-256", "wrong user or password"}},
		{"wrong PLAIN password", append(append([]string{}, trusted...), sasl("PLAIN", "alice", "not-alices-password")...), []string{"SASL authentication", `"alice"`, "PLAIN"}},
		{"unknown user", append(append([]string{}, trusted...), sasl("SCRAM-SHA-512", "mallory", "not-a-password")...), []string{"SASL authentication", `"mallory"`}},
		{"untrusted CA", append([]string{"-kafka-brokers", broker, "-kafka-tls-ca-file", other.caFile}, good...), []string{"TLS", "certificate is not trusted", "unknown authority", "-kafka-tls-ca-file"}},
		{"system roots", append([]string{"-kafka-brokers", broker, "-kafka-tls"}, good...), []string{"certificate is not trusted"}},
		{"wrong server name", append([]string{"-kafka-brokers", "localhost:" + port, "-kafka-tls-ca-file", pki.caFile, "-kafka-tls-server-name", "kafka.example.com"}, good...), []string{"TLS", "not valid for", "-kafka-tls-server-name"}},
		{"plaintext to TLS", append([]string{"-kafka-brokers", broker}, good...), []string{"kafka:", "TLS"}},
		{"no SASL", trusted, []string{"kafka:", "SASL"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, cmd := range []string{"writer", "send"} {
				args := append([]string{cmd}, c.args...)
				if cmd == "writer" {
					args = append(args, "-sqlite-path", filepath.Join(t.TempDir(), "w.db"), "-http-addr", "127.0.0.1:0")
				}
				start := time.Now()
				out, err := runEnv(t, nil, 30*time.Second, args...)
				if err == nil {
					t.Fatalf("%s: started; want an error\n%s", cmd, out)
				}
				msg := err.Error()
				t.Logf("%s: %s", cmd, msg)
				for _, w := range c.want {
					if !strings.Contains(msg, w) {
						t.Errorf("%s: error %q lacks %q", cmd, msg, w)
					}
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("%s: error is not one line: %q", cmd, msg)
				}
				if strings.Contains(msg+out, "password-of") || strings.Contains(msg+out, "not-bobs-password") || strings.Contains(msg+out, "not-alices-password") {
					t.Errorf("%s: the password is shown: %s\n%s", cmd, msg, out)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("%s: took %s to fail; want a fast start-up error", cmd, d)
				}
				if cli.ExitCode(err) != 1 {
					t.Errorf("%s: exit code %d, want 1", cmd, cli.ExitCode(err))
				}
			}
		})
	}
}

// Mistakes in the security flags are usage errors that name the flag, and the
// password is never shown: not by -h, not in errors.
func TestKafkaSecurityFlags(t *testing.T) {
	const pw = "hunter2-password"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-kafka-sasl-mechanism", "GSSAPI", "-kafka-sasl-user", "u", "-kafka-sasl-password", pw}, `"GSSAPI" is not PLAIN`},
		{[]string{"-kafka-sasl-mechanism", "PLAIN", "-kafka-sasl-user", "u"}, "needs -kafka-sasl-user and a password"},
		{[]string{"-kafka-sasl-user", "u", "-kafka-sasl-password", pw}, "-kafka-sasl-mechanism is not"},
		{[]string{"-kafka-sasl-mechanism", "PLAIN", "-kafka-sasl-user", "u", "-kafka-sasl-password", pw, "-kafka-sasl-password-file", "/nonexistent"}, "not both"},
		{[]string{"-kafka-sasl-mechanism", "PLAIN", "-kafka-sasl-user", "u", "-kafka-sasl-password-file", "/nonexistent/pw"}, "-kafka-sasl-password-file"},
		{[]string{"-kafka-tls-ca-file", "/nonexistent/ca.pem"}, "-kafka-tls-ca-file"},
		{[]string{"-kafka-tls-cert-file", "/nonexistent/c.pem"}, "give both or neither"},
	}
	for _, c := range cases {
		for _, cmd := range []string{"writer", "projector", "send", "tail"} {
			out, err := run(t, append([]string{cmd}, c.args...)...)
			if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %v: exit %d, %v; want a usage error with %q", cmd, c.args, cli.ExitCode(err), err, c.want)
			}
			if strings.Contains(fmtErr(err)+out, pw) {
				t.Errorf("%s %v: the password is shown", cmd, c.args)
			}
		}
	}
	for _, cmd := range []string{"writer", "projector", "send", "tail"} {
		env := map[string]string{"EVENTLOG_KAFKA_SASL_PASSWORD": pw}
		out, err := runEnv(t, env, 5*time.Second, cmd, "-h")
		if cli.ExitCode(err) != 0 {
			t.Fatalf("%s -h: %v", cmd, err)
		}
		for _, f := range []string{"-kafka-tls", "-kafka-tls-ca-file", "-kafka-tls-cert-file", "-kafka-tls-key-file", "-kafka-tls-server-name",
			"-kafka-sasl-mechanism", "-kafka-sasl-user", "-kafka-sasl-password", "-kafka-sasl-password-file"} {
			if !strings.Contains(out, "  "+f+"  ") {
				t.Errorf("%s -h lacks %s", cmd, f)
			}
		}
		if strings.Contains(out, pw) {
			t.Errorf("%s -h shows the password", cmd)
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// PostgreSQL TLS goes through the DSN: sslmode=verify-full with the server's CA
// connects over TLS; a CA that did not sign the server's certificate fails with
// an error naming the certificate. The test uses the test server's own
// certificate as the CA, so it runs where that certificate is self-signed for
// localhost (a stock Debian or Ubuntu PostgreSQL) and skips elsewhere.
func TestPostgresTLSVerifyFull(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var ssl, certFile string
	err = conn.QueryRow(ctx, "SELECT current_setting('ssl'), current_setting('ssl_cert_file')").Scan(&ssl, &certFile)
	conn.Close(ctx)
	if err != nil {
		t.Skipf("cannot read the server's TLS settings: %v", err)
	}
	pemBytes, rerr := os.ReadFile(certFile)
	if ssl != "on" || rerr != nil {
		t.Skipf("the test server has no TLS certificate this test can read (ssl=%s, %s: %v)", ssl, certFile, rerr)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Skipf("%s is not PEM", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) != nil || cert.VerifyHostname("localhost") != nil {
		t.Skipf("the server's certificate %s is not self-signed for localhost", certFile)
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" {
		t.Skipf("the test DSN is not a URL")
	}
	withTLS := func(rootCert string) string {
		v := *u
		v.Host = net.JoinHostPort("localhost", v.Port())
		q := v.Query()
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", rootCert)
		v.RawQuery = q.Encode()
		return v.String()
	}

	schema := pgtest.Schema(t)
	if out, err := run(t, "migrate", "-postgres-dsn", withTLS(certFile), "-postgres-schema", schema); err != nil {
		t.Fatalf("migrate with sslmode=verify-full: %v\n%s", err, out)
	}
	pool, err := postgres.Connect(ctx, withTLS(certFile))
	if err != nil {
		t.Fatal(err)
	}
	var overTLS bool
	err = pool.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&overTLS)
	pool.Close()
	if err != nil || !overTLS {
		t.Fatalf("connection over TLS = %v, %v; want true", overTLS, err)
	}

	other := newTestPKI(t, "pg")
	out, err := run(t, "migrate", "-postgres-dsn", withTLS(other.caFile), "-postgres-schema", schema)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("migrate with an untrusted CA: %v\n%s; want an error naming the certificate", err, out)
	}
	t.Logf("untrusted CA: %v", err)
}
