package command_test

import (
	"testing"

	"github.com/eventlog/eventlog/internal/testutil"
	"github.com/eventlog/eventlog/pkg/command"
)

func TestStatsAddSumsEveryCounter(t *testing.T) {
	testutil.CheckSumsEveryField(t, (*command.Stats).Add)
}
