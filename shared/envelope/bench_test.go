package envelope_test

import (
	"encoding/json"
	"testing"

	"sluice/shared/envelope"
)

// The wire format's cost per record: a request is encoded by the producer
// and decoded by the consumer, a reply the other way round (make bench).

func BenchmarkEncodeRequest(b *testing.B) {
	req := goldenRequest()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(&req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	req := goldenRequest()
	raw, err := json.Marshal(&req)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope.DecodeRequest(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeReply(b *testing.B) {
	r := goldenReply()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeReply(b *testing.B) {
	r := goldenReply()
	raw, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope.DecodeReply(raw); err != nil {
			b.Fatal(err)
		}
	}
}
