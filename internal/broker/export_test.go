package broker

import "time"

// AllowSilence makes g remove a member silent for longer than d, whatever its
// timeouts.
func AllowSilence(g *Groups, d time.Duration) {
	g.mu.Lock()
	g.allowSilence = d
	g.mu.Unlock()
}
