// Package console is eventlog's operations console: a few static files
// (HTML, CSS and JavaScript modules, no build step) embedded in the binary
// and served under /ui/ by every service. It needs no network beyond the
// service itself: everything it shows comes from the service's HTTP API
// (GET /v1/info says what that service serves), with the credentials the
// person gives it.
//
// The files are the same in every binary and hold no data and no secret,
// so they are served without authentication; the API they call is not.
// Each file is served gzipped to a browser that takes it, with a strong
// ETag (of its SHA-256), so a browser asks again cheaply, and with a Content-Security-Policy that allows only the
// service's own scripts, styles and connections.
package console

import (
	"bytes"
	"compress/gzip"
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

// file is one embedded file, and its gzip encoding.
type file struct {
	body, gz []byte
	etag     string
	mime     string
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
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		_, _ = zw.Write(b)
		_ = zw.Close()
		c.files[p] = file{body: b, gz: gz.Bytes(), etag: hex.EncodeToString(sum[:12]), mime: mimeOf(p)}
		return nil
	})
	return c
}

// Size returns the number of files and their total bytes, plain and
// gzipped: the console's page weight.
func (c *Console) Size() (files, plain, gzipped int) {
	for _, f := range c.files {
		files++
		plain += len(f.body)
		gzipped += len(f.gz)
	}
	return files, plain, gzipped
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
	h.Set("Vary", "Accept-Encoding")
	body, etag := f.body, `"`+f.etag+`"`
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		body, etag = f.gz, `"`+f.etag+`-gz"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}
