package memory_test

import (
	"testing"

	"github.com/eventlog/eventlog/pkg/store"
	"github.com/eventlog/eventlog/pkg/store/memory"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.ProcessRecorder { return memory.New() },
		storetest.WithSnapshots(func(t *testing.T, rec store.ProcessRecorder) store.SnapshotRecorder {
			return rec.(*memory.Recorder)
		}))
}
