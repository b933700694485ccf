package auth_test

import (
	"testing"
	"time"

	"sluice/shared/auth"
)

// BenchmarkVerifyHS256 is the token check every API request pays.
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
