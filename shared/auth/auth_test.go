package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"sluice/shared/auth"
)

const secret = "0123456789abcdef-test-secret"

func mustVerifier(tb testing.TB, cfg auth.Config) *auth.Verifier {
	tb.Helper()
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// claims returns valid claims for t1/u1 expiring in a minute.
func claims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub":    "u1",
		"tenant": "t1",
		"iat":    now.Unix(),
		"exp":    now.Add(time.Minute).Unix(),
	}
}

func sign(tb testing.TB, m jwt.SigningMethod, c jwt.MapClaims, key any) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hmacToken builds an HS256 token by hand, with any header and any key.
func hmacToken(header map[string]any, c jwt.MapClaims, key []byte) string {
	signing := b64(header) + "." + b64(c)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func wantRejected(t *testing.T, v *auth.Verifier, token string) {
	t.Helper()
	id, err := v.Verify(token)
	if err == nil {
		t.Fatalf("Verify accepted the token as %+v, want rejection", id)
	}
	if !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("error %q does not wrap ErrInvalidToken", err)
	}
	if id != (auth.Identity{}) {
		t.Errorf("identity on error = %+v, want zero", id)
	}
}

func wantIdentity(t *testing.T, v *auth.Verifier, token string, want auth.Identity) {
	t.Helper()
	id, err := v.Verify(token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.Expires.IsZero() {
		t.Error("identity has no expiry, want the token's exp")
	}
	id.Expires = time.Time{}
	if id != want {
		t.Errorf("identity = %+v, want %+v", id, want)
	}
}

func TestMintVerifyHS256(t *testing.T) {
	v := mustVerifier(t, auth.Config{Secret: secret})
	tok, err := auth.Mint(secret, "acme", "user.1@x", time.Minute, time.Now())
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	wantIdentity(t, v, tok, auth.Identity{Tenant: "acme", User: "user.1@x"})

	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Method.Alg() != "HS256" {
		t.Errorf("Mint alg = %s, want HS256", parsed.Method.Alg())
	}
	c := parsed.Claims.(jwt.MapClaims)
	if c["sub"] != "user.1@x" || c["tenant"] != "acme" {
		t.Errorf("claims = %v", c)
	}
	if _, ok := c["exp"]; !ok {
		t.Error("minted token has no exp")
	}
}

// TestMintLane: the lane claim is carried into the identity; no claim is
// no restriction.
func TestMintLane(t *testing.T) {
	v := mustVerifier(t, auth.Config{Secret: secret})
	for _, lane := range []string{"", "interactive", "bulk"} {
		t.Run("Lane="+lane, func(t *testing.T) {
			tok, err := auth.MintLane(secret, "t1", "bot", lane, time.Minute, time.Now())
			if err != nil {
				t.Fatalf("MintLane: %v", err)
			}
			wantIdentity(t, v, tok, auth.Identity{Tenant: "t1", User: "bot", Lane: lane})
			parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := parsed.Claims.(jwt.MapClaims)["lane"]; ok != (lane != "") || ok && got != lane {
				t.Errorf("claim lane = %v (present %v), want %q", got, ok, lane)
			}
		})
	}
	if tok, err := auth.MintLane(secret, "t1", "bot", "express", time.Minute, time.Now()); err == nil {
		t.Errorf("MintLane with lane express = %q, want error", tok)
	}
}

func TestMintErrors(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name                 string
		secret, tenant, user string
		ttl                  time.Duration
	}{
		{"NoSecret", "", "t1", "u1", time.Minute},
		{"ShortSecret", "fifteen-bytes!!", "t1", "u1", time.Minute},
		{"TenantSlash", secret, "t/1", "u1", time.Minute},
		{"UserColon", secret, "t1", "u:1", time.Minute},
		{"EmptyUser", secret, "t1", "", time.Minute},
		{"ZeroTTL", secret, "t1", "u1", 0},
		{"NegativeTTL", secret, "t1", "u1", -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := auth.Mint(tt.secret, tt.tenant, tt.user, tt.ttl, now); err == nil {
				t.Errorf("Mint = %q, want error", tok)
			}
		})
	}
}

