// Command writer consumes commands from Kafka, appends their events to the store,
// publishes them to Kafka and serves entities over HTTP. `writer -h` lists its
// flags and their EVENTLOG_* environment variables.
package main

import "github.com/eventlog/eventlog/pkg/cli"

func main() { cli.Exec("writer", cli.Program{Name: "writer"}.Writer) }
