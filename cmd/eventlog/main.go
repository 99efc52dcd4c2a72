// Command eventlog is eventlog's front door: `eventlog dev` runs everything in
// one process with no servers; the other commands run the services on their own
// and give people at a terminal a way in (send, get, events, tail, ...).
// `eventlog -h` lists them.
package main

import "github.com/eventlog/eventlog/pkg/cli"

func main() { cli.Exec("eventlog", cli.Main) }
