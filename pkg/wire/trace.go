package wire

// The W3C trace context of records, without a tracing library: the tracing
// glue (package tracing) turns it into spans, and everything else only
// carries the string along.

const (
	traceParentLen = 55 // "00-" + 32 hex + "-" + 16 hex + "-" + 2 hex
	hexDigits      = "0123456789abcdef"
)

// A TraceContext is what a traceparent names: the trace, the parent span
// and the trace flags (bit 0: sampled).
type TraceContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   byte
}

// ParseTraceParent reads a traceparent header value as the W3C Trace Context
// recommendation says: version 00 exactly, a later version by its first 55
// characters (followed by the end or a '-'), lower-case hex, and neither an
// all-zero trace id nor an all-zero span id. Version ff and anything else
// are invalid: ok is false, and the receiver starts a trace of its own.
func ParseTraceParent(v []byte) (tc TraceContext, ok bool) {
	if len(v) < traceParentLen || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return tc, false
	}
	version, ok := hexByte(v[0], v[1])
	switch {
	case !ok || version == 0xff:
		return tc, false
	case version == 0 && len(v) != traceParentLen:
		return tc, false
	case len(v) > traceParentLen && v[traceParentLen] != '-':
		return tc, false
	}
	var zero byte
	for i := range tc.TraceID {
		b, ok := hexByte(v[3+2*i], v[4+2*i])
		if !ok {
			return TraceContext{}, false
		}
		tc.TraceID[i] = b
		zero |= b
	}
	if zero == 0 {
		return TraceContext{}, false
	}
	zero = 0
	for i := range tc.SpanID {
		b, ok := hexByte(v[36+2*i], v[37+2*i])
		if !ok {
			return TraceContext{}, false
		}
		tc.SpanID[i] = b
		zero |= b
	}
	if zero == 0 {
		return TraceContext{}, false
	}
	if tc.Flags, ok = hexByte(v[53], v[54]); !ok {
		return TraceContext{}, false
	}
	return tc, true
}

// String returns tc as a version-00 traceparent header value.
func (tc TraceContext) String() string {
	var b [traceParentLen]byte
	b[0], b[1], b[2] = '0', '0', '-'
	for i, x := range tc.TraceID {
		b[3+2*i], b[4+2*i] = hexDigits[x>>4], hexDigits[x&0xf]
	}
	b[35] = '-'
	for i, x := range tc.SpanID {
		b[36+2*i], b[37+2*i] = hexDigits[x>>4], hexDigits[x&0xf]
	}
	b[52] = '-'
	b[53], b[54] = hexDigits[tc.Flags>>4], hexDigits[tc.Flags&0xf]
	return string(b[:])
}

// TraceParent returns v as the traceparent to store and send on: v itself
// if it is a version-00 value, its first 55 characters as version 00 if it
// is of a later version, and "" if it is malformed (ParseTraceParent).
func TraceParent(v []byte) string {
	tc, ok := ParseTraceParent(v)
	switch {
	case !ok:
		return ""
	case len(v) == traceParentLen && v[0] == '0' && v[1] == '0':
		return string(v)
	}
	return tc.String()
}

// TraceParentOf returns the traceparent of a record's headers, as
// TraceParent makes it ("" if there is none or it is malformed). It reads
// the headers in place and allocates only the string it returns.
func TraceParentOf(hs []Header) string {
	for i := range hs {
		if hs[i].Key == HeaderTraceParent {
			return TraceParent(hs[i].Value)
		}
	}
	return ""
}

func hexByte(hi, lo byte) (byte, bool) {
	h, ok1 := hexNibble(hi)
	l, ok2 := hexNibble(lo)
	return h<<4 | l, ok1 && ok2
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
