package auth

import (
	"errors"
	"testing"
	"time"
)

// A remembered token holds until its exp and not a moment longer, and a
// token that failed is not remembered.
func TestVerifiedTokenExpires(t *testing.T) {
	const secret = "0123456789abcdef-test-secret"
	v, err := NewVerifier(Config{Secret: secret, Leeway: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	v.now = func() time.Time { return t0 }
	tok, err := Mint(secret, "t1", "u1", time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if id, err := v.Verify(tok); err != nil || id != (Identity{Tenant: "t1", User: "u1", Expires: t0.Add(time.Minute).Truncate(time.Second)}) {
			t.Fatalf("check %d: %+v, %v", i, id, err)
		}
		// The second is answered from memory: a fresh check would now
		// fail its signature.
		v.secret = []byte("another-secret-another-secret-01")
	}
	if v.verified.Len() != 1 {
		t.Fatalf("remembered %d tokens, want 1", v.verified.Len())
	}
	v.now = func() time.Time { return t0.Add(time.Minute + 2*time.Second) } // past exp and the leeway
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired remembered token: %v, want ErrInvalidToken", err)
	}

	forged := tok[:len(tok)-2] + "xx"
	v.secret = []byte(secret)
	v.now = func() time.Time { return t0 }
	for range 2 {
		if _, err := v.Verify(forged); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("forged token: %v, want ErrInvalidToken", err)
		}
	}
	if _, ok := v.verified.Get(forged); ok {
		t.Fatal("a token that failed was remembered")
	}
}
