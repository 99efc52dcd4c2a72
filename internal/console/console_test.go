package console_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/eventlog/eventlog/internal/console"
)

func get(t *testing.T, h http.Handler, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// The page and its files are served with their types, a strong ETag (a
// second visit costs a 304) and a policy that allows only the service's
// own scripts, styles and connections.
func TestServe(t *testing.T) {
	c := console.New()
	page := get(t, c, "/ui/")
	if page.Code != 200 || page.Header().Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(page.Body.String(), `src="js/app.js"`) {
		t.Fatalf("GET /ui/: %d %v", page.Code, page.Header())
	}
	csp := page.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("policy %q", csp)
	}
	if again := get(t, c, "/ui/", "If-None-Match", page.Header().Get("ETag")); again.Code != http.StatusNotModified {
		t.Fatalf("a second visit: %d", again.Code)
	}
	if js := get(t, c, "/ui/js/app.js"); js.Code != 200 || js.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("app.js: %d %v", js.Code, js.Header())
	}
	for _, p := range []string{"/ui/nope.js", "/ui/entities", "/ui/../go.mod"} {
		if w := get(t, c, p); w.Code != 404 {
			t.Errorf("GET %s: %d", p, w.Code)
		}
	}
	gz := get(t, c, "/ui/js/entities.js", "Accept-Encoding", "gzip, deflate")
	if gz.Header().Get("Content-Encoding") != "gzip" || gz.Header().Get("ETag") == page.Header().Get("ETag") {
		t.Fatalf("gzipped: %v", gz.Header())
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Equal(plain, get(t, c, "/ui/js/entities.js").Body.Bytes()) {
		t.Fatal("the gzipped file is not the file")
	}
	files, size, zipped := c.Size()
	t.Logf("the console is %d files, %d bytes, %d gzipped", files, size, zipped)
	if size > 80<<10 {
		t.Errorf("the console has grown to %d bytes", size)
	}
}

// Everything the console loads is its own: no CDN, no other origin, and
// every module it imports is there.
func TestSelfContained(t *testing.T) {
	root := "assets"
	imp := regexp.MustCompile(`from '(\./[^']+)'`)
	ext := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if m := ext.Find(b); m != nil {
			t.Errorf("%s refers to another origin: %s", p, m)
		}
		for _, m := range imp.FindAllSubmatch(b, -1) {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), string(m[1]))); err != nil {
				t.Errorf("%s imports %s, which is not there", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
