package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Piped to a file, progress is plain lines with no carriage returns: the
// first, then the last at the end.
func TestProgressPlainWhenNotATerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []interface {
		Write([]byte) (int, error)
	}{&bytes.Buffer{}, f} {
		bar := newProgressBar(w, "rebuild")
		if bar.terminal {
			t.Fatalf("%T is taken for a terminal", w)
		}
		for i := int64(1); i <= 1000; i++ {
			bar.set(i, 1000, thousands(i)+" events")
		}
		bar.finish()
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, _ = got.ReadFrom(f)
	out := got.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if strings.Contains(out, "\r") || len(lines) != 2 || !strings.HasPrefix(lines[0], "rebuild: 1 of 1,000 (0%)  1 events") ||
		!strings.HasPrefix(lines[1], "rebuild: 1,000 of 1,000 (100%)  1,000 events") {
		t.Fatalf("progress in a file:\n%q", out)
	}
}

// On a terminal it redraws one line in place.
func TestProgressRedrawsOnATerminal(t *testing.T) {
	var b bytes.Buffer
	bar := newProgressBar(&b, "bench")
	bar.terminal = true // a bytes.Buffer is not one; draw as if
	bar.set(1, 2, "1 results")
	bar.set(2, 2, "2 results")
	bar.finish()
	out := b.String()
	if strings.Count(out, "\r") != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "[###############---------------]  50%") {
		t.Fatalf("progress on a terminal: %q", out)
	}
}
