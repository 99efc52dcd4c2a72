// Command eventlog is eventlog's front door: `eventlog dev` runs everything in
// one process with no servers; the other commands run the services on their own
// and give people at a terminal a way in (send, get, events, tail, ...).
// `eventlog -h` lists them. It is package cli's Program applied to the generic
// attribute entity; a program of your own domain is the same call with your
// Domain (see examples/bank).
package main

import "github.com/eventlog/eventlog/pkg/cli"

func main() { cli.Run(cli.Eventlog()) }
