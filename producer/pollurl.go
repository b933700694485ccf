package producer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"

	"github.com/google/uuid"

	"sluice/shared/auth"
)

// A poll URL carries proof that this ingress accepted the request for the
// caller: /v1/chat/{dialog_id}/{request_id}~{proof}, the proof an HMAC of
// the caller, the dialog and the request id. A poll that finds neither a
// result nor the queued marker (Redis lost it: a restart without
// persistence) can then tell an accepted request still on its way (202)
// from one that never was (404), which it otherwise cannot. '~' is not
// in a request id's alphabet, so a poll URL without a proof (a bot's own
// request id, or an ingress without a key) still works as before.
const proofSep = "~"

// pollKey signs and checks poll URLs; a nil key signs nothing.
type pollKey []byte

// newPollKey derives the key from secret, shared by every replica
// (SLUICE_POLL_SECRET, or the HS256 token secret); nil when secret is empty.
func newPollKey(secret string) pollKey {
	if secret == "" {
		return nil
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("sluice poll url v1"))
	return m.Sum(nil)
}

func (k pollKey) proof(id auth.Identity, dialogID, requestID string) string {
	m := hmac.New(sha256.New, k)
	for _, s := range []string{id.Tenant, id.User, dialogID, requestID} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
}

// url returns the poll URL of the caller's request.
func (k pollKey) url(id auth.Identity, dialogID, requestID string) string {
	u := "/v1/chat/" + dialogID + "/" + requestID
	if k != nil {
		u += proofSep + k.proof(id, dialogID, requestID)
	}
	return u
}

// split parses the last segment of a poll URL into the request id and
// whether it carries a valid proof of acceptance for the caller.
func (k pollKey) split(id auth.Identity, dialogID, segment string) (requestID string, accepted bool) {
	requestID, proof, ok := strings.Cut(segment, proofSep)
	if !ok || k == nil {
		return requestID, false
	}
	return requestID, hmac.Equal([]byte(proof), []byte(k.proof(id, dialogID, requestID)))
}

// createdAt returns when a request id minted by an ingress (UUIDv7) was
// made; false for other ids.
func createdAt(requestID string) (time.Time, bool) {
	u, err := uuid.Parse(requestID)
	if err != nil || u.Version() != 7 {
		return time.Time{}, false
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec), true
}
