// Package auth verifies and mints the bearer tokens of Sluice's HTTP API.
//
// A token is a JWT with the claims sub (user id), tenant (tenant id) and exp,
// all required, and the optional claim lane: "bulk" restricts the caller to
// the bulk lane (bot credentials cannot jump the storefront's queue);
// "interactive", or no claim, leaves the caller both lanes. Any other value
// makes the token invalid. The accepted signing algorithms are pinned: HS256 with the
// shared secret, plus RS256, ES256 and EdDSA when public keys are configured.
// "none" and any other algorithm are refused. A Verifier remembers the
// tokens that passed until their exp, so a client's every request does not
// pay the signature check again.
package auth

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/golang-lru/v2/expirable"

	"sluice/shared/envelope"
	"sluice/shared/settings"
)

// ErrInvalidToken is returned by Verify for every token that must not pass.
// The wrapped detail is safe to show the client.
var ErrInvalidToken = errors.New("invalid token")

// MinSecretBytes is the shortest HS256 secret a Verifier, and Mint, accept.
const MinSecretBytes = 16

// Config holds the verifier's keys.
type Config struct {
	// Secret is the HS256 shared secret. Empty disables HS256.
	Secret string
	// PublicKeyFiles are PEM files of RSA, ECDSA P-256 or Ed25519 public keys
	// (RS256, ES256, EdDSA).
	PublicKeyFiles []string
	// Leeway tolerates clock skew on exp, nbf and iat. Default 30 s.
	Leeway time.Duration
}

// Identity is who a verified token speaks for.
type Identity struct {
	Tenant string
	User   string
	// Lane is the token's lane claim: envelope.LaneBulk restricts the
	// caller to the bulk lane; "" (or envelope.LaneInteractive) leaves it
	// both.
	Lane string
	// Expires is the token's exp claim: a WebSocket authenticated with it
	// is closed then.
	Expires time.Time
}

// Claims are Sluice's token claims.
type Claims struct {
	Tenant string `json:"tenant"`
	// Lane is optional: "interactive" or "bulk".
	Lane string `json:"lane,omitempty"`
	jwt.RegisteredClaims
}

// Verifier checks bearer tokens. It remembers the tokens it verified until
// their exp (at most verifiedTTL, verifiedMax of them), so a client that
// sends the same token with every request pays the signature check and the
// claims' decoding once (43 allocations and most of the check's CPU).
type Verifier struct {
	secret   []byte
	keys     map[string][]jwt.VerificationKey // by algorithm
	methods  []string
	parser   *jwt.Parser
	verified *expirable.LRU[string, verified]
	now      func() time.Time
}

// verified is a token that passed, and until when its identity holds.
type verified struct {
	id    Identity
	until time.Time
}

// verifiedMax and verifiedTTL bound the verified tokens a Verifier keeps:
// a token whose exp is later is checked again after verifiedTTL.
const (
	verifiedMax = 10_000
	verifiedTTL = 5 * time.Minute
)

// NewVerifier returns a verifier for cfg. It returns an error when no key is
// configured or a public key file cannot be read or parsed.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{keys: map[string][]jwt.VerificationKey{}, now: time.Now,
		verified: expirable.NewLRU[string, verified](verifiedMax, nil, verifiedTTL)}
	if cfg.Secret != "" {
		if len(cfg.Secret) < MinSecretBytes {
			return nil, fmt.Errorf("jwt secret must be at least %d bytes", MinSecretBytes)
		}
		v.secret = []byte(cfg.Secret)
		v.methods = append(v.methods, jwt.SigningMethodHS256.Alg())
	}
	for _, f := range cfg.PublicKeyFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", err)
		}
		alg, key, err := parsePublicKey(pem)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", f, err)
		}
		if len(v.keys[alg]) == 0 {
			v.methods = append(v.methods, alg)
		}
		v.keys[alg] = append(v.keys[alg], key)
	}
	if len(v.methods) == 0 {
		return nil, errors.New("no jwt secret or public key configured")
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = 30 * time.Second
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	)
	return v, nil
}

func parsePublicKey(pem []byte) (string, jwt.VerificationKey, error) {
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
		return jwt.SigningMethodRS256.Alg(), k, nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(pem); err == nil {
		if k.Curve.Params().Name != "P-256" {
			return "", nil, fmt.Errorf("ECDSA curve %s: only P-256 (ES256) is accepted", k.Curve.Params().Name)
		}
		return jwt.SigningMethodES256.Alg(), k, nil
	}
	if k, err := jwt.ParseEdPublicKeyFromPEM(pem); err == nil {
		return jwt.SigningMethodEdDSA.Alg(), k, nil
	}
	return "", nil, errors.New("not an RSA, ECDSA or Ed25519 public key in PEM")
}

