package auth_test

import (
	"fmt"
	"testing"
	"time"

	"sluice/shared/auth"
)

// BenchmarkVerifyHS256 is the token check of a client that sends the same
// token with every request: after the first, the verifier remembers it.
func BenchmarkVerifyHS256(b *testing.B) {
	v := mustVerifier(b, auth.Config{Secret: secret})
	tok, err := auth.Mint(secret, "t1", "u1", time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyHS256Fresh checks a token the verifier has not seen (more
// tokens in turn than it remembers): the signature and the claims.
func BenchmarkVerifyHS256Fresh(b *testing.B) {
	v := mustVerifier(b, auth.Config{Secret: secret})
	toks := make([]string, 20_000)
	for i := range toks {
		var err error
		if toks[i], err = auth.Mint(secret, "t1", fmt.Sprintf("u%d", i), time.Hour, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := v.Verify(toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
