package cli_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
)

func newHexKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Key rotation through the writer's flags: history written under the single
// -cipher-key (k0), then under k1, then under k2 stays readable while the keys
// are configured; retiring k1 makes only k1's entity unreadable, and the API
// names the missing key. No key ever appears in the writer's output.
func TestCipherKeyRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts writers")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	broker := cluster.ListenAddrs()[0]
	dir := t.TempDir()
	db, keysFile := filepath.Join(dir, "w.db"), filepath.Join(dir, "keys")
	k0, k1, k2 := newHexKey(t), newHexKey(t), newHexKey(t)
	secrets := []string{k0, k1, k2}

	type step struct {
		keys   string // the keys file; empty: no -cipher-keys-file
		legacy bool   // EVENTLOG_CIPHER_KEY=k0
		create string // an entity to create under the active key
		codec  string // the codec its events get
	}
	steps := []step{
		{"", true, "under-k0", "json+aes256gcm"},
		{"# rotation starts\nk1=" + k1 + "\n", true, "under-k1", "json+aes256gcm:k1"},
		{"k1=" + k1 + "\n*k2=" + k2 + "\n", true, "under-k2", "json+aes256gcm:k2"},
	}
	ids := map[string]string{}
	var logs []*testutil.Buffer
	start := func(s step) (string, func()) {
		env := map[string]string{}
		if s.legacy {
			env["EVENTLOG_CIPHER_KEY"] = k0
		}
		args := []string{"-kafka-brokers", broker, "-sqlite-path", db, "-partitions", "2"}
		if s.keys != "" {
			if err := os.WriteFile(keysFile, []byte(s.keys), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "-cipher-keys-file", keysFile)
		}
		addr, stop, log := startWriter(t, env, args...)
		logs = append(logs, log)
		return addr, stop
	}
	get := func(addr, name string) (string, error) {
		return runEnv(t, nil, 20*time.Second, "get", "example", ids[name], "--http-addr", addr)
	}
	for i, s := range steps {
		addr, stop := start(s)
		out, err := runEnv(t, nil, 30*time.Second, "send", "--kafka-brokers", broker, "--attr", "name="+s.create, "--json")
		if err != nil {
			t.Fatalf("step %d: send: %v\n%s", i, err, out)
		}
		var res struct {
			EntityID string `json:"entity_id"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		ids[s.create] = res.EntityID
		out, err = runEnv(t, nil, 20*time.Second, "events", "example", res.EntityID, "--http-addr", addr, "--json")
		if err != nil || !strings.Contains(out, `"codec":"`+s.codec+`"`) {
			t.Fatalf("step %d: events of %s: %v\n%s; want codec %s", i, s.create, err, out, s.codec)
		}
		// Everything written so far is readable.
		for _, prev := range steps[:i+1] {
			if out, err := get(addr, prev.create); err != nil || !strings.Contains(out, prev.create) {
				t.Fatalf("step %d: get %s: %v\n%s", i, prev.create, err, out)
			}
		}
		stop()
	}

	// k1 retired, and the legacy key gone: only their entities are unreadable.
	addr, stop := start(step{keys: "k2=" + k2 + "\n"})
	if out, err := get(addr, "under-k2"); err != nil || !strings.Contains(out, "under-k2") {
		t.Fatalf("get under-k2 after retiring k1: %v\n%s", err, out)
	}
	if _, err := get(addr, "under-k1"); err == nil || !strings.Contains(err.Error(), "no key k1") {
		t.Fatalf("get under-k1 after retiring k1: %v; want an error naming key k1", err)
	} else {
		t.Logf("under-k1: %v", err)
	}
	if _, err := get(addr, "under-k0"); err == nil || !strings.Contains(err.Error(), "legacy key") {
		t.Fatalf("get under-k0 without the legacy key: %v; want an error naming the legacy key", err)
	}
	stop()
	for _, log := range logs {
		for _, k := range secrets {
			if strings.Contains(log.String(), k) {
				t.Fatalf("the writer's output shows a key:\n%s", log)
			}
		}
	}
}

// Key material never appears in -h or in errors about keys.
func TestCipherKeysNeverShown(t *testing.T) {
	k1, k2 := newHexKey(t), newHexKey(t)
	env := map[string]string{"EVENTLOG_CIPHER_KEY": k1, "EVENTLOG_CIPHER_KEYS": "a=" + k2}
	for _, cmd := range []string{"writer", "projector", "dev", "rebuild"} {
		out, err := runEnv(t, env, 5*time.Second, cmd, "-h")
		if err != nil && !strings.Contains(err.Error(), "help") {
			t.Fatalf("%s -h: %v", cmd, err)
		}
		if !strings.Contains(out, "-cipher-keys-file") || !strings.Contains(out, "-cipher-keys  (EVENTLOG_CIPHER_KEYS") {
			t.Errorf("%s -h lacks the keyring flags:\n%s", cmd, out)
		}
		if strings.Contains(out, k1) || strings.Contains(out, k2) {
			t.Errorf("%s -h shows a key", cmd)
		}
	}
	dir := t.TempDir()
	bad := k1[:63] + "z"
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-cipher-keys-file", file("bad", "k1="+bad+"\n")}, nil, `line 1: the key of "k1" must be 64 hex digits`},
		{[]string{"-cipher-keys-file", file("short", "k1="+k1+"\nk2="+k2[:10]+"\n")}, nil, `line 2: the key of "k2"`},
		{[]string{"-cipher-keys-file", file("nokey", k1+"\n")}, nil, "line 1: want id=<64 hex digits>"},
		{[]string{"-cipher-keys-file", file("twice", "*a="+k1+"\n*b="+k2+"\n")}, nil, "two keys marked active"},
		{[]string{"-cipher-keys-file", file("dup", "a="+k1+"\na="+k2+"\n")}, nil, `key id "a" appears twice`},
		{[]string{"-cipher-keys-file", file("badid", "a+b="+k1+"\n")}, nil, `key id "a+b"`},
		{[]string{"-cipher-keys-file", file("empty", "# nothing\n")}, nil, "no keys"},
		{[]string{"-cipher-keys-file", filepath.Join(dir, "missing")}, nil, "-cipher-keys-file"},
		{nil, map[string]string{"EVENTLOG_CIPHER_KEYS": "a=" + bad}, `-cipher-keys: line 1: the key of "a"`},
		{[]string{"-cipher-keys", "a=" + k1, "-cipher-key", bad}, nil, "the cipher key must be 64 hex digits"},
	}
	for _, c := range cases {
		args := append([]string{"writer", "-kafka-brokers", "127.0.0.1:1"}, c.args...)
		out, err := runEnv(t, c.env, 10*time.Second, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.args, err, c.want)
			continue
		}
		for _, k := range []string{k1, k2, bad, k1[:16], k2[:10]} {
			if strings.Contains(err.Error()+out, k) {
				t.Errorf("%v: the error shows key material: %v", c.args, err)
			}
		}
	}
}