// Verify checks a token and returns its identity. Every failure wraps
// ErrInvalidToken.
func (v *Verifier) Verify(token string) (Identity, error) {
	if e, ok := v.verified.Get(token); ok && v.now().Before(e.until) {
		return e.id, nil
	}
	id, exp, err := v.verify(token)
	if err != nil {
		return Identity{}, err
	}
	// Kept until exp without the leeway: a remembered token never outlives
	// what a fresh check would accept.
	v.verified.Add(token, verified{id: id, until: exp})
	return id, nil
}

// verify checks a token's signature and claims and returns its identity
// and its exp.
func (v *Verifier) verify(token string) (Identity, time.Time, error) {
	var c Claims
	keyFunc := func(t *jwt.Token) (any, error) {
		switch t.Method.(type) {
		case *jwt.SigningMethodHMAC:
			return v.secret, nil
		}
		keys := v.keys[t.Method.Alg()]
		if len(keys) == 0 {
			return nil, fmt.Errorf("no key for %s", t.Method.Alg())
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	}
	if _, err := v.parser.ParseWithClaims(token, &c, keyFunc); err != nil {
		return Identity{}, time.Time{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	switch {
	case c.Subject == "":
		return Identity{}, time.Time{}, fmt.Errorf("%w: claim sub is required", ErrInvalidToken)
	case c.Tenant == "":
		return Identity{}, time.Time{}, fmt.Errorf("%w: claim tenant is required", ErrInvalidToken)
	case !envelope.ValidID(c.Subject) || !envelope.ValidID(c.Tenant):
		return Identity{}, time.Time{}, fmt.Errorf("%w: sub and tenant must be 1-%d of [A-Za-z0-9._@|+-]", ErrInvalidToken, envelope.MaxIDLen)
	case c.Lane != "" && !envelope.ValidLane(c.Lane):
		// Refused, not ignored: a restriction the issuer meant and this
		// version cannot read must not lift it.
		return Identity{}, time.Time{}, fmt.Errorf("%w: claim lane must be %s or %s", ErrInvalidToken, envelope.LaneInteractive, envelope.LaneBulk)
	}
	// WithExpirationRequired: a token that passed has exp.
	exp := c.ExpiresAt.Time
	return Identity{Tenant: c.Tenant, User: c.Subject, Lane: c.Lane, Expires: exp}, exp, nil
}

// Mint returns an HS256 token for user of tenant valid for ttl, without a
// lane claim. It returns an error when the ids are not valid ids or the
// secret is empty.
func Mint(secret, tenant, user string, ttl time.Duration, now time.Time) (string, error) {
	return MintLane(secret, tenant, user, "", ttl, now)
}

// MintLane is Mint with the lane claim: "" for none, envelope.LaneBulk to
// restrict the caller to the bulk lane, or envelope.LaneInteractive. It
// returns an error for any other lane, as for Mint.
func MintLane(secret, tenant, user, lane string, ttl time.Duration, now time.Time) (string, error) {
	if secret == "" {
		return "", errors.New("no jwt secret configured")
	}
	if len(secret) < MinSecretBytes {
		// A Verifier would refuse the secret: the token could never pass.
		return "", fmt.Errorf("jwt secret must be at least %d bytes", MinSecretBytes)
	}
	if !envelope.ValidID(tenant) || !envelope.ValidID(user) {
		return "", fmt.Errorf("tenant and sub must be 1-%d of [A-Za-z0-9._@|+-]", envelope.MaxIDLen)
	}
	if ttl <= 0 {
		return "", errors.New("ttl must be positive")
	}
	if lane != "" && !envelope.ValidLane(lane) {
		return "", fmt.Errorf("lane must be %s or %s, got %q", envelope.LaneInteractive, envelope.LaneBulk, lane)
	}
	c := Claims{
		Tenant: tenant,
		Lane:   lane,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}

// RegisterFlags registers c's keys on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Secret, "jwt-secret", c.Secret, "HS256 secret of bearer tokens (at least 16 bytes)")
	fs.Var(settings.List{P: &c.PublicKeyFiles}, "jwt-public-keys", "PEM files of RS256/ES256/EdDSA public keys, comma-separated")
}

// Validate reports a missing key or a secret too short to be safe, each
// named by its flag. Public key files are read by NewVerifier.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(c.Secret != "" || len(c.PublicKeyFiles) > 0, "jwt-secret", "is required (or SLUICE_JWT_PUBLIC_KEYS)")
	p.Check(c.Secret == "" || len(c.Secret) >= MinSecretBytes, "jwt-secret", "jwt secret must be at least %d bytes", MinSecretBytes)
	p.Check(c.Leeway >= 0, "jwt-leeway", "must not be negative")
	return p.Err()
}
