package sqlite_test

import (
	"testing"

	"github.com/eventlog/eventlog/pkg/store/sqlite"
	"github.com/eventlog/eventlog/pkg/store/storetest"
)

// BenchmarkRecorder runs the shared store benchmarks (append 1, 10 and 100
// items per transaction, parallel appends, replay of a 1,000-event sequence,
// a page of 1,000 notifications) on a database file, with synchronous=FULL
// (the default) and NORMAL, to show what durability across power loss costs.
//
//	go test -run '^$' -bench . -benchtime 2s ./pkg/store/sqlite/
func BenchmarkRecorder(b *testing.B) {
	for _, sync := range []sqlite.Synchronous{sqlite.SyncFull, sqlite.SyncNormal} {
		b.Run("sync="+string(sync), func(b *testing.B) {
			storetest.Bench(b, open(b, sqlite.Options{Synchronous: sync}))
		})
	}
}
