package cli_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventlog/eventlog/pkg/cli"
)

// get and events pass -min-version on as the API's min_version, and -version
// with it.
func TestGetMinVersion(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.String())
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/events") {
			_, _ = w.Write([]byte(`{"events":[]}`))
			return
		}
		_, _ = w.Write([]byte(`{"entity":"example","id":"` + uuid.Nil.String() + `","version":3,"attributes":{}}`))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	id := uuid.NewString()
	for _, args := range [][]string{
		{"get", "-http-addr", addr, "-min-version", "3", "example", id},
		{"get", "-http-addr", addr, "-min-version", "3", "-version", "2", "example", id},
		{"events", "-http-addr", addr, "-min-version", "3", "example", id},
	} {
		var out bytes.Buffer
		if err := cli.Main(context.Background(), args, cli.Env{Getenv: noEnv, Stdout: &out, Stderr: &out}); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
	}
	want := []string{
		"/v1/entities/example/" + id + "?min_version=3",
		"/v1/entities/example/" + id + "?min_version=3&version=2",
		"/v1/entities/example/" + id + "/events?min_version=3",
	}
	if strings.Join(asked, "\n") != strings.Join(want, "\n") {
		t.Fatalf("asked\n%s\nwant\n%s", strings.Join(asked, "\n"), strings.Join(want, "\n"))
	}
}
