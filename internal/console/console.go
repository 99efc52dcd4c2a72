// Package console is eventlog's operations console: a few static files
// (HTML, CSS and JavaScript modules, no build step) embedded in the binary
// and served under /ui/ by every service. It needs no network beyond the
// service itself: everything it shows comes from the service's HTTP API
// (GET /v1/info says what that service serves), with the credentials the
// person gives it.
//
// The files are the same in every binary and hold no data and no secret,
// so they are served without authentication; the API they call is not.
// Each file is served with a strong ETag (its SHA-256), so a browser asks
// again cheaply, and with a Content-Security-Policy that allows only the
// service's own scripts, styles and connections.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// file is one embedded file.
type file struct {
	body []byte
	etag string
	mime string
}

// Console serves the embedded files.
type Console struct {
	files map[string]file
}

// New returns the console over the embedded files.
func New() *Console {
	c := &Console{files: make(map[string]file)}
	sub, _ := fs.Sub(assets, "assets")
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		c.files[p] = file{body: b, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, mime: mimeOf(p)}
		return nil
	})
	return c
}

// Size returns the number of files and their total bytes: the console's
// page weight.
func (c *Console) Size() (files, bytes int) {
	for _, f := range c.files {
		files++
		bytes += len(f.body)
	}
	return files, bytes
}

func mimeOf(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	return "application/octet-stream"
}

// ServeHTTP serves GET /ui/<file>, and the page itself at /ui/ (the console
// routes in the browser, after the #).
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/ui/")
	if p == "" {
		p = "index.html"
	}
	f, ok := c.files[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.mime)
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}
