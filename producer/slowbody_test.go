package producer_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"sluice/producer"
)

// slowRequest opens a connection to h, sends the headers of a POST
// /v1/chat announcing a body of n bytes and then only part of it, and
// returns the response the server sends and whether it closed the
// connection afterwards. safety bounds the whole exchange.
func slowRequest(t *testing.T, h *harness, bearer, part string, n int) (status int, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // safety: a hang fails the test
	fmt.Fprintf(conn, "POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", bearer, n, part)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response to a slow body: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The server must not wait for the rest of the body on this connection.
	_, err = br.ReadByte()
	return resp.StatusCode, err == io.EOF
}

// TestSlowBodyIsCut: a client that announces a body and does not send it
// gets 408 and loses the connection after the read timeout; with a bad
// token it gets 401 before any body is read, and the connection ends too.
func TestSlowBodyIsCut(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.ReadTimeout = 200 * time.Millisecond })
	bearer := "Bearer " + token(t, "t1", "u1")

	if code, closed := slowRequest(t, h, bearer, `{"text":`, 100); code != http.StatusRequestTimeout || !closed {
		t.Errorf("valid token, body stalls: %d, closed %v; want 408 and the connection closed", code, closed)
	}
	if code, closed := slowRequest(t, h, "Bearer forged", "", 100); code != http.StatusUnauthorized || !closed {
		t.Errorf("bad token, body never sent: %d, closed %v; want 401 and the connection closed", code, closed)
	}
}

// TestWaitOutlivesReadTimeout: the read timeout bounds the body, not the
// wait that follows it.
func TestWaitOutlivesReadTimeout(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.ReadTimeout = 100 * time.Millisecond })
	bearer := "Bearer " + token(t, "t1", "u1")
	// No consumer runs: the wait runs out and the request is queued.
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"hi","wait_ms":600}`)
	if r.code != http.StatusAccepted {
		t.Fatalf("wait of 600ms with a 100ms read timeout: %d %s, want 202 after the wait", r.code, r.body)
	}
}
