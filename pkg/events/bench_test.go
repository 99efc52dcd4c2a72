package events_test

import (
	"testing"

	"github.com/google/uuid"
)

// BenchmarkMapper measures encoding an event to a sequenced item and decoding it
// back, with each codec.
func BenchmarkMapper(b *testing.B) {
	reg := registry(b)
	for _, codec := range []string{"json", "json+zstd", "json+aes256gcm", "json+zstd+aes256gcm"} {
		m := mappers(b, reg)[codec]
		e := &Opened{Owner: "a typical owner name that makes the payload about a hundred bytes long"}
		e.OriginatorID = uuid.New()
		b.Run("encode/"+codec, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.ToItem(e); err != nil {
					b.Fatal(err)
				}
			}
		})
		it, _ := m.ToItem(e)
		b.Run("decode/"+codec, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.FromItem(it); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