func TestVerifyHS256Rejections(t *testing.T) {
	v := mustVerifier(t, auth.Config{Secret: secret})
	now := time.Now()

	with := func(edit func(c jwt.MapClaims)) jwt.MapClaims {
		c := claims()
		edit(c)
		return c
	}
	tests := []struct {
		name  string
		token string
	}{
		{"Empty", ""},
		{"Garbage", "not-a-jwt"},
		{"ThreeGarbageParts", "a.b.c"},
		{"AlgNone", b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + "."},
		{"AlgNoneUpper", b64(map[string]any{"alg": "NONE", "typ": "JWT"}) + "." + b64(claims()) + "."},
		{"AlgMissing", b64(map[string]any{"typ": "JWT"}) + "." + b64(claims()) + "."},
		{"HS512SameSecret", sign(t, jwt.SigningMethodHS512, claims(), []byte(secret))},
		{"HS384SameSecret", sign(t, jwt.SigningMethodHS384, claims(), []byte(secret))},
		{"WrongSecret", sign(t, jwt.SigningMethodHS256, claims(), []byte("another-secret-0123456789"))},
		{"TamperedPayload", func() string {
			tok := sign(t, jwt.SigningMethodHS256, claims(), []byte(secret))
			parts := strings.Split(tok, ".")
			c := claims()
			c["sub"] = "admin"
			return parts[0] + "." + b64(c) + "." + parts[2]
		}()},
		{"ExpiredBeyondLeeway", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }), []byte(secret))},
		{"NotYetValid", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() }), []byte(secret))},
		{"MissingExp", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "exp") }), []byte(secret))},
		{"MissingTenant", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "tenant") }), []byte(secret))},
		{"EmptyTenant", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["tenant"] = "" }), []byte(secret))},
		{"MissingSub", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { delete(c, "sub") }), []byte(secret))},
		{"SubWithSlash", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = "u1/../u2" }), []byte(secret))},
		{"SubWithColon", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = "u1:x" }), []byte(secret))},
		{"TenantWithBrace", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["tenant"] = "{t1}" }), []byte(secret))},
		{"SubTooLong", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("u", 129) }), []byte(secret))},
		{"TenantNotString", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["tenant"] = 42 }), []byte(secret))},
		{"UnknownLane", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["lane"] = "express" }), []byte(secret))},
		{"LaneUpperCase", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["lane"] = "BULK" }), []byte(secret))},
		{"LaneNotString", sign(t, jwt.SigningMethodHS256, with(func(c jwt.MapClaims) { c["lane"] = true }), []byte(secret))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRejected(t, v, tt.token) })
	}

	t.Run("ExpiredWithinLeeway", func(t *testing.T) {
		c := claims()
		c["exp"] = now.Add(-10 * time.Second).Unix()
		wantIdentity(t, v, sign(t, jwt.SigningMethodHS256, c, []byte(secret)), auth.Identity{Tenant: "t1", User: "u1"})
	})
	t.Run("ShorterLeeway", func(t *testing.T) {
		strict := mustVerifier(t, auth.Config{Secret: secret, Leeway: time.Second})
		c := claims()
		c["exp"] = now.Add(-10 * time.Second).Unix()
		wantRejected(t, strict, sign(t, jwt.SigningMethodHS256, c, []byte(secret)))
	})
	t.Run("HandBuiltHS256Accepted", func(t *testing.T) {
		// The hand-built tokens above are only meaningful if a correct one passes.
		wantIdentity(t, v, hmacToken(map[string]any{"alg": "HS256", "typ": "JWT"}, claims(), []byte(secret)), auth.Identity{Tenant: "t1", User: "u1"})
	})
}

