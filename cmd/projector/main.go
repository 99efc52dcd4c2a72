// Command projector consumes events from Kafka and keeps read models (and,
// optionally, a persistent copy of the log) current, exactly once in effect.
// `projector -h` lists its flags and their EVENTLOG_* environment variables.
package main

import "github.com/eventlog/eventlog/pkg/cli"

func main() { cli.Exec("projector", cli.Program{Name: "projector"}.Projector) }
