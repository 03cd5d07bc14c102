// Package loggers holds what the capture producer (in the activator) and the
// logger (Kafka → ClickHouse) agree on: the Record of one invocation and its
// encoding on the Kafka topic.
//
// The subpackages do the work: capture buffers records in the activator and
// produces them to Kafka without ever blocking a request; sink consumes them
// and inserts them into ClickHouse, committing offsets only after the insert;
// tables names, creates and queries the inference tables; local starts the
// embedded broker and ClickHouse server of `gantry dev`.
package loggers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// DefaultTopic is the Kafka topic that carries records.
const DefaultTopic = "gantry.inference"

// MaxBodySize is the largest request or response body stored whole; a larger
// one is left empty and the row says so in LoggingErrorCodes.
const MaxBodySize = 1 << 20

// Values of Record.LoggingErrorCodes, as Databricks names them.
const (
	ErrRequestTooLarge  = "MAX_REQUEST_SIZE_EXCEEDED"
	ErrResponseTooLarge = "MAX_RESPONSE_SIZE_EXCEEDED"
)

// Record is one invocation: one row of an inference table.
type Record struct {
	// Table is the inference table, "database.table".
	Table string

	RequestID       string
	ClientRequestID string
	Endpoint        string
	ServedEntity    string
	Requester       string
	// TimestampMs is when the request arrived, in Unix milliseconds.
	TimestampMs     int64
	StatusCode      int32
	ExecutionTimeMs int64
	// Request and Response are the bodies, empty when over MaxBodySize.
	Request  []byte
	Response []byte
	// SamplingFraction is the share of requests logged; Gantry logs all (1).
	SamplingFraction  float64
	LoggingErrorCodes []string
	// Shadow marks the answer of a shadow route, which the client never
	// saw. Its RequestID is the original's with ShadowSuffix.
	Shadow bool
}

// ShadowSuffix ends the RequestID of a shadow answer, so that it has a row
// of its own next to the answer the client got.
const ShadowSuffix = "-shadow"

// SetBodies sets r's Request and Response, leaving out (and naming in
// LoggingErrorCodes) a body over MaxBodySize. The bodies are not copied.
func (r *Record) SetBodies(request, response []byte) {
	r.Request, r.Response = request, response
	if len(request) > MaxBodySize {
		r.Request = nil
		r.LoggingErrorCodes = append(r.LoggingErrorCodes, ErrRequestTooLarge)
	}
	if len(response) > MaxBodySize {
		r.Response = nil
		r.LoggingErrorCodes = append(r.LoggingErrorCodes, ErrResponseTooLarge)
	}
}

// The encoding is a version byte, then the fields in a fixed order: strings
// and bodies as a uvarint length and the bytes, integers as varints, the
// sampling fraction as 8 little-endian bytes of its IEEE 754 bits. It is
// exact for any bytes (JSON would mangle bodies that are not UTF-8) and
// costs a copy, which matters on the activator's request path.
const recordVersion = 1

// AppendRecord appends the encoding of r to b.
func AppendRecord(b []byte, r *Record) []byte {
	b = append(b, recordVersion)
	for _, s := range [...]string{r.Table, r.RequestID, r.ClientRequestID, r.Endpoint, r.ServedEntity, r.Requester} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, r.TimestampMs)
	b = binary.AppendVarint(b, int64(r.StatusCode))
	b = binary.AppendVarint(b, r.ExecutionTimeMs)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.SamplingFraction))
	b = binary.AppendUvarint(b, uint64(len(r.Request)))
	b = append(b, r.Request...)
	b = binary.AppendUvarint(b, uint64(len(r.Response)))
	b = append(b, r.Response...)
	b = binary.AppendUvarint(b, uint64(len(r.LoggingErrorCodes)))
	for _, c := range r.LoggingErrorCodes {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	var shadow byte
	if r.Shadow {
		shadow = 1
	}
	return append(b, shadow)
}

// EncodedSize is an upper bound of len(AppendRecord(nil, r)), for sizing
// buffers.
func EncodedSize(r *Record) int {
	n := 1 + 10*3 + 8 + 10*3 + 1
	n += 10*6 + len(r.Table) + len(r.RequestID) + len(r.ClientRequestID) + len(r.Endpoint) + len(r.ServedEntity) + len(r.Requester)
	n += len(r.Request) + len(r.Response)
	for _, c := range r.LoggingErrorCodes {
		n += 10 + len(c)
	}
	return n
}

var errTruncated = errors.New("record is truncated")

// DecodeRecord decodes what AppendRecord wrote. Request and Response point
// into b.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) == 0 {
		return r, errTruncated
	}
	if b[0] != recordVersion {
		return r, fmt.Errorf("record version %d; this logger reads version %d", b[0], recordVersion)
	}
	d := decoder{b: b[1:]}
	r.Table = d.string()
	r.RequestID = d.string()
	r.ClientRequestID = d.string()
	r.Endpoint = d.string()
	r.ServedEntity = d.string()
	r.Requester = d.string()
	r.TimestampMs = d.varint()
	status := d.varint()
	r.ExecutionTimeMs = d.varint()
	r.SamplingFraction = math.Float64frombits(d.uint64())
	r.Request = d.bytes()
	r.Response = d.bytes()
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each code takes at least its length byte
		d.err = errTruncated
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		r.LoggingErrorCodes = append(r.LoggingErrorCodes, d.string())
	}
	shadow := d.uvarint()
	if d.err != nil {
		return Record{}, d.err
	}
	if shadow > 1 {
		return Record{}, fmt.Errorf("record shadow flag %d; want 0 or 1", shadow)
	}
	r.Shadow = shadow == 1
	if status < 0 || status > math.MaxInt32 {
		return Record{}, fmt.Errorf("record status code %d is out of range", status)
	}
	r.StatusCode = int32(status)
	if len(d.b) != 0 {
		return Record{}, fmt.Errorf("record has %d bytes after its end", len(d.b))
	}
	return r, nil
}

// decoder reads fields until the first error, which sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errTruncated
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errTruncated
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	if n == 0 {
		return nil
	}
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }
