package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progressBar shows progress on a stream. On a terminal it draws a one-line
// bar redrawn in place, at most ten times a second; on anything else (a
// file, a pipe) it prints plain lines, one every plainEvery and one at the
// end, so that a log of the run reads well.
type progressBar struct {
	mu       sync.Mutex
	w        io.Writer
	terminal bool
	label    string
	start    time.Time
	last     time.Time
	// drawn: something was drawn; shown: the last drawing shows done,
	// total and note, the last progress set.
	drawn, shown bool
	done, total  int64
	note         string
}

// plainEvery is how often progress prints a line when not on a terminal.
const plainEvery = 2 * time.Second

func newProgressBar(w io.Writer, label string) *progressBar {
	return &progressBar{w: w, terminal: isTerminal(w), label: label, start: time.Now()}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// set shows done of total, with a note such as "12,000 events".
func (p *progressBar) set(done, total int64, note string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	every := 100 * time.Millisecond
	if !p.terminal {
		every = plainEvery
	}
	p.done, p.total, p.note = done, total, note
	if p.drawn && now.Sub(p.last) < every && (done < total || !p.terminal) {
		p.shown = false
		return
	}
	p.last = now
	p.draw()
}

// draw shows the last progress: in place on a terminal, else as a line.
func (p *progressBar) draw() {
	p.drawn, p.shown = true, true
	frac := 1.0
	if p.total > 0 {
		frac = min(float64(p.done)/float64(p.total), 1)
	}
	took := time.Since(p.start).Round(100 * time.Millisecond)
	if !p.terminal {
		fmt.Fprintf(p.w, "%s: %s of %s (%.0f%%)  %s  %s\n", p.label, thousands(p.done), thousands(p.total), frac*100, p.note, took)
		return
	}
	const width = 30
	n := int(frac * width)
	fmt.Fprintf(p.w, "\r%-10s [%s%s] %3.0f%%  %s  %s   ", p.label, strings.Repeat("#", n), strings.Repeat("-", width-n),
		frac*100, p.note, took)
}

// finish ends the bar: on a terminal it ends the line; elsewhere it prints
// the last progress if the last line printed did not show it.
func (p *progressBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal {
		fmt.Fprintln(p.w)
		return
	}
	if p.drawn && !p.shown {
		p.draw()
	}
}

// thousands formats n with thousands separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
