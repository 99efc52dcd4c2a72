package httpapi_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/eventlog/eventlog/internal/httpapi"
)

func guarded(t *testing.T, a *httpapi.Auth) http.Handler {
	t.Helper()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	return a.Wrap(ok)
}

func status(h http.Handler, method, path string, header ...string) (int, http.Header) {
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Header()
}

// A token covers the whole API but the probes, the metrics and the
// console's static files; it is compared whole.
func TestAuthToken(t *testing.T) {
	const token = "0123456789abcdef0123"
	h := guarded(t, &httpapi.Auth{Token: token})
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/ui/", "/ui/app.js", "/"} {
		if code, _ := status(h, "GET", p); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want it open", p, code)
		}
	}
	for _, c := range []struct {
		method, path string
		auth         string
		want         int
	}{
		{"GET", "/v1/notifications", "", 401},
		{"GET", "/v1/notifications/stream", "", 401},
		{"POST", "/v1/commands", "", 401},
		{"POST", "/v1/dead-letters/retry", "", 401},
		{"GET", "/v1/info", "", 401},
		{"GET", "/uix", "", 401},
		{"GET", "/v1/notifications", "Bearer " + token[:len(token)-1], 401},
		{"GET", "/v1/notifications", "Bearer " + token + "x", 401},
		{"GET", "/v1/notifications", "Basic " + token, 401},
		{"GET", "/v1/notifications", "Bearer " + token, 200},
		{"POST", "/v1/commands", "bearer " + token, 200},
	} {
		code, hdr := status(h, c.method, c.path, "Authorization", c.auth)
		if code != c.want {
			t.Errorf("%s %s with %q: %d, want %d", c.method, c.path, c.auth, code, c.want)
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without a Bearer challenge: %v", hdr)
		}
	}
}

// Basic auth takes the users of a file of bcrypt hashes; the console's
// requests get no Basic challenge, which would make the browser ask itself.
func TestAuthBasic(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users, err := httpapi.ParseUsers(strings.NewReader("# operators\n\nana:" + string(hash) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := guarded(t, &httpapi.Auth{Users: users})
	basic := func(user, pass string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}
	for i := 0; i < 2; i++ { // the second time from the cache of verified credentials
		if code, _ := status(h, "GET", "/v1/notifications", "Authorization", basic("ana", "s3cret pass")); code != 200 {
			t.Fatalf("ana with her password: %d", code)
		}
		if code, _ := status(h, "GET", "/v1/notifications", "Authorization", basic("ana", "s3cret pas")); code != 401 {
			t.Fatalf("ana with a wrong password: %d", code)
		}
	}
	if code, _ := status(h, "GET", "/v1/notifications", "Authorization", basic("bob", "s3cret pass")); code != 401 {
		t.Fatalf("an unknown user: %d", code)
	}
	if code, _ := status(h, "GET", "/v1/notifications", "Authorization", "Bearer 0123456789abcdef0123"); code != 401 {
		t.Fatalf("a token where none is set: %d", code)
	}
	if _, hdr := status(h, "GET", "/v1/notifications"); !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("no Basic challenge for curl: %v", hdr)
	}
	if _, hdr := status(h, "GET", "/v1/notifications", "X-Requested-With", "eventlog-console"); strings.Contains(strings.Join(hdr.Values("WWW-Authenticate"), ","), "Basic") {
		t.Fatalf("a Basic challenge to the console: %v", hdr)
	}
}

func TestParseUsersErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "no user",
		"ana\n":              "line 1 is not user:hash",
		"ana:plain\n":        `line 1: the password of "ana" is not a bcrypt hash (make one with: htpasswd -nbB ana 'password')`,
		"# x\n:$2y$05$abc\n": "line 2 is not user:hash",
		"ana:$2y$05$" + strings.Repeat("a", 53) + "\nana:$2y$05$" + strings.Repeat("a", 53) + "\n": `line 2: user "ana" again`,
	} {
		_, err := httpapi.ParseUsers(strings.NewReader(in))
		if !errors.Is(err, httpapi.ErrUsersFile) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	if err := (&httpapi.Auth{Token: "short"}).Validate(); err == nil || !strings.Contains(err.Error(), "openssl rand -hex 32") {
		t.Errorf("a short token: %v", err)
	}
	if h := (&httpapi.Auth{}); h.Enabled() {
		t.Error("the zero Auth is enabled")
	}
}

// A page of another site cannot change anything, with credentials or
// without; curl and the console's own page can.
func TestAuthCrossSite(t *testing.T) {
	for _, a := range []*httpapi.Auth{{}, {Token: "0123456789abcdef0123"}} {
		h := guarded(t, a)
		auth := ""
		if a.Token != "" {
			auth = "Bearer " + a.Token
		}
		for _, c := range []struct {
			header []string
			want   int
		}{
			{[]string{"Authorization", auth}, 200}, // curl
			{[]string{"Authorization", auth, "Sec-Fetch-Site", "same-origin"}, 200},
			{[]string{"Authorization", auth, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403},
			{[]string{"Authorization", auth, "Origin", "https://evil.example"}, 403},
		} {
			if code, _ := status(h, "POST", "/v1/commands", c.header...); code != c.want {
				t.Errorf("token %q, POST with %v: %d, want %d", a.Token, c.header, code, c.want)
			}
		}
		if code, _ := status(h, "GET", "/v1/notifications", "Authorization", auth, "Sec-Fetch-Site", "cross-site"); code != 200 {
			t.Errorf("a cross-site GET: %d (safe methods pass; the browser keeps the answer from the other site)", code)
		}
	}
}

// Open on loopback, the API answers only to this machine's names: a page
// whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing.
func TestAuthLoopbackOnly(t *testing.T) {
	h := guarded(t, &httpapi.Auth{LoopbackOnly: true})
	for host, want := range map[string]int{
		"127.0.0.1:8080": 200, "localhost:8080": 200, "[::1]:8080": 200, "127.0.0.2": 200, "app.localhost:8080": 200,
		"evil.example:8080": 403, "10.0.0.5:8080": 403, "": 403,
	} {
		r := httptest.NewRequest("GET", "/v1/notifications", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %q: %d, want %d", host, w.Code, want)
		}
	}
}
