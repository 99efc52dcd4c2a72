package postgres

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// rowDecoder decodes event rows from raw values when the server sent them in
// the binary format pgx asks for (int8, uuid and bytea binary; text as is),
// without pgx's per-value scan machinery, and shares the strings of repeated
// topics and codecs. Where a column came in another format it falls back to
// rows.Scan.
type rowDecoder struct {
	fast         bool
	topic, codec string
	buf          []byte // the rest of the chunk that bytes copies into
}

const binaryFormat = pgx.BinaryFormatCode

// newRowDecoder checks the formats: cols are the field indexes of int8 and
// uuid/bytea columns, which must be binary; text columns need nothing.
func newRowDecoder(fds []pgconn.FieldDescription, binaryCols ...int) *rowDecoder {
	d := &rowDecoder{fast: true}
	for _, i := range binaryCols {
		if i >= len(fds) || fds[i].Format != binaryFormat {
			d.fast = false
		}
	}
	return d
}

func int8At(raw []byte) (int64, bool) {
	if len(raw) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(raw)), true
}

// str returns raw as a string, reusing *prev if equal.
func str(raw []byte, prev *string) string {
	if string(raw) != *prev { // no allocation: the compiler compares in place
		*prev = string(raw)
	}
	return *prev
}

// chunkSize is the size of the chunks that rowDecoder.bytes copies values
// into: one allocation for a few hundred ~100-byte states rather than one
// each.
const chunkSize = 32 << 10

// bytes returns a copy of raw (which pgx reuses for the next row), in a
// chunk it shares with the values copied before it, capped so that an
// append to it cannot write over the next one. A value larger than a
// quarter chunk gets an allocation of its own.
func (d *rowDecoder) bytes(raw []byte) []byte {
	if len(raw) == 0 {
		return []byte{}
	}
	if len(raw) > chunkSize/4 {
		return append(make([]byte, 0, len(raw)), raw...)
	}
	if cap(d.buf)-len(d.buf) < len(raw) {
		d.buf = make([]byte, 0, chunkSize)
	}
	start := len(d.buf)
	d.buf = append(d.buf, raw...)
	return d.buf[start:len(d.buf):len(d.buf)]
}
