// Command bank is the bank example run by eventlog's programs: `bank dev`
// runs it all in one process with no servers; `bank writer`, `bank projector`
// and the other commands run and use it as eventlog's own do. `bank -h`
// lists them.
package main

import (
	"github.com/eventlog/eventlog/examples/bank"
	"github.com/eventlog/eventlog/pkg/cli"
)

func main() { cli.Run(cli.Program{Name: "bank", Domain: bank.Domain()}) }