// writePEM writes a public key as PKIX "PUBLIC KEY" PEM and returns the path.
func writePEM(tb testing.TB, name string, pub crypto.PublicKey) string {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatalf("marshal %s: %v", name, err)
	}
	return writeFile(tb, name, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func writeFile(tb testing.TB, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

type keys struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
}

func genKeys(tb testing.TB) keys {
	tb.Helper()
	var k keys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		tb.Fatal(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		tb.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		tb.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestVerifyPublicKeys(t *testing.T) {
	k := genKeys(t)
	rsaPath := writePEM(t, "rsa.pem", &k.rsa.PublicKey)
	// The second RSA key in PKCS#1 form, as openssl rsa -RSAPublicKey_out writes it.
	rsa2Path := writeFile(t, "rsa2.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa2.PublicKey)}))
	ecPath := writePEM(t, "ec.pem", &k.ec.PublicKey)
	edPath := writePEM(t, "ed.pem", k.ed.Public())
	v := mustVerifier(t, auth.Config{PublicKeyFiles: []string{rsaPath, rsa2Path, ecPath, edPath}})
	want := auth.Identity{Tenant: "t1", User: "u1"}

	t.Run("RS256", func(t *testing.T) { wantIdentity(t, v, sign(t, jwt.SigningMethodRS256, claims(), k.rsa), want) })
	t.Run("RS256SecondKey", func(t *testing.T) { wantIdentity(t, v, sign(t, jwt.SigningMethodRS256, claims(), k.rsa2), want) })
	t.Run("ES256", func(t *testing.T) { wantIdentity(t, v, sign(t, jwt.SigningMethodES256, claims(), k.ec), want) })
	t.Run("EdDSA", func(t *testing.T) { wantIdentity(t, v, sign(t, jwt.SigningMethodEdDSA, claims(), k.ed), want) })

	other := genKeys(t)
	rejected := []struct {
		name  string
		token string
	}{
		{"RS256UnknownKey", sign(t, jwt.SigningMethodRS256, claims(), other.rsa)},
		{"ES256UnknownKey", sign(t, jwt.SigningMethodES256, claims(), other.ec)},
		{"EdDSAUnknownKey", sign(t, jwt.SigningMethodEdDSA, claims(), other.ed)},
		{"PS256ConfiguredRSAKey", sign(t, jwt.SigningMethodPS256, claims(), k.rsa)},
		{"RS512ConfiguredRSAKey", sign(t, jwt.SigningMethodRS512, claims(), k.rsa)},
		{"RS256Expired", func() string {
			c := claims()
			c["exp"] = time.Now().Add(-time.Hour).Unix()
			return sign(t, jwt.SigningMethodRS256, c, k.rsa)
		}()},
		{"EdDSAMissingTenant", func() string {
			c := claims()
			delete(c, "tenant")
			return sign(t, jwt.SigningMethodEdDSA, c, k.ed)
		}()},
		// No secret configured: HS256 is not accepted at all, whatever the key.
		{"HS256NoSecretConfigured", hmacToken(map[string]any{"alg": "HS256", "typ": "JWT"}, claims(), nil)},
		{"HS256WithSecretNotConfigured", sign(t, jwt.SigningMethodHS256, claims(), []byte(secret))},
	}
	for _, tt := range rejected {
		t.Run(tt.name, func(t *testing.T) { wantRejected(t, v, tt.token) })
	}
}

// TestAlgConfusion signs HS256 tokens with the public keys' bytes as the HMAC
// secret, the classic attack on verifiers that let the token pick the
// algorithm for a key.
func TestAlgConfusion(t *testing.T) {
	k := genKeys(t)
	rsaPath := writePEM(t, "rsa.pem", &k.rsa.PublicKey)
	edPath := writePEM(t, "ed.pem", k.ed.Public())
	rsaPEM, err := os.ReadFile(rsaPath)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	edPEM, _ := os.ReadFile(edPath)
	hs := map[string]any{"alg": "HS256", "typ": "JWT"}

	for _, cfg := range []struct {
		name string
		cfg  auth.Config
	}{
		{"PublicKeysOnly", auth.Config{PublicKeyFiles: []string{rsaPath, edPath}}},
		{"PublicKeysAndSecret", auth.Config{Secret: secret, PublicKeyFiles: []string{rsaPath, edPath}}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			v := mustVerifier(t, cfg.cfg)
			// The RS256 token is genuine: only the forged ones must fail.
			wantIdentity(t, v, sign(t, jwt.SigningMethodRS256, claims(), k.rsa), auth.Identity{Tenant: "t1", User: "u1"})
			for name, key := range map[string][]byte{
				"RSAPublicPEM":  rsaPEM,
				"RSAPublicDER":  der,
				"EdPublicPEM":   edPEM,
				"EdPublicRaw":   []byte(k.ed.Public().(ed25519.PublicKey)),
				"RSAPEMTrimmed": []byte(strings.TrimSpace(string(rsaPEM))),
			} {
				t.Run(name, func(t *testing.T) { wantRejected(t, v, hmacToken(hs, claims(), key)) })
			}
		})
	}
}

func TestNewVerifierErrors(t *testing.T) {
	dir := t.TempDir()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(p256)

	tests := []struct {
		name string
		cfg  auth.Config
		msg  string
	}{
		{"NoKey", auth.Config{}, "no jwt secret or public key"},
		{"ShortSecret", auth.Config{Secret: strings.Repeat("s", 15)}, "at least 16"},
		{"UnreadableFile", auth.Config{PublicKeyFiles: []string{filepath.Join(dir, "missing.pem")}}, "read public key"},
		{"Directory", auth.Config{PublicKeyFiles: []string{dir}}, "read public key"},
		{"NotPEM", auth.Config{PublicKeyFiles: []string{writeFile(t, "junk.pem", []byte("hello"))}}, "not an RSA, ECDSA or Ed25519"},
		{"PrivateKeyNotPublic", auth.Config{PublicKeyFiles: []string{writeFile(t, "priv.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))}}, "public key"},
		{"ECDSAP384", auth.Config{PublicKeyFiles: []string{writePEM(t, "p384.pem", &p384.PublicKey)}}, "P-384"},
		{"ECDSAP521", auth.Config{PublicKeyFiles: []string{writePEM(t, "p521.pem", &p521.PublicKey)}}, "P-521"},
		{"GoodSecretBadFile", auth.Config{Secret: secret, PublicKeyFiles: []string{filepath.Join(dir, "missing.pem")}}, "read public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := auth.NewVerifier(tt.cfg)
			if err == nil {
				t.Fatalf("NewVerifier = %v, want error", v)
			}
			if v != nil {
				t.Errorf("verifier on error = %v, want nil", v)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
	t.Run("SecretOf16Bytes", func(t *testing.T) {
		if _, err := auth.NewVerifier(auth.Config{Secret: strings.Repeat("s", 16)}); err != nil {
			t.Errorf("16-byte secret refused: %v", err)
		}
	})
}
